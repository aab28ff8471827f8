//go:build !windows

package atomicfile_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/atomicfile"
)

// spareOf is the spare Options.Spare keeps for path.
func spareOf(path string) string {
	return filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".shoelace-spare")
}

// inode is the inode of the file at p (Lstat).
func inode(t *testing.T, p string) uint64 {
	t.Helper()
	return mustLstat(t, p).Sys().(*syscall.Stat_t).Ino
}

// wantSpare fails unless path's spare is there as makeSpare leaves it: a regular file, empty,
// mode 0600, one name.
func wantSpare(t *testing.T, path string) {
	t.Helper()
	fi, err := os.Lstat(spareOf(path))
	if err != nil {
		t.Fatalf("no spare: %v", err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if !fi.Mode().IsRegular() || fi.Size() != 0 || fi.Mode().Perm() != 0o600 || st.Nlink != 1 || int(st.Uid) != os.Geteuid() {
		t.Fatalf("spare %v size %d links %d uid %d, want an empty regular file, 0600, one name, ours", fi.Mode(), fi.Size(), st.Nlink, st.Uid)
	}
}

func wantNoSpare(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Lstat(spareOf(path)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a spare is there (%v), want none", err)
	}
}

func wantContent(t *testing.T, path, want string, perm os.FileMode) {
	t.Helper()
	fi := mustLstat(t, path)
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want || fi.Mode() != perm {
		t.Fatalf("%s holds %q, mode %v; want %q, %v", path, got, fi.Mode(), want, perm)
	}
}

// An install with Spare leaves an empty spare beside the destination, and the next install
// fills that very file (its inode becomes the destination's) and leaves a new spare; the file
// installed has the mode asked, not the spare's. With the directory's fsync deferred, the spare
// is there before the fsync, for a change that follows at once.
func TestSpare_NextInstallFillsIt(t *testing.T) {
	defer atomicfile.FileSpares()()
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	path := filepath.Join(dir, "app.conf")
	opts := atomicfile.Options{Perm: 0o644, UID: atomicfile.Keep, GID: atomicfile.Keep, Spare: true}
	if _, err := atomicfile.Write(path, []byte("one\n"), opts); err != nil {
		t.Fatal(err)
	}
	wantContent(t, path, "one\n", 0o644)
	wantSpare(t, path)
	spare := inode(t, spareOf(path))
	if _, err := atomicfile.Write(path, []byte("two\n"), opts); err != nil {
		t.Fatal(err)
	}
	wantContent(t, path, "two\n", 0o644)
	if got := inode(t, path); got != spare {
		t.Fatalf("the install is inode %d, want the spare's, %d", got, spare)
	}
	wantSpare(t, path)
	if inode(t, spareOf(path)) == spare {
		t.Fatal("the new spare is the file installed")
	}

	// Deferred: the spare is made before Sync.
	spare = inode(t, spareOf(path))
	ds := &atomicfile.DirSyncs{}
	opts.DirSyncs = ds
	if _, err := atomicfile.Write(path, []byte("three\n"), opts); err != nil {
		t.Fatal(err)
	}
	wantContent(t, path, "three\n", 0o644)
	if inode(t, path) != spare {
		t.Fatal("a deferred install did not fill the spare")
	}
	wantSpare(t, path)
	spare = inode(t, spareOf(path))
	if _, err := atomicfile.Write(path, []byte("four\n"), opts); err != nil {
		t.Fatal(err)
	}
	wantContent(t, path, "four\n", 0o644)
	if inode(t, path) != spare {
		t.Fatal("the next install before the fsync did not fill the spare")
	}
	if err := ds.Sync(); err != nil {
		t.Fatal(err)
	}
	wantSpare(t, path)

	// Nothing else is left in the directory: the destination and its spare.
	names, _ := os.ReadDir(dir)
	if len(names) != 2 {
		t.Fatalf("directory holds %v, want app.conf and its spare", names)
	}
}

// No spare is made where it is not asked, with NoSync, or in a directory that others than its
// owner may write (a group's, a world-writable one, /tmp's kind); the installs there go on as
// without Spare.
func TestSpare_NotMadeWhereOthersMayWrite(t *testing.T) {
	defer atomicfile.FileSpares()()
	for _, c := range []struct {
		name string
		mode os.FileMode
		opts atomicfile.Options
	}{
		{"not asked", 0o755, atomicfile.Options{}},
		{"NoSync", 0o755, atomicfile.Options{Spare: true, NoSync: true}},
		{"group may write", 0o775, atomicfile.Options{Spare: true}},
		{"others may write", 0o777, atomicfile.Options{Spare: true}},
		{"sticky, others may write", 0o777 | os.ModeSticky, atomicfile.Options{Spare: true}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "d")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, c.mode); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "app.conf")
			c.opts.UID, c.opts.GID = atomicfile.Keep, atomicfile.Keep
			for _, data := range []string{"one\n", "two\n"} {
				if _, err := atomicfile.Write(path, []byte(data), c.opts); err != nil {
					t.Fatal(err)
				}
				wantContent(t, path, data, atomicfile.DefaultPerm)
				wantNoSpare(t, path)
			}
		})
	}
}

// Whatever is at a spare's name but the empty file of our own that makeSpare leaves is never
// written to, nor followed, nor removed: the install creates a temp file, as without a spare,
// and what was planted is as it was. Only the agent's user (or root) can plant in a directory
// that keeps spares, so these are its own mistakes or a race with another of its processes,
// but each would write where the destination's bytes must not go.
func TestSpare_AnythingElseAtItsNameIsLeftAlone(t *testing.T) {
	defer atomicfile.FileSpares()()
	kinds := []string{"link to an empty file", "link to nowhere", "file with content", "hard link to an empty file",
		"fifo", "directory", "mode 0644", "mode 0600 with setuid"}
	if os.Geteuid() == 0 {
		kinds = append(kinds, "another user's empty file")
	}
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			top := t.TempDir()
			dir := filepath.Join(top, "d")
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "app.conf")
			spare := spareOf(path)
			outside := filepath.Join(top, "outside")
			if err := os.WriteFile(outside, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			var err error
			switch kind {
			case "link to an empty file":
				err = os.Symlink(outside, spare)
			case "link to nowhere":
				err = os.Symlink(filepath.Join(top, "nowhere"), spare)
			case "file with content":
				err = os.WriteFile(spare, []byte("kept\n"), 0o600)
			case "hard link to an empty file":
				err = os.Link(outside, spare)
			case "fifo":
				err = syscall.Mkfifo(spare, 0o600)
			case "directory":
				err = os.Mkdir(spare, 0o700)
			case "mode 0644":
				if err = os.WriteFile(spare, nil, 0o600); err == nil {
					err = os.Chmod(spare, 0o644)
				}
			case "mode 0600 with setuid":
				if err = os.WriteFile(spare, nil, 0o600); err == nil {
					err = os.Chmod(spare, 0o600|os.ModeSetuid)
				}
			case "another user's empty file":
				if err = os.WriteFile(spare, nil, 0o600); err == nil {
					err = os.Chown(spare, 65534, 65534)
				}
			}
			if err != nil {
				t.Fatal(err)
			}
			before, err := os.Lstat(spare)
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() {
				_, err := atomicfile.Write(path, []byte("new\n"), atomicfile.Options{UID: atomicfile.Keep, GID: atomicfile.Keep, Spare: true})
				done <- err
			}()
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("the install hangs")
			}
			wantContent(t, path, "new\n", atomicfile.DefaultPerm)
			after, err := os.Lstat(spare)
			if err != nil {
				t.Fatalf("what was planted is gone: %v", err)
			}
			if !os.SameFile(before, after) || after.Mode() != before.Mode() || after.Size() != before.Size() {
				t.Fatalf("what was planted changed: %v %d, was %v %d", after.Mode(), after.Size(), before.Mode(), before.Size())
			}
			if os.SameFile(after, mustLstat(t, path)) {
				t.Fatal("the planted file was installed")
			}
			if b, err := os.ReadFile(outside); err != nil || len(b) != 0 {
				t.Fatalf("the file outside holds %q (%v), want it empty", b, err)
			}
			if _, err := os.Lstat(filepath.Join(top, "nowhere")); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("a file was made where a link at the spare's name leads (%v)", err)
			}
		})
	}
}

func mustLstat(t *testing.T, p string) os.FileInfo {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi
}

// A spare claimed by an install that failed its check is removed with it, not left holding the
// refused content; the next install creates its file and makes a spare again.
func TestSpare_FailedCheckLeavesNothing(t *testing.T) {
	defer atomicfile.FileSpares()()
	dir := t.TempDir()
	path := filepath.Join(dir, "app.conf")
	opts := atomicfile.Options{UID: atomicfile.Keep, GID: atomicfile.Keep, Spare: true}
	if _, err := atomicfile.Write(path, []byte("good\n"), opts); err != nil {
		t.Fatal(err)
	}
	wantSpare(t, path)
	spare := inode(t, spareOf(path))
	bad := opts
	var staged uint64
	bad.Check = func(p string) error {
		staged = inode(t, p)
		return errors.New("refused")
	}
	if _, err := atomicfile.Write(path, []byte("bad\n"), bad); err == nil {
		t.Fatal("the check's error was not returned")
	}
	if staged != spare {
		t.Fatalf("the check saw inode %d, want the spare filled (%d)", staged, spare)
	}
	wantContent(t, path, "good\n", atomicfile.DefaultPerm)
	if names, _ := os.ReadDir(dir); len(names) != 1 {
		t.Fatalf("directory holds %v, want app.conf alone", names)
	}
	if _, err := atomicfile.Write(path, []byte("better\n"), opts); err != nil {
		t.Fatal(err)
	}
	wantContent(t, path, "better\n", atomicfile.DefaultPerm)
	wantSpare(t, path)
}

// RemoveLeftovers leaves a spare alone: it is never written under its name (an install renames
// it to a temp name of its own first). A spare that a killed run had claimed is a temp file, and
// goes as one when it is older than the run.
func TestRemoveLeftovers_Spares(t *testing.T) {
	defer atomicfile.FileSpares()()
	dir := t.TempDir()
	path := filepath.Join(dir, "app.conf")
	old := time.Now().Add(-time.Hour)
	for _, data := range []string{"", "something"} {
		if err := os.WriteFile(spareOf(path), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(spareOf(path), old, old)
		if removed, err := atomicfile.RemoveLeftovers(path, time.Now()); err != nil || len(removed) != 0 {
			t.Fatalf("spare %q: removed %v (%v), want it left", data, removed, err)
		}
	}
	claimed := filepath.Join(dir, ".app.conf.shoelace-12345678901234567890")
	if err := os.WriteFile(claimed, []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(claimed, old, old)
	if removed, err := atomicfile.RemoveLeftovers(path, time.Now()); err != nil || len(removed) != 1 || removed[0] != claimed {
		t.Fatalf("removed %v (%v), want the claimed spare a killed run left", removed, err)
	}
	if b, _ := os.ReadFile(spareOf(path)); !bytes.Equal(b, []byte("something")) {
		t.Fatal("the spare was touched")
	}
}
