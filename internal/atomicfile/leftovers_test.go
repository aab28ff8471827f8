package atomicfile

import (
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"
)

// A killed install leaves its staged file (and its backup's temp) in the destination's
// directory; RemoveLeftovers removes those, older than the time given, and nothing else.
func TestRemoveLeftovers(t *testing.T) {
	dir := t.TempDir()
	dest := filepath.Join(dir, "app.conf")
	if err := os.WriteFile(dest, []byte("old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// What a run killed while its check ran leaves: the staged file.
	st, err := Stage(dest, []byte("new\n"), Options{Perm: 0o644, UID: Keep, GID: Keep, KeepPrevious: true})
	if err != nil || st == nil {
		t.Fatalf("stage: %v", err)
	}
	staged := st.d.join(st.tmp)
	st.d.close() // killed: never installed nor discarded, its handles gone
	st.release()

	old := time.Now().Add(-time.Hour)
	write := func(name string, mtime time.Time) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
		return p
	}
	bak := write(".app.conf.bak.shoelace-42", old)
	keep := []string{
		dest,
		write(".app.conf.shoelace-77", time.Now().Add(time.Hour)), // another process's, in progress
		write(".app.conf.shoelace-7x", old),                       // not a name of ours
		write(".app.conf.shoelace-", old),
		write(".other.conf.shoelace-5", old), // another destination's
		write("app.conf.shoelace-5", old),
	}
	if runtime.GOOS != "windows" {
		target := write("target", old)
		link := filepath.Join(dir, ".app.conf.shoelace-55")
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
		keep = append(keep, link, target)
	}

	removed, err := RemoveLeftovers(dest, time.Now().Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(removed)
	want := []string{bak, staged}
	slices.Sort(want)
	if !slices.Equal(removed, want) {
		t.Errorf("removed %q, want %q", removed, want)
	}
	for _, p := range want {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s is still there (%v)", p, err)
		}
	}
	for _, p := range keep {
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("%s was removed: %v", p, err)
		}
	}
	if b, _ := os.ReadFile(dest); string(b) != "old\n" {
		t.Errorf("destination holds %q", b)
	}
	// A directory that does not exist has nothing left in it.
	if removed, err := RemoveLeftovers(filepath.Join(dir, "none", "x.conf"), time.Now()); err != nil || removed != nil {
		t.Errorf("missing directory: %q, %v", removed, err)
	}
}

// A run that starts while another process's install is in its check (a `once` beside a `run`
// starting) leaves that install's staged file alone, however old: the install holds it. It
// removed it, and the install failed (rename: no such file). A killed install's file, held by
// no one, is still removed.
func TestRemoveLeftovers_InstallInProgressLeftAlone(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no flock: RemoveLeftovers goes by the files' times alone")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "app.conf")
	var removed []string
	opts := Options{Perm: 0o644, UID: Keep, GID: Keep, Check: func(staged string) error {
		var err error
		// As a run started an hour after this install began would see it.
		removed, err = RemoveLeftovers(path, time.Now().Add(time.Hour))
		return err
	}}
	if _, err := Write(path, []byte("new\n"), opts); err != nil {
		t.Fatalf("the install whose staged file a starting run saw: %v", err)
	}
	if len(removed) != 0 {
		t.Fatalf("removed %v", removed)
	}
	if b, _ := os.ReadFile(path); string(b) != "new\n" {
		t.Fatalf("file %q", b)
	}
	killed := filepath.Join(dir, ".app.conf.shoelace-12345")
	if err := os.WriteFile(killed, []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	if removed, err := RemoveLeftovers(path, time.Now().Add(time.Hour)); err != nil || len(removed) != 1 || removed[0] != killed {
		t.Fatalf("a killed install's file: removed %v, %v", removed, err)
	}
}
