package agent

// readOnlyWay is never reported on Windows (see readonly_unix.go).
func readOnlyWay(string) string { return "" }

// unwritableWay is never reported on Windows (see readonly_unix.go).
func unwritableWay(string) (string, string) { return "", "" }
