//go:build !windows

// Owners, modes and the umask are Unix's: these tests run everywhere but Windows, whose installs
// windows_test.go tests.

package atomicfile_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/atomicfile"
)

func keep() atomicfile.Options { return atomicfile.Options{UID: atomicfile.Keep, GID: atomicfile.Keep} }

func stat(t *testing.T, path string) (os.FileInfo, *syscall.Stat_t) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi, fi.Sys().(*syscall.Stat_t)
}

// tempFiles lists the leftover dot-prefixed temp files in dir.
func tempFiles(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			out = append(out, e.Name())
		}
	}
	return out
}

func TestWrite_NewFile(t *testing.T) {
	dir := t.TempDir()
	dst := filepath.Join(dir, "a.conf")
	opts := keep()
	opts.Perm = 0o640
	changed, err := atomicfile.Write(dst, []byte("hello\n"), opts)
	if err != nil || !changed {
		t.Fatalf("Write = %v, %v; want true, nil", changed, err)
	}
	got, _ := os.ReadFile(dst)
	if string(got) != "hello\n" {
		t.Fatalf("content = %q", got)
	}
	if fi, _ := stat(t, dst); fi.Mode().Perm() != 0o640 {
		t.Fatalf("mode = %v, want 0640", fi.Mode().Perm())
	}
	if left := tempFiles(t, dir); len(left) != 0 {
		t.Fatalf("temp files left: %v", left)
	}
}

func TestWrite_DefaultPermIgnoresUmask(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	dst := filepath.Join(t.TempDir(), "a")
	if _, err := atomicfile.Write(dst, []byte("x"), keep()); err != nil {
		t.Fatal(err)
	}
	if fi, _ := stat(t, dst); fi.Mode().Perm() != atomicfile.DefaultPerm {
		t.Fatalf("mode = %v, want %v", fi.Mode().Perm(), atomicfile.DefaultPerm)
	}
}

func TestWrite_UnchangedWritesNothing(t *testing.T) {
	dir := t.TempDir()
	dst := filepath.Join(dir, "a.conf")
	opts := keep()
	opts.Perm = 0o600
	if _, err := atomicfile.Write(dst, []byte("same"), opts); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := os.Chtimes(dst, old, old); err != nil {
		t.Fatal(err)
	}
	_, st1 := stat(t, dst)
	checked := false
	opts.Check = func(string) error { checked = true; return nil }
	changed, err := atomicfile.Write(dst, []byte("same"), opts)
	if err != nil || changed {
		t.Fatalf("Write = %v, %v; want false, nil", changed, err)
	}
	fi, st2 := stat(t, dst)
	if st1.Ino != st2.Ino {
		t.Fatalf("inode changed %d → %d: the file was replaced", st1.Ino, st2.Ino)
	}
	if !fi.ModTime().Equal(old) {
		t.Fatalf("mtime changed to %v", fi.ModTime())
	}
	if checked {
		t.Fatal("check ran for an unchanged file")
	}
	if same, err := atomicfile.Unchanged(dst, []byte("same"), opts); err != nil || !same {
		t.Fatalf("Unchanged = %v, %v", same, err)
	}

	// A mode change alone is a change.
	opts.Perm = 0o644
	if same, _ := atomicfile.Unchanged(dst, []byte("same"), opts); same {
		t.Fatal("Unchanged ignores the mode")
	}
	if changed, err := atomicfile.Write(dst, []byte("same"), opts); err != nil || !changed {
		t.Fatalf("Write after mode change = %v, %v", changed, err)
	}
	if fi, _ := stat(t, dst); fi.Mode().Perm() != 0o644 {
		t.Fatalf("mode = %v", fi.Mode().Perm())
	}
}

func TestWrite_KeepsModeAndOwnerOfExisting(t *testing.T) {
	dst := filepath.Join(t.TempDir(), "a")
	if err := os.WriteFile(dst, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		if err := os.Chown(dst, 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}
	_, before := stat(t, dst)
	if _, err := atomicfile.Write(dst, []byte("new"), keep()); err != nil {
		t.Fatal(err)
	}
	fi, after := stat(t, dst)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode = %v, want 0600 kept", fi.Mode().Perm())
	}
	if after.Uid != before.Uid || after.Gid != before.Gid {
		t.Fatalf("owner %d:%d, want %d:%d kept", after.Uid, after.Gid, before.Uid, before.Gid)
	}
}

func TestWrite_Owner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown")
	}
	dst := filepath.Join(t.TempDir(), "a")
	opts := atomicfile.Options{Perm: 0o640, UID: 65534, GID: 65534}
	var stagedOwner uint32 = 1
	opts.Check = func(staged string) error {
		fi, err := os.Stat(staged)
		if err != nil {
			return err
		}
		stagedOwner = fi.Sys().(*syscall.Stat_t).Uid
		if fi.Mode().Perm() != 0o640 {
			return fmt.Errorf("staged mode %v", fi.Mode().Perm())
		}
		return nil
	}
	if _, err := atomicfile.Write(dst, []byte("x"), opts); err != nil {
		t.Fatal(err)
	}
	if stagedOwner != 65534 {
		t.Fatalf("staged file owner = %d: owner must be set before the check", stagedOwner)
	}
	_, st := stat(t, dst)
	if st.Uid != 65534 || st.Gid != 65534 {
		t.Fatalf("owner = %d:%d", st.Uid, st.Gid)
	}
	// Owner differs → changed even with the same bytes.
	opts.UID, opts.GID, opts.Check = 0, 0, nil
	if changed, err := atomicfile.Write(dst, []byte("x"), opts); err != nil || !changed {
		t.Fatalf("Write = %v, %v", changed, err)
	}
	if _, st := stat(t, dst); st.Uid != 0 {
		t.Fatalf("uid = %d", st.Uid)
	}
}

func TestWrite_FailingCheckLeavesOldFile(t *testing.T) {
	dir := t.TempDir()
	dst := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(dst, []byte("good"), 0o644); err != nil {
		t.Fatal(err)
	}
	var sawStaged string
	opts := keep()
	opts.Backup = true
	opts.Check = func(staged string) error {
		sawStaged = staged
		b, err := os.ReadFile(staged)
		if err != nil {
			return err
		}
		if string(b) != "bad" {
			return fmt.Errorf("staged holds %q", b)
		}
		return errors.New("syntax error")
	}
	changed, err := atomicfile.Write(dst, []byte("bad"), opts)
	var ce *atomicfile.CheckError
	if changed || !errors.As(err, &ce) || !strings.Contains(err.Error(), "syntax error") {
		t.Fatalf("Write = %v, %v; want false and a CheckError", changed, err)
	}
	if filepath.Dir(sawStaged) != dir || !strings.HasPrefix(filepath.Base(sawStaged), ".nginx.conf.") {
		t.Fatalf("staged file %s is not dot-prefixed in the destination's directory", sawStaged)
	}
	if got, _ := os.ReadFile(dst); string(got) != "good" {
		t.Fatalf("destination = %q, want the old content", got)
	}
	if left := tempFiles(t, dir); len(left) != 0 {
		t.Fatalf("temp files left: %v", left)
	}
	if _, err := os.Stat(dst + ".bak"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a .bak was made although nothing was installed: %v", err)
	}
}

func TestWrite_Backup(t *testing.T) {
	dir := t.TempDir()
	dst := filepath.Join(dir, "a")
	opts := keep()
	opts.Backup = true
	for _, s := range []string{"one", "two", "three"} {
		if _, err := atomicfile.Write(dst, []byte(s), opts); err != nil {
			t.Fatal(err)
		}
	}
	if got, _ := os.ReadFile(dst); string(got) != "three" {
		t.Fatalf("dst = %q", got)
	}
	if got, _ := os.ReadFile(dst + ".bak"); string(got) != "two" {
		t.Fatalf(".bak = %q, want the previous content", got)
	}
	if left := tempFiles(t, dir); len(left) != 0 {
		t.Fatalf("temp files left: %v", left)
	}
}

func TestWrite_Symlink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "real")
	link := filepath.Join(dir, "link")
	os.WriteFile(target, []byte("old"), 0o644)
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if _, err := atomicfile.Write(link, []byte("new"), keep()); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Lstat(link); fi.Mode()&os.ModeSymlink == 0 {
		t.Fatal("the symlink was replaced by a file")
	}
	if got, _ := os.ReadFile(target); string(got) != "new" {
		t.Fatalf("target = %q", got)
	}
}

func TestWrite_MissingDir(t *testing.T) {
	dst := filepath.Join(t.TempDir(), "no", "such", "a")
	if _, err := atomicfile.Write(dst, []byte("x"), keep()); err == nil || !strings.Contains(err.Error(), dst) {
		t.Fatalf("err = %v, want one naming %s", err, dst)
	}
}

// A reader that keeps reading the destination while 1,000 versions are written sees
// only whole versions.
func TestWrite_ReaderNeverSeesPartialFile(t *testing.T) {
	dir := t.TempDir()
	dst := filepath.Join(dir, "a")
	version := func(i int) []byte {
		// Sizes vary so that a torn read would show as a wrong length or a mixed line.
		line := fmt.Sprintf("version %06d\n", i)
		return bytes.Repeat([]byte(line), 50+i%200)
	}
	if _, err := atomicfile.Write(dst, version(0), keep()); err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var reads, bad atomic.Int64
	var firstBad atomic.Value
	var wg sync.WaitGroup
	for r := 0; r < 2; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				b, err := os.ReadFile(dst)
				if err != nil {
					bad.Add(1)
					firstBad.CompareAndSwap(nil, err.Error())
					continue
				}
				reads.Add(1)
				var n int
				if _, err := fmt.Sscanf(string(b), "version %06d\n", &n); err != nil || !bytes.Equal(b, version(n)) {
					bad.Add(1)
					firstBad.CompareAndSwap(nil, fmt.Sprintf("torn read of %d bytes", len(b)))
				}
			}
		}()
	}
	for i := 1; i <= 1000; i++ {
		if _, err := atomicfile.Write(dst, version(i), keep()); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d bad reads of %d; first: %v", bad.Load(), reads.Load(), firstBad.Load())
	}
	if reads.Load() == 0 {
		t.Fatal("the reader never read")
	}
	if got, _ := os.ReadFile(dst); !bytes.Equal(got, version(1000)) {
		t.Fatal("final content is not the last version")
	}
	if left := tempFiles(t, dir); len(left) != 0 {
		t.Fatalf("temp files left: %v", left)
	}
}

func BenchmarkWrite_Changed(b *testing.B) {
	dst := filepath.Join(b.TempDir(), "a")
	data := [][]byte{bytes.Repeat([]byte("a"), 4096), bytes.Repeat([]byte("b"), 4096)}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := atomicfile.Write(dst, data[i%2], keep()); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkWrite_Unchanged(b *testing.B) {
	dst := filepath.Join(b.TempDir(), "a")
	data := bytes.Repeat([]byte("a"), 4096)
	atomicfile.Write(dst, data, keep())
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if changed, err := atomicfile.Write(dst, data, keep()); err != nil || changed {
			b.Fatal(changed, err)
		}
	}
}

// Allowed is asked about the path that is really replaced (a link's target), and a refusal
// writes nothing.
func TestWrite_AllowedSeesTheResolvedPath(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, []byte("keep\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	var asked string
	refuse := errors.New("not there")
	_, err := atomicfile.Write(link, []byte("new\n"), atomicfile.Options{UID: atomicfile.Keep, GID: atomicfile.Keep,
		Allowed: func(p string) error { asked = p; return refuse }})
	if !errors.Is(err, refuse) || asked != target {
		t.Fatalf("Write = %v, Allowed asked about %q; want the refusal, about %q", err, asked, target)
	}
	if b, _ := os.ReadFile(target); string(b) != "keep\n" {
		t.Fatalf("a refused write changed the target: %q", b)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Fatalf("a refused write left files: %v", entries)
	}
}

// The .bak is never written through a link planted at its name, even when the hard link of
// the backup fails (a file system without them; here a forced failure, and a directory at the
// temp name of the link, which made it fail before temp names were random): the link is
// replaced by a regular file holding the previous content, and what it pointed at is untouched.
func TestWrite_BackupNeverWritesThroughALinkAtBak(t *testing.T) {
	for _, linkFails := range []bool{false, true} {
		t.Run(fmt.Sprintf("link fails %v", linkFails), func(t *testing.T) {
			dir, outside := t.TempDir(), t.TempDir()
			dst := filepath.Join(dir, "app.conf")
			if err := os.WriteFile(dst, []byte("old\n"), 0o640); err != nil {
				t.Fatal(err)
			}
			victim := filepath.Join(outside, "victim")
			if err := os.WriteFile(victim, []byte("precious\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(victim, dst+".bak"); err != nil {
				t.Fatal(err)
			}
			// The temp name of the backup's link used to be predictable: a non-empty directory
			// there made the link fail and sent the backup to its copy fallback.
			blocker := filepath.Join(dir, fmt.Sprintf(".app.conf.bak.shoelace-%d", os.Getpid()))
			if err := os.MkdirAll(filepath.Join(blocker, "x"), 0o755); err != nil {
				t.Fatal(err)
			}
			if linkFails {
				defer atomicfile.SetLink(func(*os.Root, string, string) error { return syscall.EPERM })()
			}
			var allowedAsked []string
			opts := keep()
			opts.Backup = true
			opts.Allowed = func(p string) error { allowedAsked = append(allowedAsked, p); return nil }
			if _, err := atomicfile.Write(dst, []byte("new\n"), opts); err != nil {
				t.Fatal(err)
			}
			if got, _ := os.ReadFile(victim); string(got) != "precious\n" {
				t.Fatalf("the file the .bak link pointed at was written: %q", got)
			}
			fi, err := os.Lstat(dst + ".bak")
			if err != nil || !fi.Mode().IsRegular() {
				t.Fatalf(".bak is %v (%v), want a regular file", fi.Mode(), err)
			}
			if got, _ := os.ReadFile(dst + ".bak"); string(got) != "old\n" {
				t.Fatalf(".bak = %q, want the previous content", got)
			}
			if fi.Mode().Perm() != 0o640 {
				t.Fatalf(".bak mode %v, want the previous file's 0640", fi.Mode().Perm())
			}
			if got, _ := os.ReadFile(dst); string(got) != "new\n" {
				t.Fatalf("dst = %q", got)
			}
			if !slices.Contains(allowedAsked, dst+".bak") {
				t.Fatalf("Allowed was asked about %v, not the .bak", allowedAsked)
			}
			os.RemoveAll(blocker)
			if left := tempFiles(t, dir); len(left) != 0 {
				t.Fatalf("temp files left: %v", left)
			}
		})
	}
}

// A refused .bak installs nothing.
func TestWrite_BackupRefusedByAllowed(t *testing.T) {
	dir := t.TempDir()
	dst := filepath.Join(dir, "a")
	os.WriteFile(dst, []byte("old"), 0o644)
	refuse := errors.New("not there")
	opts := keep()
	opts.Backup = true
	opts.Allowed = func(p string) error {
		if strings.HasSuffix(p, ".bak") {
			return refuse
		}
		return nil
	}
	if _, err := atomicfile.Write(dst, []byte("new"), opts); !errors.Is(err, refuse) {
		t.Fatalf("Write = %v, want the refusal of the .bak", err)
	}
	if got, _ := os.ReadFile(dst); string(got) != "old" {
		t.Fatalf("dst = %q, want the old content", got)
	}
	if left := tempFiles(t, dir); len(left) != 0 {
		t.Fatalf("temp files left: %v", left)
	}
}

// The staged file gets its owner before its mode: at the chown it is still 0600, so that the
// group it got on creation (a setgid directory's) never holds read access to it.
func TestWrite_ChownBeforeChmod(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a file to another owner")
	}
	dir := t.TempDir()
	// A setgid directory of group 65533: new files in it get that group.
	if err := os.Chown(dir, 0, 65533); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, os.ModeSetgid|0o755); err != nil {
		t.Fatal(err)
	}
	var modeAtChown os.FileMode
	var gidAtChown uint32
	defer atomicfile.SetFchown(func(f *os.File, uid, gid int) error {
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		modeAtChown, gidAtChown = fi.Mode().Perm(), fi.Sys().(*syscall.Stat_t).Gid
		return f.Chown(uid, gid)
	})()
	dst := filepath.Join(dir, "secret.conf")
	if _, err := atomicfile.Write(dst, []byte("password=x\n"), atomicfile.Options{Perm: 0o640, UID: 65534, GID: 65534}); err != nil {
		t.Fatal(err)
	}
	if gidAtChown != 65533 {
		t.Fatalf("the staged file had group %d before the chown, want the setgid directory's 65533", gidAtChown)
	}
	if modeAtChown&0o077 != 0 {
		t.Fatalf("the staged file was %v while it belonged to the directory's group: chmod came before chown", modeAtChown)
	}
	fi, st := stat(t, dst)
	if fi.Mode().Perm() != 0o640 || st.Uid != 65534 || st.Gid != 65534 {
		t.Fatalf("installed %v %d:%d, want 0640 65534:65534", fi.Mode().Perm(), st.Uid, st.Gid)
	}
}

// A failed directory fsync after the rename is reported as such, with changed=true: the file
// is in place and the caller must count it as installed.
func TestWrite_DirFsyncFailsAfterRename(t *testing.T) {
	dst := filepath.Join(t.TempDir(), "a")
	os.WriteFile(dst, []byte("old"), 0o644)
	defer atomicfile.SetFsync(func(*os.File) error { return syscall.EIO })()
	changed, err := atomicfile.Write(dst, []byte("new"), keep())
	var se *atomicfile.SyncDirError
	if !changed || !errors.As(err, &se) || !errors.Is(err, syscall.EIO) || se.Path != dst {
		t.Fatalf("Write = %v, %v; want true and a SyncDirError for %s", changed, err, dst)
	}
	if got, _ := os.ReadFile(dst); string(got) != "new" {
		t.Fatalf("dst = %q, want the new content in place", got)
	}
}

// The directory is held from the start of an install: a component of its path replaced by a
// link to another directory once Allowed approved it (or while the staged file is checked)
// does not move the install there.
func TestWrite_DirectorySwappedForALinkMidInstall(t *testing.T) {
	for _, when := range []string{"allowed", "check"} {
		t.Run(when, func(t *testing.T) {
			top, outside := t.TempDir(), t.TempDir()
			sub := filepath.Join(top, "sub")
			if err := os.Mkdir(sub, 0o755); err != nil {
				t.Fatal(err)
			}
			dst := filepath.Join(sub, "app.conf")
			swap := func() error {
				if err := os.Rename(sub, filepath.Join(top, "sub.moved")); err != nil {
					return err
				}
				return os.Symlink(outside, sub)
			}
			opts := keep()
			if when == "allowed" {
				opts.Allowed = func(p string) error {
					if !strings.HasPrefix(p, top+"/") {
						return fmt.Errorf("%s is outside %s", p, top)
					}
					return swap() // approved; then the path changes
				}
			} else {
				opts.Check = func(string) error { return swap() }
			}
			if _, err := atomicfile.Write(dst, []byte("new\n"), opts); err != nil {
				t.Fatal(err)
			}
			if entries, _ := os.ReadDir(outside); len(entries) != 0 {
				t.Fatalf("the install followed the link to another directory: %v", entries)
			}
			if got, _ := os.ReadFile(filepath.Join(top, "sub.moved", "app.conf")); string(got) != "new\n" {
				t.Fatalf("the directory held = %q, want the new file", got)
			}
		})
	}
}

// A link at the temp name cannot be written through: temp files are created with O_EXCL
// under random names, so a link planted at every name the old scheme could pick is left alone.
func TestWrite_TempNameIsNeverFollowed(t *testing.T) {
	dir, outside := t.TempDir(), t.TempDir()
	victim := filepath.Join(outside, "victim")
	os.WriteFile(victim, []byte("precious\n"), 0o600)
	dst := filepath.Join(dir, "a")
	for i := 0; i < 50; i++ {
		os.Symlink(victim, filepath.Join(dir, fmt.Sprintf(".a.shoelace-%d", i)))
	}
	for i := 0; i < 20; i++ {
		if _, err := atomicfile.Write(dst, []byte(fmt.Sprintf("v%d\n", i)), keep()); err != nil {
			t.Fatal(err)
		}
	}
	if got, _ := os.ReadFile(victim); string(got) != "precious\n" {
		t.Fatalf("written through a link at a temp name: %q", got)
	}
}

// With NoFollow a named pipe at the destination is replaced, never opened (an open would block
// until a writer came), as a link there is; without it, it is refused as before.
func TestWrite_NoFollowReplacesFIFO(t *testing.T) {
	dst := filepath.Join(t.TempDir(), "state.json")
	if err := syscall.Mkfifo(dst, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := atomicfile.Write(dst, []byte("new\n"), atomicfile.Options{UID: atomicfile.Keep, GID: atomicfile.Keep}); err == nil || !strings.Contains(err.Error(), "named pipe") {
		t.Fatalf("Write over a pipe without NoFollow: err %v; want it refused", err)
	}
	opts := atomicfile.Options{Perm: 0o600, UID: atomicfile.Keep, GID: atomicfile.Keep, NoFollow: true}
	done := make(chan error, 1)
	go func() { _, err := atomicfile.Write(dst, []byte("new\n"), opts); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Write over a pipe with NoFollow: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Write over a pipe with NoFollow blocked")
	}
	if fi, err := os.Lstat(dst); err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("destination after Write: %v, %v; want a regular file", fi, err)
	}
	if b, _ := os.ReadFile(dst); string(b) != "new\n" {
		t.Fatalf("destination holds %q", b)
	}
}

// With NoFollow a link at the destination is replaced by the file, its target left alone, and
// an unchanged write to the same name changes nothing.
func TestWrite_NoFollowReplacesLink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, []byte("keep\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "state.json")
	if err := os.Symlink(target, dst); err != nil {
		t.Fatal(err)
	}
	opts := atomicfile.Options{Perm: 0o600, UID: atomicfile.Keep, GID: atomicfile.Keep, NoFollow: true}
	changed, err := atomicfile.Write(dst, []byte("new\n"), opts)
	if err != nil || !changed {
		t.Fatalf("Write = %v, %v; want changed", changed, err)
	}
	if b, _ := os.ReadFile(target); string(b) != "keep\n" {
		t.Fatalf("the link's target was written: %q", b)
	}
	if fi, err := os.Lstat(dst); err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("destination after Write: %v, %v; want a regular file", fi, err)
	}
	if changed, err := atomicfile.Write(dst, []byte("new\n"), opts); err != nil || changed {
		t.Fatalf("second Write = %v, %v; want unchanged", changed, err)
	}
}

// What Kept (with Path and Existed) describes, NewPrevious takes back: its Restore puts back the
// bytes and mode of the file the install replaced, and removes a file that was not there.
func TestNewPrevious_RestoresWhatKeptDescribes(t *testing.T) {
	dir := t.TempDir()
	for _, existed := range []bool{true, false} {
		dest := filepath.Join(dir, fmt.Sprint("f-", existed))
		if existed {
			if err := os.WriteFile(dest, []byte("old\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			os.Chmod(dest, 0o640)
		}
		s, err := atomicfile.Stage(dest, []byte("new\n"), atomicfile.Options{Perm: 0o644, UID: atomicfile.Keep, GID: atomicfile.Keep, KeepPrevious: true})
		if err != nil {
			t.Fatal(err)
		}
		p := s.Previous()
		if err := s.Install(); err != nil {
			t.Fatal(err)
		}
		data, perm, uid, gid := p.Kept()
		back := atomicfile.NewPrevious(p.Path(), p.Existed(), bytes.Clone(data), perm, uid, gid)
		if changed, err := back.Restore(atomicfile.Options{}); err != nil || !changed {
			t.Fatalf("existed %v: Restore = %v, %v; want it changed", existed, changed, err)
		}
		fi, err := os.Stat(dest)
		switch {
		case !existed && !os.IsNotExist(err):
			t.Fatalf("a file that was not there is there after the restore (%v)", err)
		case existed && (err != nil || fi.Mode().Perm() != 0o640 || string(mustRead(t, dest)) != "old\n"):
			t.Fatalf("restored %v (%v), want old\\n with mode 0640", fi, err)
		}
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The Restore of a file that was not there, whose directory is gone too, has nothing to remove:
// it changes nothing and is no error. Before, it failed ("remove ...: directory: ... no such
// file or directory"), so that an agent's undo of a candidate's new file, in a directory
// removed since, failed at every pass and was kept (and recorded) for good.
func TestRestore_NoFileInAMissingDirectory(t *testing.T) {
	dest := filepath.Join(t.TempDir(), "gone", "new.conf")
	p := atomicfile.NewPrevious(dest, false, nil, 0, atomicfile.Keep, atomicfile.Keep)
	if changed, err := p.Restore(atomicfile.Options{}); err != nil || changed {
		t.Fatalf("Restore = %v, %v; want nothing changed, no error", changed, err)
	}
	if _, err := os.Lstat(filepath.Dir(dest)); !os.IsNotExist(err) {
		t.Fatalf("the directory is there after the restore (%v)", err)
	}
}

// What is installed is what was rendered: a check that edits the staged file, changes its mode
// (setuid too), or puts a symbolic link at its name fails the install, and the destination
// keeps its content. Before, the check's doing was installed, a link too, which the next
// install then wrote through.
func TestStage_CheckThatChangesTheStagedFileRefused(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("Unix modes and links")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "app.conf")
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("important\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, check := range map[string]func(staged string) error{
		"edit": func(staged string) error { return os.WriteFile(staged, []byte("edited\n"), 0o644) },
		"append": func(staged string) error {
			f, _ := os.OpenFile(staged, os.O_WRONLY|os.O_APPEND, 0)
			f.WriteString("x")
			return f.Close()
		},
		"setuid":  func(staged string) error { return os.Chmod(staged, 0o4777) },
		"symlink": func(staged string) error { os.Remove(staged); return os.Symlink(victim, staged) },
		"read":    func(staged string) error { _, err := os.ReadFile(staged); return err },
		// Refused too (told by the stat: an ACL or a file capability changes only the ctime),
		// and the error says so: it said "its content, mode, owner or type", none of which changed.
		"touch":     func(staged string) error { return os.Chtimes(staged, time.Unix(1, 0), time.Unix(1, 0)) },
		"same mode": func(staged string) error { return os.Chmod(staged, 0o644) },
	} {
		if err := os.WriteFile(path, []byte("old\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := atomicfile.Write(path, []byte("new\n"), atomicfile.Options{Perm: 0o644, UID: atomicfile.Keep, GID: atomicfile.Keep, Check: check})
		got, _ := os.ReadFile(path)
		if name == "read" {
			if err != nil || string(got) != "new\n" {
				t.Fatalf("a check that only reads: %v, file %q", err, got)
			}
			continue
		}
		var ce *atomicfile.CheckError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), "the check changed the staged file") || string(got) != "old\n" {
			t.Fatalf("%s: %v, file %q; want the install refused and the old file", name, err, got)
		}
		if (name == "touch" || name == "same mode") && !strings.Contains(err.Error(), "or only its times or attributes: a touch, a chmod or chown even to what it is") {
			t.Fatalf("%s: %v; want the error to say a change of its times alone is one", name, err)
		}
		if fi, err := os.Lstat(path); err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o644 {
			t.Fatalf("%s: destination %v, %v", name, fi.Mode(), err)
		}
	}
	if b, _ := os.ReadFile(victim); string(b) != "important\n" {
		t.Fatalf("the link's target: %q", b)
	}
}
