// Package nss resolves user and group names to ids as the host's name service does.
//
// Shoelace is built without cgo, so os/user reads /etc/passwd and /etc/group only: a user or
// group known to LDAP, SSSD or another NSS module was "not found", and an agent's template with
// `owner: alice` failed to load on a host where `ls -l` shows alice. When os/user finds no
// such name, Lookup asks getent(1), which goes through the C library's name service switch as
// every other program on the host does.
package nss

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Getent is the getent program asked when os/user knows no name ("" disables it). An absolute
// path: the agent runs as root, and a PATH lookup would run whatever a writable directory
// early in PATH holds.
var Getent = findGetent()

func findGetent() string {
	for _, p := range []string{"/usr/bin/getent", "/bin/getent"} {
		if _, err := exec.LookPath(p); err == nil {
			return p
		}
	}
	return ""
}

// getentTimeout bounds how long a name service (an unreachable LDAP server) may take to answer.
var getentTimeout = 10 * time.Second

// silent is when (Unix nanoseconds) getent last gave no answer within getentTimeout: the
// lookups within getentTimeout after it fail at once. Asked again, a name service that does
// not answer (LDAP away) held an agent's start 10 s a name, those of 30 templates ten minutes,
// before it refused the config it would refuse anyway.
var silent atomic.Int64

// ErrNotFound says that neither os/user nor getent knows the name.
var ErrNotFound = errors.New("not found")

// Lookup returns the id of the user (group false) or group named name.
func Lookup(name string, group bool) (int, error) {
	id, err := lookupLocal(name, group)
	if err == nil {
		return id, nil
	}
	var unknownUser user.UnknownUserError
	var unknownGroup user.UnknownGroupError
	if !errors.As(err, &unknownUser) && !errors.As(err, &unknownGroup) {
		return -1, err
	}
	return getent(name, group)
}

func lookupLocal(name string, group bool) (int, error) {
	if group {
		g, err := user.LookupGroup(name)
		if err != nil {
			return -1, err
		}
		return strconv.Atoi(g.Gid)
	}
	u, err := user.Lookup(name)
	if err != nil {
		return -1, err
	}
	return strconv.Atoi(u.Uid)
}

// getent asks getent(1) for name's entry in the passwd or group database and returns its third
// field, the id. A name getent could take for an option, or one that cannot be an entry's
// name, is not asked.
func getent(name string, group bool) (int, error) {
	if Getent == "" || name == "" || name[0] == '-' || strings.ContainsAny(name, ":\n\x00") {
		return -1, ErrNotFound
	}
	db := "passwd"
	if group {
		db = "group"
	}
	if since := time.Since(time.Unix(0, silent.Load())); since >= 0 && since < getentTimeout { // (a clock set back is not a pause)
		return -1, fmt.Errorf("getent %s %s: not asked: the name service gave no answer within %s %s ago", db, name, getentTimeout, since.Round(time.Second))
	}
	ctx, cancel := context.WithTimeout(context.Background(), getentTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, Getent, db, name)
	// Killed at the timeout, its own children (a module's helper) may keep its output open:
	// the wait for it ends a second later.
	cmd.WaitDelay = time.Second
	out, err := cmd.Output()
	if ctx.Err() != nil {
		silent.Store(time.Now().UnixNano())
		return -1, fmt.Errorf("getent %s %s: no answer within %s", db, name, getentTimeout)
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == 2 { // "key not found"
		return -1, ErrNotFound
	}
	if err != nil {
		return -1, fmt.Errorf("getent %s %s: %w", db, name, err)
	}
	// name:password:id:… — the first line only (a name has one entry).
	line, _, _ := strings.Cut(string(out), "\n")
	f := strings.Split(line, ":")
	// A name service may answer with the name's canonical case (Active Directory's are not
	// case-sensitive).
	if len(f) < 3 || !strings.EqualFold(f[0], name) {
		return -1, fmt.Errorf("getent %s %s: unexpected answer %q", db, name, line)
	}
	id, err := strconv.ParseUint(f[2], 10, 32)
	if err != nil || id == 1<<32-1 { // (uid_t)-1 is no id

		return -1, fmt.Errorf("getent %s %s: unexpected id %q", db, name, f[2])
	}
	return int(id), nil
}
