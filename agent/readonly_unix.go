//go:build !windows

package agent

import (
	"errors"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// readOnlyWay returns the directory where an install of dest would write (where dest's links
// lead, or the nearest directory of that way that exists, in which the install makes the rest)
// when it is on a read-only file system, else "". access(2) says so (EROFS) for a read-only
// mount too, and for every user alike: a directory merely not writable by the user who asks
// (an operator's render --dry of root's agent) is not reported.
func readOnlyWay(dest string) string {
	if d, err := accessWay(filepath.Dir(resolveLinks(dest)), unix.W_OK); errors.Is(err, unix.EROFS) {
		return d
	}
	return ""
}

// unwritableWay returns the directory where the agent would write dir's files (dir, or the
// nearest directory of its way that exists, in which it makes the rest) when the user who asks
// cannot write there, with why: "read-only" (EROFS) or "denied" (EACCES, so for that user
// only: validate's, normally the agent's own); "" when it can, or cannot tell.
func unwritableWay(dir string) (string, string) {
	d, err := accessWay(dir, unix.W_OK|unix.X_OK)
	switch {
	case errors.Is(err, unix.EROFS):
		return d, "read-only"
	case errors.Is(err, unix.EACCES):
		return d, "denied"
	}
	return "", ""
}

// accessWay is access(2) of dir with mode, or of the nearest directory above it that exists
// (ENOENT going up to it): that directory and the answer.
func accessWay(dir string, mode uint32) (string, error) {
	for d := dir; ; d = filepath.Dir(d) {
		if err := unix.Access(d, mode); !errors.Is(err, unix.ENOENT) || filepath.Dir(d) == d {
			return d, err
		}
	}
}
