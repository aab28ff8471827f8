//go:build !windows

package atomicfile_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/atomicfile"
)

// ReadRegular reads a regular file by path or in a directory held open, and refuses what is not
// one without following a link at the name or blocking on a FIFO there; check sees the handle's
// file before anything is read, and an error with a FileInfo is the read's.
func TestReadRegular(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("hello\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(file, link); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()

	t.Run("path", func(t *testing.T) {
		data, fi, err := atomicfile.ReadRegular(nil, file, -1, nil)
		if err != nil || string(data) != "hello\n" || fi == nil || fi.Size() != 6 {
			t.Fatalf("got %q, %v, %v; want the file", data, fi, err)
		}
	})
	t.Run("root", func(t *testing.T) {
		data, _, err := atomicfile.ReadRegular(root, "file", -1, nil)
		if err != nil || string(data) != "hello\n" {
			t.Fatalf("got %q, %v; want the file", data, err)
		}
	})
	t.Run("limit", func(t *testing.T) {
		data, _, err := atomicfile.ReadRegular(nil, file, 3, nil)
		if err != nil || string(data) != "hel" {
			t.Fatalf("got %q, %v; want the first 3 bytes", data, err)
		}
	})
	t.Run("link not followed", func(t *testing.T) {
		for _, r := range []*os.Root{nil, root} {
			name := link
			if r != nil {
				name = "link"
			}
			data, fi, err := atomicfile.ReadRegular(r, name, -1, nil)
			if err == nil || fi != nil || data != nil {
				t.Fatalf("read through a link (root %v): %q, %v, %v", r != nil, data, fi, err)
			}
		}
	})
	t.Run("fifo", func(t *testing.T) {
		done := make(chan error, 1)
		go func() { _, _, err := atomicfile.ReadRegular(nil, fifo, -1, nil); done <- err }()
		select {
		case err := <-done:
			var nr *atomicfile.NotRegularError
			if !errors.As(err, &nr) || nr.Path != fifo || nr.Mode.Type() != fs.ModeNamedPipe {
				t.Fatalf("a FIFO: got %v, want a *NotRegularError naming it", err)
			}
			if want := fifo + " is not a regular file (p---------)"; err.Error() != want {
				t.Fatalf("message %q, want %q", err, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the open of a FIFO blocked")
		}
	})
	t.Run("check", func(t *testing.T) {
		refused := errors.New("refused")
		var seen fs.FileInfo
		data, fi, err := atomicfile.ReadRegular(nil, file, -1, func(fi fs.FileInfo) error { seen = fi; return refused })
		if !errors.Is(err, refused) || fi != nil || data != nil {
			t.Fatalf("got %q, %v, %v; want check's error and nothing read", data, fi, err)
		}
		if seen == nil || !seen.Mode().IsRegular() || seen.Size() != 6 {
			t.Fatalf("check saw %v, want the file", seen)
		}
	})
	t.Run("missing", func(t *testing.T) {
		_, fi, err := atomicfile.ReadRegular(nil, filepath.Join(dir, "none"), -1, nil)
		if !errors.Is(err, fs.ErrNotExist) || fi != nil {
			t.Fatalf("got %v, %v; want fs.ErrNotExist", fi, err)
		}
	})
}

// TestReadWithin_Waits: a config, a template source or a CA file at /proc/kmsg (a regular file
// to stat(2) whose read waits until the kernel logs something) held the agent's read, and its
// start or SIGHUP with it, for as long as the kernel was quiet: opened without blocking, the
// read waited in Go's poller. It ends after a bounded wait with os.ErrDeadlineExceeded. Reading
// /proc/kmsg in a test would take the messages from the system's logger: the read end of a
// pipe waits alike.
func TestReadWithin_Waits(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	done := make(chan error, 1)
	go func() { _, err := atomicfile.ReadWithin(r, 100); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("ReadWithin of a pipe no one writes: %v, want os.ErrDeadlineExceeded", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("ReadWithin still reading after 30s")
	}
	r2, w2, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	go func() { w2.Write([]byte("abc")); w2.Close() }()
	if b, err := atomicfile.ReadWithin(r2, -1); err != nil || string(b) != "abc" {
		t.Fatalf("ReadWithin = %q, %v", b, err)
	}
}

// ReadRegular reads a file in one read of the size its stat says and one that finds the end,
// and still reads all of a file that says less than it holds (a proc file says 0) and no more
// than its limit.
func TestReadRegular_Sizes(t *testing.T) {
	dir := t.TempDir()
	big := make([]byte, 70000)
	for i := range big {
		big[i] = byte('a' + i%26)
	}
	file := filepath.Join(dir, "big")
	if err := os.WriteFile(file, big, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, limit := range []int64{-1, 0, 1, 511, 512, 513, 69999, 70000, 70001, 1 << 20} {
		data, _, err := atomicfile.ReadRegular(nil, file, limit, nil)
		want := big
		if limit >= 0 && limit < int64(len(big)) {
			want = big[:limit]
		}
		if err != nil || string(data) != string(want) {
			t.Fatalf("limit %d: %d bytes, %v; want %d", limit, len(data), err, len(want))
		}
	}
	// /proc/self/status says 0 bytes and holds hundreds.
	data, fi, err := atomicfile.ReadRegular(nil, "/proc/self/status", -1, nil)
	if err == nil && fi.Size() == 0 && !strings.Contains(string(data), "\nPid:") {
		t.Fatalf("a file whose stat says 0 bytes read as %q", data)
	}
}

// Restrict changes the file read, never one swapped in at its name since, nor what a link
// planted there leads to.
func TestRestrict_OnlyTheFileRead(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "view.json")
	if err := os.WriteFile(name, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(name, 0o644)
	read, err := os.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	mode := func(p string) os.FileMode {
		t.Helper()
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Mode().Perm()
	}

	// Swapped: another file at the name.
	other := filepath.Join(dir, "other")
	os.WriteFile(other, []byte("y"), 0o644)
	os.Chmod(other, 0o644)
	if err := os.Rename(other, name); err != nil {
		t.Fatal(err)
	}
	if changed, err := atomicfile.Restrict(name, read, 0o600); changed || err != nil || mode(name) != 0o644 {
		t.Fatalf("a file swapped in was changed: %v %v %04o", changed, err, mode(name))
	}

	// A link at the name, to the file read.
	read, _ = os.Stat(name)
	target := filepath.Join(dir, "target")
	os.Rename(name, target)
	os.Symlink(target, name)
	if changed, err := atomicfile.Restrict(name, read, 0o600); changed || err == nil || mode(target) != 0o644 {
		t.Fatalf("a link was followed: %v %v %04o", changed, err, mode(target))
	}

	// The file read.
	os.Remove(name)
	os.Rename(target, name)
	if changed, err := atomicfile.Restrict(name, read, 0o600); !changed || err != nil || mode(name) != 0o600 {
		t.Fatalf("the file read was not set to 0600: %v %v %04o", changed, err, mode(name))
	}
	if changed, err := atomicfile.Restrict(name, read, 0o600); changed || err != nil {
		t.Fatalf("a file already at 0600 changed again: %v %v", changed, err)
	}
}
