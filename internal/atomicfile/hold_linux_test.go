//go:build linux

package atomicfile_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/atomicfile"
)

// heldGone counts this process's descriptors of files at path that are no longer there (a
// rename replaced them): what /proc says of a descriptor whose file lost its last name.
func heldGone(t *testing.T, path string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if to, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && to == path+" (deleted)" {
			n++
		}
	}
	return n
}

// An install over a file holds the file it replaces until the directory is released, after
// its fsync: the rename only takes the name away, and freeing the file's blocks (a discard of
// each on a file system mounted with discard) is not on the way to the new file being in
// place. With DirSyncs that is at Sync; without, before Install returns. Nothing stays held.
func TestInstallFreesTheReplacedFileAfterTheDirectorysFsync(t *testing.T) {
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "app.conf")
	if err := os.WriteFile(dst, []byte("old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var atFsync []int
	restore := atomicfile.SetFsync(func(f *os.File) error {
		if fi, err := f.Stat(); err == nil && fi.IsDir() {
			atFsync = append(atFsync, heldGone(t, dst)+heldGone(t, dst+".bak"))
		}
		return f.Sync()
	})
	defer restore()

	ds := &atomicfile.DirSyncs{}
	opts := keep()
	opts.KeepPrevious, opts.DirSyncs = true, ds
	s, err := atomicfile.Stage(dst, []byte("new\n"), opts)
	if err != nil || s == nil {
		t.Fatal(s, err)
	}
	if err := s.Install(); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(dst); err != nil || string(b) != "new\n" {
		t.Fatalf("after Install: %q, %v; want the new file in place", b, err)
	}
	if n := heldGone(t, dst); n != 1 {
		t.Fatalf("after Install, before Sync: %d replaced files held, want the old one", n)
	}
	if err := ds.Sync(); err != nil {
		t.Fatal(err)
	}
	if len(atFsync) != 1 || atFsync[0] != 1 {
		t.Fatalf("replaced files held at each directory fsync: %v, want [1] (released after it)", atFsync)
	}
	if n := heldGone(t, dst); n != 0 {
		t.Fatalf("after Sync: %d replaced files still held", n)
	}

	// Without DirSyncs, and with a .bak (the file replaced is the old .bak, the one installed
	// over keeps a name as the new .bak): the same, all within Write.
	atFsync = nil
	for i, content := range []string{"third\n", "fourth\n", "fifth\n"} {
		o := keep()
		o.Backup = i > 0
		if changed, err := atomicfile.Write(dst, []byte(content), o); err != nil || !changed {
			t.Fatal(changed, err)
		}
		if n := heldGone(t, dst); n != 0 {
			t.Fatalf("after Write %d: %d replaced files still held", i, n)
		}
		if n := heldGone(t, dst+".bak"); n != 0 {
			t.Fatalf("after Write %d: %d replaced .bak files still held", i, n)
		}
	}
	if want := []int{1, 0, 1}; len(atFsync) != 3 || atFsync[0] != want[0] || atFsync[1] != want[1] || atFsync[2] != want[2] {
		// The first Write replaces "new", held at its fsync; with Backup the file replaced keeps
		// its .bak name, and the .bak it replaces (none at the second, "third" at the last) is
		// held.
		t.Fatalf("replaced files held at each directory fsync: %v, want %v", atFsync, want)
	}
	if b, err := os.ReadFile(dst + ".bak"); err != nil || string(b) != "fourth\n" {
		t.Fatalf(".bak: %q, %v; want the file before the last install", b, err)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".shoelace-") && !strings.HasSuffix(e.Name(), "-spare") {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}

// A burst of installs whose directory fsyncs are deferred holds at most MaxHeld replaced files
// (descriptors the next installs may need), and every one is released by Sync.
func TestInstallHoldsBoundedReplacedFiles(t *testing.T) {
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	n := atomicfile.MaxHeld + 10
	for i := range n {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%d", i)), []byte("old"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ds := &atomicfile.DirSyncs{}
	for i := range n {
		if _, err := atomicfile.Write(filepath.Join(dir, fmt.Sprintf("f%d", i)), []byte("new"), atomicfile.Options{DirSyncs: ds}); err != nil {
			t.Fatal(err)
		}
	}
	gone := 0
	for i := range n {
		gone += heldGone(t, filepath.Join(dir, fmt.Sprintf("f%d", i)))
	}
	if gone != atomicfile.MaxHeld {
		t.Fatalf("%d replaced files held after %d installs, want %d", gone, n, atomicfile.MaxHeld)
	}
	if err := ds.Sync(); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if k := heldGone(t, filepath.Join(dir, fmt.Sprintf("f%d", i))); k != 0 {
			t.Fatalf("f%d: %d still held after Sync", i, k)
		}
	}
}
