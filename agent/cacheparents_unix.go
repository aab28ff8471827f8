//go:build !windows

package agent

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/shoelace-dev/shoelace/internal/atomicfile"
)

// A directory on a destination's way is judged as cache_dir's parents are: one written by its
// owner's private group alone is written by its owner alone (atomicfile.PrivateGroup).
func init() { atomicfile.PrivateGroup = privateGroup }

// The account files privateGroup reads (tests point them elsewhere).
var (
	passwdFile = "/etc/passwd"
	groupFile  = "/etc/group"
)

// checkCacheParents judges the directories above cache_dir as OpenSSH's StrictModes judges those
// above ~/.ssh, and returns dir with its symbolic links resolved (the path the agent then uses,
// so that a link judged now cannot be swapped later). Whoever may write a directory on the way
// can rename cache_dir away and put a directory of theirs (or an older copy of the agent's) in
// its place once Validate looked, and the agent, root as a rule, renders the view they chose when
// the server is away. So each directory above cache_dir, from / down, must be:
//
//   - owned by root or the agent's user (effective uid): its owner may do anything in it;
//   - not writable by others, nor by its group, unless it has the sticky bit (as /tmp): then
//     only the owner of an entry may rename or remove it, so the next directory on the way must
//     be owned by root or the agent's user — or not exist yet: the agent makes it, and whoever
//     makes it first owns it, so what it made is judged again (mkdirPrivate).
//
// A directory its group may write is accepted when that group has no member but the
// directory's owner: the user-private-group scheme (a group per user, named for it, alone in it)
// under which distributions give users umask 002, so that a checkout of theirs is 0775 (make run
// keeps its cache under ./run/ in the checkout). The group's members are read from /etc/group and
// /etc/passwd (users whose primary group it is); a group found in neither, as one of a directory
// service, is not judged private: fail closed, and chmod g-w is the remedy. Debian's OpenSSH
// accepts group-writable files on the same terms.
//
// The rules hold whatever the agent's user, root or not: a view chosen by another still decides
// what the agent writes with that user's rights. (A rule for root alone would leave make run's
// developer with nothing to fix, and a service user's agent open to its group.)
//
// Links on the way are followed only when owned by root or the agent's user (the rule installs
// follow: atomicfile.EvalLinks); the directories judged are those of the path they lead to. A part
// of dir that does not exist yet is made by the agent (mode 0700).
func checkCacheParents(dir string) (string, error) {
	existing, rest := dir, ""
	for {
		real, err := atomicfile.EvalLinks(existing)
		if err == nil {
			existing = real
			break
		}
		parent := filepath.Dir(existing)
		if !errors.Is(err, fs.ErrNotExist) || parent == existing {
			return "", err
		}
		existing, rest = parent, filepath.Join(filepath.Base(existing), rest)
	}
	real := filepath.Join(existing, rest)
	euid := os.Geteuid()
	trusted := func(uid int) bool { return uid == 0 || uid == euid }
	// The directories that exist, each with the entry under it on the way to cache_dir, judged
	// from / down (so that the first problem on the way is the one named).
	next := real
	for next != existing && filepath.Dir(next) != existing {
		next = filepath.Dir(next)
	}
	var dirs []string
	for ; next != "/"; next = filepath.Dir(next) {
		dirs = append(dirs, next)
	}
	for _, next := range slices.Backward(dirs) {
		if err := judgeParent(filepath.Dir(next), next, trusted); err != nil {
			return "", err
		}
	}
	return real, nil
}

// judgeParent judges dir, a directory above cache_dir, whose entry next leads to it.
func judgeParent(dir, next string, trusted func(int) bool) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory (%s): it changed while it was checked", dir, fi.Mode().Type())
	}
	uid, gid, _ := atomicfile.Owner(fi)
	if !trusted(uid) {
		return fmt.Errorf("%s, above it, is owned by uid %d, neither root nor the agent's user (uid %d): its owner could put another directory in its place, whose view the agent would render when the server is away; move cache_dir (under /var/lib, say)",
			dir, uid, os.Geteuid())
	}
	perm := fi.Mode().Perm()
	if perm&0o022 == 0 {
		return nil
	}
	if fi.Mode()&fs.ModeSticky != 0 {
		nfi, err := os.Lstat(next)
		if errors.Is(err, fs.ErrNotExist) {
			// The agent makes it, and judges what it made (mkdirPrivate): another user who
			// made it first is found then.
			return nil
		}
		if err != nil {
			return err
		}
		if nuid, _, _ := atomicfile.Owner(nfi); !trusted(nuid) {
			return fmt.Errorf("%s is owned by uid %d, neither root nor the agent's user (uid %d), in %s, which others may write (mode %04o, sticky): its owner could put another directory in its place; move cache_dir, or run chown root %s",
				next, nuid, os.Geteuid(), dir, perm, next)
		}
		return nil
	}
	// With an ACL, the group bits are its mask: a user or group it names may write it.
	if perm&0o002 == 0 && privateGroup(gid, uid) && !atomicfile.HasACL(dir) {
		return nil
	}
	return fmt.Errorf("%s, above it, may be written by group or others (mode %04o, no sticky bit): whoever may write it could put another directory in cache_dir's place, whose view the agent would render when the server is away; run chmod go-w %s, or move cache_dir",
		dir, perm, dir)
}

// privateGroup reports whether group gid has no member but user uid: no other user has it as
// primary group (/etc/passwd) or is listed in it (/etc/group), and uid is its member one way or
// the other (a group of no one is what setgid programs run as). Any doubt (a file unreadable, the
// group or the user not found) is no.
func privateGroup(gid, uid int) bool {
	users, err := readAccountFile(passwdFile) // name:password:uid:gid:...
	if err != nil {
		return false
	}
	name, member := "", false
	for _, u := range users {
		if len(u) < 4 {
			continue
		}
		if u[2] == strconv.Itoa(uid) {
			name = u[0]
		}
		if u[3] == strconv.Itoa(gid) {
			if u[2] != strconv.Itoa(uid) {
				return false
			}
			member = true
		}
	}
	if name == "" {
		return false
	}
	groups, err := readAccountFile(groupFile) // name:password:gid:member,member
	if err != nil {
		return false
	}
	found := false
	for _, g := range groups {
		if len(g) < 4 || g[2] != strconv.Itoa(gid) {
			continue
		}
		found = true
		for _, m := range strings.Split(g[3], ",") {
			switch strings.TrimSpace(m) {
			case "":
			case name:
				member = true
			default:
				return false
			}
		}
	}
	return found && member
}

// readAccountFile reads a colon-separated account file (/etc/passwd, /etc/group), comments
// and blank lines left out. A line naming another source (NIS's "+" and "-") makes it fail:
// the group's members cannot be told.
func readAccountFile(path string) ([][]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out [][]string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "+") || strings.HasPrefix(line, "-") {
			return nil, fmt.Errorf("%s includes entries from elsewhere (%q)", path, line)
		}
		out = append(out, strings.Split(line, ":"))
	}
	return out, sc.Err()
}
