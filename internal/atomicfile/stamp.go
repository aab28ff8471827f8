package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
)

// Stamp is what a file's metadata says of it, so that a later look tells, without reading the
// file, whether it may have changed since: its identity (device and inode), size, modification
// and change times, type and mode, and owner; when its name is a symbolic link, the same of the
// link too. An edit in place moves the times (the change time even when the modification time
// is set back), a replacement the identity, chmod and chown the change time; a read moves
// nothing. Stamps compare with ==. Where a stat gives no identity nor change time (Windows),
// a file replaced by one of the same size and modification time has the same Stamp.
type Stamp struct {
	link fileStamp // the name's own entry when it is a symbolic link
	file fileStamp // the file (where the link leads)
}

// fileStamp is a stat's fields that a Stamp compares.
type fileStamp struct {
	dev, ino     uint64
	size         int64
	mtime, ctime int64 // nanoseconds
	mode         uint32
	uid, gid     uint32
}

// Exists reports whether there was a file (a link that leads nowhere is none).
func (s Stamp) Exists() bool { return s.file != fileStamp{} }

// StampOf stamps the file at path, following a symbolic link there as Write does. A missing
// file (or a link leading nowhere) is a Stamp that does not exist, not an error.
func StampOf(path string) (Stamp, error) {
	var s Stamp
	f, isLink, err := lstamp(path)
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("stamp %s: %w", path, err)
	}
	if !isLink {
		s.file = f
		return s, nil
	}
	s.link = f
	s.file, err = stampFollow(path)
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return Stamp{}, fmt.Errorf("stamp %s: %w", path, err)
	}
	return s, nil
}

// Wrote reports whether st, a Stamp of the destination taken after Install, is of the very file
// Install put in place, untouched since: the staged file's identity, size, modification time,
// mode and owner (the rename moves only its change time). Callers keep st, not a Stamp taken
// later, to compare with: an edit between the rename and st makes Wrote false.
func (s *Staged) Wrote(st Stamp) bool {
	w := s.written
	if w == (fileStamp{}) {
		return false
	}
	w.ctime = st.file.ctime
	return st.file == w
}
