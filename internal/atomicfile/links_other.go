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

// walkLinks, on Unix but Linux: a link is examined by name (Lstat, then Readlink): one swapped
// for another between the two calls by whoever may write its directory is read as the first
// one's owner. Linux (links_linux.go) reads the owner and the target of one opened link instead.
//
// walkLinks is evalLinks (evalLinksToCreate with missingLast). With judge, each directory it
// walks through (where its links lead, p's last component too when it is one) is judged by its
// owner and the mode of the directory before it (foreignDir), by name here: a *ForeignDirError
// names the first refused. id is the identity of the last component walked (zero when
// missingLast found none), so that a directory opened later by the path returned can be checked
// to be the one judged.
func walkLinks(p string, missingLast, judge bool) (real string, id fileID, err error) {
	rest, euid, err := walkStart(p)
	if err != nil {
		return "", id, err
	}
	held, err := os.Stat("/") // the directory walked last, to judge the one under it
	if err != nil {
		return "", id, err
	}
	id = idOf(held)
	resolved := "/"
	for links := 0; len(rest) > 0; {
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			resolved = filepath.Dir(resolved)
			if held, err = os.Stat(resolved); err != nil {
				return "", id, err
			}
			id = idOf(held)
			continue
		}
		next := filepath.Join(resolved, c)
		fi, err := os.Lstat(next)
		if errors.Is(err, fs.ErrNotExist) && missingLast && len(rest) == 0 {
			return next, fileID{}, nil
		}
		if err != nil {
			return "", id, err
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			if len(rest) > 0 && !fi.IsDir() {
				return "", id, &fs.PathError{Op: "lstat", Path: next, Err: syscall.ENOTDIR}
			}
			if judge && fi.IsDir() {
				uid, _, ok := ownerOf(fi)
				puid, pgid, _ := ownerOf(held)
				if ok {
					if err := foreignDir(next, uid, euid, held.Mode(), puid, pgid, nil); err != nil {
						return "", id, err
					}
				}
			}
			held, id, resolved = fi, idOf(fi), next
			continue
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 && int(st.Uid) != euid {
			return "", id, &UntrustedLinkError{Link: next, UID: int(st.Uid)}
		}
		if links++; links > 255 {
			return "", id, errors.New("EvalSymlinks: too many links")
		}
		target, err := os.Readlink(next)
		if err != nil {
			return "", id, err
		}
		// The same link still there (as far as a second look can tell).
		if again, err := os.Lstat(next); err != nil || !os.SameFile(fi, again) {
			return "", id, &fs.PathError{Op: "readlink", Path: next, Err: errors.New("the link changed while it was read")}
		}
		if filepath.IsAbs(target) {
			resolved = "/"
			if held, err = os.Stat("/"); err != nil {
				return "", id, err
			}
			id = idOf(held)
		}
		rest = append(strings.Split(target, "/"), rest...)
	}
	return resolved, id, nil
}

// HasACL is false: POSIX ACLs are read on Linux alone.
func HasACL(string) bool { return false }
