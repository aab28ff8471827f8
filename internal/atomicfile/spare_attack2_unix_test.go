//go:build !windows

package atomicfile_test

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/atomicfile"
)

// long ago is when the spare of these tests was made: the install before the one they look at
// was a day ago, as it is for most files.
var longAgo = time.Now().Add(-24 * time.Hour)

// An empty file installed from the spare is a new file like one installed from a temp file: its
// modification time is the install's, not the spare's (made after the install before, a day
// ago). A program that reloads its configuration when the file's time changes would miss the
// change to an empty file: the spare's time is the previous install's, to the clock's tick.
func TestSpare_EmptyInstallHasItsOwnTime(t *testing.T) {
	defer atomicfile.FileSpares()()
	dir := t.TempDir()
	path := filepath.Join(dir, "allow.list")
	opts := atomicfile.Options{Perm: 0o644, UID: atomicfile.Keep, GID: atomicfile.Keep, Spare: true}
	if _, err := atomicfile.Write(path, []byte("10.0.0.1\n"), opts); err != nil {
		t.Fatal(err)
	}
	wantSpare(t, path)
	if err := os.Chtimes(spareOf(path), longAgo, longAgo); err != nil {
		t.Fatal(err)
	}
	start := time.Now().Add(-time.Minute)
	if _, err := atomicfile.Write(path, nil, opts); err != nil {
		t.Fatal(err)
	}
	wantContent(t, path, "", 0o644)
	if mt := mustLstat(t, path).ModTime(); mt.Before(start) {
		t.Errorf("the empty file installed has the time %v, the spare's, not the install's", mt)
	}
}

// An agent starting (RemoveLeftovers with its start) while another process (`once`, started
// after it) checks an empty file it staged leaves that file alone, as it leaves a temp file
// that the other process created after its start: the claimed spare, made a day ago and not
// written to (nothing to write), must not count as a day old. Removed, the other install fails
// at its rename after a check that passed.
func TestSpare_LeftoversLeaveAnEmptyInstall(t *testing.T) {
	defer atomicfile.FileSpares()()
	dir := t.TempDir()
	path := filepath.Join(dir, "allow.list")
	opts := atomicfile.Options{Perm: 0o644, UID: atomicfile.Keep, GID: atomicfile.Keep, Spare: true}
	if _, err := atomicfile.Write(path, []byte("10.0.0.1\n"), opts); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(spareOf(path), longAgo, longAgo); err != nil {
		t.Fatal(err)
	}
	agentStart := time.Now()
	checking(t, path, "")
	wantNoSpare(t, path)
	if removed, err := atomicfile.RemoveLeftovers(path, agentStart); err != nil || len(removed) > 0 {
		t.Fatalf("removed %v (%v): the install of a process started after this one, in its check", removed, err)
	}
}

// Four processes install the same file at once (the run, `once` by hand, a timer's): besides
// each install reaching the file whole, none leaves a file behind. One that looks at the spare,
// finds it as made, and renames it once another install has claimed it and made a new one
// (right after its rename) holds that new spare: as made too, only not the file it looked at.
// It is as good a spare as the one it looked at, and was left under its temp name, empty, until
// the next start of the agent removed it: dozens of them for 1600 installs.
func TestSpare_InstallsAtOnceLeaveNoTempFile(t *testing.T) {
	defer atomicfile.FileSpares()()
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	path := filepath.Join(dir, "app.conf")
	var cmds []*exec.Cmd
	var outs []*bytes.Buffer
	for p := 1; p < 4; p++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestSpare_AttackHelper$", "-test.count=1")
		cmd.Env = append(os.Environ(), "SHOELACE_SPARE_ATTACK_PATH="+path, "SHOELACE_SPARE_ATTACK_P="+strconv.Itoa(p))
		out := &bytes.Buffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds, outs = append(cmds, cmd), append(outs, out)
	}
	spareInstalls(t, path, 0)
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Errorf("helper %d: %v\n%s", i+1, err, outs[i])
		}
	}
	left, err := filepath.Glob(filepath.Join(dir, ".app.conf.shoelace-[0-9]*"))
	if err != nil || len(left) > 0 {
		t.Errorf("%d temp files left (%v), want none", len(left), err)
	}
	wantSpare(t, path)
}

// A backup made when the .bak is already the destination's file (a hard link to it: the
// install that made it stopped before its rename, as one whose BeforeRename failed, or was
// killed there; or another process backed up the same file a moment before) leaves no temp
// file. rename(2) of one name of a file over another name of the same file does nothing and
// says it succeeded: the backup's temp link stayed, a name of the destination's previous
// content, until the agent's next start (from four processes installing with Backup, dozens).
func TestBackup_BakAlreadyTheFileLeavesNoTempFile(t *testing.T) {
	defer atomicfile.FileSpares()()
	dir := t.TempDir()
	path := filepath.Join(dir, "app.conf")
	opts := atomicfile.Options{Perm: 0o644, UID: atomicfile.Keep, GID: atomicfile.Keep, Backup: true, Spare: true}
	if _, err := atomicfile.Write(path, []byte("one\n"), opts); err != nil {
		t.Fatal(err)
	}
	failing := opts
	failing.BeforeRename = func() error { return io.ErrUnexpectedEOF }
	if _, err := atomicfile.Write(path, []byte("two\n"), failing); err == nil {
		t.Fatal("the install whose BeforeRename failed said it succeeded")
	}
	if !os.SameFile(mustLstat(t, path), mustLstat(t, path+".bak")) {
		t.Fatal("the .bak is not the file: this test no longer makes the case it is about")
	}
	if _, err := atomicfile.Write(path, []byte("three\n"), opts); err != nil {
		t.Fatal(err)
	}
	wantContent(t, path, "three\n", 0o644)
	wantContent(t, path+".bak", "one\n", 0o644)
	left, err := filepath.Glob(filepath.Join(dir, ".app.conf.*shoelace-[0-9]*"))
	if err != nil || len(left) > 0 {
		t.Errorf("temp files left: %v (%v), want none", left, err)
	}
}
