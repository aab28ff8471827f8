//go:build !windows

package atomicfile_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/atomicfile"
)

// With DirSyncs the installs rename their files into place without fsyncing the directory;
// Sync then fsyncs each directory once, however many files were installed in it, and releases
// them; after it, nothing is pending.
func TestDirSyncsDefersOneFsyncPerDirectory(t *testing.T) {
	dirA, dirB := t.TempDir(), t.TempDir()
	var synced []string
	restore := atomicfile.SetFsync(func(f *os.File) error {
		if fi, err := f.Stat(); err == nil && fi.IsDir() {
			synced = append(synced, f.Name())
		}
		return f.Sync()
	})
	defer restore()
	ds := &atomicfile.DirSyncs{}
	for i, p := range []string{filepath.Join(dirA, "one"), filepath.Join(dirA, "two"), filepath.Join(dirB, "three")} {
		if _, err := atomicfile.Write(p, []byte{byte('a' + i)}, atomicfile.Options{DirSyncs: ds}); err != nil {
			t.Fatal(err)
		}
		if b, err := os.ReadFile(p); err != nil || len(b) != 1 {
			t.Fatalf("%s not in place: %q, %v", p, b, err)
		}
	}
	if len(synced) != 0 {
		t.Fatalf("directories fsynced before Sync: %v", synced)
	}
	if !ds.Pending() {
		t.Fatal("nothing pending after three installs")
	}
	if err := ds.Sync(); err != nil {
		t.Fatal(err)
	}
	if len(synced) != 2 {
		t.Fatalf("fsyncs %v, want one for each of the two directories", synced)
	}
	if ds.Pending() {
		t.Fatal("still pending after Sync")
	}
	// Without DirSyncs an install fsyncs its directory itself.
	synced = nil
	if _, err := atomicfile.Write(filepath.Join(dirA, "four"), []byte("d"), atomicfile.Options{}); err != nil {
		t.Fatal(err)
	}
	if len(synced) != 1 {
		t.Fatalf("fsyncs %v, want the directory's", synced)
	}
}
