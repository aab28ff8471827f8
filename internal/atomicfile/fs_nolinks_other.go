//go:build !windows && !linux

package atomicfile

// openNoLinks is openat2's shortcut where there is none: openDir walks the path.
func openNoLinks(string) *dir { return nil }
