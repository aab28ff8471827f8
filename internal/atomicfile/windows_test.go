//go:build windows

package atomicfile_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/atomicfile"
)

// On Windows an install replaces the file with MoveFileEx (replace-existing, write-through),
// keeps a .bak, and restores the previous bytes.
func TestWindowsInstallReplacesAndRestores(t *testing.T) {
	dst := filepath.Join(t.TempDir(), "app.conf")
	opts := atomicfile.Options{UID: atomicfile.Keep, GID: atomicfile.Keep, Backup: true}
	if changed, err := atomicfile.Write(dst, []byte("one\n"), opts); err != nil || !changed {
		t.Fatalf("first write: %v %v", changed, err)
	}
	opts.KeepPrevious = true
	st, err := atomicfile.Stage(dst, []byte("two\n"), opts)
	if err != nil || st == nil {
		t.Fatalf("stage: %v %v", st, err)
	}
	if err := st.Install(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(dst); string(b) != "two\n" {
		t.Fatalf("after install: %q", b)
	}
	if b, _ := os.ReadFile(dst + ".bak"); string(b) != "one\n" {
		t.Fatalf(".bak: %q", b)
	}
	if _, err := st.Previous().Restore(atomicfile.Options{}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(dst); string(b) != "one\n" {
		t.Fatalf("after restore: %q", b)
	}
}
