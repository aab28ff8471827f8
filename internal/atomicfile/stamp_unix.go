//go:build !windows

package atomicfile

import (
	"errors"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// lstamp stamps the entry at path, not following a link, and says whether it is one.
func lstamp(path string) (fileStamp, bool, error) {
	var st unix.Stat_t
	if err := retryEINTR(func() error { return unix.Lstat(path, &st) }); err != nil {
		return fileStamp{}, false, &fs.PathError{Op: "lstat", Path: path, Err: err}
	}
	return stampOfStat(&st), st.Mode&unix.S_IFMT == unix.S_IFLNK, nil
}

// stampFollow stamps the file path leads to.
func stampFollow(path string) (fileStamp, error) {
	var st unix.Stat_t
	if err := retryEINTR(func() error { return unix.Stat(path, &st) }); err != nil {
		return fileStamp{}, &fs.PathError{Op: "stat", Path: path, Err: err}
	}
	return stampOfStat(&st), nil
}

// fstamp stamps the open file f.
func fstamp(f *os.File) (fileStamp, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return fileStamp{}, err
	}
	var st unix.Stat_t
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = retryEINTR(func() error { return unix.Fstat(int(fd), &st) })
	}); err != nil {
		return fileStamp{}, err
	}
	if serr != nil {
		return fileStamp{}, &fs.PathError{Op: "fstat", Path: f.Name(), Err: serr}
	}
	return stampOfStat(&st), nil
}

func stampOfStat(st *unix.Stat_t) fileStamp {
	return fileStamp{dev: uint64(st.Dev), ino: uint64(st.Ino), size: st.Size, mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano(),
		mode: uint32(st.Mode), uid: st.Uid, gid: st.Gid}
}

// retryEINTR calls f again while it is interrupted by a signal (a stat on a network file system).
func retryEINTR(f func() error) error {
	for {
		if err := f(); !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}
