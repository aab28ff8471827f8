//go:build linux && (386 || amd64 || arm || arm64 || loong64 || ppc64 || ppc64le || riscv64 || s390x)

package atomicfile

import (
	"os"
	"runtime"
	"syscall"
	"unsafe"
)

// openat2(2): its number (the same on these architectures) and resolve flags (linux/openat2.h).
const (
	sysOpenat2          = 437
	atFDCWD             = -100
	resolveNoMagiclinks = 0x02
	resolveNoSymlinks   = 0x04
)

// openHow is struct open_how.
type openHow struct {
	flags, mode, resolve uint64
}

// openNoLinks opens the directory at p, an absolute clean path, when no component of it is a
// symbolic link, and returns nil otherwise (then openDir walks it, which also says why it
// fails) or where openat2 is missing (Linux before 5.6, a seccomp filter). The kernel refuses
// any link in its one resolution of p (RESOLVE_NO_SYMLINKS), so the handle is the directory
// at p free of links, as openDir's walk makes it. The os.Root of the same directory is opened
// by p, then checked to be that very directory (device and inode): a link swapped in between
// fails the check.
func openNoLinks(p string) *dir {
	path, err := syscall.BytePtrFromString(p)
	if err != nil {
		return nil
	}
	how := openHow{flags: syscall.O_RDONLY | syscall.O_DIRECTORY | syscall.O_CLOEXEC, resolve: resolveNoSymlinks | resolveNoMagiclinks}
	cwd := atFDCWD
	fd, _, errno := syscall.Syscall6(sysOpenat2, uintptr(cwd), uintptr(unsafe.Pointer(path)), uintptr(unsafe.Pointer(&how)), unsafe.Sizeof(how), 0, 0)
	runtime.KeepAlive(path)
	if errno != 0 {
		return nil
	}
	f := os.NewFile(fd, p)
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
	return &dir{root: r, path: p, f: f}
}
