package atomicfile

import "time"

// SetLinkUnnamed replaces the link that names an unnamed spare, for a test; the returned func
// restores it, and unnamed spares with it.
func SetLinkUnnamed(f func(fd, dirfd int, name string) error) (restore func()) {
	old, was := linkFD, noUnnamed.Load()
	linkFD = f
	return func() { linkFD = old; noUnnamed.Store(was) }
}

// MaxUnnamed is how many unnamed spares are held at most.
const MaxUnnamed = maxUnnamed

// DropUnnamedSpares closes the unnamed spares held, for a test's cleanup (without turning them
// off, as dropUnnamed does).
var DropUnnamedSpares = closeUnnamed

// SetOpenUnnamed replaces the open that makes an unnamed spare, for a test; the returned func
// restores it, and forgets the devices found without unnamed files meanwhile.
func SetOpenUnnamed(f func(dirfd int) (int, error)) (restore func()) {
	old := openUnnamed
	openUnnamed = f
	return func() {
		openUnnamed = old
		unnamed.Lock()
		unnamed.without = nil
		unnamed.Unlock()
	}
}

// SetBurstGap sets how soon after its making a spare taken makes the next one of its file go
// without its first block, for a test; the returned func restores it.
func SetBurstGap(d time.Duration) (restore func()) {
	old := burstGap
	burstGap = d
	return func() { burstGap = old }
}
