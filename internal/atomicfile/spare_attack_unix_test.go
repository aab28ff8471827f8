//go:build !windows

package atomicfile_test

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/atomicfile"
)

// spareRacer is the content the process numbered p installs at its i-th write: a length and
// a letter of its own, so that any mix of two installs shows.
func spareRacer(p, i int) []byte {
	return bytes.Repeat([]byte{byte('a' + 2*p + i%2)}, 64*(1+2*p+i%2))
}

// TestSpare_AttackHelper is the other process of TestSpare_TwoProcessesInstallOneFile.
func TestSpare_AttackHelper(t *testing.T) {
	defer atomicfile.FileSpares()()
	path := os.Getenv("SHOELACE_SPARE_ATTACK_PATH")
	if path == "" {
		return // only as the other process of TestSpare_TwoProcessesInstallOneFile
	}
	p, _ := strconv.Atoi(os.Getenv("SHOELACE_SPARE_ATTACK_P"))
	spareInstalls(t, path, p)
}

func spareInstalls(t *testing.T, path string, p int) {
	opts := atomicfile.Options{Perm: 0o644, UID: atomicfile.Keep, GID: atomicfile.Keep, Spare: true}
	for i := range 400 {
		if _, err := atomicfile.Write(path, spareRacer(p, i), opts); err != nil {
			// As with temp files of their own: the other's install takes nothing of this one's.
			t.Errorf("install %d: %v", i, err)
		}
	}
}

// Two processes install the same destination at once (run, and once started by hand or a
// timer): each install's bytes must reach the destination whole, never a mix of the two
// nor an empty file, as with a temp file of its own. With one spare between them, both may
// open it while it is empty, write into it at once, and rename it over the destination by
// name; one may write into the file the other has just renamed into place, or rename the new
// empty spare the other made there.
func TestSpare_TwoProcessesInstallOneFile(t *testing.T) {
	defer atomicfile.FileSpares()()
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	path := filepath.Join(dir, "app.conf")
	valid := map[string]bool{}
	for p := range 2 {
		for i := range 2 {
			valid[string(spareRacer(p, i))] = true
		}
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSpare_AttackHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), "SHOELACE_SPARE_ATTACK_PATH="+path, "SHOELACE_SPARE_ATTACK_P=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var bad []string
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			got, err := os.ReadFile(path)
			if err == nil && !valid[string(got)] && len(bad) < 5 {
				bad = append(bad, summary(got))
			}
		}
	}()
	spareInstalls(t, path, 0)
	if err := cmd.Wait(); err != nil {
		t.Errorf("helper: %v\n%s", err, out.String())
	}
	close(done)
	wg.Wait()
	if got, err := os.ReadFile(path); err != nil || !valid[string(got)] {
		t.Errorf("the destination holds %s (%v), no install's whole content", summary(got), err)
	}
	if len(bad) > 0 {
		t.Errorf("a reader saw content no install wrote whole: %s", strings.Join(bad, "; "))
	}
}

// summary is content as runs of one byte: "64×a 64×c".
func summary(b []byte) string {
	if len(b) == 0 {
		return "nothing (an empty file)"
	}
	var parts []string
	for i := 0; i < len(b); {
		j := i
		for j < len(b) && b[j] == b[i] {
			j++
		}
		parts = append(parts, strconv.Itoa(j-i)+"×"+string(b[i]))
		i = j
	}
	return strings.Join(parts, " ")
}

// A check may run the staged file itself (a script template, checked by running it with a dry
// flag), and a command may run the file installed while its directory's fsync waits
// (DirSyncs): no handle open for writing may be left on it, or the kernel refuses to run it
// (ETXTBSY), as a temp file, closed before the check, runs.
func TestSpare_CheckRunsTheStagedFile(t *testing.T) {
	defer atomicfile.FileSpares()()
	dir := t.TempDir()
	path := filepath.Join(dir, "hook.sh")
	opts := atomicfile.Options{Perm: 0o755, UID: atomicfile.Keep, GID: atomicfile.Keep, Spare: true}
	if _, err := atomicfile.Write(path, []byte("#!/bin/sh\nexit 0\n"), opts); err != nil {
		t.Fatal(err)
	}
	wantSpare(t, path)
	run := func(p string) error {
		if out, err := exec.Command(p).CombinedOutput(); err != nil {
			return fmt.Errorf("%v %s", err, out)
		}
		return nil
	}
	ds := &atomicfile.DirSyncs{}
	opts.Check, opts.DirSyncs = run, ds
	if _, err := atomicfile.Write(path, []byte("#!/bin/sh\nexit 0 # two\n"), opts); err != nil {
		t.Fatal(err)
	}
	if err := run(path); err != nil {
		t.Errorf("the file installed does not run before its directory's fsync: %v", err)
	}
	if err := ds.Sync(); err != nil {
		t.Fatal(err)
	}
	wantContent(t, path, "#!/bin/sh\nexit 0 # two\n", 0o755)
}

// An install whose claimed spare a run starting meanwhile removes (RemoveLeftovers, as it
// removes any temp file older than its start: here the check has run for a minute) fails, and
// the file holds what the other process installed: never an install that says it succeeded
// with another's content, nor an empty file. Before the spare was claimed by a rename, the
// install renamed whatever was at the spare's name: the run's new spare, empty.
func TestSpare_LeftoversTakeTheClaimedSpare(t *testing.T) {
	defer atomicfile.FileSpares()()
	dir := t.TempDir()
	path := filepath.Join(dir, "app.conf")
	opts := atomicfile.Options{Perm: 0o644, UID: atomicfile.Keep, GID: atomicfile.Keep, Spare: true}
	if _, err := atomicfile.Write(path, []byte("one\n"), opts); err != nil {
		t.Fatal(err)
	}
	wantSpare(t, path)
	checking := opts
	checking.Check = func(staged string) error {
		old := time.Now().Add(-time.Minute)
		if err := os.Chtimes(staged, old, old); err != nil {
			t.Fatal(err)
		}
		if _, err := atomicfile.RemoveLeftovers(path, time.Now()); err != nil {
			t.Fatal(err)
		}
		// ... and the run installs the file itself, leaving a new spare.
		if _, err := atomicfile.Write(path, []byte("three\n"), opts); err != nil {
			t.Fatal(err)
		}
		wantSpare(t, path)
		return nil
	}
	// The check moved the staged file's times: Stage refuses it (a check must only read the
	// file), or, had it not, the install fails on the spare taken.
	s, err := atomicfile.Stage(path, []byte("two\n"), checking)
	if err == nil {
		err = s.Install()
	}
	got, rerr := os.ReadFile(path)
	if rerr != nil || string(got) != map[bool]string{true: "two\n", false: "three\n"}[err == nil] {
		t.Fatalf("after an install that said %v the file holds %q (%v)", err, got, rerr)
	}
	wantSpare(t, path)
}

// TestSpare_CheckingHelper stages a file with Spare, holding $SHOELACE_SPARE_CHECKING_DATA, and
// blocks in its check until killed: the other process of the tests that start it (checking).
func TestSpare_CheckingHelper(t *testing.T) {
	defer atomicfile.FileSpares()()
	path := os.Getenv("SHOELACE_SPARE_CHECKING_PATH")
	if path == "" {
		return // only as the other process of a test, started by checking
	}
	opts := atomicfile.Options{Perm: 0o644, UID: atomicfile.Keep, GID: atomicfile.Keep, Spare: true}
	opts.Check = func(string) error {
		os.Stdout.WriteString("checking\n")
		select {} // until killed
	}
	atomicfile.Write(path, []byte(os.Getenv("SHOELACE_SPARE_CHECKING_DATA")), opts)
}

// checking starts TestSpare_CheckingHelper installing data at path and returns once its install
// is in its check; kill ends it (and is run at the test's end too).
func checking(t *testing.T, path, data string) (kill func()) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestSpare_CheckingHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), "SHOELACE_SPARE_CHECKING_PATH="+path, "SHOELACE_SPARE_CHECKING_DATA="+data)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	kill = sync.OnceFunc(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	t.Cleanup(kill)
	line := make([]byte, len("checking\n"))
	if _, err := io.ReadFull(out, line); err != nil || string(line) != "checking\n" {
		t.Fatalf("helper said %q (%v)", line, err)
	}
	return kill
}

// A process killed while its install's check runs leaves the spare it claimed, under its temp
// name, holding what it wrote: another process's RemoveLeftovers leaves it while it is newer
// than that process's start, removes it once older, and the next install makes a spare again.
func TestSpare_KilledInItsCheck(t *testing.T) {
	defer atomicfile.FileSpares()()
	dir := t.TempDir()
	path := filepath.Join(dir, "app.conf")
	opts := atomicfile.Options{Perm: 0o644, UID: atomicfile.Keep, GID: atomicfile.Keep, Spare: true}
	if _, err := atomicfile.Write(path, []byte("one\n"), opts); err != nil {
		t.Fatal(err)
	}
	before := time.Now().Add(-time.Minute)
	kill := checking(t, path, "half done\n")
	wantNoSpare(t, path)
	if removed, err := atomicfile.RemoveLeftovers(path, before); err != nil || len(removed) > 0 {
		t.Fatalf("removed %v (%v) while the other process checks it", removed, err)
	}
	kill()
	claimed, _ := filepath.Glob(filepath.Join(dir, ".app.conf.shoelace-[0-9]*"))
	if len(claimed) != 1 {
		t.Fatalf("temp files %v, want the claimed spare", claimed)
	}
	if b, err := os.ReadFile(claimed[0]); err != nil || string(b) != "half done\n" {
		t.Fatalf("the claimed spare holds %q (%v), want what the killed install wrote", b, err)
	}
	if removed, err := atomicfile.RemoveLeftovers(path, time.Now().Add(time.Minute)); err != nil || len(removed) != 1 || removed[0] != claimed[0] {
		t.Fatalf("removed %v (%v), want the claimed spare", removed, err)
	}
	if _, err := atomicfile.Write(path, []byte("two\n"), opts); err != nil {
		t.Fatal(err)
	}
	wantContent(t, path, "two\n", 0o644)
	wantSpare(t, path)
}
