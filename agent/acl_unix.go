//go:build !windows

package agent

import "os"

// mkdirPrivate makes dir, and its missing parents, mode 0700 (as the umask leaves it).
func mkdirPrivate(dir string) error { return os.MkdirAll(dir, 0o700) }

// Rights othersMay is asked about; Unix checks modes instead (see unixModes).
const (
	readRights  = 0
	writeRights = 0
)

// othersMay is Windows' check of an ACL; Unix checks modes instead.
func othersMay(string, uint32) (string, error) { return "", nil }
