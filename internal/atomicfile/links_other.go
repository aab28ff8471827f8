//go:build !windows && !linux

package atomicfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// evalLinks is filepath.EvalSymlinks of an absolute path that follows only links owned by root
// or by this process's effective user; any other link on the way is an *UntrustedLinkError.
//
// Here a link is examined by name (Lstat, then Readlink): one swapped for another between the
// two calls by whoever may write its directory is read as the first one's owner. Linux
// (links_linux.go) reads the owner and the target of one opened link instead.
func evalLinks(p string) (string, error) { return walkLinks(p, false) }

// evalLinksToCreate is evalLinks, but a last component that does not exist (the file a link
// leads to, deleted) is no error: the path to create is returned, as a shell's > would create it.
func evalLinksToCreate(p string) (string, error) { return walkLinks(p, true) }

func walkLinks(p string, missingLast bool) (string, error) {
	rest, euid, err := walkStart(p)
	if err != nil {
		return "", err
	}
	resolved := "/"
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
		if errors.Is(err, fs.ErrNotExist) && missingLast && len(rest) == 0 {
			return next, nil
		}
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
		// The same link still there (as far as a second look can tell).
		if again, err := os.Lstat(next); err != nil || !os.SameFile(fi, again) {
			return "", &fs.PathError{Op: "readlink", Path: next, Err: errors.New("the link changed while it was read")}
		}
		if filepath.IsAbs(target) {
			resolved = "/"
		}
		rest = append(strings.Split(target, "/"), rest...)
	}
	return resolved, nil
}
