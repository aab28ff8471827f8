package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
)

// RemoveLeftovers removes the temp files that an install of path left when its process was
// killed between staging and renaming (a check or a reload running, a crash): the names
// Stage and the backup make, .<base>.shoelace-N and .<base>.bak.shoelace-N, in path's
// directory, regular files last modified before before (the start of the process that calls
// it, so that another process's install in progress is left alone). Left there they would stay
// for good, and a service that reads every file of its directory (logrotate.d, cron.d) would
// read a half-made one. A file that an install in progress holds (Stage's lock on it) is left
// alone, however old. It returns the names it removed; a missing directory is no error.
// Links in path are followed as Stage follows them; names are removed in the directory held
// open, never through a link.
func RemoveLeftovers(path string, before time.Time) ([]string, error) {
	real, _, err := resolve(path)
	if err != nil {
		return nil, err
	}
	d, err := openDir(filepath.Dir(real))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer d.close()
	f, err := d.root.Open(".")
	if err != nil {
		return nil, fmt.Errorf("open dir %s: %w", d.path, err)
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", d.path, err)
	}
	base := filepath.Base(real)
	var removed []string
	var errs []error
	for _, name := range names {
		if !isTempOf(name, base) {
			continue
		}
		fi, err := d.root.Lstat(name)
		if err != nil || !fi.Mode().IsRegular() || !fi.ModTime().Before(before) {
			continue
		}
		// An install in progress (a check running for longer than since this process started)
		// holds its staged file: left alone. The lock taken here, if it was free, is held until
		// the name is removed.
		f, err := d.root.OpenFile(name, os.O_RDONLY|noFollow|nonBlock, 0)
		if err == nil && heldByOther(f) {
			f.Close()
			continue
		}
		rerr := d.root.Remove(name)
		if f != nil {
			f.Close()
		}
		if rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			errs = append(errs, rerr)
			continue
		}
		removed = append(removed, d.join(name))
	}
	return removed, errors.Join(errs...)
}

// tempName is the temp name numbered n made for base: .<base>.shoelace-N (createTemp,
// claimSpare; linkTemp's .<base>.bak.shoelace-N is that of base+".bak"), as isTempOf reads it.
func tempName(base string, n uint64) string {
	return "." + base + ".shoelace-" + strconv.FormatUint(n, 10)
}

// MaxNameLen is the longest file name that the file systems the agent writes to take: 255 bytes
// (ext4, XFS, btrfs, APFS) or, on Windows, 255 UTF-16 code units (NTFS).
const MaxNameLen = 255

// TempNameLen is the length of the longest name that an install of a file named base makes beside
// it, with backup too (.<base>.bak.shoelace-N, N up to 20 digits), counted as MaxNameLen counts:
// a base for which it is over MaxNameLen cannot be installed ("file name too long").
func TempNameLen(base string, backup bool) int {
	name := tempName(base, math.MaxUint64)
	if backup {
		name = tempName(base+".bak", math.MaxUint64)
	}
	if runtime.GOOS == "windows" {
		return len(utf16.Encode([]rune(name)))
	}
	return len(name)
}

// isTempOf reports whether name is one of the temp names made for base (see createTemp and
// linkTemp): .<base>.shoelace-N or .<base>.bak.shoelace-N, N decimal digits.
func isTempOf(name, base string) bool {
	rest, ok := strings.CutPrefix(name, "."+base+".")
	if !ok {
		return false
	}
	rest = strings.TrimPrefix(rest, "bak.")
	n, ok := strings.CutPrefix(rest, "shoelace-")
	if !ok || n == "" {
		return false
	}
	for _, c := range n {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
