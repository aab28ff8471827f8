package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
)

// MkdirAll makes directory p and its missing parents, mode perm (less the umask), the way
// Write reaches a directory: the part of p that exists is opened following only the symbolic
// links that EvalLinks follows (another user's link on the way is an *UntrustedLinkError, and
// nothing is made where it leads), and each missing directory is made in the one held open
// before it, never through a link put at its name meanwhile. A directory on the way that
// another user owns, in one others may write, is a *ForeignDirError (Unix): nothing is made in
// it, whether it was there or made by that user as this call made its parent.
func MkdirAll(p string, perm os.FileMode) error {
	if !filepath.IsAbs(p) {
		abs, err := filepath.Abs(p)
		if err != nil {
			return err
		}
		p = abs
	}
	existing, missing := filepath.Clean(p), []string(nil)
	for {
		_, err := os.Lstat(existing)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		parent := filepath.Dir(existing)
		if parent == existing {
			break
		}
		missing = append(missing, filepath.Base(existing))
		existing = parent
	}
	if len(missing) == 0 {
		return nil
	}
	d, err := openDir(existing)
	if err != nil {
		return fmt.Errorf("mkdir %s: %w", p, err)
	}
	defer func() { d.close() }()
	for _, name := range slices.Backward(missing) {
		at := d.join(name)
		between("mkdir")
		if err := d.root.Mkdir(name, perm); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("mkdir %s: %w", at, err)
		}
		fi, err := d.root.Lstat(name)
		if err != nil {
			return fmt.Errorf("mkdir %s: %w", at, err)
		}
		if !fi.IsDir() {
			return fmt.Errorf("mkdir %s: %s is there, not a directory", at, TypeName(fi.Mode()))
		}
		// Another user may have made it first, where others may write: nothing is made in it.
		parent, err := d.identity()
		if err == nil {
			err = foreignMade(at, fi, parent)
		}
		if err != nil {
			return fmt.Errorf("mkdir %s: %w", p, err)
		}
		next, err := d.root.OpenRoot(name)
		if err != nil {
			return fmt.Errorf("mkdir %s: %w", at, err)
		}
		now, err := next.Stat(".")
		if err != nil || !os.SameFile(fi, now) {
			next.Close()
			return fmt.Errorf("mkdir %s: it changed while it was made", at)
		}
		d.close()
		d = &dir{root: next, path: at, id: now}
	}
	return nil
}
