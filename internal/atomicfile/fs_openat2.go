//go:build linux

package atomicfile

import (
	"os"

	"golang.org/x/sys/unix"
)

// createFlags open a temp file without blocking: Linux ignores it for a regular file, and Go,
// finding a descriptor already non-blocking, spares the four fcntl calls it makes on its way
// to finding that a regular file cannot be polled.
const createFlags = unix.O_NONBLOCK

// openNoLinks opens the directory at p, an absolute clean path, when no component of it is a
// symbolic link, and returns nil otherwise (then openDir walks it, which also says why it
// fails) or where openat2 is missing (Linux before 5.6, a seccomp filter). The kernel refuses
// any link in its one resolution of p (RESOLVE_NO_SYMLINKS), so the handle is the directory
// at p free of links, as openDir's walk makes it. The os.Root of the same directory is opened
// by p, then checked to be that very directory (device and inode): a link swapped in between
// fails the check.
func openNoLinks(p string) *dir {
	fd, err := unix.Openat2(unix.AT_FDCWD, p, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return nil
	}
	f := os.NewFile(uintptr(fd), p)
	r, err := os.OpenRoot(p)
	if err != nil {
		f.Close()
		return nil
	}
	held, err1 := f.Stat()
	opened, err2 := r.Stat(".")
	if err1 != nil || err2 != nil || !os.SameFile(held, opened) {
		r.Close()
		f.Close()
		return nil
	}
	return &dir{root: r, path: p, f: f, id: held}
}
