//go:build linux || darwin || freebsd || netbsd || openbsd

package store

import "golang.org/x/sys/unix"

// freeBytes is the space an unprivileged process may still write under dir.
func freeBytes(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil //nolint:unconvert // types differ by OS
}
