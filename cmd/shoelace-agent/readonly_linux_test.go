package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// A destination on a read-only file system (a read-only mount: an image's /usr, a container's
// root) cannot be installed: once and run fail there at every change. render --dry showed the
// change it would make, and validate said ok, without a word. render --dry now fails it, naming
// the directory, and validate warns; a file there that would not change is unchanged to both
// (an install writes nothing then).
func TestE2E_ReadOnlyFileSystemDestination(t *testing.T) {
	ro := t.TempDir()
	if err := syscall.Mount("shoelace-test", ro, "tmpfs", 0, "size=64k"); err != nil {
		t.Skipf("cannot mount a tmpfs to make read-only (%v): needs root", err)
	}
	t.Cleanup(func() { syscall.Unmount(ro, syscall.MNT_DETACH) })
	if err := os.WriteFile(filepath.Join(ro, "same.conf"), []byte("port=80\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("shoelace-test", ro, "tmpfs", syscall.MS_REMOUNT|syscall.MS_RDONLY, "size=64k"); err != nil {
		t.Skipf("cannot remount the tmpfs read-only: %v", err)
	}
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/port", "80")
	e := newEnv(t, srv, "", `  - contents: "port={{ key \"port\" }}\n"
    destination: `+ro+`/same.conf
  - contents: "port={{ key \"port\" }}\n"
    destination: `+ro+`/new.conf
  - contents: "port={{ key \"port\" }}\n"
    destination: `+ro+`/sub/dir.conf
`)
	code, out, errOut := e.agentCmd("render", "--dry")
	if code == 0 {
		t.Fatalf("render --dry exit 0 with destinations on a read-only file system:\n%s%s", out, errOut)
	}
	for _, want := range []string{
		"=== " + ro + "/same.conf: unchanged",
		"!!! " + ro + "/new.conf: " + ro + "/new.conf: " + ro + " is on a read-only file system: the change cannot be installed there",
		"!!! " + ro + "/sub/dir.conf: " + ro + "/sub/dir.conf: " + ro + " is on a read-only file system",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("render --dry does not say %q:\n%s%s", want, out, errOut)
		}
	}
	if !strings.Contains(errOut, "2 of 3 templates cannot be rendered") {
		t.Errorf("render --dry's error: %s", errOut)
	}

	code, out, errOut = e.agentCmd("validate")
	if code != 0 {
		t.Fatalf("validate: exit %d\n%s%s", code, out, errOut)
	}
	for _, dest := range []string{"same.conf", "new.conf", "sub/dir.conf"} {
		want := "destination " + ro + "/" + dest + ": " + ro + " is on a read-only file system: every change of it will fail to install"
		if !strings.Contains(out, want) {
			t.Errorf("validate does not warn %q:\n%s", want, out)
		}
	}

	// As once finds it.
	code, _, errOut = e.agentCmd("once")
	if code == 0 || !strings.Contains(errOut, "read-only file system") {
		t.Fatalf("once: exit %d: %s", code, errOut)
	}
}
