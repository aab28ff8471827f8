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

// Flags of the opens that read a file found with Lstat: never through a link swapped in since,
// and never blocking on a FIFO planted at the name.
const (
	noFollow = syscall.O_NOFOLLOW
	nonBlock = syscall.O_NONBLOCK
)

// dirSync is true: a directory is fsynced after a rename in it, so that the rename survives a crash.
const dirSync = true

// RealDir returns the path of directory p with every symbolic link on its way resolved: the
// path that Options.Allowed is given for the files Write installs in p.
func RealDir(p string) (string, error) { return filepath.EvalSymlinks(p) }

// ownerOf returns the owner and group of a file.
func ownerOf(fi fs.FileInfo) (uid, gid int, ok bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, false
	}
	return int(st.Uid), int(st.Gid), true
}

// linksOf answers how many names (hard links) the file of fi has, when the system says.
func linksOf(fi fs.FileInfo) (n uint64, ok bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return uint64(st.Nlink), true
}

// rename renames from over to, both names in d: rename(2) replaces to atomically.
func (d *dir) rename(from, to string) error { return d.root.Rename(from, to) }

// openDir opens the directory at p: its symbolic links are resolved first, following only
// those of root's and of this process's user (another's is an *UntrustedLinkError), and each
// directory on the way is judged (a *ForeignDirError: another user's directory where others may
// write, which its owner may have made there first). Then the real path is opened from / one
// component at a time, each checked to be the very directory (device and inode) that was there
// without a link, so that the handle is the directory at that real path even if a component is
// swapped for a link meanwhile; and the directory opened is checked to be the one judged. Where
// the kernel can refuse links itself (openNoLinks), the real path is opened in a few calls
// instead of a few per component.
func openDir(p string) (*dir, error) {
	real, judged, err := walkLinks(p, false, true)
	if err != nil {
		return nil, fmt.Errorf("directory: %w", err)
	}
	d := openNoLinks(real)
	if d == nil {
		if d, err = walkDir(real); err != nil {
			return nil, err
		}
	}
	if id, err := d.identity(); err != nil || idOf(id) != judged {
		d.close()
		return nil, fmt.Errorf("directory %s: it changed while it was opened", real)
	}
	return d, nil
}

// walkDir opens the directory at real, a path free of links, from / one component at a time.
func walkDir(real string) (*dir, error) {
	r, err := os.OpenRoot("/")
	if err != nil {
		return nil, fmt.Errorf("directory: %w", err)
	}
	at := "/"
	var id fs.FileInfo
	for _, c := range strings.Split(real, "/") {
		if c == "" {
			continue
		}
		at = filepath.Join(at, c)
		fi, err := r.Lstat(c)
		if err == nil && !fi.IsDir() {
			err = fmt.Errorf("not a directory (%s): it changed while it was opened", fi.Mode().Type())
		}
		var next *os.Root
		if err == nil {
			next, err = r.OpenRoot(c)
		}
		if err == nil {
			var now fs.FileInfo
			if now, err = next.Stat("."); err == nil && !os.SameFile(fi, now) {
				err = errors.New("it changed while it was opened")
			}
			id = now
			if err != nil {
				next.Close()
			}
		}
		r.Close()
		if err != nil {
			return nil, fmt.Errorf("directory %s: %w", at, err)
		}
		r = next
	}
	return &dir{root: r, path: real, id: id}, nil
}

// wayProblem is the error of the way to directory p as openDir judges it (a link another user
// owns, another user's directory where others may write), or nil, without opening p: for an
// answer given by name (unchanged).
func wayProblem(p string) error {
	_, _, err := walkLinks(p, false, true)
	return err
}

// foreignMade is foreignDir of the directory at, found (fi) in the directory parent (its stat).
// An ACL of parent's is not read: the install that follows walks the path again and judges it
// (walkLinks), so that nothing is written in a directory that a user the ACL names made there.
func foreignMade(at string, fi, parent fs.FileInfo) error {
	uid, _, ok := ownerOf(fi)
	if !ok {
		return nil
	}
	puid, pgid, _ := ownerOf(parent)
	return foreignDir(at, uid, os.Geteuid(), parent.Mode(), puid, pgid, nil)
}

// spares is true: Options.Spare keeps a spare file beside a destination (see spare.go).
const spares = true

// holdStaged takes a shared lock (flock) on f, a handle on a staged file, for as long as f is
// open: RemoveLeftovers leaves a file so held alone, another process's install in progress.
// A lock not taken costs only that protection.
func holdStaged(f *os.File) {
	_ = flockFile(f, syscall.LOCK_SH|syscall.LOCK_NB)
}

// heldByOther reports whether another open handle holds a lock on f's file (holdStaged).
func heldByOther(f *os.File) bool {
	return errors.Is(flockFile(f, syscall.LOCK_EX|syscall.LOCK_NB), syscall.EWOULDBLOCK)
}

func flockFile(f *os.File, how int) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) {
		ferr = retryEINTR(func() error { return syscall.Flock(int(fd), how) })
	}); err != nil {
		return err
	}
	return ferr
}
