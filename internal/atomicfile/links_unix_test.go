//go:build !windows

package atomicfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// A link that another user planted at a destination, or on the way to it, is not followed:
// root's install would otherwise overwrite (and give away) whatever file the planter chose.
func TestWrite_UntrustedLinkNotFollowed(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a link another owner")
	}
	base := t.TempDir()
	victim := filepath.Join(base, "victim")
	if err := os.WriteFile(victim, []byte("root's secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	svc := filepath.Join(base, "svc") // a service user's directory
	os.Mkdir(svc, 0o755)
	os.Mkdir(filepath.Join(base, "other"), 0o755)
	os.Chown(svc, 4242, 4242)
	plant := func(target, at string) {
		t.Helper()
		os.Remove(at)
		if err := os.Symlink(target, at); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(at, 4242, 4242); err != nil {
			t.Fatal(err)
		}
	}
	// At the destination.
	plant(victim, filepath.Join(svc, "app.conf"))
	_, err := Write(filepath.Join(svc, "app.conf"), []byte("rendered\n"), Options{UID: 4242, GID: Keep})
	var ue *UntrustedLinkError
	if !errors.As(err, &ue) {
		t.Fatalf("install through another user's link: err %v", err)
	}
	// On the way: a directory swapped for a link.
	plant(filepath.Join(base, "other"), filepath.Join(svc, "sub"))
	_, err = Write(filepath.Join(svc, "sub", "victim2"), []byte("rendered\n"), Options{UID: Keep, GID: Keep})
	if !errors.As(err, &ue) {
		t.Fatalf("install through another user's directory link: err %v", err)
	}
	if got, _ := os.ReadFile(victim); string(got) != "root's secret\n" {
		t.Fatalf("victim overwritten: %q", got)
	}
	if _, err := os.Stat(filepath.Join(base, "other", "victim2")); err == nil {
		t.Fatal("file written where another user's link leads")
	}
	// A link of root's (as /etc/resolv.conf) is still followed.
	os.Remove(filepath.Join(svc, "app.conf"))
	if err := os.Symlink(victim, filepath.Join(svc, "app.conf")); err != nil {
		t.Fatal(err)
	}
	if _, err := Write(filepath.Join(svc, "app.conf"), []byte("rendered\n"), Options{UID: Keep, GID: Keep}); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(victim); string(got) != "rendered\n" {
		t.Fatalf("root's link not followed: victim %q", got)
	}
}

// A file another user planted at the destination, in a directory that others than its owner
// may write (/tmp, a group's directory), does not give its owner and mode to what is installed
// in its place: the planter could read and rewrite root's file before its command runs.
func TestWrite_PlantedFileGivesNoOwnerOrMode(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give the planted file another owner")
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o1777); err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(dir, "app.conf")
	if err := os.WriteFile(dest, []byte("planted\n"), 0o666); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dest, 0o666)
	if err := os.Chown(dest, 4242, 4242); err != nil {
		t.Fatal(err)
	}
	if _, err := Write(dest, []byte("rendered\n"), Options{UID: Keep, GID: Keep}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dest)
	if err != nil {
		t.Fatal(err)
	}
	uid, _, _ := ownerOf(fi)
	if uid != 0 || fi.Mode().Perm()&0o022 != 0 {
		t.Fatalf("installed over a planted file: owner %d, mode %04o; want root's, not writable by others", uid, fi.Mode().Perm())
	}
	// Nor is it what an undo puts back (Previous): that would give the planter's file, owner
	// and mode, back to root's destination. Undone, the destination has no file, as before.
	if err := os.WriteFile(dest+".new", []byte("planted\n"), 0o666); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dest+".new", 0o666)
	os.Chown(dest+".new", 4242, 4242)
	if err := os.Rename(dest+".new", dest); err != nil {
		t.Fatal(err)
	}
	s, err := Stage(dest, []byte("rendered\n"), Options{UID: Keep, GID: Keep, KeepPrevious: true})
	if err != nil || s == nil {
		t.Fatalf("Stage = %v, %v", s, err)
	}
	if err := s.Install(); err != nil {
		t.Fatal(err)
	}
	if prev := s.Previous(); prev.Existed() {
		t.Fatalf("a planted file kept as the previous content (%q, owner %d, mode %04o)", prev.data, prev.uid, prev.perm)
	}
	if _, err := s.Previous().Restore(Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(dest); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("undone: %v, want no file", err)
	}
	// In a directory only its owner writes, a file of another user keeps its owner and mode
	// (a service's own config that root renders).
	own := t.TempDir()
	kept := filepath.Join(own, "svc.conf")
	os.WriteFile(kept, []byte("old\n"), 0o640)
	os.Chown(kept, 4242, 4242)
	if _, err := Write(kept, []byte("rendered\n"), Options{UID: Keep, GID: Keep}); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(kept); fi.Mode().Perm() != 0o640 {
		t.Fatalf("a service's file in root's directory lost its mode: %04o", fi.Mode().Perm())
	} else if uid, _, _ := ownerOf(fi); uid != 4242 {
		t.Fatalf("a service's file in root's directory lost its owner: %d", uid)
	}
}
