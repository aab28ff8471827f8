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
	st.d.close() // killed: never installed nor discarded

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
