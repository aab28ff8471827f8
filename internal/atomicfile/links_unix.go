//go:build !windows

package atomicfile

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// walkStart is where evalLinks starts: p made absolute and split into its components, and the
// effective uid that, beside root, may own the links it follows.
func walkStart(p string) (components []string, euid int, err error) {
	if !filepath.IsAbs(p) {
		if p, err = filepath.Abs(p); err != nil {
			return nil, 0, err
		}
	}
	return strings.Split(p, "/"), os.Geteuid(), nil
}

// evalLinks is filepath.EvalSymlinks of an absolute path that follows only links owned by root
// or by this process's effective user; any other link on the way is an *UntrustedLinkError.
func evalLinks(p string) (string, error) {
	real, _, err := walkLinks(p, false, false)
	return real, err
}

// evalLinksToCreate is evalLinks, but a last component that does not exist (the file a link
// leads to, deleted) is no error: the path to create is returned, as a shell's > would create it.
// As on the way to an install, a directory of another user's on the way is judged (see walkLinks).
func evalLinksToCreate(p string) (string, error) {
	real, _, err := walkLinks(p, true, true)
	return real, err
}

// UntrustedLinkError is an install refused because the way to its file goes through a
// symbolic link that neither root nor the installing user owns: whoever made it may write the
// directory that holds it, and must not choose where a file of root's goes (a link planted at
// a destination in a service's own directory, pointing at /etc/shadow). The kernel's
// protected_symlinks does not apply: links are resolved here by name, not by open(2).
type UntrustedLinkError struct {
	Link string
	UID  int
}

func (e *UntrustedLinkError) Error() string {
	return fmt.Sprintf("refusing to follow the symbolic link %s: it is owned by uid %d, neither root nor this process's user (uid %d); remove it or make it root's",
		e.Link, e.UID, os.Geteuid())
}

// ForeignDirError is an install refused because a directory on the way to its file (links
// followed) is owned by neither root nor the installing user, in a directory that others than
// its owner may write (/tmp, a group's directory): whoever made it there first, not root, chose
// to own it, and may rename it, put another in its place or fill it with links between the
// checks of an install and its rename, and keep a file of theirs at the destination. A
// directory given to an application's user in one only root may write (/etc/app owned by
// appuser) is that user's by root's choice, and is no such error.
type ForeignDirError struct {
	Dir    string
	UID    int
	Parent string
	Mode   fs.FileMode // Parent's permission bits, fs.ModeSticky included
}

func (e *ForeignDirError) Error() string {
	who := "others"
	if e.Mode&0o002 == 0 {
		who = "its group" // and no private group of its owner's (PrivateGroup)
	}
	mode := e.Mode.Perm() // as chmod takes it: 1777 for /tmp's, sticky
	if e.Mode&fs.ModeSticky != 0 {
		mode |= 0o1000
	}
	return fmt.Sprintf("%s is owned by uid %d, neither root nor this process's user, in %s, which %s may write (mode %04o): its owner could put another directory in its place, or links in it, while the file is installed; run chown root %[1]s, or move the destination out of it",
		e.Dir, e.UID, e.Parent, who, uint32(mode))
}

// PrivateGroup, when set, reports whether group gid has no member but user uid: a user private
// group, under which distributions give users umask 002 (a directory of theirs is then 0775). A
// directory that only its owner and such a group of its owner's may write is written by no one
// else, as the agent judges cache_dir's parents. Unset, any group is others. The agent sets it.
var PrivateGroup func(gid, uid int) bool

// foreignDir is the *ForeignDirError of directory dir, owned by uid, whose parent directory
// (of mode parentMode, fs.ModeSticky included, owned by puid and group pgid) others than its
// owner may write; nil when uid is root's or euid's, or when only the parent's owner may write it
// (its group too, when that is the owner's private group and parentACL, asked then, says the
// parent has no ACL: with one, the group bits are its mask, what a user or group it names may
// be granted, not the group's).
func foreignDir(dir string, uid, euid int, parentMode fs.FileMode, puid, pgid int, parentACL func() bool) error {
	if uid == 0 || uid == euid {
		return nil
	}
	switch perm := parentMode.Perm(); {
	case perm&0o022 == 0:
		return nil
	case perm&0o002 == 0 && PrivateGroup != nil && PrivateGroup(pgid, puid) && (parentACL == nil || !parentACL()):
		return nil
	}
	return &ForeignDirError{Dir: dir, UID: uid, Parent: filepath.Dir(dir), Mode: parentMode & (fs.ModePerm | fs.ModeSticky)}
}

// fileID tells a file from another: its device and inode (zero: none).
type fileID struct{ dev, ino uint64 }

// idOf is the identity of the file of fi (zero where the system does not say).
func idOf(fi fs.FileInfo) fileID {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}
	}
	return fileID{uint64(st.Dev), uint64(st.Ino)}
}
