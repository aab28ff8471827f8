//go:build linux

package agent_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// fullDir makes dir refuse the writes of files of a few KiB: a small tmpfs mounted on it and
// filled (when the test may mount one), else a limit on the size of the files this process
// writes (RLIMIT_FSIZE, which a root without CAP_SYS_ADMIN is held to as well). free makes
// room again.
func fullDir(t *testing.T, dir string) (free func()) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=64k"); err == nil {
		t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
		filler := filepath.Join(dir, "filler")
		f, err := os.Create(filler)
		if err != nil {
			t.Fatal(err)
		}
		for err == nil {
			_, err = f.Write(make([]byte, 4096))
		}
		f.Close()
		if !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("filling the tmpfs: %v", err)
		}
		return func() {
			if err := os.Remove(filler); err != nil {
				t.Fatal(err)
			}
		}
	}
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	lim := old
	lim.Cur = 1024
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		t.Fatal(err)
	}
	restore := func() { syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old) }
	t.Cleanup(restore)
	return restore
}

// An install that the file system refused (a full disk) is tried again once there is room,
// without waiting for the next view or a SIGHUP, and its command then runs once. A render
// error and a failed check, which depend on the view or the config, are not tried again on a
// timer. Before, the install that failed was not tried again until the view changed: the
// file never appeared and the agent reported the failure for good.
func TestAgent_RunInstallFailedIsTriedAgain(t *testing.T) {
	big := strings.Repeat("x", 8192)
	srv := newViewServer(t, map[string]string{"a": big})
	a, dir, logs := testAgent(t, srv, header+`templates:
  - contents: "{{ key \"a\" }}"
    destination: $DIR/full/a
    command: echo ran >> $DIR/ran
  - contents: "{{ key \"missing\" }}"
    destination: $DIR/b
  - contents: "c"
    destination: $DIR/c
    check: "false"
`)
	free := fullDir(t, filepath.Join(dir, "full"))
	stop := runAgent(t, a)
	defer func() {
		if stop != nil {
			stop()
		}
	}()
	waitFor(t, "the install to fail", func() bool {
		return strings.Contains(logs.String(), `"msg":"template not installed","template":"`+dir+`/full/a"`)
	})
	free()
	waitFor(t, "the file installed once there is room", fileIs(dir+"/full/a", big))
	waitFor(t, "the command to run", func() bool { b, _ := os.ReadFile(dir + "/ran"); return string(b) == "ran\n" })
	stop()
	stop = nil
	if b, _ := os.ReadFile(dir + "/ran"); string(b) != "ran\n" {
		t.Errorf("command ran %q, want once", b)
	}
	for _, name := range []string{"/b", "/c"} {
		n := strings.Count(logs.String(), `"msg":"template not installed","template":"`+dir+name+`"`)
		if n != 1 {
			t.Errorf("%s: %d failures logged, want 1 (not tried again on a timer)", name, n)
		}
		if _, err := os.Stat(dir + name); !os.IsNotExist(err) {
			t.Errorf("%s written: %v", name, err)
		}
	}
}
