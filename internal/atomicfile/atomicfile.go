// Package atomicfile replaces files so that a reader sees either the old or the new
// content, never a part: the bytes go to a dot-prefixed temp file in the destination's
// directory, which is fsynced, given its mode and owner and checked before it is renamed
// over the destination; then the directory is fsynced. It imports only the standard library.
package atomicfile

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
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
	// Backup keeps the previous content as <path>.bak (a hard link, replaced atomically).
	Backup bool
	// Check, when set, runs on the staged temp file before the rename; an error leaves the
	// destination as it was and removes the temp file.
	Check func(staged string) error
	// Allowed, when set, is asked about the path Write will replace once a link at path is
	// followed (see Write); an error leaves everything as it was. It lets a caller check the
	// very path that is written, not one resolved earlier.
	Allowed func(resolved string) error
	// NoSync skips both fsyncs (of the file and of its directory): the reader still sees the
	// old or the new content, never a part, but a crash may leave the old one or, rarely, an
	// empty file. Only for files that are rewritten often and need not survive a crash.
	NoSync bool
}

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
	path, err := resolve(path)
	if err != nil {
		return false, err
	}
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("stat %s: %w", path, err)
	}
	return sameFile(path, fi, data, opts)
}

func sameFile(path string, fi fs.FileInfo, data []byte, opts Options) (bool, error) {
	if !fi.Mode().IsRegular() {
		return false, fmt.Errorf("%s is not a regular file (%s)", path, fi.Mode().Type())
	}
	if fi.Size() != int64(len(data)) {
		return false, nil
	}
	if opts.Perm != 0 && fi.Mode().Perm() != opts.Perm.Perm() {
		return false, nil
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		if opts.UID >= 0 && int(st.Uid) != opts.UID || opts.GID >= 0 && int(st.Gid) != opts.GID {
			return false, nil
		}
	}
	old, err := os.ReadFile(path)
	if err != nil {
		return false, fmt.Errorf("read %s: %w", path, err)
	}
	return bytes.Equal(old, data), nil
}

// resolve follows a symbolic link at path, so that the link's target is replaced and the
// link stays (as with /etc/resolv.conf). A missing path is returned as it is.
func resolve(path string) (string, error) {
	if !filepath.IsAbs(path) {
		abs, err := filepath.Abs(path)
		if err != nil {
			return "", fmt.Errorf("resolve %s: %w", path, err)
		}
		path = abs
	}
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		return path, nil
	}
	target, err := filepath.EvalSymlinks(path)
	if err != nil {
		return "", fmt.Errorf("resolve symlink %s: %w", path, err)
	}
	return target, nil
}

// Write installs data at path as Options say. It returns changed=false, and writes and
// checks nothing, when path already holds data with the asked mode and owner. On any error
// the destination is left as it was and no temp file remains. The directory must exist.
func Write(path string, data []byte, opts Options) (changed bool, err error) {
	path, err = resolve(path)
	if err != nil {
		return false, err
	}
	if opts.Allowed != nil {
		if err := opts.Allowed(path); err != nil {
			return false, err
		}
	}
	old, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		old = nil
	case err != nil:
		return false, fmt.Errorf("stat %s: %w", path, err)
	default:
		same, err := sameFile(path, old, data, opts)
		if err != nil || same {
			return false, err
		}
	}

	perm, uid, gid := opts.Perm.Perm(), opts.UID, opts.GID
	if old != nil {
		if opts.Perm == 0 {
			perm = old.Mode().Perm()
		}
		if st, ok := old.Sys().(*syscall.Stat_t); ok {
			if uid < 0 {
				uid = int(st.Uid)
			}
			if gid < 0 {
				gid = int(st.Gid)
			}
		}
	} else if perm == 0 {
		perm = DefaultPerm
	}

	dir, base := filepath.Split(path)
	tmp, err := os.CreateTemp(dir, "."+base+".shoelace-*")
	if err != nil {
		return false, fmt.Errorf("create temp file for %s: %w", path, err)
	}
	staged := tmp.Name()
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(staged)
		}
	}()
	if _, err = tmp.Write(data); err != nil {
		return false, fmt.Errorf("write %s: %w", staged, err)
	}
	// Chmod explicitly: CreateTemp's 0600 and the umask must not decide the mode.
	if err = tmp.Chmod(perm); err != nil {
		return false, fmt.Errorf("chmod %s: %w", staged, err)
	}
	if err = chown(tmp, uid, gid); err != nil {
		return false, fmt.Errorf("chown %s: %w", staged, err)
	}
	if !opts.NoSync {
		if err = tmp.Sync(); err != nil {
			return false, fmt.Errorf("fsync %s: %w", staged, err)
		}
	}
	if err = tmp.Close(); err != nil {
		return false, fmt.Errorf("close %s: %w", staged, err)
	}
	if opts.Check != nil {
		if cerr := opts.Check(staged); cerr != nil {
			err = &CheckError{Path: path, Err: cerr}
			return false, err
		}
	}
	if opts.Backup && old != nil {
		if err = backup(path); err != nil {
			return false, err
		}
	}
	if err = os.Rename(staged, path); err != nil {
		return false, fmt.Errorf("rename %s: %w", staged, err)
	}
	if opts.NoSync {
		return true, nil
	}
	if err := SyncDir(dir); err != nil {
		// The file is in place; only its durability across a crash is in doubt.
		return true, err
	}
	return true, nil
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
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && (uid < 0 || int(st.Uid) == uid) && (gid < 0 || int(st.Gid) == gid) {
		return nil
	}
	return f.Chown(uid, gid)
}

// backup makes path.bak a hard link to the current path, replacing an old .bak atomically.
// Where hard links are not supported it copies.
func backup(path string) error {
	bak := path + ".bak"
	dir, base := filepath.Split(path)
	tmpName := filepath.Join(dir, fmt.Sprintf(".%s.bak.shoelace-%d", base, os.Getpid()))
	os.Remove(tmpName)
	if err := os.Link(path, tmpName); err != nil {
		data, rerr := os.ReadFile(path)
		if rerr != nil {
			return fmt.Errorf("backup %s: %w", path, rerr)
		}
		fi, serr := os.Stat(path)
		if serr != nil {
			return fmt.Errorf("backup %s: %w", path, serr)
		}
		if _, werr := Write(bak, data, Options{Perm: fi.Mode().Perm(), UID: Keep, GID: Keep}); werr != nil {
			return fmt.Errorf("backup %s: %w", path, werr)
		}
		return nil
	}
	if err := os.Rename(tmpName, bak); err != nil {
		os.Remove(tmpName)
		return fmt.Errorf("backup %s: %w", path, err)
	}
	return nil
}

// SyncDir fsyncs a directory, so that a rename in it survives a crash.
func SyncDir(dir string) error {
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
