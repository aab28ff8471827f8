package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// ReadInput reads the regular file at path (symbolic links followed) of at most max bytes
// (max <= 0: no bound). Anything else is an error saying what it is: the open does not block,
// so that a named pipe at the name (a config, a template source, a CA file given by mistake)
// is refused at once instead of hanging the reader for good, SIGTERM included, and a device
// such as /dev/zero is not read until memory runs out.
func ReadInput(path string, max int64) ([]byte, error) { return ReadInputCheck(path, max, nil) }

// ReadInputCheck is ReadInput, with check (when not nil) asked about the file opened before
// anything of it is read; its error comes as it is.
func ReadInputCheck(path string, max int64, check func(fs.FileInfo) error) ([]byte, error) {
	limit := int64(-1)
	if max > 0 {
		limit = max + 1
	}
	b, fi, err := readRegular(nil, path, 0, limit, check)
	var nr *NotRegularError
	switch {
	case errors.As(err, &nr):
		return nil, fmt.Errorf("%s is %s, not a regular file", path, TypeName(nr.Mode))
	case errors.Is(err, os.ErrDeadlineExceeded) && fi != nil:
		return nil, fmt.Errorf("%s waited more than %s for its bytes (as /proc/kmsg does): not a file to read", path, WaitLimit)
	case err != nil && fi != nil:
		return nil, fmt.Errorf("read %s: %w", path, err)
	case err != nil:
		return nil, err
	case max > 0 && int64(len(b)) > max:
		return nil, &TooLargeError{Path: path, Max: max}
	}
	return b, nil
}

// TypeName says in words what kind of file a mode is, for messages ("a directory", "a named
// pipe (FIFO)"), where fs.FileMode.Type prints "d---------".
func TypeName(m fs.FileMode) string {
	switch t := m.Type(); {
	case t == 0:
		return "a regular file"
	case t&fs.ModeDir != 0:
		return "a directory"
	case t&fs.ModeSymlink != 0:
		return "a symbolic link"
	case t&fs.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case t&fs.ModeSocket != 0:
		return "a socket"
	case t&fs.ModeCharDevice != 0:
		return "a character device"
	case t&fs.ModeDevice != 0:
		return "a device"
	default:
		return fmt.Sprintf("an irregular file (%s)", t)
	}
}

// TooLargeError is ReadInput's error for a file over its bound.
type TooLargeError struct {
	Path string
	Max  int64
}

func (e *TooLargeError) Error() string { return fmt.Sprintf("%s is over %d bytes", e.Path, e.Max) }
