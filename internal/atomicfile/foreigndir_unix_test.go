//go:build !windows

package atomicfile_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/atomicfile"
)

const foreignUID = 4242 // another user than root and the test's

// owner is the uid of the file at p (its lstat).
func owner(t *testing.T, p string) int {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return int(fi.Sys().(*syscall.Stat_t).Uid)
}

// names lists the entries of directory p.
func names(t *testing.T, p string) []string {
	t.Helper()
	ents, err := os.ReadDir(p)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// wantForeign fails unless err is the *ForeignDirError of dir, owned by foreignUID, in parent,
// saying what to do.
func wantForeign(t *testing.T, what string, err error, dir string) {
	t.Helper()
	var fe *atomicfile.ForeignDirError
	if !errors.As(err, &fe) {
		t.Fatalf("%s: err %v, want a *ForeignDirError", what, err)
	}
	if fe.Dir != dir || fe.UID != foreignUID || fe.Parent != filepath.Dir(dir) {
		t.Fatalf("%s: refused %+v, want %s of uid %d", what, fe, dir, foreignUID)
	}
	for _, want := range []string{dir, "uid 4242", "in " + filepath.Dir(dir) + ",", "chown root " + dir, "move the destination"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("%s: error %q lacks %q", what, err, want)
		}
	}
}

// A directory on the way to a destination (where its links lead) that another user owns, in a
// directory others than its owner may write (sticky as /tmp, or not; or its group's), is
// refused, whether the destination names it or a link of root's leads into it: the install
// writes nothing in it, leaves the file there (its owner's) as it is, and an Unchanged, a
// ReadDestination, a Restore and a MkdirAll refuse it too. Whoever made it there first owns
// it, and can swap it or fill it with links while root installs in it. Before, only links were
// judged: root installed there, and the file of the directory's owner holding the output stayed
// theirs (Keep), able to rewrite root's configuration.
func TestWrite_AnotherUsersDirectoryWhereOthersMayWriteRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Log("not root: a directory of another user's cannot be made; only the agent's user's own directory in a shared one is checked")
	}
	base := t.TempDir()
	for _, c := range []struct {
		name string
		mode os.FileMode
	}{{"sticky", 0o777 | os.ModeSticky}, {"world", 0o777}, {"group", 0o775}} {
		shared := filepath.Join(base, c.name)
		if err := os.Mkdir(shared, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(shared, c.mode); err != nil {
			t.Fatal(err)
		}
		// The process's own directory there is its own: installed in.
		own := filepath.Join(shared, "own")
		if err := os.Mkdir(own, 0o755); err != nil {
			t.Fatal(err)
		}
		if _, err := atomicfile.Write(filepath.Join(own, "x"), []byte("rendered\n"), atomicfile.Options{UID: atomicfile.Keep, GID: atomicfile.Keep}); err != nil {
			t.Fatalf("%s: install in the process's own directory: %v", c.name, err)
		}
		if os.Geteuid() != 0 {
			continue
		}
		d := filepath.Join(shared, "d")
		x := filepath.Join(d, "x")
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(x, []byte("rendered\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{d, x} {
			if err := os.Chown(p, foreignUID, foreignUID); err != nil {
				t.Fatal(err)
			}
		}
		link := filepath.Join(base, "link-"+c.name) // root's link, as etc/appdir -> /tmp/d
		if err := os.Symlink(d, link); err != nil {
			t.Fatal(err)
		}
		for _, dest := range []string{x, filepath.Join(link, "x")} {
			for _, data := range []string{"rendered\n", "changed\n"} {
				what := c.name + ": Write " + dest + " " + strings.TrimSpace(data)
				changed, err := atomicfile.Write(dest, []byte(data), atomicfile.Options{UID: atomicfile.Keep, GID: atomicfile.Keep, Backup: true})
				wantForeign(t, what, err, d)
				if changed {
					t.Fatalf("%s: changed", what)
				}
			}
			_, err := atomicfile.Unchanged(dest, []byte("rendered\n"), atomicfile.Options{UID: atomicfile.Keep, GID: atomicfile.Keep})
			wantForeign(t, c.name+": Unchanged "+dest, err, d)
			_, _, err = atomicfile.ReadDestination(dest, -1)
			wantForeign(t, c.name+": ReadDestination "+dest, err, d)
		}
		_, err := atomicfile.NewPrevious(x, false, nil, 0, 0, 0).Restore(atomicfile.Options{})
		wantForeign(t, c.name+": Restore (remove)", err, d)
		_, err = atomicfile.NewPrevious(x, true, []byte("old\n"), 0o644, 0, 0).Restore(atomicfile.Options{})
		wantForeign(t, c.name+": Restore", err, d)
		// Nested: a directory of root's in it (made there before) is no way around it.
		e := filepath.Join(d, "e")
		if err := os.Mkdir(e, 0o755); err != nil {
			t.Fatal(err)
		}
		_, err = atomicfile.Write(filepath.Join(e, "y"), []byte("changed\n"), atomicfile.Options{UID: atomicfile.Keep, GID: atomicfile.Keep})
		wantForeign(t, c.name+": Write under a directory of root's in it", err, d)
		wantForeign(t, c.name+": MkdirAll", atomicfile.MkdirAll(filepath.Join(d, "f", "g"), 0o755), d)
		if got, err := os.ReadFile(x); err != nil || string(got) != "rendered\n" || owner(t, x) != foreignUID {
			t.Fatalf("%s: %s = %q, %v, owner %d: want it left as it was", c.name, x, got, err, owner(t, x))
		}
		if got := names(t, d); !slices.Equal(got, []string{"e", "x"}) {
			t.Fatalf("%s: %s holds %v, want e and x alone", c.name, d, got)
		}
		if got := names(t, e); len(got) != 0 {
			t.Fatalf("%s: %s holds %v", c.name, e, got)
		}
	}
}

// A directory given to an application's user in a directory only root may write (/etc/app
// owned by appuser) is installed in as before: root chose to give it away, and its owner's
// file at the destination keeps its owner (Keep), as an agent rendering into an application's
// own configuration directory needs.
func TestWrite_ApplicationUsersDirectoryUnderRootsInstalledIn(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Log("not root: a directory of another user's cannot be made; the agent's user's own stands for it")
	}
	etc := t.TempDir() // root's, as /etc
	app := filepath.Join(etc, "app")
	x := filepath.Join(app, "app.conf")
	if err := os.Mkdir(app, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(x, []byte("old\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	want := os.Geteuid()
	if want == 0 {
		want = foreignUID
		for _, p := range []string{app, x} {
			if err := os.Chown(p, foreignUID, foreignUID); err != nil {
				t.Fatal(err)
			}
		}
	}
	keep := atomicfile.Options{UID: atomicfile.Keep, GID: atomicfile.Keep}
	if changed, err := atomicfile.Write(x, []byte("new\n"), keep); err != nil || !changed {
		t.Fatalf("Write = %v, %v", changed, err)
	}
	if same, err := atomicfile.Unchanged(x, []byte("new\n"), keep); err != nil || !same {
		t.Fatalf("Unchanged = %v, %v", same, err)
	}
	if got, _ := os.ReadFile(x); string(got) != "new\n" || owner(t, x) != want {
		t.Fatalf("%s = %q, owner %d; want new, owner %d", x, got, owner(t, x), want)
	}
	sub := filepath.Join(app, "conf.d", "site")
	if err := atomicfile.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := atomicfile.Write(filepath.Join(sub, "a.conf"), []byte("a\n"), keep); err != nil {
		t.Fatal(err)
	}
}

// A directory that another user makes in a directory all may write as MkdirAll makes it (first,
// between MkdirAll's look and its mkdir), or swaps for the destination's (in a directory of mode
// 0777 without the sticky bit, where anyone may rename root's directory away) after Stage's
// comparison, is refused as the install reaches it: nothing is made or written in it.
func TestWrite_AnotherUsersDirectoryMadeOrSwappedInMeanwhileRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Log("not root: a directory of another user's cannot be made; the agent's user's own is made and installed in")
	}
	root := os.Geteuid() == 0
	shared := t.TempDir()
	if err := os.Chmod(shared, 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	n := filepath.Join(shared, "n")
	made := false
	restore := atomicfile.SetBetween(func(step string) {
		if step != "mkdir" || made {
			return
		}
		made = true
		if err := os.Mkdir(n, 0o777); err != nil {
			t.Error(err)
		}
		if root {
			if err := os.Chown(n, foreignUID, foreignUID); err != nil {
				t.Error(err)
			}
		}
	})
	err := atomicfile.MkdirAll(filepath.Join(n, "sub"), 0o755)
	restore()
	if !made {
		t.Fatal("MkdirAll made nothing")
	}
	if !root {
		if err != nil {
			t.Fatal(err)
		}
	} else {
		wantForeign(t, "MkdirAll", err, n)
		if got := names(t, n); len(got) != 0 {
			t.Fatalf("%s holds %v", n, got)
		}
	}

	world := filepath.Join(t.TempDir(), "world")
	if err := os.Mkdir(world, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(world, 0o777); err != nil {
		t.Fatal(err)
	}
	r := filepath.Join(world, "r")
	if err := os.Mkdir(r, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(r, "x"), []byte("old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	swapped := false
	restore = atomicfile.SetBetween(func(step string) {
		if step != "compared" || swapped {
			return
		}
		swapped = true
		if err := os.Rename(r, r+".old"); err != nil {
			t.Error(err)
		}
		if err := os.Mkdir(r, 0o755); err != nil {
			t.Error(err)
		}
		if root {
			if err := os.Chown(r, foreignUID, foreignUID); err != nil {
				t.Error(err)
			}
		}
	})
	_, err = atomicfile.Write(filepath.Join(r, "x"), []byte("new\n"), atomicfile.Options{UID: atomicfile.Keep, GID: atomicfile.Keep})
	restore()
	if !swapped {
		t.Fatal("Write never compared")
	}
	if !root {
		if err != nil {
			t.Fatal(err)
		}
		return
	}
	wantForeign(t, "Write", err, r)
	if got := names(t, r); len(got) != 0 {
		t.Fatalf("%s holds %v", r, got)
	}
	if got, _ := os.ReadFile(filepath.Join(r+".old", "x")); string(got) != "old\n" {
		t.Fatalf("root's directory's x = %q", got)
	}
}
