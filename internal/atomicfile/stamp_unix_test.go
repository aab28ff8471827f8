//go:build !windows

package atomicfile_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/atomicfile"
)

func mustStamp(t *testing.T, path string) atomicfile.Stamp {
	t.Helper()
	st, err := atomicfile.StampOf(path)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// A Stamp stays the same while a file is only read, and differs once anything that could change
// its bytes, mode or owner was done to it, or to a link at its name.
func TestStampOf(t *testing.T) {
	dir := t.TempDir()
	dst := filepath.Join(dir, "a.conf")
	if st := mustStamp(t, dst); st.Exists() || st != (atomicfile.Stamp{}) {
		t.Fatalf("StampOf(missing) = %+v, want one that does not exist", st)
	}
	write := func(b string) {
		t.Helper()
		if err := os.WriteFile(dst, []byte(b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("port 80\n")
	for _, c := range []struct {
		what   string
		change func()
	}{
		{"read", func() { os.ReadFile(dst) }},
		{"edited in place, the same size, its modification time set back", func() {
			fi, _ := os.Stat(dst)
			write("port 81\n")
			os.Chtimes(dst, time.Time{}, fi.ModTime())
		}},
		{"touched", func() { os.Chtimes(dst, time.Time{}, time.Now().Add(time.Hour)) }},
		{"chmod", func() { os.Chmod(dst, 0o600) }},
		{"replaced by a rename", func() {
			os.WriteFile(dst+".new", []byte("port 80\n"), 0o600)
			os.Rename(dst+".new", dst)
		}},
	} {
		before := mustStamp(t, dst)
		c.change()
		after := mustStamp(t, dst)
		if same := before == after; same != (c.what == "read") {
			t.Errorf("%s: stamps equal = %v", c.what, same)
		}
		if !after.Exists() {
			t.Errorf("%s: the file does not exist", c.what)
		}
	}

	// A link at the name: the file it leads to and the link itself both count.
	target := filepath.Join(dir, "target")
	os.WriteFile(target, []byte("x\n"), 0o644)
	link := filepath.Join(dir, "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	before := mustStamp(t, link)
	if !before.Exists() || before == mustStamp(t, target) {
		t.Fatalf("StampOf(link) = %+v, want the link and its file", before)
	}
	os.WriteFile(target, []byte("y\n"), 0o644)
	if mustStamp(t, link) == before {
		t.Error("the file a link leads to edited: the same stamp")
	}
	before = mustStamp(t, link)
	other := filepath.Join(dir, "other")
	os.WriteFile(other, []byte("y\n"), 0o644)
	os.Remove(link)
	os.Symlink(other, link)
	if mustStamp(t, link) == before {
		t.Error("the link pointed elsewhere: the same stamp")
	}
	os.Remove(other)
	if st := mustStamp(t, link); st.Exists() {
		t.Errorf("a link leading nowhere: %+v exists", st)
	}
	os.Remove(dst)
	if st := mustStamp(t, dst); st.Exists() {
		t.Errorf("deleted: %+v exists", st)
	}
}

// Wrote tells the file an Install put in place, untouched since, from one changed after it.
func TestStaged_Wrote(t *testing.T) {
	dir := t.TempDir()
	dst := filepath.Join(dir, "a.conf")
	os.WriteFile(dst, []byte("old\n"), 0o644)
	install := func(data string) *atomicfile.Staged {
		t.Helper()
		s, err := atomicfile.Stage(dst, []byte(data), atomicfile.Options{Perm: 0o640, UID: atomicfile.Keep, GID: atomicfile.Keep})
		if err != nil || s == nil {
			t.Fatalf("Stage = %v, %v", s, err)
		}
		if err := s.Install(); err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := install("new\n")
	if !s.Wrote(mustStamp(t, dst)) {
		t.Fatal("Wrote = false for the file just installed")
	}
	s = install("newer\n")
	os.WriteFile(dst, []byte("edit\n"), 0o640)
	if s.Wrote(mustStamp(t, dst)) {
		t.Fatal("Wrote = true for a file edited since the install")
	}
	s = install("newest\n")
	os.Chmod(dst, 0o600)
	if s.Wrote(mustStamp(t, dst)) {
		t.Fatal("Wrote = true for a file whose mode changed since the install")
	}
}
