package atomicfile

import "os"

// SetFchown replaces the chown of the staged file for a test; the returned func restores it.
func SetFchown(f func(file *os.File, uid, gid int) error) (restore func()) {
	old := fchown
	fchown = f
	return func() { fchown = old }
}

// SetLink replaces the hard link of the backup for a test.
func SetLink(f func(r *os.Root, oldname, newname string) error) (restore func()) {
	old := link
	link = f
	return func() { link = old }
}

// SetFsync replaces the fsync of the directory (and of a file named after its own fsync) for a
// test.
func SetFsync(f func(dir *os.File) error) (restore func()) {
	old := fsync
	fsync = f
	return func() { fsync = old }
}

// ReadWithin is readWithin, for tests.
var ReadWithin = readWithin

// SetBetween sets the hook Stage calls between two looks at the destination (see between).
func SetBetween(f func(step string)) (restore func()) {
	old := between
	between = f
	return func() { between = old }
}

// PreviousData is the content p keeps.
func PreviousData(p *Previous) []byte { return p.data }

// FileSpares has spares made as files beside their destinations, as where Linux cannot make
// unnamed ones (and on other systems), for a test of those; the returned func restores it.
func FileSpares() (restore func()) {
	old := noUnnamed.Swap(true)
	return func() { noUnnamed.Store(old) }
}
