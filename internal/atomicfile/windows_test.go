//go:build windows

package atomicfile_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/windows"

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

// A junction on the way to the destination (which any user who may create a directory there
// can make, with no privilege) does not hide where the file goes: Allowed is asked about the
// real path, so that allowed_dirs cannot be left through one.
func TestWindowsAllowedSeesThroughJunction(t *testing.T) {
	base := t.TempDir()
	real := filepath.Join(base, "real")
	if err := os.Mkdir(real, 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(base, "link")
	if out, err := exec.Command("cmd", "/c", "mklink", "/J", link, real).CombinedOutput(); err != nil {
		t.Skipf("cannot make a junction here (mklink /J: %v, %s)", err, out)
	} else if _, err := os.Stat(link); err != nil {
		t.Skipf("cannot make a junction here (mklink /J said %q, but: %v)", out, err)
	}
	var asked []string
	opts := atomicfile.Options{UID: atomicfile.Keep, GID: atomicfile.Keep, Allowed: func(p string) error {
		asked = append(asked, p)
		return nil
	}}
	if _, err := atomicfile.Write(filepath.Join(link, "app.conf"), []byte("x"), opts); err != nil {
		t.Fatal(err)
	}
	realDir, err := atomicfile.RealDir(real)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(realDir, "app.conf"); len(asked) != 1 || !strings.EqualFold(asked[0], want) {
		t.Fatalf("Allowed was asked about %q, want [%s]", asked, want)
	}
	if viaLink, err := atomicfile.RealDir(link); err != nil || !strings.EqualFold(viaLink, realDir) {
		t.Fatalf("RealDir(junction) = %q, %v; want %s", viaLink, err, realDir)
	}
}

// A destination another process holds open without sharing deletion (a virus scanner, a
// service reading its config) is replaced once it lets go, not refused at the first try.
func TestWindowsInstallWaitsForAnOpenFile(t *testing.T) {
	dst := filepath.Join(t.TempDir(), "app.conf")
	if err := os.WriteFile(dst, []byte("one\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	name, err := windows.UTF16PtrFromString(dst)
	if err != nil {
		t.Fatal(err)
	}
	h, err := windows.CreateFile(name, windows.GENERIC_READ, windows.FILE_SHARE_READ, nil, windows.OPEN_EXISTING, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	released := make(chan struct{})
	go func() {
		time.Sleep(300 * time.Millisecond)
		windows.CloseHandle(h)
		close(released)
	}()
	if _, err := atomicfile.Write(dst, []byte("two\n"), atomicfile.Options{UID: atomicfile.Keep, GID: atomicfile.Keep}); err != nil {
		t.Fatalf("install while the file was held open: %v", err)
	}
	<-released
	if b, _ := os.ReadFile(dst); string(b) != "two\n" {
		t.Fatalf("after install: %q", b)
	}
}

// A read-only destination (a file unpacked from a zip, or marked so by hand) is replaced, and
// stays read-only: MoveFileEx alone refused it ("Access is denied") after two seconds of tries.
// Its .bak, a hard link that shares the attribute, is replaced at the next install too.
func TestWindowsInstallReplacesReadOnly(t *testing.T) {
	dst := filepath.Join(t.TempDir(), "app.conf")
	if err := os.WriteFile(dst, []byte("one\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dst, 0o444); err != nil {
		t.Fatal(err)
	}
	opts := atomicfile.Options{UID: atomicfile.Keep, GID: atomicfile.Keep, Backup: true}
	for _, want := range []string{"two\n", "three\n"} {
		start := time.Now()
		if _, err := atomicfile.Write(dst, []byte(want), opts); err != nil {
			t.Fatalf("install %q over a read-only file: %v", want, err)
		}
		if took := time.Since(start); took > time.Second {
			t.Errorf("install %q took %s", want, took)
		}
		if b, _ := os.ReadFile(dst); string(b) != want {
			t.Fatalf("after install: %q, want %q", b, want)
		}
		if fi, err := os.Stat(dst); err != nil || fi.Mode().Perm()&0o200 != 0 {
			t.Fatalf("the installed file is not read-only as the one it replaced: %v %v", fi.Mode(), err)
		}
	}
	if b, _ := os.ReadFile(dst + ".bak"); string(b) != "two\n" {
		t.Fatalf(".bak: %q", b)
	}
	if ents, _ := os.ReadDir(filepath.Dir(dst)); len(ents) != 2 {
		t.Fatalf("left in the directory: %v", ents)
	}
}

// A destination whose path is longer than MAX_PATH is installed (the temp file beside it, longer
// still, is renamed with the \\?\ form of its path).
func TestWindowsInstallLongPath(t *testing.T) {
	dir := t.TempDir()
	for len(dir) < 280 {
		dir = filepath.Join(dir, strings.Repeat("d", 40))
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if windows.NewLazySystemDLL("ntdll.dll").NewProc("wine_get_version").Find() == nil {
		t.Skip("under Wine, whose GetFinalPathNameByHandle fails on a path over MAX_PATH (\"More data available\") and whose MoveFileEx takes one without \\\\?\\")
	}
	dst := filepath.Join(dir, "app.conf")
	for _, want := range []string{"one\n", "two\n"} {
		if _, err := atomicfile.Write(dst, []byte(want), atomicfile.Options{UID: atomicfile.Keep, GID: atomicfile.Keep}); err != nil {
			t.Fatalf("install at %d characters: %v", len(dst), err)
		}
		if b, _ := os.ReadFile(dst); string(b) != want {
			t.Fatalf("after install: %q, want %q", b, want)
		}
	}
}
