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
	data, err = readSized(f, held.Size(), limit)
	return data, held, err
}

// WaitLimit bounds how long a read waits for the bytes of a file that waits for them.
const WaitLimit = 2 * time.Second

// readWithin reads f whole, at most limit bytes when limit is not negative. A file the kernel
// calls regular may still wait for its bytes (/proc/kmsg, until the kernel logs something):
// opened without blocking, its reads wait in Go's poller, which a deadline bounds (the error is
// os.ErrDeadlineExceeded). Files on a disk are not polled (the deadline does not take) and never
// wait.
func readWithin(f *os.File, limit int64) ([]byte, error) { return readSized(f, 0, limit) }

// maxSizeHint bounds the buffer readSized makes from a file's size before reading: a sparse
// file claiming terabytes is read as it comes, not given the memory at once.
const maxSizeHint = 1 << 20

// readSized is readWithin of a file whose stat said it holds size bytes: one read of them
// and one that finds the end, where io.ReadAll's doubling buffer takes eight reads for 4 KiB
// (proc files say 0 and are read as they come).
func readSized(f *os.File, size, limit int64) ([]byte, error) {
	_ = f.SetReadDeadline(time.Now().Add(WaitLimit))
	n := min(max(size, 0), maxSizeHint) + 1 // one byte more, to find the end in the same read
	if limit >= 0 {
		n = min(n, limit)
	}
	buf := make([]byte, 0, max(n, 512))
	for {
		if limit >= 0 && int64(len(buf)) >= limit {
			return buf, nil
		}
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)] // room to read more
		}
		room := buf[len(buf):cap(buf)]
		if limit >= 0 {
			room = room[:min(int64(len(room)), limit-int64(len(buf)))]
		}
		m, err := f.Read(room)
		buf = buf[:len(buf)+m]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// Restrict sets the file at name to perm when it is still the file read (same device and
// inode), by a handle opened without following a symbolic link at the name: a file swapped in
// at the name after it was read, or a link planted there, is left alone (false). It answers
// whether the mode was changed. A file of more than one name (a hard link) is left alone too,
// with an error: its mode is the other names' as well, files this one was never asked about.
func Restrict(name string, read fs.FileInfo, perm fs.FileMode) (bool, error) {
	f, err := os.OpenFile(name, os.O_RDONLY|noFollow|nonBlock, 0)
	if err != nil {
		return false, err
	}
	defer f.Close()
	held, err := f.Stat()
	if err != nil || !os.SameFile(held, read) || held.Mode().Perm() == perm {
		return false, err
	}
	if n, ok := linksOf(held); ok && n > 1 {
		return false, fmt.Errorf("%s has %d hard links: its mode, the other names' too, is left as it is", name, n)
	}
	if err := f.Chmod(perm); err != nil {
		return false, err
	}
	return true, nil
}
