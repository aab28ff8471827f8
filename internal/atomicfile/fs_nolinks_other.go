//go:build !windows && !linux

package atomicfile

// openNoLinks is openat2's shortcut where there is none: openDir walks the path.
func openNoLinks(string) *dir { return nil }

// createFlags add nothing to the open of a temp file (see fs_openat2.go).
const createFlags = 0
