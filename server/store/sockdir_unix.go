//go:build unix

package store

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// onlyOursToRename refuses dir (absolute, without links) when another user could rename an
// entry of it or of a directory above it: one that user owns, or one writable by group or
// others without the sticky bit (a TMPDIR of mode 0777, or another service's). There they
// could move the socket's private directory away and put one of theirs at its name, where the
// server's next dial of its etcd would find their socket.
func onlyOursToRename(dir string) error {
	uid := uint32(os.Geteuid())
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Lstat(d)
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("%s: no owner known", d)
		}
		if st.Uid != 0 && st.Uid != uid {
			return fmt.Errorf("%s is another user's (uid %d): not a place for the client socket", d, st.Uid)
		}
		if fi.Mode().Perm()&0o022 != 0 && fi.Mode()&os.ModeSticky == 0 {
			return fmt.Errorf("%s is writable by others (mode %v) without the sticky bit: not a place for the client socket", d, fi.Mode().Perm())
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}
