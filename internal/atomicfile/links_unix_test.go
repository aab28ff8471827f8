//go:build !windows

package atomicfile

import (
	"errors"
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
