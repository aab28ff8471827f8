package atomicfile

// SetLinkUnnamed replaces the link that names an unnamed spare, for a test; the returned func
// restores it, and unnamed spares with it.
func SetLinkUnnamed(f func(fd, dirfd int, name string) error) (restore func()) {
	old, was := linkFD, noUnnamed.Load()
	linkFD = f
	return func() { linkFD = old; noUnnamed.Store(was) }
}
