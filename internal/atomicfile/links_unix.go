//go:build !windows

package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// UntrustedLinkError is an install refused because the way to its file goes through a
// symbolic link that neither root nor the installing user owns: whoever made it may write the
// directory that holds it, and must not choose where a file of root's goes (a link planted at
// a destination in a service's own directory, pointing at /etc/shadow). The kernel's
// protected_symlinks does not apply: links are resolved here by name, not by open(2).
type UntrustedLinkError struct {
	Link string
	UID  int
}

func (e *UntrustedLinkError) Error() string {
	return fmt.Sprintf("refusing to follow the symbolic link %s: it is owned by uid %d, neither root nor this process's user (uid %d); remove it or make it root's",
		e.Link, e.UID, os.Geteuid())
}

// evalLinks is filepath.EvalSymlinks of an absolute path that follows only links owned by root
// or by this process's effective user; any other link on the way is an *UntrustedLinkError.
func evalLinks(p string) (string, error) {
	if !filepath.IsAbs(p) {
		abs, err := filepath.Abs(p)
		if err != nil {
			return "", err
		}
		p = abs
	}
	euid := os.Geteuid()
	resolved := "/"
	rest := strings.Split(p, "/")
	for links := 0; len(rest) > 0; {
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			resolved = filepath.Dir(resolved)
			continue
		}
		next := filepath.Join(resolved, c)
		fi, err := os.Lstat(next)
		if err != nil {
			return "", err
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			if len(rest) > 0 && !fi.IsDir() {
				return "", &fs.PathError{Op: "lstat", Path: next, Err: syscall.ENOTDIR}
			}
			resolved = next
			continue
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 && int(st.Uid) != euid {
			return "", &UntrustedLinkError{Link: next, UID: int(st.Uid)}
		}
		if links++; links > 255 {
			return "", errors.New("EvalSymlinks: too many links")
		}
		target, err := os.Readlink(next)
		if err != nil {
			return "", err
		}
		if filepath.IsAbs(target) {
			resolved = "/"
		}
		rest = append(strings.Split(target, "/"), rest...)
	}
	return resolved, nil
}
