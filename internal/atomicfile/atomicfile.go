// Package atomicfile replaces files so that a reader sees either the old or the new
// content, never a part: the bytes go to a dot-prefixed temp file in the destination's
// directory, which is fsynced, given its owner and then its mode and checked before it is
// renamed over the destination; then the directory is fsynced. The directory is held open
// for the whole install and nothing is written through a name that may already exist. It
// imports only the standard library.
package atomicfile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"syscall"
)

// DefaultPerm is the mode of a new file when Options.Perm is 0.
const DefaultPerm os.FileMode = 0o644

// Keep is the UID or GID that keeps the current owner (or the process's for a new file).
const Keep = -1

// Options say how Write installs a file.
type Options struct {
	// Perm is the file's permission bits; 0 keeps the mode of an existing file
	// and gives a new one DefaultPerm.
	Perm os.FileMode
	// UID and GID set the owner; Keep (-1) keeps the current one. The zero value 0 is root.
	UID, GID int
	// Backup keeps the previous content as <path>.bak (a hard link, or a copy where hard links
	// fail), replaced atomically.
	Backup bool
	// Check, when set, runs on the staged temp file before the rename; an error leaves the
	// destination as it was and removes the temp file.
	Check func(staged string) error
	// Allowed, when set, is asked about the path Write will replace, free of links (a link at
	// path followed, its directory resolved and held open: see Write), and about its .bak with
	// Backup; an error leaves everything as it was. It lets a caller check the very path that
	// is written, not one resolved earlier. It is not asked when nothing changes.
	Allowed func(resolved string) error
	// BeforeRename, when set, runs once the file is staged, checked and backed up, right
	// before the rename that installs it (so only when Write will change the destination);
	// an error leaves the destination as it was. It lets a caller record what it owes for
	// the change (a command to run) before the change can be seen.
	BeforeRename func() error
	// DirSyncs, when set, defers the fsync of the directory after the rename to DirSyncs.Sync,
	// which the caller must call (until then Install holds the directory open).
	DirSyncs *DirSyncs
	// NoSync skips both fsyncs (of the file and of its directory): the reader still sees the
	// old or the new content, never a part, but a crash may leave the old one or, rarely, an
	// empty file. Only for files that are rewritten often and need not survive a crash.
	NoSync bool
	// NoFollow replaces a symbolic link at path instead of following it: for a program's own
	// files (its cache, its state), which must never be written where a link planted in their
	// directory leads. A named pipe, socket or device at path is replaced too (never opened),
	// rather than refused at every write: nothing the program keeps there could be saved again.
	NoFollow bool
	// Spare keeps an empty file ready for the next install of the destination to fill instead
	// of creating its temp file: it is made right after the rename (before the directory's
	// fsync), so that the cost of a new file is off the way of the next change. On Linux it is
	// a file without a name, held open by this process (see unnamed_linux.go), which the
	// install names once it is written and fsynced. Elsewhere on Unix, and where Linux cannot
	// make one, it is a file beside the destination, .<base>.shoelace-spare, which the install
	// claims by renaming it to a temp name of its own (see claimSpare), only in a directory
	// that no one but its owner (root or this process's user) may write; a file at that name is
	// used only when it is a regular file of this process's user, empty, with one name and mode
	// 0600. Anything else there is left alone and a temp file is created as without Spare.
	// Never with NoSync; none on Windows.
	Spare bool
	// KeepPrevious has Stage keep what the destination holds (bytes, mode, owner; or that it
	// does not exist), so that Staged.Previous().Restore can put it back after the install. A
	// file another user planted there, in a directory others may write, is kept as no file.
	KeepPrevious bool
	// MaxPrevious, when above 0, bounds what KeepPrevious keeps: a destination of more bytes is
	// not replaced (a *PreviousTooLargeError), as it could not be put back, and is not read.
	MaxPrevious int64
	// exactPerm makes Perm the mode even when it is 0 (Restore of a file of mode 0000), not
	// "keep the current mode", with its setuid, setgid and sticky bits (modeBits).
	exactPerm bool
}

// modeBits are the bits of a mode that Restore puts back: the permission bits and the setuid,
// setgid and sticky bits, which an install does not give (Options.Perm) but the file it replaced
// may have had.
const modeBits = fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky

// replaceable reports whether a file of mode m is neither a regular file, a directory nor a
// symbolic link (a named pipe, a socket, a device): what NoFollow replaces by name.
func replaceable(m fs.FileMode) bool {
	return m.Type()&(fs.ModeNamedPipe|fs.ModeSocket|fs.ModeDevice|fs.ModeCharDevice) != 0
}

// errReplaced is sameFile's answer when the file opened is not the one stat found.
var errReplaced = errors.New("replaced since it was looked at")

// CheckError is the error of a failed Options.Check.
type CheckError struct {
	Path string
	Err  error
}

func (e *CheckError) Error() string { return fmt.Sprintf("check %s: %v", e.Path, e.Err) }
func (e *CheckError) Unwrap() error { return e.Err }

// Unchanged reports whether path already holds data with the mode and owner opts ask for,
// in which case Write does nothing.
func Unchanged(path string, data []byte, opts Options) (bool, error) {
	path, fi, err := resolve(path)
	if err != nil {
		return false, err
	}
	same, _, err := unchanged(path, fi, data, opts)
	return same, err
}

// seen is the file at a destination as unchanged read it, by name, to compare it with what is
// to be installed: Stage keeps it as the previous content when the file it then finds in the
// directory it holds is that very one (same device and inode), instead of reading it again.
type seen struct {
	data  []byte
	fi    fs.FileInfo // the stat of the handle read
	whole bool        // data is all the file held: the read ended before its bound
}

// unchanged is Unchanged of a resolved path; fi is the Lstat of path when the caller has it
// (nil: unchanged stats path itself). When it had to read the file and found other bytes, it
// returns what it read.
func unchanged(path string, fi fs.FileInfo, data []byte, opts Options) (bool, *seen, error) {
	if fi == nil {
		stat := os.Stat
		if opts.NoFollow {
			stat = os.Lstat
		}
		var err error
		fi, err = stat(path)
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil, nil
		}
		if err != nil {
			return false, nil, fmt.Errorf("stat %s: %w", path, err)
		}
	}
	if fi.Mode()&fs.ModeSymlink != 0 || opts.NoFollow && replaceable(fi.Mode()) {
		return false, nil, nil // NoFollow: the link (or pipe, socket, device) is replaced
	}
	return sameFile(path, fi, data, opts)
}

func sameFile(path string, fi fs.FileInfo, data []byte, opts Options) (bool, *seen, error) {
	if !fi.Mode().IsRegular() {
		return false, nil, fmt.Errorf("%s is %s, not a regular file", path, TypeName(fi.Mode()))
	}
	if fi.Size() != int64(len(data)) {
		return false, nil, nil
	}
	if opts.exactPerm && fi.Mode()&modeBits != opts.Perm&modeBits || opts.Perm != 0 && fi.Mode().Perm() != opts.Perm.Perm() {
		return false, nil, nil
	}
	if uid, gid, ok := ownerOf(fi); ok {
		if opts.UID >= 0 && uid != opts.UID || opts.GID >= 0 && gid != opts.GID {
			return false, nil, nil
		}
	}
	// Read by ReadRegular, and the handle checked to be the file stat found: whoever may write
	// the directory can swap a FIFO (or a link) in at the name after the stat, and a blocking
	// open of a FIFO hangs the agent for good (SIGTERM included).
	limit := int64(len(data)) + 1
	between("stat")
	old, held, err := ReadRegular(nil, path, limit, func(now fs.FileInfo) error {
		if !os.SameFile(fi, now) {
			return errReplaced
		}
		return nil
	})
	if err != nil && held == nil {
		return false, nil, nil // gone or replaced since: not the same; Stage looks again in the directory
	}
	if err != nil {
		return false, nil, fmt.Errorf("read %s: %w", path, err)
	}
	if bytes.Equal(old, data) && !plantedAt(path, held) {
		// Left as it is only where an install could be made: not in another user's directory
		// that others may write (the file there is whoever made the directory's to change).
		if err := wayProblem(filepath.Dir(path)); err != nil {
			return false, nil, fmt.Errorf("install %s: directory: %w", path, err)
		}
		return true, nil, nil
	}
	return false, &seen{data: old, fi: held, whole: int64(len(old)) < limit}, nil
}

// resolve follows a symbolic link at path, so that the link's target is replaced and the
// link stays (as with /etc/resolv.conf); a target that does not exist is made, as a deleted
// destination is. A missing path is returned as it is. fi is the Lstat
// of path when path is returned as it is and something is there (nil otherwise), so that
// Stage need not stat it again.
func resolve(path string) (real string, fi fs.FileInfo, err error) {
	if !filepath.IsAbs(path) {
		abs, err := filepath.Abs(path)
		if err != nil {
			return "", nil, fmt.Errorf("resolve %s: %w", path, err)
		}
		path = abs
	}
	fi, err = os.Lstat(path)
	if err != nil {
		return path, nil, nil // unchanged stats it again and says why
	}
	if fi.Mode()&fs.ModeSymlink == 0 {
		return path, fi, nil
	}
	target, err := evalLinksToCreate(path)
	if err != nil {
		return "", nil, fmt.Errorf("resolve symlink %s: %w", path, err)
	}
	return target, nil, nil
}

// Write installs data at path as Options say: Stage, then Install. It returns changed=false,
// and writes and checks nothing, when path already holds data with the asked mode and owner.
// On any error but a *SyncDirError the destination is left as it was and no temp file
// remains; with a *SyncDirError (changed=true) the new file is in place, only its durability
// is in doubt. The directory must exist.
func Write(path string, data []byte, opts Options) (changed bool, err error) {
	s, err := Stage(path, data, opts)
	if err != nil || s == nil {
		return false, err
	}
	if err := s.Install(); err != nil {
		var se *SyncDirError
		return errors.As(err, &se), err
	}
	return true, nil
}

// Staged is a file written, fsynced, given its attributes and checked next to its
// destination, not installed yet: Install renames it into place, Discard removes it. Until
// one of them is called it holds the destination's directory open.
type Staged struct {
	d      *dir
	base   string
	path   string // the destination, its links resolved (see Write)
	tmp    string // the staged file's name in d; "" once installed or discarded
	opts   Options
	hadOld bool // a file was at path when it was staged
	prev   *Previous
	// written is the staged file's stamp once its bytes and attributes are in (Wrote).
	written fileStamp
	// hold is a read-only handle on the staged file that holds a lock on it (holdStaged) until
	// it is installed or discarded: a run starting meanwhile (RemoveLeftovers) leaves it alone,
	// though a long check made it older than that run's start. nil when none was taken (no
	// check).
	hold *os.File
}

// release lets go of s's hold on its staged file.
func (s *Staged) release() {
	if s.hold != nil {
		s.hold.Close()
		s.hold = nil
	}
}

// Stage does the part of Write that leaves the destination as it is: it returns nil (and
// stages and checks nothing) when path already holds data with the asked mode and owner;
// otherwise the staged file, checked, or an error, leaving no temp file. With
// Options.KeepPrevious, the staged file also remembers what the destination held, for
// Previous.
//
// The directory is opened once, one component at a time, and every later step (the temp
// file, the backup, the rename, the fsync) happens in the directory so held: a symbolic
// link put on its path meanwhile cannot move them elsewhere. Nothing is written through a
// name that may already exist: the temp files are created with O_EXCL and renamed over the
// destination and the .bak. On Unix a directory on the way that another user than root or this
// process's owns, in a directory others than its owner may write, is refused
// (*ForeignDirError), with the file there left as it is, even when it holds data already.
func Stage(path string, data []byte, opts Options) (st *Staged, err error) {
	var fi fs.FileInfo
	if !opts.NoFollow {
		if path, fi, err = resolve(path); err != nil {
			return nil, err
		}
	}
	// Most calls change nothing: answer those by name, without opening the directory.
	same, read, err := unchanged(path, fi, data, opts)
	if err != nil || same {
		return nil, err
	}
	between("compared")
	d, err := openDir(filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("install %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			d.close()
		}
	}()
	base := filepath.Base(path)
	path = d.join(base)
	if opts.Allowed != nil {
		if err := opts.Allowed(path); err != nil {
			return nil, err
		}
	}
	// Lstat: a link at path was followed by resolve; one there now was put there since.
	old, err := d.root.Lstat(base)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		old = nil
	case err == nil && opts.NoFollow && (old.Mode()&fs.ModeSymlink != 0 || replaceable(old.Mode())):
		old = nil // the rename replaces the link, pipe, socket or device, never opened
	case err != nil:
		return nil, fmt.Errorf("stat %s: %w", path, err)
	case !old.Mode().IsRegular():
		return nil, fmt.Errorf("%s is %s, not a regular file", path, TypeName(old.Mode()))
	}
	if old != nil && plantable(d, base, old) {
		// Another user's file (or a hard link to root's) in a directory where others than its
		// owner may create files (/tmp, a group's directory): whoever planted it must not choose the owner and mode of what is
		// installed in its place, nor what an undo puts back. It is treated as no file.
		old = nil
	}
	between("lstat")
	var prev []byte
	if opts.KeepPrevious && old != nil {
		// The file the rename replaces, read once: what unchanged read when it is the file found
		// here, else read now. old becomes the file read, judged again: it may have been swapped
		// in since the Lstat.
		if opts.MaxPrevious > 0 && old.Size() > opts.MaxPrevious {
			return nil, &PreviousTooLargeError{Path: path, Size: old.Size(), Max: opts.MaxPrevious}
		}
		if prev, old, err = readPrevious(d, base, path, old, read, opts.MaxPrevious); err != nil {
			return nil, err
		}
		if plantable(d, base, old) {
			old = nil
		}
	}
	s := &Staged{d: d, base: base, path: path, opts: opts, hadOld: old != nil}
	if opts.KeepPrevious {
		s.prev = previous(path, old, prev)
	}

	perm, uid, gid := opts.Perm.Perm(), opts.UID, opts.GID
	if opts.exactPerm {
		perm = opts.Perm & modeBits
	}
	if old != nil {
		if opts.Perm == 0 && !opts.exactPerm {
			perm = old.Mode().Perm()
		}
		if ouid, ogid, ok := ownerOf(old); ok {
			if uid < 0 {
				uid = ouid
			}
			if gid < 0 {
				gid = ogid
			}
		}
	} else if perm == 0 && !opts.exactPerm {
		perm = DefaultPerm
	}

	tmp, staged, err := d.stageFile(base, opts.Spare && !opts.NoSync, len(data) == 0)
	if err != nil {
		return nil, fmt.Errorf("create temp file for %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			if staged != "" {
				d.root.Remove(staged)
			}
		}
	}()
	at := d.join(staged) // the staged file, for errors
	if staged == "" {
		at = tmp.Name()
	}
	// See Staged.hold: taken while the file is still this process's, mode 0600, when a check
	// will run (the time a staged file waits, minutes at most; without one it is installed at
	// once, and the open and lock would cost each change of the agent's two system calls).
	var hold *os.File
	if staged != "" && opts.Check != nil {
		if hold, err = d.reopen(tmp, staged); err != nil {
			return nil, fmt.Errorf("stage %s: %w", path, err)
		}
		holdStaged(hold)
		defer func() {
			if err != nil {
				hold.Close()
			}
		}()
	}
	unnamed := staged == "" // an unnamed spare: named once written and fsynced
	if _, err = tmp.Write(data); err != nil {
		return nil, named("write", at, err)
	}
	if !unnamed {
		if err = attributes(tmp, perm, uid, gid); err != nil {
			return nil, fmt.Errorf("%s: %w", at, err)
		}
	}
	if !opts.NoSync {
		if err = tmp.Sync(); err != nil {
			return nil, named("fsync", at, err)
		}
	}
	if unnamed {
		if staged, err = d.linkUnnamed(tmp, base); err != nil {
			return nil, fmt.Errorf("name the staged file for %s: %w", path, err)
		}
		// Held, read-only, for d's sync to fsync it again for its link (see dir.linked): a
		// handle open for writing would keep the file from being run (ETXTBSY), by the check or,
		// once installed, by anyone. Opened while the file is still this process's, mode 0600:
		// its own mode and owner, given after, may not let this process read it. That fsync
		// makes them durable too.
		var ro *os.File
		if ro, err = d.reopen(tmp, staged); err != nil {
			return nil, fmt.Errorf("install %s: %w", path, err)
		}
		d.linked = append(d.linked, linkedFile{ro, path})
		if opts.Check != nil {
			holdStaged(ro) // held until the directory's sync closes it, after the install
		}
		between("named")
		if err = attributes(tmp, perm, uid, gid); err != nil {
			return nil, fmt.Errorf("%s: %w", d.join(staged), err)
		}
	}
	// What the file is as staged, for Wrote (which says false when the stat failed).
	s.written, _ = fstamp(tmp)
	if err = tmp.Close(); err != nil {
		return nil, named("close", d.join(staged), err)
	}
	if opts.Check != nil {
		if cerr := opts.Check(d.join(staged)); cerr != nil {
			err = &CheckError{Path: path, Err: cerr}
			return nil, err
		}
		if runtime.GOOS != "windows" && s.written != (fileStamp{}) {
			// What is installed is what was rendered, given its mode and owner: a check that
			// edited the staged file, changed its mode (setuid too) or put another file or a
			// symbolic link at its name would have it installed instead. Told by its stat, times
			// included: an ACL, an extended attribute or a file capability changes only its
			// ctime, so a touch, or a chmod or chown to what it is, is refused too.
			if now, serr := d.stampEntry(staged); serr != nil || now != s.written {
				err = &CheckError{Path: path, Err: errors.New("the check changed the staged file (its content, mode, owner or type, or only its times or attributes: a touch, a chmod or chown even to what it is, an ACL or extended attribute), which is not installed: a check must only read it")}
				return nil, err
			}
		}
	}
	s.tmp, s.hold = staged, hold
	return s, nil
}

// stampEntry stamps the file named name in d, through d's handle (not a path that a link swapped
// in since could lead elsewhere); a symbolic link there is an error (it is not followed).
func (d *dir) stampEntry(name string) (fileStamp, error) {
	f, err := d.root.OpenFile(name, os.O_RDONLY|noFollow|nonBlock, 0)
	if errors.Is(err, fs.ErrPermission) {
		// A mode that does not let this process read it (0200 for a user not root): by name.
		st, isLink, err := lstamp(d.join(name))
		if err == nil && isLink {
			err = fmt.Errorf("%s is a symbolic link", d.join(name))
		}
		return st, err
	}
	if err != nil {
		return fileStamp{}, err
	}
	defer f.Close()
	return fstamp(f)
}

// plantable reports whether old, the file at base in d, may have been put there by another user
// than the installing process or root, in a directory that others than its owner may write: a
// file of another user's, or a name of a file of root's (or of this process's user's) with
// another name too, which whoever may write that file can make there as a hard link (the
// kernel's protected_hardlinks allows it): its mode and owner are not the destination's to keep.
// The .bak that Backup made of it is the one other name that is the install's own.
func plantable(d *dir, base string, old fs.FileInfo) bool {
	return planted(d.root.Lstat, base, old)
}

// plantedAt is plantable of old, the file at path, looked at by name: what unchanged finds
// holding the bytes to install is not left in place when it may have been planted.
func plantedAt(path string, old fs.FileInfo) bool {
	dir := filepath.Dir(path)
	return planted(func(name string) (fs.FileInfo, error) {
		if name == "." {
			return os.Stat(dir)
		}
		return os.Lstat(filepath.Join(dir, name))
	}, filepath.Base(path), old)
}

// planted is plantable of old, the file at base in the directory whose names lstat looks at
// ("." the directory itself).
func planted(lstat func(name string) (fs.FileInfo, error), base string, old fs.FileInfo) bool {
	uid, _, ok := ownerOf(old)
	if !ok {
		return false
	}
	if uid == 0 || uid == os.Geteuid() {
		n, ok := linksOf(old)
		if !ok || n <= 1 {
			return false
		}
		if bak, err := lstat(base + ".bak"); n == 2 && err == nil && os.SameFile(bak, old) {
			return false
		}
	}
	fi, err := lstat(".")
	return err != nil || fi.Mode().Perm()&0o022 != 0
}

// Path is the file the staged one replaces (its links resolved).
func (s *Staged) Path() string { return s.path }

// Previous is what the destination held when the file was staged with Options.KeepPrevious
// (nil without it).
func (s *Staged) Previous() *Previous { return s.prev }

// SkipBackup makes Install leave the .bak as it is (Options.Backup): what the destination holds
// is not to be kept, such as content the caller put there for a while and takes back now.
func (s *Staged) SkipBackup() { s.opts.Backup = false }

// Install makes the .bak (with Options.Backup), runs Options.BeforeRename, renames the staged
// file over the destination and fsyncs the directory (with Options.DirSyncs, leaves that to
// DirSyncs.Sync). On any error but a *SyncDirError the destination is left as it was and the
// staged file is removed; with a *SyncDirError the new file is in place, only its durability is
// in doubt. It releases the directory (or hands it to the DirSyncs).
func (s *Staged) Install() (err error) {
	if s.tmp == "" {
		return fmt.Errorf("install %s: not staged (installed or discarded already)", s.path)
	}
	deferred := false
	defer func() {
		if !deferred {
			s.d.close()
		}
	}()
	defer func() {
		if err != nil {
			s.d.root.Remove(s.tmp)
		}
		s.tmp = ""
		s.release()
	}()
	if s.opts.Backup && s.hadOld {
		if err = backup(s.d, s.base, s.opts); err != nil {
			return err
		}
	}
	if s.opts.BeforeRename != nil {
		if err = s.opts.BeforeRename(); err != nil {
			return err
		}
	}
	if err = s.d.rename(s.tmp, s.base); err != nil {
		if errors.Is(err, syscall.EBUSY) {
			// rename(2)'s answer for a file that is a mount point: said, since "device or
			// resource busy" names neither the cause nor what to do.
			return fmt.Errorf("rename %s: %w: %s is a mount point (a file mounted on its own, as docker run -v FILE:FILE and a Kubernetes subPath mount one), which no file can be renamed over, and a file is installed only so, whole: mount its directory instead", s.d.join(s.tmp), err, s.path)
		}
		return fmt.Errorf("rename %s: %w", s.d.join(s.tmp), err)
	}
	if s.opts.NoSync {
		return nil
	}
	if s.opts.Spare {
		// Now, for a change that follows at once; before the directory's fsync, which makes its
		// name durable too.
		s.d.makeSpare(s.base)
	}
	if s.opts.DirSyncs != nil {
		s.opts.DirSyncs.dirs = append(s.opts.DirSyncs.dirs, s.d)
		deferred = true
		return nil
	}
	if err := s.d.sync(); err != nil {
		// The file is in place: a reader sees it and the caller must count it as installed.
		return &SyncDirError{Path: s.path, Err: err}
	}
	return nil
}

// DirSyncs holds the directories of installs whose fsync is deferred (Options.DirSyncs), so
// that a caller installing several files, or a burst of changes, pays one fsync per directory,
// made when it needs the renames durable: before it tells anyone that they are installed. Until
// Sync, a crash may bring the previous files back (whole: each was fsynced before its rename).
// It is not safe for concurrent use.
type DirSyncs struct {
	dirs []*dir
}

// Pending reports whether an install waits for its directory's fsync.
func (s *DirSyncs) Pending() bool { return s != nil && len(s.dirs) > 0 }

// Sync fsyncs each directory held once and releases them. Every one is tried; the error names
// the first that failed (a *SyncDirError: its files are in place, their durability in doubt).
func (s *DirSyncs) Sync() error {
	if s == nil {
		return nil
	}
	var first error
	// Once per directory, told by its identity, not its path: a directory replaced at its path
	// between two installs is another one, and each rename is in the directory it was made in.
	var done []os.FileInfo
	// The files named that need it first, in every directory: a directory's fsync may make the
	// entries of several installs durable. A directory whose file failed is not fsynced.
	for _, d := range s.dirs {
		if err := d.syncLinked(); err != nil {
			if first == nil {
				first = &SyncDirError{Path: d.path, Err: err}
			}
			if fi, ierr := d.identity(); ierr == nil {
				done = append(done, fi)
			}
		}
	}
	for _, d := range s.dirs {
		fi, err := d.identity()
		seen := err == nil && slices.ContainsFunc(done, func(o os.FileInfo) bool { return os.SameFile(o, fi) })
		if !seen {
			if err == nil {
				done = append(done, fi)
			}
			if err := d.sync(); err != nil && first == nil {
				first = &SyncDirError{Path: d.path, Err: err}
			}
		}
		d.close()
	}
	s.dirs = nil
	return first
}

// Discard removes the staged file and releases the directory; after Install it does nothing.
func (s *Staged) Discard() {
	if s.tmp == "" {
		return
	}
	s.d.root.Remove(s.tmp)
	s.release()
	s.d.close()
	s.tmp = ""
}

// Previous is what a destination held before an install (its bytes, mode and owner, or that
// there was no file), so that Restore can put it back.
type Previous struct {
	path     string
	existed  bool
	data     []byte
	perm     os.FileMode
	uid, gid int
}

// Existed reports whether there was a file at the destination.
func (p *Previous) Existed() bool { return p.existed }

// Path is the destination (its links resolved).
func (p *Previous) Path() string { return p.path }

// Kept returns what p keeps of the file: its bytes, mode (setuid, setgid and sticky bits too)
// and owner (Keep: not known); nil and zeros when there was none. With Path and Existed it is
// what NewPrevious takes back.
func (p *Previous) Kept() (data []byte, perm os.FileMode, uid, gid int) {
	return p.data, p.perm, p.uid, p.gid
}

// NewPrevious is the Previous that Kept (with Path and Existed) described, read back from
// where its holder stored it (an agent restarted): existed false means there was no file at
// path (data, perm and the owner are then ignored).
func NewPrevious(path string, existed bool, data []byte, perm os.FileMode, uid, gid int) *Previous {
	if !existed {
		return &Previous{path: path, uid: Keep, gid: Keep}
	}
	return &Previous{path: path, existed: true, data: data, perm: perm & modeBits, uid: uid, gid: gid}
}

// readPrevious reads old, the file at base in d (its Lstat), for Previous: it is what
// unchanged read (r) when r is whole and of the same file, else it is read through d, not
// following a link nor blocking on a FIFO swapped in since. It returns the stat of the file
// read, which Stage goes on with: the bytes kept and the mode and owner given to the new file
// are then of the same file.
func readPrevious(d *dir, base, path string, old fs.FileInfo, r *seen, limit int64) ([]byte, fs.FileInfo, error) {
	if r != nil && r.whole && os.SameFile(r.fi, old) {
		return r.data, old, nil
	}
	read := int64(-1)
	if limit > 0 {
		read = limit + 1 // one byte more, to tell a file that grew past it since its stat
	}
	data, fi, err := ReadRegular(d.root, base, read, nil)
	if nr := (*NotRegularError)(nil); errors.As(err, &nr) {
		return nil, nil, fmt.Errorf("keep previous %s: not a regular file (%s)", path, nr.Mode.Type())
	}
	if err != nil {
		return nil, nil, fmt.Errorf("keep previous %s: %w", path, err)
	}
	if limit > 0 && int64(len(data)) > limit {
		return nil, nil, &PreviousTooLargeError{Path: path, Size: fi.Size(), Max: limit}
	}
	return data, fi, nil
}

// PreviousTooLargeError is Stage's refusal of a destination over Options.MaxPrevious.
type PreviousTooLargeError struct {
	Path      string
	Size, Max int64
}

func (e *PreviousTooLargeError) Error() string {
	return fmt.Sprintf("%s holds %d bytes, over the %d that an install keeps to put back if its reload fails: it is left as it is, not read nor replaced; move it away if it is to be replaced", e.Path, e.Size, e.Max)
}

// previous is what Previous keeps of old, the file at path that data was read from (nil: none).
func previous(path string, old fs.FileInfo, data []byte) *Previous {
	p := &Previous{path: path, uid: Keep, gid: Keep}
	if old == nil {
		return p
	}
	p.data = data
	p.existed, p.perm = true, old.Mode()&modeBits
	if uid, gid, ok := ownerOf(old); ok {
		p.uid, p.gid = uid, gid
	}
	return p
}

// Restore puts back what the destination held: the same bytes, mode and owner, installed as
// Write installs (a temp file renamed over it, the directory fsynced; no link at the name
// followed), or, when there was no file, removes the one there. opts gives Allowed and
// NoSync; the rest comes from p. A .bak is left as the install made it (it holds what is
// restored). It reports whether it changed anything.
func (p *Previous) Restore(opts Options) (bool, error) {
	if p.existed {
		return Write(p.path, p.data, Options{Perm: p.perm, UID: p.uid, GID: p.gid, NoSync: opts.NoSync,
			NoFollow: true, Allowed: opts.Allowed, exactPerm: true})
	}
	d, err := openDir(filepath.Dir(p.path))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil // no directory, so no file to remove
	}
	if err != nil {
		return false, fmt.Errorf("remove %s: %w", p.path, err)
	}
	defer d.close()
	base := filepath.Base(p.path)
	if opts.Allowed != nil {
		if err := opts.Allowed(d.join(base)); err != nil {
			return false, err
		}
	}
	fi, err := d.root.Lstat(base)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err == nil && fi.IsDir() {
		err = fmt.Errorf("a directory is there now")
	}
	if err == nil {
		err = d.root.Remove(base)
	}
	if err != nil {
		return false, fmt.Errorf("remove %s: %w", p.path, err)
	}
	if opts.NoSync {
		return true, nil
	}
	if err := d.sync(); err != nil {
		return true, &SyncDirError{Path: p.path, Err: err}
	}
	return true, nil
}

// SyncDirError is the error of a Write that installed the file but could not fsync its
// directory: the new content is in place, but a crash may bring the old one back.
type SyncDirError struct {
	Path string
	Err  error
}

func (e *SyncDirError) Error() string {
	return fmt.Sprintf("%s installed, but its directory was not fsynced: %v", e.Path, e.Err)
}
func (e *SyncDirError) Unwrap() error { return e.Err }

// attributes gives the staged file f its owner, then its mode. Owner first: until then the
// file is 0600 (as created), so that a group it gets on creation (a setgid directory's) never
// reads it under the mode meant for another group.
func attributes(f *os.File, perm os.FileMode, uid, gid int) error {
	if err := chown(f, uid, gid); err != nil {
		return fmt.Errorf("chown: %w", err)
	}
	// Chmod explicitly: the umask must not decide the mode.
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	return nil
}

// chown sets the owner of f when it differs from the one asked (uid/gid < 0: keep),
// so that an unprivileged process can write its own files.
func chown(f *os.File, uid, gid int) error {
	if uid < 0 && gid < 0 {
		return nil
	}
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fuid, fgid, ok := ownerOf(fi); ok && (uid < 0 || fuid == uid) && (gid < 0 || fgid == gid) {
		return nil
	}
	return fchown(f, uid, gid)
}

// Test hooks: tests replace them to observe or break one step.
var (
	fchown = func(f *os.File, uid, gid int) error { return f.Chown(uid, gid) }
	link   = func(r *os.Root, oldname, newname string) error { return r.Link(oldname, newname) }
	fsync  = func(f *os.File) error { return f.Sync() }
	// between runs between two looks at the destination, for a test to change it there:
	// "stat" (unchanged stat it, before it reads it), "compared" (read, before the directory
	// is opened), "lstat" (looked at in the directory, before it is read for Previous);
	// MkdirAll's "mkdir" (a directory held open, before the next is made in it).
	between = func(step string) {}
)

// dir is a directory held open: names in it are resolved from the handle, not from its path.
type dir struct {
	root *os.Root
	path string      // where it was when it was opened, free of symbolic links
	f    *os.File    // the same directory opened for reading, to fsync (nil: opened by sync)
	id   fs.FileInfo // its stat when it was opened, for its identity (nil: not taken)
	// linked are the unnamed spares named in the directory (see unnamed_linux.go): fsynced
	// while they had no name, so that their link count on disk is still 0. sync fsyncs them
	// again before the directory, so that its fsync never makes an entry durable before the
	// link it names (on a file system without a journal, fsck would clear the entry).
	linked []linkedFile
}

// linkedFile is an unnamed spare named in its directory (dir.linked), held read-only, and the
// destination it was staged for: its errors name the destination, as its temp name was replaced
// by the rename.
type linkedFile struct {
	f    *os.File
	dest string
}

// identity is a stat of the directory held that tells it from another (os.SameFile): a
// handle's device and inode do not change, so the one taken when it was opened serves.
func (d *dir) identity() (fs.FileInfo, error) {
	if d.id != nil {
		return d.id, nil
	}
	return d.root.Stat(".")
}

// close releases the directory.
func (d *dir) close() {
	d.root.Close()
	if d.f != nil {
		d.f.Close()
	}
	for _, l := range d.linked {
		l.f.Close()
	}
	d.linked = nil
}

func (d *dir) join(name string) string { return filepath.Join(d.path, name) }

// named is err of op on path: err itself when it names path already (an *fs.PathError of the
// file, such as "write P: no space left on device"), else "op path: err".
func named(op, path string, err error) error {
	if pe := (*fs.PathError)(nil); errors.As(err, &pe) && pe.Path == path {
		return err
	}
	return fmt.Errorf("%s %s: %w", op, path, err)
}

// createTemp creates a new file for base in d, named .<base>.shoelace-<random>, with
// O_EXCL (so never through an existing name or link) and mode 0600.
func (d *dir) createTemp(base string) (*os.File, string, error) {
	var f *os.File
	name, err := d.freeTemp(base, func(n string) (err error) {
		f, err = d.root.OpenFile(n, os.O_RDWR|os.O_CREATE|os.O_EXCL|createFlags, 0o600)
		return err
	})
	return f, name, err
}

// freeTemp calls try with new temp names for base (tempName, N random) until one does not find
// its name taken (fs.ErrExist), at most 100 times, and returns that name and try's error.
func (d *dir) freeTemp(base string, try func(name string) error) (string, error) {
	for range 100 {
		name := tempName(base, rand.Uint64())
		if err := try(name); !errors.Is(err, fs.ErrExist) {
			return name, err
		}
	}
	return "", fmt.Errorf("no free temp name for %s in %s", base, d.path)
}

// reopen opens name in d, which f was just given, read-only, and checks that it is f's file.
func (d *dir) reopen(f *os.File, name string) (*os.File, error) {
	ro, err := d.root.OpenFile(name, os.O_RDONLY|noFollow|nonBlock, 0)
	if err != nil {
		return nil, named("open", d.join(name), err)
	}
	was, err1 := f.Stat()
	is, err2 := ro.Stat()
	if err1 != nil || err2 != nil || !os.SameFile(was, is) {
		ro.Close()
		return nil, fmt.Errorf("%s: replaced as soon as it was named", d.join(name))
	}
	return ro, nil
}

// syncLinked fsyncs the files named in the directory that need it before the directory's
// fsync (d.linked), and lets them go. A file with no name left (a later install of its
// destination renamed over it before this sync) is let go unsynced: no entry the directory's
// fsync makes durable names it. Changes a few ms apart make most of a batch's files such, and
// each fsync is a flush of the disk's cache, on which the next install's fsync would wait.
func (d *dir) syncLinked() error {
	var err error
	for _, l := range d.linked {
		if fi, e := l.f.Stat(); e == nil {
			if n, ok := linksOf(fi); ok && n == 0 {
				l.f.Close()
				continue
			}
		}
		if e := fsync(l.f); e != nil && err == nil {
			if pe := (*fs.PathError)(nil); errors.As(e, &pe) {
				e = pe.Err // of the temp name, which is gone
			}
			err = fmt.Errorf("fsync %s once named: %w", l.dest, e)
		}
		l.f.Close()
	}
	d.linked = nil
	return err
}

// sync fsyncs the directory held (where directories can be fsynced: see dirSync), after
// syncLinked.
func (d *dir) sync() error {
	if err := d.syncLinked(); err != nil {
		return err
	}
	if !dirSync {
		return nil
	}
	f := d.f
	if f == nil {
		var err error
		if f, err = d.root.Open("."); err != nil {
			return fmt.Errorf("open dir %s: %w", d.path, err)
		}
		defer f.Close()
	}
	if err := fsync(f); err != nil && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("fsync dir %s: %w", d.path, err)
	}
	return nil
}

// backup makes <base>.bak in d hold the current content of base: a hard link to it, or,
// where hard links fail, a copy with its mode and owner. Either is made under a fresh temp
// name and renamed over the .bak, so that nothing is ever written through whatever is at the
// .bak name: a symbolic link planted there is replaced, never followed. Options.Allowed is
// asked about the .bak too.
func backup(d *dir, base string, opts Options) (err error) {
	bak := base + ".bak"
	path := d.join(base)
	if opts.Allowed != nil {
		if err := opts.Allowed(d.join(bak)); err != nil {
			return fmt.Errorf("backup %s: %w", path, err)
		}
	}
	tmp, err := linkTemp(d, base)
	if err != nil {
		// No hard link here (a file system without them, a file of another user under
		// protected_hardlinks): copy.
		if tmp, err = copyTemp(d, base, opts.NoSync); err != nil {
			return fmt.Errorf("backup %s: %w", path, err)
		}
	}
	err = d.rename(tmp, bak)
	// Removed after a rename too: when the .bak is the file already (an install stopped before
	// its rename, or another process's backup of it), rename(2) does nothing and tmp stays.
	d.root.Remove(tmp)
	if err != nil {
		return fmt.Errorf("backup %s: %w", path, err)
	}
	return nil
}

// linkTemp hard-links base to a new temp name in d and returns the name.
func linkTemp(d *dir, base string) (string, error) {
	return d.freeTemp(base+".bak", func(name string) error { return link(d.root, base, name) })
}

// copyTemp copies base to a new temp file in d, with base's owner (where the process may
// give it) and mode, and returns its name.
func copyTemp(d *dir, base string, noSync bool) (name string, err error) {
	src, err := d.root.OpenFile(base, os.O_RDONLY|nonBlock, 0)
	if err != nil {
		return "", err
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return "", err
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s is not a regular file (%s)", d.join(base), fi.Mode().Type())
	}
	dst, name, err := d.createTemp(base + ".bak")
	if err != nil {
		return "", err
	}
	defer func() {
		if err != nil {
			dst.Close()
			d.root.Remove(name)
		}
	}()
	if _, err = io.Copy(dst, src); err != nil {
		return "", err
	}
	uid, gid := Keep, Keep
	if fuid, fgid, ok := ownerOf(fi); ok {
		uid, gid = fuid, fgid
	}
	if err = attributes(dst, fi.Mode().Perm(), uid, gid); errors.Is(err, fs.ErrPermission) {
		// Not allowed to give it the old owner: it stays the process's, readable by it
		// alone (which could read the original), so that no group gains a read.
		err = attributes(dst, fi.Mode().Perm()&0o700, Keep, Keep)
	}
	if err != nil {
		return "", err
	}
	if !noSync {
		if err = dst.Sync(); err != nil {
			return "", err
		}
	}
	return name, dst.Close()
}

// SyncDir fsyncs a directory, so that a rename in it survives a crash (where directories can be
// fsynced: on Windows the write-through rename is on disk when it returns).
func SyncDir(dir string) error {
	if !dirSync {
		return nil
	}
	if dir == "" {
		dir = "."
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open dir %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("fsync dir %s: %w", dir, err)
	}
	return nil
}

// Owner returns a file's owner and group ids; ok is false where files have none (Windows).
func Owner(fi fs.FileInfo) (uid, gid int, ok bool) { return ownerOf(fi) }

// EvalLinks is filepath.EvalSymlinks of p that follows only the symbolic links owned by root or
// by this process's effective user, as Write does on the way to a destination: any other link
// is an *UntrustedLinkError. Windows files carry ACLs instead: there it is filepath.EvalSymlinks.
func EvalLinks(p string) (string, error) { return evalLinks(p) }

// EvalLinksToCreate is EvalLinks as Write follows a link at its destination: a link that leads
// to a file not there (deleted, or not made yet) gives the path of that file, which Write makes.
func EvalLinksToCreate(p string) (string, error) { return evalLinksToCreate(p) }

// ReadDestination reads the file that Write would replace at path, reached as Write reaches it:
// a link at path followed only as Write follows it (on Unix, root's or this process's user's; one
// that leads to no file yet is no file, fs.ErrNotExist), its directory opened as Write opens it,
// and the file read in it by its handle, no link at its name followed nor a FIFO opened; one that
// is not a regular file is a *NotRegularError, not opened. A file that another user than root or
// this process's planted in a directory others may write, which Write treats as no file, is no
// file here too (fs.ErrNotExist), not read. One of more than max bytes (when max is above 0),
// which Stage with that Options.MaxPrevious does not replace, is a *PreviousTooLargeError, not
// read. fi is the stat of the file found there (nil when none was, or it was replaced while it
// was read).
func ReadDestination(path string, max int64) (data []byte, fi fs.FileInfo, err error) {
	real, _, err := resolve(path)
	if err != nil {
		return nil, nil, err
	}
	d, err := openDir(filepath.Dir(real))
	if err != nil {
		return nil, nil, err
	}
	defer d.close()
	base := filepath.Base(real)
	found, err := d.root.Lstat(base)
	if err != nil {
		return nil, nil, err
	}
	if !found.Mode().IsRegular() {
		return nil, nil, &NotRegularError{Path: real, Mode: found.Mode()}
	}
	if plantable(d, base, found) {
		// Another user's file where others may create files (/tmp): Stage treats it as no
		// file, and what its owner wrote there is not for the caller to show.
		return nil, nil, &fs.PathError{Op: "read", Path: real, Err: fs.ErrNotExist}
	}
	limit := int64(-1)
	if max > 0 {
		if found.Size() > max {
			return nil, nil, &PreviousTooLargeError{Path: real, Size: found.Size(), Max: max}
		}
		limit = max
	}
	data, fi, err = ReadRegular(d.root, base, limit, func(now fs.FileInfo) error {
		if !os.SameFile(found, now) {
			return errReplaced
		}
		return nil
	})
	if fi == nil && err != nil && !errors.Is(err, errReplaced) {
		fi = found // not opened (not readable by this process): its mode and owner are still known
	}
	return data, fi, err
}
