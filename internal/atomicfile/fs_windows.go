//go:build windows

package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/windows"
)

// Windows has neither O_NOFOLLOW nor FIFOs to block on: an open of a name Lstat found to be
// a regular file reads that file (os.Root refuses links that leave the directory).
const (
	noFollow = 0
	nonBlock = 0
)

// createFlags add nothing to the open of a temp file (see fs_openat2.go).
const createFlags = 0

// dirSync is false: Windows cannot fsync a directory (FlushFileBuffers needs a handle open for
// writing, which a directory's is not: "Access is denied"). The rename is MoveFileEx's with
// write-through instead, on disk when it returns.
const dirSync = false

// ownerOf reports no owner: Windows files carry ACLs, which the install inherits from the
// directory (the agent refuses owner and perms there).
func ownerOf(fs.FileInfo) (uid, gid int, ok bool) { return 0, 0, false }

// linksOf is not known from a FileInfo on Windows.
func linksOf(fs.FileInfo) (n uint64, ok bool) { return 0, false }

// rename replaces to with from, both names in d, with MoveFileEx: replace-existing, and
// write-through, so that the move is on disk when it returns (a directory cannot be fsynced).
// A long path is given in its \\?\ form, a read-only destination loses that attribute for the
// move (the staged file has the one Stage gave it), and a file another process holds is tried
// again for about two seconds, as Go's own tools do on Windows (see mover).
func (d *dir) rename(from, to string) error {
	src, err := windows.UTF16PtrFromString(extendedPath(d.join(from)))
	if err != nil {
		return err
	}
	dst, err := windows.UTF16PtrFromString(extendedPath(d.join(to)))
	if err != nil {
		return err
	}
	err = mover{
		move: func() error {
			return windows.MoveFileEx(src, dst, windows.MOVEFILE_REPLACE_EXISTING|windows.MOVEFILE_WRITE_THROUGH)
		},
		transient: transient,
		readOnly:  func() (func(), bool) { return clearReadOnly(dst) },
		now:       time.Now,
		sleep:     time.Sleep,
	}.run()
	if err != nil {
		return &os.LinkError{Op: "rename", Old: d.join(from), New: d.join(to), Err: err}
	}
	return nil
}

// clearReadOnly clears the read-only attribute of the file name (not of a link's target) and
// returns what sets it again; ok is false when it had none.
func clearReadOnly(name *uint16) (restore func(), ok bool) {
	attrs, err := windows.GetFileAttributes(name)
	if err != nil || attrs&windows.FILE_ATTRIBUTE_READONLY == 0 || attrs&windows.FILE_ATTRIBUTE_REPARSE_POINT != 0 {
		return nil, false
	}
	if windows.SetFileAttributes(name, attrs&^windows.FILE_ATTRIBUTE_READONLY) != nil {
		return nil, false
	}
	return func() { _ = windows.SetFileAttributes(name, attrs) }, true
}

// transient reports whether a move failed because another process holds one of the files.
func transient(err error) bool {
	return errors.Is(err, windows.ERROR_ACCESS_DENIED) || errors.Is(err, windows.ERROR_SHARING_VIOLATION) ||
		errors.Is(err, windows.ERROR_LOCK_VIOLATION)
}

// openDir opens the directory at p and names it by the path of the handle opened: the one
// Windows resolved, through symbolic links, junctions and other mount points alike
// (filepath.EvalSymlinks follows symbolic links only), so that Options.Allowed is asked about
// where the file really goes, not where a junction planted on the way seems to put it. The
// rename goes through that path: MoveFileEx takes names, not a handle.
func openDir(p string) (*dir, error) {
	r, err := os.OpenRoot(p)
	if err != nil {
		return nil, fmt.Errorf("directory: %w", err)
	}
	f, err := r.Open(".")
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("directory: %w", err)
	}
	real, err := finalPath(f)
	f.Close()
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("directory %s: %w", p, err)
	}
	return &dir{root: r, path: real}, nil
}

// Flags of GetFinalPathNameByHandle (x/sys/windows has no names for them): the normalized
// name, with the volume as a drive letter.
const (
	fileNameNormalized = 0x0
	volumeNameDOS      = 0x0
)

// finalPath is the path of the file or directory f is open on, every link and mount point on
// its way resolved, in its DOS form (C:\dir, \\server\share\dir).
func finalPath(f *os.File) (string, error) {
	buf := make([]uint16, windows.MAX_PATH)
	for {
		n, err := windows.GetFinalPathNameByHandle(windows.Handle(f.Fd()), &buf[0], uint32(len(buf)), fileNameNormalized|volumeNameDOS)
		if err != nil {
			return "", fmt.Errorf("resolve its path: %w", err)
		}
		if int(n) < len(buf) {
			return dosPath(windows.UTF16ToString(buf[:n])), nil
		}
		buf = make([]uint16, n) // n is the size needed, with the terminating NUL
	}
}

// RealDir returns the path of directory p with every link and mount point on its way resolved:
// the path that Options.Allowed is given for the files Write installs in p.
func RealDir(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return finalPath(f)
}

// evalLinks is filepath.EvalSymlinks (Windows files carry ACLs, not the owner checked on Unix).
func evalLinks(p string) (string, error) { return filepath.EvalSymlinks(p) }

// evalLinksToCreate is evalLinks: a link that leads nowhere is an error here, as before.
func evalLinksToCreate(p string) (string, error) { return filepath.EvalSymlinks(p) }

// wayProblem is nil: directories carry ACLs here, not the owner judged on Unix (fs_unix.go).
func wayProblem(string) error { return nil }

// foreignMade is nil: see wayProblem.
func foreignMade(string, fs.FileInfo, fs.FileInfo) error { return nil }

// spares is false: Options.Spare keeps nothing on Windows, whose installs go on as without it.
const spares = false

// holdStaged takes no lock on Windows: RemoveLeftovers goes by the files' times alone.
func holdStaged(*os.File) {}

// heldByOther is false on Windows (see holdStaged).
func heldByOther(*os.File) bool { return false }
