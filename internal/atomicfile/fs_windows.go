//go:build windows

package atomicfile

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/windows"
)

// Windows has neither O_NOFOLLOW nor FIFOs to block on: an open of a name Lstat found to be
// a regular file reads that file (os.Root refuses links that leave the directory).
const (
	noFollow = 0
	nonBlock = 0
)

// ownerOf reports no owner: Windows files carry ACLs, which the install inherits from the
// directory (the agent refuses owner and perms there).
func ownerOf(fs.FileInfo) (uid, gid int, ok bool) { return 0, 0, false }

// rename replaces to with from, both names in d, with MoveFileEx: replace-existing, and
// write-through, so that the move is on disk when it returns (a directory cannot be fsynced).
func (d *dir) rename(from, to string) error {
	src, err := windows.UTF16PtrFromString(d.join(from))
	if err != nil {
		return err
	}
	dst, err := windows.UTF16PtrFromString(d.join(to))
	if err != nil {
		return err
	}
	if err := windows.MoveFileEx(src, dst, windows.MOVEFILE_REPLACE_EXISTING|windows.MOVEFILE_WRITE_THROUGH); err != nil {
		return &os.LinkError{Op: "rename", Old: d.join(from), New: d.join(to), Err: err}
	}
	return nil
}

// openDir opens the directory at p, its links resolved.
func openDir(p string) (*dir, error) {
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return nil, fmt.Errorf("directory: %w", err)
	}
	r, err := os.OpenRoot(real)
	if err != nil {
		return nil, fmt.Errorf("directory: %w", err)
	}
	return &dir{root: r, path: real}, nil
}
