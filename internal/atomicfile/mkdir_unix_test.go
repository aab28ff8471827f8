//go:build !windows

package atomicfile

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// MkdirAll makes the missing directories through the process's own links, and none through
// another user's (TestAgent_MissingDirsNotMadeThroughAnotherUsersLink is the agent's side).
func TestMkdirAll(t *testing.T) {
	base := t.TempDir()
	real := filepath.Join(base, "real")
	os.Mkdir(real, 0o755)
	if err := os.Symlink(real, filepath.Join(base, "mine")); err != nil {
		t.Fatal(err)
	}
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	if err := MkdirAll(filepath.Join(base, "mine", "a", "b"), 0o755); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(filepath.Join(real, "a", "b")); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o755 {
		t.Fatalf("made through the process's own link: %v, %v", fi, err)
	}
	if err := MkdirAll(filepath.Join(base, "mine", "a", "b"), 0o755); err != nil {
		t.Fatalf("MkdirAll of a directory that exists: %v", err)
	}
	os.WriteFile(filepath.Join(base, "file"), nil, 0o644)
	if err := MkdirAll(filepath.Join(base, "file", "x"), 0o755); err == nil {
		t.Fatal("MkdirAll under a regular file succeeded")
	}
	if os.Geteuid() != 0 {
		t.Log("not root: a link of another user's cannot be made; that part is not checked")
		return
	}
	theirs := filepath.Join(base, "theirs")
	if err := os.Symlink(real, theirs); err != nil {
		t.Fatal(err)
	}
	os.Lchown(theirs, 4242, 4242)
	var ue *UntrustedLinkError
	if err := MkdirAll(filepath.Join(theirs, "c", "d"), 0o755); !errors.As(err, &ue) {
		t.Fatalf("MkdirAll through another user's link = %v, want an *UntrustedLinkError", err)
	}
	if _, err := os.Lstat(filepath.Join(real, "c")); !os.IsNotExist(err) {
		t.Fatalf("a directory was made where another user's link leads (%v)", err)
	}
}
