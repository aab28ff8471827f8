//go:build linux

package atomicfile

import (
	"errors"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// walkLinks, on Linux: each component is opened (O_PATH|O_NOFOLLOW) in the directory held open
// before it, and a link is judged and read through that one handle (fstat, then readlinkat of
// the handle): whoever may write a directory on the way cannot swap a trusted link for one of
// its own between the owner check and the read of the target, nor swap a directory already
// walked for a link.
//
// walkLinks is evalLinks (evalLinksToCreate with missingLast). With judge, each directory it
// walks through (where its links lead, p's last component too when it is one) is judged by its
// owner and the mode of the directory held before it, by the handles walked (foreignDir): a
// *ForeignDirError names the first refused. id is the identity of the last component walked
// (zero when missingLast found none), so that a directory opened later by the path returned can
// be checked to be the one judged.
func walkLinks(p string, missingLast, judge bool) (real string, id fileID, err error) {
	rest, euid, err := walkStart(p)
	if err != nil {
		return "", id, err
	}
	dirfd, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", id, &fs.PathError{Op: "open", Path: "/", Err: err}
	}
	defer func() { unix.Close(dirfd) }()
	var held unix.Stat_t // dirfd's stat, to judge the directory under it
	setDir := func(fd int) { unix.Close(dirfd); dirfd = fd }
	statHeld := func(name string) error {
		if err := unix.Fstat(dirfd, &held); err != nil {
			return &fs.PathError{Op: "fstat", Path: name, Err: err}
		}
		return nil
	}
	if err := statHeld("/"); err != nil {
		return "", id, err
	}
	id = fileID{uint64(held.Dev), held.Ino}
	resolved := "/"
	for links := 0; len(rest) > 0; {
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "/": // (no name) the walk goes on from /: an absolute link's target, or ".."
			fd, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if err != nil {
				return "", id, &fs.PathError{Op: "open", Path: "/", Err: err}
			}
			setDir(fd)
			if err := statHeld("/"); err != nil {
				return "", id, err
			}
			id, resolved = fileID{uint64(held.Dev), held.Ino}, "/"
			continue
		case "..":
			// resolved is free of links: its parent is walked again from / (rare), each
			// directory judged again as on the way down: one passed since may have been swapped
			// for another user's.
			between("..")
			rest = append(strings.Split(filepath.Dir(resolved), "/"), rest...)
			rest[0] = "/" // the "" before the first "/"
			continue
		}
		next := filepath.Join(resolved, c)
		fd, err := unix.Openat(dirfd, c, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err == unix.ENOENT && missingLast && len(rest) == 0 {
			return next, fileID{}, nil
		}
		if err != nil {
			return "", id, &fs.PathError{Op: "open", Path: next, Err: err}
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			return "", id, &fs.PathError{Op: "fstat", Path: next, Err: err}
		}
		if st.Mode&unix.S_IFMT != unix.S_IFLNK {
			isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
			if len(rest) > 0 && !isDir {
				unix.Close(fd)
				return "", id, &fs.PathError{Op: "lstat", Path: next, Err: unix.ENOTDIR}
			}
			if judge && isDir {
				parentACL := func() bool { return aclOn(dirfd) }
				if err := foreignDir(next, int(st.Uid), euid, unixMode(held.Mode), int(held.Uid), int(held.Gid), parentACL); err != nil {
					unix.Close(fd)
					return "", id, err
				}
			}
			setDir(fd)
			held, id, resolved = st, fileID{uint64(st.Dev), st.Ino}, next
			continue
		}
		if st.Uid != 0 && int(st.Uid) != euid {
			unix.Close(fd)
			return "", id, &UntrustedLinkError{Link: next, UID: int(st.Uid)}
		}
		if links++; links > 255 {
			unix.Close(fd)
			return "", id, errors.New("EvalSymlinks: too many links")
		}
		target, err := readlinkFd(fd)
		unix.Close(fd)
		if err != nil {
			return "", id, &fs.PathError{Op: "readlink", Path: next, Err: err}
		}
		rest = append(strings.Split(target, "/"), rest...)
		if filepath.IsAbs(target) {
			rest[0] = "/" // the "" before the first "/"
		}
	}
	return resolved, id, nil
}

// aclOn reports whether the file opened as fd (O_PATH too) has a POSIX access ACL beyond its
// mode bits (see HasACL), reached through /proc. Any doubt (no /proc) is yes.
func aclOn(fd int) bool {
	return HasACL("/proc/self/fd/" + strconv.Itoa(fd))
}

// aclName is the extended attribute of a POSIX access ACL, NUL-terminated for getxattr(2).
var aclName = []byte("system.posix_acl_access\x00")

// HasACL reports whether the file at path has a POSIX access ACL beyond its mode bits: its
// group bits are then the ACL's mask, which a user or group it names may be granted, not its
// group's permission. Any doubt is yes. (Where ACLs are not read, false: see links_other.go.)
func HasACL(path string) bool {
	p, err := syscall.BytePtrFromString(path)
	if err != nil {
		return true
	}
	_, _, errno := unix.Syscall6(unix.SYS_GETXATTR, uintptr(unsafe.Pointer(p)), uintptr(unsafe.Pointer(&aclName[0])), 0, 0, 0, 0)
	return errno != unix.ENODATA && errno != unix.EOPNOTSUPP
}

// unixMode is the permission and sticky bits of a raw st_mode as an fs.FileMode.
func unixMode(m uint32) fs.FileMode {
	mode := fs.FileMode(m & 0o777)
	if m&unix.S_ISVTX != 0 {
		mode |= fs.ModeSticky
	}
	return mode
}

// readlinkFd reads the target of the link opened (O_PATH|O_NOFOLLOW) as fd.
func readlinkFd(fd int) (string, error) {
	for n := 256; ; n *= 2 {
		buf := make([]byte, n)
		m, err := unix.Readlinkat(fd, "", buf)
		if err != nil {
			return "", err
		}
		if m < n {
			return string(buf[:m]), nil
		}
	}
}
