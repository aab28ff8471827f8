//go:build !windows

package agent

import (
	"fmt"
	"os"

	"github.com/shoelace-dev/shoelace/internal/atomicfile"
)

// mkdirPrivate makes dir, and its missing parents, mode 0700 (as the umask leaves it). What it
// makes is judged as Validate judges cache_dir (checkCacheParents) once made: a directory to be
// made in a sticky one (/tmp/agent-cache) passes Validate, and whoever makes it first owns it —
// another user who made it in between is found here, and nothing is written into it.
func mkdirPrivate(dir string) error {
	if fi, err := os.Lstat(dir); err == nil && fi.IsDir() {
		return nil // judged when the config was validated
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if _, err := checkCacheParents(dir); err != nil {
		return err
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	uid, _, _ := atomicfile.Owner(fi)
	if euid := os.Geteuid(); !fi.IsDir() || uid != 0 && uid != euid || fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%s is not the directory the agent made (%s, owner uid %d, mode %04o): another user made it first; remove it", dir, atomicfile.TypeName(fi.Mode()), uid, fi.Mode().Perm())
	}
	return nil
}

// Rights othersMay is asked about; Unix checks modes instead (see unixModes).
const (
	readRights  = 0
	writeRights = 0
)

// othersMay is Windows' check of an ACL; Unix checks modes instead.
func othersMay(string, uint32) (string, error) { return "", nil }

// foreignOwner is Windows' check of an owner; Unix checks uids instead (see Validate).
func foreignOwner(string) (string, error) { return "", nil }
