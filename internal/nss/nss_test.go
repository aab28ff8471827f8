//go:build !windows

package nss

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeGetent makes Getent a script that appends its arguments to a log and runs body, for the
// test's duration, and returns the log's path.
func fakeGetent(t *testing.T, body string) string {
	t.Helper()
	dir := t.TempDir()
	log := filepath.Join(dir, "calls")
	script := filepath.Join(dir, "getent")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho \"$@\" >> "+log+"\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	old := Getent
	Getent = script
	silent.Store(0) // an earlier test's silent name service is not this one's
	t.Cleanup(func() { Getent = old; silent.Store(0) })
	return log
}

func calls(t *testing.T, log string) string {
	t.Helper()
	b, err := os.ReadFile(log)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}

func TestLookup_LocalNamesWithoutGetent(t *testing.T) {
	log := fakeGetent(t, "exit 1")
	if id, err := Lookup("root", false); err != nil || id != 0 {
		t.Errorf("root: %d, %v; want 0", id, err)
	}
	if id, err := Lookup("root", true); err != nil || id != 0 {
		t.Errorf("group root: %d, %v; want 0", id, err)
	}
	if c := calls(t, log); c != "" {
		t.Errorf("getent was asked for names /etc/passwd and /etc/group hold: %q", c)
	}
}

func TestLookup_NameServiceUsers(t *testing.T) {
	// As getent answers for a user and a group that only LDAP or SSSD knows.
	log := fakeGetent(t, `case "$1 $2" in
"passwd ldap-alice-xyz") echo 'Ldap-Alice-Xyz:*:123456:100:Alice:/home/alice:/bin/sh' ;;
"group ldap-ops-xyz") echo 'ldap-ops-xyz:*:654321:alice,bob' ;;
*) exit 2 ;;
esac`)
	if id, err := Lookup("ldap-alice-xyz", false); err != nil || id != 123456 {
		t.Errorf("user: %d, %v; want 123456", id, err)
	}
	if id, err := Lookup("ldap-ops-xyz", true); err != nil || id != 654321 {
		t.Errorf("group: %d, %v; want 654321", id, err)
	}
	if _, err := Lookup("nobody-anywhere-xyz", false); !errors.Is(err, ErrNotFound) {
		t.Errorf("a name getent does not know: %v; want ErrNotFound", err)
	}
	if c := calls(t, log); c != "passwd ldap-alice-xyz\ngroup ldap-ops-xyz\npasswd nobody-anywhere-xyz\n" {
		t.Errorf("getent calls: %q", c)
	}
}

func TestLookup_OddNamesAndAnswers(t *testing.T) {
	log := fakeGetent(t, `case "$2" in
other-xyz) echo 'someone-else:*:5:5::/:/bin/sh' ;;
noid-xyz) echo 'noid-xyz:*:4294967295:5::/:/bin/sh' ;;
short-xyz) echo 'short-xyz' ;;
*) echo 'x:*:7:7::/:/bin/sh' ;;
esac`)
	for _, name := range []string{"-s", "--help", "a:b", "a\nb", "nul\x00"} {
		if _, err := Lookup(name, false); !errors.Is(err, ErrNotFound) {
			t.Errorf("%q: %v; want ErrNotFound without asking getent", name, err)
		}
	}
	if c := calls(t, log); c != "" {
		t.Errorf("getent was asked for names it could take for options or that no entry has: %q", c)
	}
	for _, name := range []string{"other-xyz", "noid-xyz", "short-xyz"} {
		if id, err := Lookup(name, false); err == nil || errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "getent passwd "+name) {
			t.Errorf("%s: %d, %v; want an error naming the getent answer", name, id, err)
		}
	}
}

func TestLookup_NameServiceThatDoesNotAnswer(t *testing.T) {
	fakeGetent(t, "sleep 30")
	old := getentTimeout
	getentTimeout = 200 * time.Millisecond
	t.Cleanup(func() { getentTimeout = old })
	start := time.Now()
	_, err := Lookup("slow-ldap-xyz", false)
	if err == nil || !strings.Contains(err.Error(), "no answer within") {
		t.Errorf("got %v; want a timeout", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %s", d)
	}
}

func TestLookup_NoGetent(t *testing.T) {
	old := Getent
	Getent = ""
	t.Cleanup(func() { Getent = old })
	if _, err := Lookup("ldap-alice-xyz", false); !errors.Is(err, ErrNotFound) {
		t.Errorf("got %v; want ErrNotFound", err)
	}
}

// A name service that did not answer was asked again for every name of a config: an agent's
// templates each with an owner and a group only LDAP knows, while LDAP was away, held its
// start (or a reload, or validate) 10 s a name, 30 templates ten minutes, before it refused
// the config it would refuse anyway. After a lookup that got no answer, the next ones within
// getentTimeout fail at once, saying so.
func TestLookup_NameServiceThatDoesNotAnswerIsNotAskedAgainAtOnce(t *testing.T) {
	log := fakeGetent(t, "sleep 30")
	old := getentTimeout
	getentTimeout = 500 * time.Millisecond
	t.Cleanup(func() { getentTimeout = old })
	if _, err := Lookup("slow-ldap-a-xyz", false); err == nil || !strings.Contains(err.Error(), "no answer within") {
		t.Fatalf("got %v; want a timeout", err)
	}
	start := time.Now()
	for _, name := range []string{"slow-ldap-b-xyz", "slow-ldap-c-xyz"} {
		if _, err := Lookup(name, true); err == nil || errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "no answer") {
			t.Errorf("%s: %v; want the name service's silence", name, err)
		}
	}
	if d := time.Since(start); d > getentTimeout/2 {
		t.Errorf("the names after a lookup that got no answer took %s", d)
	}
	if c := calls(t, log); c != "passwd slow-ldap-a-xyz\n" {
		t.Errorf("getent calls: %q; want the first name's alone", c)
	}
	// Once that time has passed, it is asked again.
	time.Sleep(getentTimeout)
	if err := os.WriteFile(Getent, []byte("#!/bin/sh\necho 'back-xyz:*:4242:4242::/:/bin/sh'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if id, err := Lookup("back-xyz", false); err != nil || id != 4242 {
		t.Errorf("after the pause: %d, %v; want 4242", id, err)
	}
}
