package atomicfile_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shoelace-dev/shoelace/internal/atomicfile"
	"github.com/shoelace-dev/shoelace/internal/testutil/openfiles"
)

// wantOnly fails unless dir holds exactly the names given: no spare, no temp file beside them.
func wantOnly(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if strings.Join(got, " ") != strings.Join(names, " ") {
		t.Fatalf("%s holds %q, want %q", dir, got, names)
	}
}

// firstInstall installs "one\n" at path with a spare kept, and returns the options it used.
func firstInstall(t *testing.T, path string) atomicfile.Options {
	t.Helper()
	opts := atomicfile.Options{UID: atomicfile.Keep, GID: atomicfile.Keep, Spare: true}
	if _, err := atomicfile.Write(path, []byte("one\n"), opts); err != nil {
		t.Fatal(err)
	}
	return opts
}

func unnamedDir(t *testing.T) string {
	t.Helper()
	t.Cleanup(atomicfile.DropUnnamedSpares) // each test with its own: at most MaxUnnamed are held
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// On Linux an install with Spare keeps its spare as a file without a name, held open: nothing is
// left beside the destination. The next install fills that very file (its inode becomes the
// destination's) with the mode asked, and keeps a new one.
func TestUnnamedSpare_NextInstallFillsIt(t *testing.T) {
	dir := unnamedDir(t)
	path := filepath.Join(dir, "app.conf")
	opts := atomicfile.Options{Perm: 0o640, UID: atomicfile.Keep, GID: atomicfile.Keep, Spare: true}
	if _, err := atomicfile.Write(path, []byte("one\n"), opts); err != nil {
		t.Fatal(err)
	}
	wantContent(t, path, "one\n", 0o640)
	wantOnly(t, dir, "app.conf")
	spares := openfiles.Unnamed(t, dir)
	if len(spares) != 1 {
		t.Fatalf("%d unnamed files held in the directory, want the spare", len(spares))
	}
	if _, err := atomicfile.Write(path, []byte("two\n"), opts); err != nil {
		t.Fatal(err)
	}
	wantContent(t, path, "two\n", 0o640)
	wantOnly(t, dir, "app.conf")
	if got := inode(t, path); got != spares[0] {
		t.Fatalf("installed inode %d, want the spare's %d", got, spares[0])
	}
	now := openfiles.Unnamed(t, dir)
	if len(now) != 1 || now[0] == spares[0] {
		t.Fatalf("unnamed files held after the second install: %v, want one new spare", now)
	}
}

// The spare is made with its first block: one byte, which the install that takes it writes
// over (an unnamed spare is taken only for a content of a byte or more). A one-byte content
// is that byte alone, and an empty one comes from a temp file, whole.
func TestUnnamedSpare_PrefilledByteIsWrittenOver(t *testing.T) {
	defer atomicfile.SetBurstGap(0)() // no change is in a burst: each spare has its block
	dir := unnamedDir(t)
	path := filepath.Join(dir, "app.conf")
	opts := firstInstall(t, path)
	for _, content := range []string{"x", "", "two\n", "y"} {
		held := openfiles.UnnamedStats(t, dir)
		if content != "" {
			if len(held) != 1 || held[0].Size() != 1 {
				t.Fatalf("before %q: unnamed spares held %v, want one of one byte", content, held)
			}
		}
		if _, err := atomicfile.Write(path, []byte(content), opts); err != nil {
			t.Fatal(err)
		}
		wantContent(t, path, content, 0o644)
		if content != "" {
			if got, want := inode(t, path), held[0].Sys().(*syscall.Stat_t).Ino; got != want {
				t.Fatalf("%q installed in inode %d, want the spare's %d", content, got, want)
			}
		}
	}
}

// A file that changes in a burst (its spare taken within BurstGap of its making) gets its next
// spare without the first block: that block's write would still be on its way to the disk when
// the next change's fsync waits for it. After a pause, the spare has its block again. The
// burst's gap is a second here, so that two installs in a row are one on a slow machine too.
func TestUnnamedSpare_NoBlockAheadInABurst(t *testing.T) {
	defer atomicfile.SetBurstGap(time.Second)() // a slow machine's back to back is a burst still
	dir := unnamedDir(t)
	path := filepath.Join(dir, "app.conf")
	opts := firstInstall(t, path)
	size := func() int64 {
		t.Helper()
		held := openfiles.UnnamedStats(t, dir)
		if len(held) != 1 {
			t.Fatalf("%d unnamed spares held, want one", len(held))
		}
		return held[0].Size()
	}
	if _, err := atomicfile.Write(path, []byte("two\n"), opts); err != nil { // at once: a burst
		t.Fatal(err)
	}
	if got := size(); got != 0 {
		t.Fatalf("the spare made after a change in a burst holds %d bytes, want none", got)
	}
	time.Sleep(1100 * time.Millisecond)
	if _, err := atomicfile.Write(path, []byte("three\n"), opts); err != nil {
		t.Fatal(err)
	}
	wantContent(t, path, "three\n", 0o644)
	if got := size(); got != 1 {
		t.Fatalf("the spare made after a change a pause after the last holds %d bytes, want its one", got)
	}
}

// The check runs on the spare once named, in the destination's directory; a failed check
// leaves the destination as it was and nothing in the directory, and the spare is spent.
func TestUnnamedSpare_CheckRunsTheNamedFile(t *testing.T) {
	dir := unnamedDir(t)
	path := filepath.Join(dir, "app.conf")
	opts := firstInstall(t, path)
	spares := openfiles.Unnamed(t, dir)
	var checked string
	opts.Check = func(staged string) error {
		b, _ := os.ReadFile(staged)
		checked = string(b)
		if filepath.Dir(staged) != dir || inode(t, staged) != spares[0] {
			t.Errorf("check of %s, want the spare named in %s", staged, dir)
		}
		return errors.New("refused")
	}
	_, err := atomicfile.Write(path, []byte("two\n"), opts)
	var ce *atomicfile.CheckError
	if !errors.As(err, &ce) {
		t.Fatalf("error %v, want the check's", err)
	}
	if checked != "two\n" {
		t.Fatalf("the check read %q, want the new content", checked)
	}
	wantContent(t, path, "one\n", 0o644)
	wantOnly(t, dir, "app.conf")
	if now := openfiles.Unnamed(t, dir); len(now) != 0 {
		t.Fatalf("unnamed files held after a failed install: %v, want none (the spare spent)", now)
	}
}

// Where an unnamed spare cannot be named (no CAP_DAC_READ_SEARCH and no /proc), its install
// fails saying so, leaving the destination as it was and nothing beside it; from then on the
// spares are files with a name, and the installs succeed.
func TestUnnamedSpare_NotNamedThenFileSpares(t *testing.T) {
	dir := unnamedDir(t)
	path := filepath.Join(dir, "app.conf")
	opts := firstInstall(t, path)
	defer atomicfile.SetLinkUnnamed(func(int, int, string) error { return syscall.EPERM })()
	_, err := atomicfile.Write(path, []byte("two\n"), opts)
	if err == nil || !strings.Contains(err.Error(), "name the staged file for "+path) || !errors.Is(err, syscall.EPERM) {
		t.Fatalf("error %v, want the link's, naming the destination", err)
	}
	wantContent(t, path, "one\n", 0o644)
	wantOnly(t, dir, "app.conf")
	if held := openfiles.Unnamed(t, dir); len(held) != 0 {
		t.Fatalf("%d unnamed spares still held once they cannot be named, want none", len(held))
	}
	for _, content := range []string{"two\n", "three\n"} {
		if _, err := atomicfile.Write(path, []byte(content), opts); err != nil {
			t.Fatal(err)
		}
		wantContent(t, path, content, 0o644)
		wantSpare(t, path)
	}
}

// A link that fails for a passing reason (no space for the name) fails that install alone: the
// next one makes and uses unnamed spares again.
func TestUnnamedSpare_PassingLinkErrorFailsOneInstall(t *testing.T) {
	dir := unnamedDir(t)
	path := filepath.Join(dir, "app.conf")
	opts := firstInstall(t, path)
	failed := false
	defer atomicfile.SetLinkUnnamed(func(int, int, string) error {
		if !failed {
			failed = true
			return syscall.ENOSPC
		}
		return syscall.EXDEV // never asked: the install that follows has no unnamed spare
	})()
	if _, err := atomicfile.Write(path, []byte("two\n"), opts); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("error %v, want the link's", err)
	}
	wantContent(t, path, "one\n", 0o644)
	if _, err := atomicfile.Write(path, []byte("two\n"), opts); err != nil {
		t.Fatal(err)
	}
	wantContent(t, path, "two\n", 0o644)
	wantOnly(t, dir, "app.conf")
	if held := openfiles.Unnamed(t, dir); len(held) != 1 {
		t.Fatalf("%d unnamed spares held, want a new one", len(held))
	}
}

// The file named is fsynced again before the directory is (its first fsync was before it had a
// name: its link count on disk was 0), so that the directory's entry is never on disk before
// the link it names.
func TestUnnamedSpare_LinkDurableBeforeTheDirectory(t *testing.T) {
	dir := unnamedDir(t)
	path := filepath.Join(dir, "app.conf")
	for _, deferred := range []bool{false, true} {
		ds := &atomicfile.DirSyncs{}
		opts := atomicfile.Options{UID: atomicfile.Keep, GID: atomicfile.Keep, Spare: true}
		if deferred {
			opts.DirSyncs = ds
		}
		if _, err := atomicfile.Write(path, []byte("one\n"), opts); err != nil {
			t.Fatal(err)
		}
		if err := ds.Sync(); err != nil {
			t.Fatal(err)
		}
		spares := openfiles.Unnamed(t, dir)
		if len(spares) != 1 {
			t.Fatalf("%d unnamed spares held, want one", len(spares))
		}
		var order []string
		restore := atomicfile.SetFsync(func(f *os.File) error {
			if fi, err := f.Stat(); err == nil && fi.IsDir() {
				order = append(order, "directory")
			} else if err == nil && fi.Sys().(*syscall.Stat_t).Ino == spares[0] {
				order = append(order, "the spare, named")
			}
			return f.Sync()
		})
		_, err := atomicfile.Write(path, []byte("two\n"), opts)
		if err == nil {
			err = ds.Sync()
		}
		restore()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Join(order, ", ") != "the spare, named, directory" {
			t.Fatalf("deferred %v: fsyncs %q, want the spare named, then the directory", deferred, order)
		}
		wantContent(t, path, "two\n", 0o644)
	}
}

// Installs whose directory fsyncs wait in one batch: the directory's sync fsyncs again, for
// its name, only the file still named; one that a later install renamed over has no entry to
// make durable, and each fsync is a flush of the disk's cache. With a backup, the file
// replaced keeps a name (the .bak) and is fsynced too.
func TestUnnamedSpare_BatchFsyncsOnlyTheFilesStillNamed(t *testing.T) {
	for _, backup := range []bool{false, true} {
		dir := unnamedDir(t)
		path := filepath.Join(dir, "app.conf")
		firstInstall(t, path)
		ds := &atomicfile.DirSyncs{}
		opts := atomicfile.Options{UID: atomicfile.Keep, GID: atomicfile.Keep, Spare: true, DirSyncs: ds, Backup: backup}
		var named []uint64
		for _, content := range []string{"two\n", "three\n", "four\n"} {
			if _, err := atomicfile.Write(path, []byte(content), opts); err != nil {
				t.Fatal(err)
			}
			named = append(named, inode(t, path))
		}
		var synced []uint64
		restore := atomicfile.SetFsync(func(f *os.File) error {
			if fi, err := f.Stat(); err == nil && !fi.IsDir() {
				synced = append(synced, fi.Sys().(*syscall.Stat_t).Ino)
			}
			return f.Sync()
		})
		err := ds.Sync()
		restore()
		if err != nil {
			t.Fatal(err)
		}
		want := named[2:] // the file in place
		if backup {
			want = named[1:] // and the .bak, the one it replaced
		}
		if !slices.Equal(synced, want) {
			t.Fatalf("backup %v: files fsynced by the directory's sync %v, want %v (installed: %v)", backup, synced, want, named)
		}
		wantContent(t, path, "four\n", 0o644)
	}
}

// No unnamed spare is kept in a directory that others than its owner may write (a group's, or
// /tmp), as no spare file is: a file takes its directory's group and default ACL when it is
// made, and those may change before it is used.
func TestUnnamedSpare_NoneWhereOthersMayWrite(t *testing.T) {
	dir := unnamedDir(t)
	if err := os.Chmod(dir, 0o1777); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "app.conf")
	opts := atomicfile.Options{UID: atomicfile.Keep, GID: atomicfile.Keep, Spare: true}
	for _, content := range []string{"one\n", "two\n"} {
		if _, err := atomicfile.Write(path, []byte(content), opts); err != nil {
			t.Fatal(err)
		}
		wantContent(t, path, content, 0o644)
		if held := openfiles.Unnamed(t, dir); len(held) != 0 {
			t.Fatalf("%d unnamed spares held for a directory others may write, want none", len(held))
		}
		wantOnly(t, dir, "app.conf")
	}
}

// A spare is kept for its directory, not its path: a directory made anew at the path is
// another one, whose install makes a temp file there (never the old directory's spare).
func TestUnnamedSpare_OfItsDirectoryOnly(t *testing.T) {
	parent := unnamedDir(t)
	dir := filepath.Join(parent, "d")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "app.conf")
	opts := firstInstall(t, path)
	old := openfiles.Unnamed(t, dir)
	if len(old) != 1 {
		t.Fatalf("%d unnamed files held, want the spare", len(old))
	}
	if err := os.Rename(dir, filepath.Join(parent, "moved")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := atomicfile.Write(path, []byte("two\n"), opts); err != nil {
		t.Fatal(err)
	}
	wantContent(t, path, "two\n", 0o644)
	if got := inode(t, path); got == old[0] {
		t.Fatal("the new directory's file is the old directory's spare")
	}
	wantOnly(t, dir, "app.conf")
}

// An empty file installed is as new as its install, not as old as the spare made before it.
func TestUnnamedSpare_EmptyInstallHasItsOwnTime(t *testing.T) {
	dir := unnamedDir(t)
	path := filepath.Join(dir, "app.conf")
	opts := firstInstall(t, path)
	time.Sleep(100 * time.Millisecond)
	before := time.Now()
	if _, err := atomicfile.Write(path, nil, opts); err != nil {
		t.Fatal(err)
	}
	// A file's times come from the kernel's coarse clock, up to a tick (10 ms at HZ=100) behind
	// time.Now: it failed at 5.03 ms once, under load. The spare's own time is 100 ms older.
	if fi := mustLstat(t, path); fi.Size() != 0 || fi.ModTime().Before(before.Add(-20*time.Millisecond)) {
		t.Fatalf("empty install: size %d, time %v, want empty and no older than %v", fi.Size(), fi.ModTime(), before)
	}
	wantOnly(t, dir, "app.conf")
}

// A file staged in an unnamed spare can be run by its check, and once installed, by anyone,
// while its directory's fsync is deferred: the handle held for its second fsync is read-only
// (one open for writing makes execve fail with ETXTBSY).
func TestUnnamedSpare_StagedAndInstalledCanBeRun(t *testing.T) {
	dir := unnamedDir(t)
	path := filepath.Join(dir, "hook.sh")
	ds := &atomicfile.DirSyncs{}
	opts := atomicfile.Options{Perm: 0o755, UID: atomicfile.Keep, GID: atomicfile.Keep, Spare: true, DirSyncs: ds}
	if _, err := atomicfile.Write(path, []byte("#!/bin/sh\necho one\n"), opts); err != nil {
		t.Fatal(err)
	}
	if err := ds.Sync(); err != nil {
		t.Fatal(err)
	}
	if len(openfiles.Unnamed(t, dir)) != 1 {
		t.Fatal("no unnamed spare held")
	}
	opts.Check = func(staged string) error {
		out, err := exec.Command(staged).CombinedOutput()
		if err != nil || string(out) != "two\n" {
			return fmt.Errorf("ran %s: %q, %v", staged, out, err)
		}
		return nil
	}
	if _, err := atomicfile.Write(path, []byte("#!/bin/sh\necho two\n"), opts); err != nil {
		t.Fatal(err)
	}
	if !ds.Pending() {
		t.Fatal("the directory's fsync is not deferred: the test proves nothing")
	}
	if out, err := exec.Command(path).CombinedOutput(); err != nil || string(out) != "two\n" {
		t.Fatalf("ran the installed %s: %q, %v", path, out, err)
	}
	if err := ds.Sync(); err != nil {
		t.Fatal(err)
	}
}

// At most MaxUnnamed spares are held: past that, the one made longest ago goes, and the newest
// is kept.
func TestUnnamedSpare_AtMostMaxHeld(t *testing.T) {
	dir := unnamedDir(t)
	opts := atomicfile.Options{UID: atomicfile.Keep, GID: atomicfile.Keep, Spare: true}
	n := atomicfile.MaxUnnamed + 3
	for i := range n {
		if _, err := atomicfile.Write(filepath.Join(dir, fmt.Sprintf("f%03d", i)), []byte("x"), opts); err != nil {
			t.Fatal(err)
		}
	}
	if held := len(openfiles.Unnamed(t, dir)); held != atomicfile.MaxUnnamed {
		t.Fatalf("%d unnamed spares held after %d installs, want %d", held, n, atomicfile.MaxUnnamed)
	}
	// The newest is kept: the next install of the last file fills it.
	held := openfiles.Unnamed(t, dir)
	last := filepath.Join(dir, fmt.Sprintf("f%03d", n-1))
	if _, err := atomicfile.Write(last, []byte("y"), opts); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(held, inode(t, last)) {
		t.Fatal("the newest spare was not kept")
	}
	// The oldest went: the first file's next install is a new file.
	first := filepath.Join(dir, "f000")
	if _, err := atomicfile.Write(first, []byte("y"), opts); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(held, inode(t, first)) {
		t.Fatal("the oldest spare was kept")
	}
}

// The spare is named and reopened while it is still this process's, mode 0600, and only then
// given its mode and owner: a mode without the owner's read bit (0200), or an owner that is not
// this process's, would otherwise keep a process without CAP_DAC_OVERRIDE from reopening it.
func TestUnnamedSpare_NamedWhileStillOurs(t *testing.T) {
	dir := unnamedDir(t)
	path := filepath.Join(dir, "secret.in")
	opts := atomicfile.Options{Perm: 0o200, UID: atomicfile.Keep, GID: atomicfile.Keep, Spare: true}
	if _, err := atomicfile.Write(path, []byte("one\n"), opts); err != nil {
		t.Fatal(err)
	}
	var atNamed []os.FileMode
	defer atomicfile.SetBetween(func(step string) {
		if step != "named" {
			return
		}
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if strings.Contains(e.Name(), ".shoelace-") {
				atNamed = append(atNamed, mustLstat(t, filepath.Join(dir, e.Name())).Mode().Perm())
			}
		}
	})()
	if _, err := atomicfile.Write(path, []byte("two\n"), opts); err != nil {
		t.Fatal(err)
	}
	if len(atNamed) != 1 || atNamed[0] != 0o600 {
		t.Fatalf("the staged file's mode when named and reopened: %v, want [-rw-------]", atNamed)
	}
	fi := mustLstat(t, path)
	if b, _ := os.ReadFile(path); string(b) != "two\n" || fi.Mode().Perm() != 0o200 {
		t.Fatalf("%s holds %q, mode %v; want the new content, mode 0200", path, b, fi.Mode())
	}
}

// A spare made while the directory was its owner's alone is not taken once others may write
// there: what it took from the directory when it was made is not the directory's now.
func TestUnnamedSpare_NotTakenOnceTheDirectoryIsShared(t *testing.T) {
	dir := unnamedDir(t)
	path := filepath.Join(dir, "app.conf")
	opts := firstInstall(t, path)
	spares := openfiles.Unnamed(t, dir)
	if len(spares) != 1 {
		t.Fatalf("%d unnamed spares held, want one", len(spares))
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := atomicfile.Write(path, []byte("two\n"), opts); err != nil {
		t.Fatal(err)
	}
	if inode(t, path) == spares[0] {
		t.Fatal("the spare made before the directory was shared was taken")
	}
	wantContent(t, path, "two\n", 0o644)
}

// aclXattr is a POSIX ACL as Linux stores it in system.posix_acl_*: version 2, then each entry's
// tag, permissions and id.
func aclXattr(entries ...[3]uint32) []byte {
	b := binary.LittleEndian.AppendUint32(nil, 2)
	for _, e := range entries {
		b = binary.LittleEndian.AppendUint16(b, uint16(e[0]))
		b = binary.LittleEndian.AppendUint16(b, uint16(e[1]))
		b = binary.LittleEndian.AppendUint32(b, e[2])
	}
	return b
}

// No spare, unnamed or a file, is kept in a directory with a default ACL, which its mode does
// not show: a spare takes the ACL when it is made, and an entry removed from it before the
// spare is used would still let its user read the next version.
func TestSpare_NoneWhereTheDirectoryHasADefaultACL(t *testing.T) {
	dir := unnamedDir(t)
	const undef = 0xffffffff
	acl := aclXattr([3]uint32{0x01, 7, undef}, [3]uint32{0x02, 6, 65534}, [3]uint32{0x04, 5, undef},
		[3]uint32{0x10, 7, undef}, [3]uint32{0x20, 5, undef})
	if err := unix.Setxattr(dir, "system.posix_acl_default", acl, 0); errors.Is(err, unix.EOPNOTSUPP) {
		t.Skipf("no POSIX ACLs on this file system: %v", err)
	} else if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "app.conf")
	for _, files := range []bool{false, true} {
		restore := func() {}
		if files {
			restore = atomicfile.FileSpares()
		}
		opts := atomicfile.Options{Perm: 0o640, UID: atomicfile.Keep, GID: atomicfile.Keep, Spare: true}
		for _, content := range []string{"one\n", "two\n"} {
			if _, err := atomicfile.Write(path, []byte(content), opts); err != nil {
				t.Fatal(err)
			}
			if held := openfiles.Unnamed(t, dir); len(held) != 0 {
				t.Fatalf("%d unnamed spares held in a directory with a default ACL, want none", len(held))
			}
			wantOnly(t, dir, "app.conf")
		}
		restore()
	}
}

// A failed fsync of a named spare, the second one that the directory's sync makes, names the
// destination, not the temp name that the rename replaced.
func TestUnnamedSpare_FailedSecondFsyncNamesTheDestination(t *testing.T) {
	dir := unnamedDir(t)
	path := filepath.Join(dir, "app.conf")
	ds := &atomicfile.DirSyncs{}
	opts := atomicfile.Options{UID: atomicfile.Keep, GID: atomicfile.Keep, Spare: true, DirSyncs: ds}
	if _, err := atomicfile.Write(path, []byte("one\n"), opts); err != nil {
		t.Fatal(err)
	}
	if err := ds.Sync(); err != nil {
		t.Fatal(err)
	}
	if held := openfiles.Unnamed(t, dir); len(held) != 1 {
		t.Fatalf("%d unnamed spares held, want one", len(held))
	}
	if _, err := atomicfile.Write(path, []byte("two\n"), opts); err != nil {
		t.Fatal(err)
	}
	restore := atomicfile.SetFsync(func(f *os.File) error {
		if fi, err := f.Stat(); err == nil && !fi.IsDir() {
			return &os.PathError{Op: "sync", Path: f.Name(), Err: syscall.EIO}
		}
		return f.Sync()
	})
	err := ds.Sync()
	restore()
	want := "fsync " + path + " once named: input/output error"
	if err == nil || !strings.HasSuffix(err.Error(), want) || strings.Contains(err.Error(), ".shoelace-") {
		t.Fatalf("sync: %v, want it to end with %q and name no temp file", err, want)
	}
	wantContent(t, path, "two\n", 0o644)
}

// Where the file system makes no file without a name (NFS, some FUSE file systems: EOPNOTSUPP),
// the spare is the file beside the destination, and O_TMPFILE is not tried there again; an
// error that may pass (too many open files) is not remembered.
func TestUnnamedSpare_FileSystemWithoutThemAskedOnce(t *testing.T) {
	for _, c := range []struct {
		err   error
		tries int
	}{{unix.EOPNOTSUPP, 1}, {unix.EMFILE, 3}} {
		dir := unnamedDir(t)
		path := filepath.Join(dir, "app.conf")
		tries := 0
		restore := atomicfile.SetOpenUnnamed(func(int) (int, error) {
			tries++
			return -1, c.err
		})
		t.Cleanup(restore) // a failure below must not leave the open stubbed for later tests
		opts := atomicfile.Options{UID: atomicfile.Keep, GID: atomicfile.Keep, Spare: true}
		for _, content := range []string{"one\n", "two\n", "three\n"} {
			if _, err := atomicfile.Write(path, []byte(content), opts); err != nil {
				t.Fatal(err)
			}
			wantContent(t, path, content, 0o644)
			wantOnly(t, dir, ".app.conf.shoelace-spare", "app.conf")
		}
		restore()
		if tries != c.tries {
			t.Errorf("%v: O_TMPFILE tried %d times for three installs, want %d", c.err, tries, c.tries)
		}
	}
}

// At the cap, a spare that cannot be made (a transient error) evicts none of those held.
func TestUnnamedSpare_FailedMakeAtTheCapEvictsNone(t *testing.T) {
	dir := unnamedDir(t)
	opts := atomicfile.Options{UID: atomicfile.Keep, GID: atomicfile.Keep, Spare: true}
	for i := range atomicfile.MaxUnnamed {
		if _, err := atomicfile.Write(filepath.Join(dir, fmt.Sprintf("f%03d", i)), []byte("x"), opts); err != nil {
			t.Fatal(err)
		}
	}
	restore := atomicfile.SetOpenUnnamed(func(int) (int, error) { return -1, unix.EMFILE })
	t.Cleanup(restore)
	if _, err := atomicfile.Write(filepath.Join(dir, "late"), []byte("x"), opts); err != nil {
		t.Fatal(err)
	}
	restore()
	if held := len(openfiles.Unnamed(t, dir)); held != atomicfile.MaxUnnamed {
		t.Fatalf("%d unnamed spares held after a spare that could not be made, want %d", held, atomicfile.MaxUnnamed)
	}
}
