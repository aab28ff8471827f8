package atomicfile

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"
)

// NotRegularError is a file ReadRegular refused because it is not a regular file.
type NotRegularError struct {
	Path string
	Mode fs.FileMode
}

func (e *NotRegularError) Error() string {
	return fmt.Sprintf("%s is not a regular file (%s)", e.Path, e.Mode.Type())
}

// ReadRegular reads the regular file name: a path, or, when root is not nil, a name in root.
// It is opened without following a symbolic link at the name nor blocking on a FIFO planted
// there (where the system has either: see noFollow), and judged by its handle, not by name:
// whoever may write the directory can swap something else in at the name between a check by
// name and the open. check, when set, is asked about what the handle is before anything is
// read; limit, when not negative, bounds the bytes read.
//
// The error of the open, of the handle's stat or of check comes as it is, a file that is not
// regular as a *NotRegularError, and fi is nil with them; fi is set once the file passed, so
// that an error with a fi is the read's.
func ReadRegular(root *os.Root, name string, limit int64, check func(fs.FileInfo) error) (data []byte, fi fs.FileInfo, err error) {
	return readRegular(root, name, noFollow, limit, check)
}

// ReadRegularFollow is ReadRegular of a path, a symbolic link at it followed: for a name whose
// links are the user's to make (a template's file), the file the link leads to is judged by
// its handle all the same.
func ReadRegularFollow(name string, limit int64, check func(fs.FileInfo) error) (data []byte, fi fs.FileInfo, err error) {
	return readRegular(nil, name, 0, limit, check)
}

// readRegular is ReadRegular, a symbolic link at the name followed unless flags holds noFollow.
func readRegular(root *os.Root, name string, flags int, limit int64, check func(fs.FileInfo) error) (data []byte, fi fs.FileInfo, err error) {
	var f *os.File
	if root != nil {
		f, err = root.OpenFile(name, os.O_RDONLY|flags|nonBlock, 0)
	} else {
		f, err = os.OpenFile(name, os.O_RDONLY|flags|nonBlock, 0)
	}
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	held, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	if !held.Mode().IsRegular() {
		return nil, nil, &NotRegularError{Path: name, Mode: held.Mode()}
	}
	if check != nil {
		if err := check(held); err != nil {
			return nil, nil, err
		}
	}
	data, err = readWithin(f, limit)
	return data, held, err
}

// WaitLimit bounds how long a read waits for the bytes of a file that waits for them.
const WaitLimit = 2 * time.Second

// readWithin reads f whole, at most limit bytes when limit is not negative. A file the kernel
// calls regular may still wait for its bytes (/proc/kmsg, until the kernel logs something):
// opened without blocking, its reads wait in Go's poller, which a deadline bounds (the error is
// os.ErrDeadlineExceeded). Files on a disk are not polled (the deadline does not take) and never
// wait.
func readWithin(f *os.File, limit int64) ([]byte, error) {
	_ = f.SetReadDeadline(time.Now().Add(WaitLimit))
	var r io.Reader = f
	if limit >= 0 {
		r = io.LimitReader(f, limit)
	}
	return io.ReadAll(r)
}
