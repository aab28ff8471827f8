//go:build !windows

package agent

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/shoelace-dev/shoelace/internal/atomicfile"
)

// judgeCommandFile refuses a config, templates_dir file, confd resource or template source (fi,
// opened at path, links followed) that someone other than root and the agent's user may write:
// it names the commands the agent runs and what it writes, as root as a rule, so whoever may
// write it may have the agent run or write anything. It must be
// owned by root or the agent's user (effective uid), and not writable by others, nor by its
// group unless the group has no member but the file's owner (a user private group: a checkout
// under umask 002, as make run's), as cache_dir's parents are judged.
func judgeCommandFile(path string, fi fs.FileInfo) error {
	return judgeTrustedFile(path, fi, "it tells the agent what to write and run, so %s could have the agent write or run anything")
}

// judgeTrustedFile is judgeCommandFile of a file the agent trusts for another reason: why says
// what its writer could do, %s naming them ("its owner", "anyone", "they").
func judgeTrustedFile(path string, fi fs.FileInfo, why string) error {
	uid, gid, ok := atomicfile.Owner(fi)
	if !ok {
		return nil
	}
	euid := os.Geteuid()
	name := path
	if real, err := filepath.EvalSymlinks(path); err == nil && real != path {
		name = fmt.Sprintf("%s (a link to %s)", path, real)
	}
	if uid != 0 && uid != euid {
		return fmt.Errorf("%s is owned by uid %d, neither root nor the agent's user (uid %d): %s; run chown root %s",
			name, uid, euid, fmt.Sprintf(why, "its owner"), path)
	}
	perm := fi.Mode().Perm()
	switch {
	case perm&0o020 != 0 && atomicfile.HasACL(path):
		// Its group bits are a POSIX ACL's mask: a user or group the ACL names may write it.
		return fmt.Errorf("%s has a POSIX ACL that may let other users write it (mode %04o, its group bits the ACL's mask): %s; run setfacl -b %s",
			name, perm, fmt.Sprintf(why, "they"), path)
	case perm&0o002 != 0:
		return fmt.Errorf("%s may be written by others (mode %04o): %s; run chmod go-w %s",
			name, perm, fmt.Sprintf(why, "anyone"), path)
	case perm&0o020 != 0 && !privateGroup(gid, uid):
		return fmt.Errorf("%s may be written by its group (gid %d, mode %04o), which has members other than its owner: %s; run chmod g-w %s",
			name, gid, perm, fmt.Sprintf(why, "they"), path)
	}
	return nil
}

// judgeLinkOwner refuses a symbolic link at path that another user than root and the agent's
// made: it chose the file read (one of root's, which judgeCommandFile passes), in a directory
// where that user may add entries (an ACL's, a group's). Other entries are not judged here.
func judgeLinkOwner(path string) error {
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		return nil
	}
	if uid, _, ok := atomicfile.Owner(fi); ok && uid != 0 && uid != os.Geteuid() {
		return fmt.Errorf("%s is a symbolic link made by uid %d, neither root nor the agent's user (uid %d): whoever made it chose the file the agent reads; remove it", path, uid, os.Geteuid())
	}
	return nil
}
