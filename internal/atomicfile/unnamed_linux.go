package atomicfile

import (
	"errors"
	"os"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Unnamed spares (Linux): the spare kept for a destination (Options.Spare) is a file made in
// its directory without a name (O_TMPFILE) and held open by this process, instead of the file
// .<base>.shoelace-spare beside the destination (spare.go). Nothing is left in the directory,
// no other process can claim it, take it or put something in its place, and a process that
// ends takes its spares with it. The install that takes one writes and fsyncs it, then gives
// it a temp name (linkat), from which it goes on as a temp file does: checked, renamed over
// the destination, removed when the install fails. Its fsync writes the file alone: a file
// created with a name, on a file system without a journal (ext4), also has its directory
// written at its first fsync.
//
// Its link count on disk is 0 until the file is fsynced again once named (its fsync made it
// durable before it had a name: a fsync after the name would write the directory too). The
// directory's sync does that first (dir.linked), so that its fsync never makes the entry
// durable before the link it names (the kernel's writeback may still, without a journal, until
// then); a crash between the two leaves the file without an entry (fsck's lost+found, on a file
// system without a journal) and the destination as it was. The file is held for that second
// fsync read-only: a handle open for writing would keep it from being run (ETXTBSY).
//
// The spares are kept by directory (its device and inode: a directory made anew at the same
// path is another one; a spare holds its directory, whose inode is not reused while it is) and
// base name, only in a directory that no one but its owner (root or this process's user) may
// write, as the files beside their destinations are: a file takes the group and default ACL of
// its directory when it is made, and those of a shared directory may change between the making
// and the use. At most maxUnnamed are held: past that, the one made longest ago goes. Where one
// cannot be made (a file system without O_TMPFILE, the directory not opened by openat2) the
// spare is the file beside the destination, as on other systems; where one cannot be named
// (neither linkat's AT_EMPTY_PATH, which needs CAP_DAC_READ_SEARCH, nor /proc/self/fd) the
// install that finds it fails, those held are closed and none is made again. A file system
// that has no O_TMPFILE is remembered by its device, and not asked again. A held spare keeps
// its file system busy: it cannot be unmounted or remounted read-only while the process runs.

// maxUnnamed bounds the unnamed spares held at once: each is an open descriptor.
const maxUnnamed = 128

type unnamedKey struct {
	dir  fileID
	base string
}

var unnamed struct {
	sync.Mutex
	spares map[unnamedKey]unnamedSpare
	made   uint64 // spares made so far, for their order
	// without are the devices whose file system makes no file without a name (NFS, some FUSE
	// file systems): no spare is tried there again, which cost each install a failed open.
	without map[uint64]bool
	// burst are the keys whose spare was taken within burstGap of its making: the next is not
	// prefilled (see prefill). An entry goes when the next spare of its key is made.
	burst map[unnamedKey]bool
}

// burstGap is how soon after its making a spare taken says that its file changes in a burst:
// changes back to back, about a millisecond apart, where a prefill's write would still be on its
// way to the disk when the next change's fsync waits for it.
var burstGap = 3 * time.Millisecond

// unnamedSpare is a spare held, and when it was made (the number of spares made before it).
type unnamedSpare struct {
	f      *os.File
	made   uint64
	madeAt time.Time
}

// unnamedKeyOf is the key of base's spare in d.
func (d *dir) unnamedKeyOf(base string) (unnamedKey, bool) {
	fi, err := d.identity()
	if err != nil || d.f == nil {
		return unnamedKey{}, false
	}
	return unnamedKey{idOf(fi), base}, true
}

// takeUnnamed returns the unnamed spare kept for base in d, which is the caller's from then
// on (nil: none).
func (d *dir) takeUnnamed(base string) *os.File {
	k, ok := d.unnamedKeyOf(base)
	if !ok || noUnnamed.Load() {
		return nil
	}
	unnamed.Lock()
	defer unnamed.Unlock()
	sp := unnamed.spares[k]
	delete(unnamed.spares, k)
	if sp.f != nil && time.Since(sp.madeAt) < burstGap {
		if unnamed.burst == nil {
			unnamed.burst = map[unnamedKey]bool{}
		}
		unnamed.burst[k] = true
	}
	return sp.f
}

// makeUnnamed makes sure an unnamed spare is kept for base in d, and reports whether one is.
// The caller has found d its owner's alone (ownersOnly).
func (d *dir) makeUnnamed(base string) bool {
	k, ok := d.unnamedKeyOf(base)
	if !ok {
		return false
	}
	unnamed.Lock()
	defer unnamed.Unlock()
	if noUnnamed.Load() { // under the lock: dropUnnamed empties the map under it
		return false
	}
	if unnamed.spares[k].f != nil {
		return true
	}
	if unnamed.without[k.dir.dev] {
		return false
	}
	var fd int
	err := withFD(d.f, func(dirfd int) (err error) {
		fd, err = openUnnamed(dirfd)
		return err
	})
	if err != nil {
		// The spare is a file with a name. A file system without O_TMPFILE says so for good
		// (EOPNOTSUPP; EISDIR from a kernel that predates it); another error may pass.
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EISDIR) {
			if unnamed.without == nil {
				unnamed.without = map[uint64]bool{}
			}
			unnamed.without[k.dir.dev] = true
		}
		return false
	}
	if !unnamed.burst[k] {
		prefill(fd)
	}
	delete(unnamed.burst, k)
	if len(unnamed.spares) >= maxUnnamed {
		// The one made longest ago goes, once this one is made (a failed make evicts none): of
		// a template taken out of the config, a directory removed or replaced, or a file that
		// changes least.
		var oldest unnamedKey
		first := true
		for k, sp := range unnamed.spares {
			if first || sp.made < unnamed.spares[oldest].made {
				oldest, first = k, false
			}
		}
		unnamed.spares[oldest].f.Close()
		delete(unnamed.spares, oldest)
	}
	if unnamed.spares == nil {
		unnamed.spares = map[unnamedKey]unnamedSpare{}
	}
	unnamed.made++
	unnamed.spares[k] = unnamedSpare{os.NewFile(uintptr(fd), d.join(base)+" (its unnamed spare)"), unnamed.made, time.Now()}
	return true
}

// prefill gives the unnamed spare open at fd its first block: one byte, written at offset 0
// (the install's write starts there too, and covers it: an unnamed spare is taken only for a
// content of one byte or more), and handed to the disk without waiting (sync_file_range), so
// that the file system finds the block now, off the path from a write to the file. The fsync
// of the install that takes the spare then writes the data and the inode, not the block's
// allocation too (ext4: 0.30 against 0.42 ms at the median on this project's test host). A
// failure leaves the spare empty, as it was made. Not for a file that changes in a burst (its
// last spare taken within burstGap of its making): the next change would come while the
// prefill's write is on its way, and its fsync would wait for that write first.
func prefill(fd int) {
	if n, err := unix.Pwrite(fd, []byte{0}, 0); err == nil && n == 1 {
		unix.SyncFileRange(fd, 0, 1, unix.SYNC_FILE_RANGE_WRITE)
	}
}

// linkUnnamed gives f, an unnamed spare of d, a new temp name for base in d, and returns it.
// A name that exists is never replaced (linkat fails): another is tried.
func (d *dir) linkUnnamed(f *os.File, base string) (string, error) {
	name, err := d.freeTemp(base, func(name string) error {
		return withFD(d.f, func(dirfd int) error {
			return withFD(f, func(fd int) error { return linkFD(fd, dirfd, name) })
		})
	})
	if err != nil {
		if cannotName(err) && !d.removed() {
			dropUnnamed() // this process cannot name them: spares with a name from now on
		}
		return "", err
	}
	return name, nil
}

// cannotName reports whether err, of a link of an unnamed file, says that this process may
// not make such links: without CAP_DAC_READ_SEARCH, and without /proc.
func cannotName(err error) bool {
	return errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) || errors.Is(err, unix.ENOENT)
}

// removed reports whether d was removed (no link left): then a link in it fails with ENOENT.
func (d *dir) removed() bool {
	fi, err := d.f.Stat()
	if err != nil {
		return false
	}
	n, ok := linksOf(fi)
	return ok && n == 0
}

// dropUnnamed makes no unnamed spare from now on, and closes those held.
func dropUnnamed() {
	noUnnamed.Store(true)
	closeUnnamed()
}

// closeUnnamed closes the unnamed spares held.
func closeUnnamed() {
	unnamed.Lock()
	defer unnamed.Unlock()
	for k, sp := range unnamed.spares {
		sp.f.Close()
		delete(unnamed.spares, k)
	}
}

// openUnnamed makes a file without a name in the directory open at dirfd, mode 0600, and
// returns its descriptor (a test hook).
var openUnnamed = func(dirfd int) (int, error) {
	return unix.Openat(dirfd, ".", unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0o600)
}

// linkFD links the file open at fd to name in the directory open at dirfd (a test hook).
var linkFD = func(fd, dirfd int, name string) error {
	err := unix.Linkat(fd, "", dirfd, name, unix.AT_EMPTY_PATH)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EPERM) {
		// Without CAP_DAC_READ_SEARCH: through the descriptor's link in /proc.
		err = unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), dirfd, name, unix.AT_SYMLINK_FOLLOW)
	}
	return err
}

// withFD runs fn with f's descriptor, which stays f's.
func withFD(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// defaultACL reports whether d has a default ACL, which a file made in it takes (or whether it
// has cannot be told).
func (d *dir) defaultACL() bool {
	var n int
	var err error
	if d.f != nil {
		err = withFD(d.f, func(fd int) (err error) {
			n, err = unix.Fgetxattr(fd, "system.posix_acl_default", nil)
			return err
		})
	} else {
		n, err = unix.Getxattr(d.path, "system.posix_acl_default", nil)
	}
	if errors.Is(err, unix.ENODATA) || errors.Is(err, unix.EOPNOTSUPP) {
		return false
	}
	return err != nil || n > 0
}
