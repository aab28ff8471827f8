package atomicfile

import (
	"fmt"
	"strings"
	"time"
)

// moveRetryFor is how long the Windows rename tries again a move that another process keeps
// from happening (a file open without FILE_SHARE_DELETE: a virus scanner, an indexer, a
// service reading its config).
const moveRetryFor = 2 * time.Second

// mover is the Windows rename's steps around MoveFileEx, apart from the calls so that their
// order is tested on every system (fs_windows.go fills it in).
type mover struct {
	move      func() error     // MoveFileEx, replace-existing and write-through
	transient func(error) bool // another process holds one of the files: try again
	// readOnly clears the destination's read-only attribute when it has one, which MoveFileEx
	// refuses to replace ("Access is denied"), and returns what puts it back.
	readOnly func() (restore func(), ok bool)
	now      func() time.Time
	sleep    func(time.Duration)
}

// run moves, clearing a read-only attribute of the destination after the first failure (and
// setting it again when the move still fails), and trying a transient failure again for
// moveRetryFor. The installed file has the attributes of the staged one, which Stage copied
// from the file it replaces: a read-only file stays read-only.
func (m mover) run() error {
	var restore func()
	wait := 10 * time.Millisecond
	start := m.now()
	for {
		err := m.move()
		if err == nil {
			return nil
		}
		if restore == nil {
			if r, ok := m.readOnly(); ok {
				restore = r
				continue
			}
		}
		if !m.transient(err) {
			if restore != nil {
				restore()
			}
			return err
		}
		if m.now().Sub(start) >= moveRetryFor {
			if restore != nil {
				restore()
			}
			return fmt.Errorf("%w (tried again for %s: another process holds the file open)", err, moveRetryFor)
		}
		m.sleep(wait)
		wait = min(2*wait, 200*time.Millisecond)
	}
}

// longPathAt is the length from which a path given to a Windows call by name (MoveFileEx)
// needs the \\?\ prefix, as Go's os package counts it (MAX_PATH less an 8.3 name): without it
// such a call fails unless long paths are enabled in the registry, which they are not by
// default.
const longPathAt = 248

// extendedPath returns p, an absolute clean Windows path as finalPath gives (C:\dir\name,
// \\server\share\dir\name), in the \\?\ form when it is long: the temp file beside a
// destination of some 230 characters was created (through the directory's handle) but could
// not be renamed over it. Pure, so that it is tested on every system.
func extendedPath(p string) string {
	switch {
	case len(p) < longPathAt, strings.HasPrefix(p, `\\?\`), strings.HasPrefix(p, `\??\`), strings.HasPrefix(p, `\\.\`):
		return p
	case strings.HasPrefix(p, `\\`):
		return `\\?\UNC\` + p[2:]
	case len(p) >= 3 && p[1] == ':' && p[2] == '\\':
		return `\\?\` + p
	}
	return p
}
