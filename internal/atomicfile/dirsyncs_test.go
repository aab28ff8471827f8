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

// A directory replaced at its path between two deferred installs is another directory: Sync
// fsyncs both, the one each file was renamed in (one fsync per path would leave the second
// rename's durability to chance).
func TestDirSyncsDirectoryReplacedMeanwhile(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "conf")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var synced []os.FileInfo
	restore := atomicfile.SetFsync(func(f *os.File) error {
		if fi, err := f.Stat(); err == nil && fi.IsDir() {
			synced = append(synced, fi)
		}
		return f.Sync()
	})
	defer restore()
	ds := &atomicfile.DirSyncs{}
	if _, err := atomicfile.Write(filepath.Join(dir, "one"), []byte("1"), atomicfile.Options{DirSyncs: ds}); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(dir, filepath.Join(parent, "conf.old")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := atomicfile.Write(filepath.Join(dir, "two"), []byte("2"), atomicfile.Options{DirSyncs: ds}); err != nil {
		t.Fatal(err)
	}
	now, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := ds.Sync(); err != nil {
		t.Fatal(err)
	}
	if len(synced) != 2 || !os.SameFile(synced[1], now) {
		t.Fatalf("%d directories fsynced, want both: the replaced one and the one now at %s", len(synced), dir)
	}
}
