//go:build !windows

package agent_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/atomicfile"
)

// A hard link that another user made, where a destination's link leads, in a directory all may
// write (/tmp), to a file of root's that all may write, does not give that file's mode to what
// the install makes there: the new file is one of the agent's own, mode 0644, not writable by
// the planter. Before, the install took the name for root's existing file and kept its mode
// (0666): whoever made the hard link could then rewrite the service's config through it (tried
// with a real agent as root: the rendered file was -rw-rw-rw-).
func TestAgent_HardLinkPlantedWhereALinkLeadsGivesNoMode(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	a, dir, _ := testAgent(t, srv, oneAppConf)
	shared := linkedIntoShared(t, dir, "app.conf")
	// A file all may write, of root's (of the agent's user when the test is not root).
	open := filepath.Join(dir, "open")
	if err := os.WriteFile(open, []byte("open\n"), 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o666); err != nil {
		t.Fatal(err)
	}
	at := filepath.Join(shared, "app.conf")
	if err := os.Link(open, at); err != nil {
		t.Fatal(err)
	}
	if err := a.Once(context.Background(), "", false); err != nil {
		t.Fatal(err)
	}
	if got := read(t, at); got != "a=1\n" {
		t.Fatalf("%s = %q, want a=1", at, got)
	}
	if fi, err := os.Stat(at); err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("installed: %v, %v, want mode 0644, not the hard-linked file's 0666", fi, err)
	}
	if got := read(t, open); got != "open\n" {
		t.Fatalf("the hard-linked file = %q, want it untouched", got)
	}
}

// A file planted where a destination's link leads, in a directory all may write, that already
// holds what the template renders is replaced all the same: the agent's file is put in its place.
// Before, the install found it unchanged and left it, and whoever planted it (here a hard link to
// a file all may write; as root also a file of another user's) kept writing the service's config
// through it, the agent reporting its file in place, until a view changed the template's output.
func TestAgent_PlantedFileHoldingTheOutputIsReplaced(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	a, dir, _ := testAgent(t, srv, header+`templates:
  - contents: "a={{ key \"a\" }}\n"
    destination: $DIR/app.conf
    perms: "0644"
  - contents: "b={{ key \"a\" }}\n"
    destination: $DIR/other.conf
    perms: "0644"
`)
	shared := linkedIntoShared(t, dir, "app.conf", "other.conf")
	open := filepath.Join(dir, "open")
	if err := os.WriteFile(open, []byte("a=1\n"), 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o644); err != nil { // as the template asks: only the name is another's
		t.Fatal(err)
	}
	at := filepath.Join(shared, "app.conf")
	if err := os.Link(open, at); err != nil {
		t.Fatal(err)
	}
	theirs := filepath.Join(shared, "other.conf")
	if err := os.WriteFile(theirs, []byte("b=1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		t.Log("not root: a file of another user's cannot be made; only the hard link is checked")
	} else if err := os.Chown(theirs, 4242, 4242); err != nil {
		t.Fatal(err)
	}
	if err := a.Once(context.Background(), "", false); err != nil {
		t.Fatal(err)
	}
	was, _ := os.Stat(open)
	if now, err := os.Stat(at); err != nil || os.SameFile(was, now) || read(t, at) != "a=1\n" {
		t.Fatalf("%s: %v, %v: want a file of the agent's holding a=1, not the hard link left", at, now, err)
	}
	if os.Geteuid() == 0 {
		fi, err := os.Stat(theirs)
		if err != nil {
			t.Fatal(err)
		}
		if uid, _, _ := atomicfile.Owner(fi); uid != 0 || read(t, theirs) != "b=1\n" {
			t.Fatalf("%s owned by %d, want the agent's file in place of the planted one", theirs, uid)
		}
	}
}
