//go:build !windows

package atomicfile_test

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/atomicfile"
)

// TestStage_DestinationSwappedBetweenLooks: whoever may write the destination's directory
// swaps something else in at the name between each two looks Stage takes at it (its stat by
// name, its read by name, its Lstat in the directory held, its read there for Previous). Stage
// never hangs on a FIFO, never reads nor writes where a link leads, keeps as Previous only the
// bytes of a regular file that was at the name in the directory it installs in, and treats
// another user's file in that world-writable directory as no file, for Previous too. Before,
// a file of another user swapped in between the Lstat and the read of Previous was kept with
// its owner and mode, for an undo to put back.
func TestStage_DestinationSwappedBetweenLooks(t *testing.T) {
	const original = "old content\n"
	kinds := []string{"symlink", "fifo", "directory", "replaced"}
	if os.Geteuid() == 0 {
		// Only root can give a file or a link another owner.
		kinds = append(kinds, "another user's file", "directory path made a link")
	}
	for _, sameSize := range []bool{true, false} {
		data := "new content\n" // as long as original: unchanged reads the file to compare
		if !sameSize {
			data = "new\n"
		}
		for _, step := range []string{"stat", "compared", "lstat"} {
			if step == "stat" && !sameSize {
				continue // a file of another size is not read to compare: no read to swap before
			}
			for _, kind := range kinds {
				name := step + "/" + kind
				if !sameSize {
					name += "/other size"
				}
				t.Run(name, func(t *testing.T) {
					swapTest(t, original, data, step, kind)
				})
			}
		}
	}
}

func swapTest(t *testing.T, original, data, step, kind string) {
	top, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dir, outside := filepath.Join(top, "dir"), filepath.Join(top, "outside")
	for _, d := range []string{dir, outside} {
		if err := os.Mkdir(d, 0o777); err != nil {
			t.Fatal(err)
		}
		os.Chmod(d, 0o777) // others may create files: another user's file there is plantable
	}
	dst, victim := filepath.Join(dir, "app.conf"), filepath.Join(outside, "app.conf")
	const secret = "the victim!\n" // as long as original, so that a read of it would compare
	mustWrite(t, victim, secret, 0o600)
	mustWrite(t, dst, original, 0o640)
	replacement := "replaced it\n"

	reached := false
	swap := func() {
		reached = true
		tmp := filepath.Join(dir, "swap")
		var err error
		switch kind {
		case "symlink":
			err = os.Symlink(victim, tmp)
		case "fifo":
			err = syscall.Mkfifo(tmp, 0o666)
		case "directory":
			err = os.Mkdir(tmp, 0o755)
		case "replaced":
			err = os.WriteFile(tmp, []byte(replacement), 0o600)
		case "another user's file":
			if err = os.WriteFile(tmp, []byte(replacement), 0o666); err == nil {
				os.Chmod(tmp, 0o666)
				err = os.Chown(tmp, 4242, 4242)
			}
		case "directory path made a link":
			if err = os.Rename(dir, dir+".moved"); err == nil {
				if err = os.Symlink(outside, dir); err == nil {
					err = os.Lchown(dir, 4242, 4242) // not root's nor this process's user's
				}
			}
			if err != nil {
				t.Error(err)
			}
			return
		}
		if err == nil && kind == "directory" {
			if err = os.Remove(dst); err == nil {
				err = os.Rename(tmp, dst)
			}
		} else if err == nil {
			err = os.Rename(tmp, dst)
		}
		if err != nil {
			t.Error(err)
		}
	}
	restore := atomicfile.SetBetween(func(s string) {
		if s == step && !reached {
			swap()
		}
	})
	defer restore()

	type result struct {
		s   *atomicfile.Staged
		err error
	}
	done := make(chan result, 1)
	go func() {
		s, err := atomicfile.Stage(dst, []byte(data), atomicfile.Options{UID: atomicfile.Keep, GID: atomicfile.Keep, KeepPrevious: true})
		done <- result{s, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Stage still running after 10s: blocked on what was swapped in")
	}
	restore()
	if !reached {
		t.Fatalf("Stage never reached %q", step)
	}
	if b, err := os.ReadFile(victim); err != nil || string(b) != secret {
		t.Fatalf("the file a link led to: %q, %v", b, err)
	}

	// What Stage should make of it: a swap before the Lstat in the directory is what it finds
	// there; one after it, only what the read for Previous finds (when the compared bytes are
	// not that file's).
	readAgain := step != "lstat" || len(data) != len(original)
	want := "previous " + original
	switch {
	case kind == "directory path made a link" && step != "lstat":
		want = "error"
	case kind == "directory path made a link":
		// The directory was held before the swap: the install is in it, at its new name.
		dir, dst = dir+".moved", filepath.Join(dir+".moved", "app.conf")
	case !readAgain:
		// The bytes compared are the file the Lstat found: kept; the rename replaces what is there.
	case kind == "replaced":
		want = "previous " + replacement
	case kind == "another user's file":
		want = "no previous"
	default:
		want = "error"
	}
	got := ""
	switch {
	case r.err != nil:
		got = "error"
	case r.s == nil:
		t.Fatal("Stage found nothing to change")
	case r.s.Previous().Existed():
		got = "previous " + string(atomicfile.PreviousData(r.s.Previous()))
	default:
		got = "no previous"
	}
	if got != want {
		t.Fatalf("Stage: %s (%v), want %s", got, r.err, want)
	}
	if r.err != nil {
		if left := tempFiles(t, dir); len(left) > 0 {
			t.Fatalf("temp files left: %v", left)
		}
		return
	}
	if err := r.s.Install(); kind == "directory" && !readAgain {
		// A rename does not replace a directory: nothing is installed, nothing left.
		if fi, lerr := os.Lstat(dst); err == nil || lerr != nil || !fi.IsDir() {
			t.Fatalf("Install over a directory swapped in: %v; want an error, the directory left", err)
		}
		if left := tempFiles(t, dir); len(left) > 0 {
			t.Fatalf("temp files left: %v", left)
		}
		return
	} else if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(dst)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(dst); string(b) != data || !fi.Mode().IsRegular() {
		t.Fatalf("installed %s %q, want a regular file holding %q", fi.Mode(), b, data)
	}
	if uid, _, _ := atomicfile.Owner(fi); want == "no previous" && (uid != os.Geteuid() || fi.Mode().Perm() != atomicfile.DefaultPerm) {
		t.Fatalf("installed over another user's file with owner %d and mode %04o", uid, fi.Mode().Perm())
	}
	if b, _ := os.ReadFile(victim); string(b) != secret {
		t.Fatalf("the file a link led to: %q", b)
	}
	if left := tempFiles(t, dir); len(left) > 0 {
		t.Fatalf("temp files left: %v", left)
	}
}

func mustWrite(t *testing.T, path, data string, perm os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, perm); err != nil {
		t.Fatal(err)
	}
}
