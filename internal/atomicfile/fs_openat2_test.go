//go:build linux

package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

// openNoLinks opens a directory whose path holds no link, the very one at that path, and
// refuses one with a link in any component; openDir still opens that one, by its real path.
func TestOpenNoLinks(t *testing.T) {
	base, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	real := filepath.Join(base, "a", "b")
	if err := os.MkdirAll(real, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(base, "a"), filepath.Join(base, "link")); err != nil {
		t.Fatal(err)
	}
	d := openNoLinks(real)
	if d == nil {
		t.Skip("no openat2 here (Linux before 5.6, or filtered)")
	}
	defer d.close()
	want, _ := os.Stat(real)
	for _, fi := range []func() (os.FileInfo, error){d.f.Stat, func() (os.FileInfo, error) { return d.root.Stat(".") }} {
		got, err := fi()
		if err != nil || !os.SameFile(got, want) {
			t.Fatalf("handle is not %s: %v", real, err)
		}
	}
	if d.path != real {
		t.Fatalf("path %s, want %s", d.path, real)
	}
	viaLink := filepath.Join(base, "link", "b")
	if d := openNoLinks(viaLink); d != nil {
		d.close()
		t.Fatalf("%s opened through its link", viaLink)
	}
	d2, err := openDir(viaLink)
	if err != nil {
		t.Fatal(err)
	}
	defer d2.close()
	if d2.path != real {
		t.Fatalf("openDir(%s).path = %s, want %s", viaLink, d2.path, real)
	}
	// The directory fsync goes through the handle held.
	if err := d2.sync(); err != nil {
		t.Fatal(err)
	}
}
