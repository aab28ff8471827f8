//go:build !windows

package agent_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/shoelace-dev/shoelace/agent"
	"github.com/shoelace-dev/shoelace/internal/atomicfile"
)

// syncLogged waits for the log line of the pass at revision rev (the debug line when it did
// nothing: the logger of testAgent logs at debug).
func syncLogged(t *testing.T, logs *syncBuffer, rev int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("the pass at revision %d", rev), func() bool {
		l := logs.String()
		return strings.Contains(l, fmt.Sprintf(`"msg":"sync","revision":%d,`, rev)) ||
			strings.Contains(l, fmt.Sprintf(`"msg":"nothing changed","revision":%d`, rev))
	})
}

// A directory fsync that fails after the rename does not lose the reload: the file is in
// place, so it counts as installed and its command runs (before, the pass failed, no command
// ran, and the next pass saw no change).
func TestAgent_DirFsyncFailureStillRunsCommand(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	a, dir, logs := testAgent(t, srv, header+`templates:
  - contents: "a={{ key \"a\" }}"
    destination: $DIR/a
    command: echo ran >> $DIR/commands
`)
	defer agent.SetInstallStaged(func(s *atomicfile.Staged) error {
		err := s.Install()
		if err == nil && strings.HasSuffix(s.Path(), "/a") {
			// Renamed; the fsync of the directory after it fails.
			return &atomicfile.SyncDirError{Path: s.Path(), Err: syscall.EIO}
		}
		return err
	})()
	stop := runAgent(t, a)
	defer stop()
	syncLogged(t, logs, 10)
	if got := read(t, dir+"/a"); got != "a=1" {
		t.Fatalf("a = %q", got)
	}
	if got := lines(t, dir+"/commands"); len(got) != 1 {
		t.Fatalf("commands = %v after an install whose directory fsync failed, want 1", got)
	}
	srv.set(map[string]*string{"a": str("2")})
	syncLogged(t, logs, 11)
	if got := lines(t, dir+"/commands"); len(got) != 2 {
		t.Fatalf("commands = %v after the second install, want 2", got)
	}
	if !strings.Contains(logs.String(), "installed, but its directory was not fsynced") {
		t.Fatalf("no log of the failed fsync:\n%s", logs.String())
	}
	if _, err := os.Stat(agent.OwedPath(dir+"/cache", "web")); !os.IsNotExist(err) {
		t.Fatalf("owed commands left after they ran: %v", err)
	}
}

// The command is recorded as owed in cache_dir before the file is renamed into place.
func TestAgent_OwedRecordedBeforeRename(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	a, dir, _ := testAgent(t, srv, header+`templates:
  - contents: "a={{ key \"a\" }}"
    destination: $DIR/a
    command: echo ran >> $DIR/commands
`)
	var (
		mu           sync.Mutex // the hook runs in the agent's goroutine
		owedAtRename string
	)
	defer agent.SetInstallStaged(func(s *atomicfile.Staged) error {
		if _, serr := os.Stat(s.Path()); !os.IsNotExist(serr) {
			return fmt.Errorf("the destination exists before the rename: %v", serr)
		}
		b, _ := os.ReadFile(agent.OwedPath(dir+"/cache", "web"))
		mu.Lock()
		owedAtRename = string(b)
		mu.Unlock()
		return s.Install()
	})()
	stop := runAgent(t, a)
	defer stop()
	waitFor(t, "the command", func() bool { return len(lines(t, dir+"/commands")) == 1 })
	var rec struct {
		Appliance string
		Commands  []struct {
			Command      string
			Destinations []string
			Revision     int64
		}
	}
	mu.Lock()
	got := owedAtRename
	mu.Unlock()
	if err := json.Unmarshal([]byte(got), &rec); err != nil {
		t.Fatalf("owed record at the rename %q: %v", got, err)
	}
	if rec.Appliance != "web" || len(rec.Commands) != 1 || rec.Commands[0].Command != "echo ran >> "+dir+"/commands" ||
		rec.Commands[0].Revision != 10 || strings.Join(rec.Commands[0].Destinations, ",") != dir+"/a" {
		t.Fatalf("owed record at the rename = %+v", rec)
	}
	waitFor(t, "the record cleared", func() bool {
		_, err := os.Stat(agent.OwedPath(dir+"/cache", "web"))
		return os.IsNotExist(err)
	})
}

// A run that finds commands owed by a killed run runs those its templates still have, once,
// with the revision they were owed for; a command no template has is not run.
func TestAgent_RunRunsOwedCommandsOnce(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	cfg := header + `templates:
  - contents: "a={{ key \"a\" }}"
    destination: $DIR/a
    command: echo owed-$SHOELACE_REVISION-$SHOELACE_DESTINATIONS >> $DIR/commands
`
	a, dir, logs := testAgent(t, srv, cfg)
	// The file is in place (the killed run renamed it), its command did not run.
	os.WriteFile(dir+"/a", []byte("a=1"), 0o644)
	os.MkdirAll(dir+"/cache", 0o700)
	rec := fmt.Sprintf(`{"appliance":"web","commands":[
		{"command":"echo owed-$SHOELACE_REVISION-$SHOELACE_DESTINATIONS >> %[1]s/commands","timeout_ms":5000,"destinations":["%[1]s/a"],"revision":9},
		{"command":"touch %[1]s/not-configured","timeout_ms":5000,"destinations":["%[1]s/b"],"revision":9}]}`, dir)
	if err := os.WriteFile(agent.OwedPath(dir+"/cache", "web"), []byte(rec), 0o600); err != nil {
		t.Fatal(err)
	}
	stop := runAgent(t, a)
	syncLogged(t, logs, 10)
	if got := strings.Join(lines(t, dir+"/commands"), ","); got != "owed-9-"+dir+"/a" {
		t.Fatalf("commands = %q, want the owed one once, at its revision", got)
	}
	if _, err := os.Stat(dir + "/not-configured"); !os.IsNotExist(err) {
		t.Fatal("an owed command that no template has ran")
	}
	if _, err := os.Stat(agent.OwedPath(dir+"/cache", "web")); !os.IsNotExist(err) {
		t.Fatalf("owed commands left after they ran: %v", err)
	}
	stop()

	// A second start owes nothing: nothing runs.
	c, err := agent.LoadConfig(dir + "/agent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	logs2 := &syncBuffer{}
	a2, err := agent.New(c, agent.Options{Logger: slog.New(slog.NewJSONHandler(logs2, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	stop2 := runAgent(t, a2)
	defer stop2()
	waitFor(t, "the first pass of the second start", func() bool { return strings.Contains(logs2.String(), `"msg":"nothing changed"`) })
	if got := lines(t, dir+"/commands"); len(got) != 1 {
		t.Fatalf("commands = %v after a second start, want the owed one once", got)
	}
}

// An install over a file whose reload a killed run owed records, in the one write of the record
// before its rename, what the killed run's install replaced (the last file known good), with
// the fingerprints of both installs, when the file holds what the killed run installed; and a
// failed reload of it goes back to that file, not to the killed run's. Over anything else (an
// operator's file) it records what it replaces, and goes back to it. (Before, the record kept
// the killed run's entry with its fingerprint alone, and the rollback put the killed run's file
// back.)
func TestAgent_OwedInstallAgainKeepsTheLastGoodFile(t *testing.T) {
	sum := func(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }
	for _, tc := range []struct {
		name, held, wantPrev, wantBack string
		wantSums                       []string
	}{
		{"killed run's file", "v=bad1", "v=good", "v=good", []string{sum("v=bad1"), sum("v=bad2")}},
		{"operator's file", "v=mine", "v=mine", "v=mine", []string{sum("v=bad2")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newViewServer(t, map[string]string{"v": "bad2"})
			a, dir, logs := testAgent(t, srv, header+`templates:
  - contents: "v={{ key \"v\" }}"
    destination: $DIR/a
    command: cat $DIR/a >> $DIR/commands; echo >> $DIR/commands; ! grep -q bad $DIR/a
`)
			if err := os.WriteFile(dir+"/a", []byte(tc.held), 0o644); err != nil {
				t.Fatal(err)
			}
			os.MkdirAll(dir+"/cache", 0o700)
			rec, _ := json.Marshal(map[string]any{"appliance": "web", "commands": []any{map[string]any{
				"command":    "cat " + dir + "/a >> " + dir + "/commands; echo >> " + dir + "/commands; ! grep -q bad " + dir + "/a",
				"timeout_ms": 5000, "destinations": []string{dir + "/a"}, "revision": 9,
				"previous": []any{map[string]any{"destination": dir + "/a", "path": dir + "/a", "existed": true, "data": []byte("v=good"),
					"mode": 0o644, "uid": os.Getuid(), "gid": os.Getgid(), "installed": []string{sum("v=bad1")}}},
			}}})
			if err := os.WriteFile(agent.OwedPath(dir+"/cache", "web"), rec, 0o600); err != nil {
				t.Fatal(err)
			}
			var (
				mu           sync.Mutex // the hook runs in the agent's goroutine
				owedAtRename []byte
			)
			defer agent.SetInstallStaged(func(s *atomicfile.Staged) error {
				b, _ := os.ReadFile(agent.OwedPath(dir+"/cache", "web"))
				mu.Lock()
				owedAtRename = b
				mu.Unlock()
				return s.Install()
			})()
			stop := runAgent(t, a)
			syncLogged(t, logs, 10)
			stop()
			var got struct {
				Commands []struct {
					Previous []struct {
						Data      []byte
						Installed []string
					}
				}
			}
			mu.Lock()
			b := owedAtRename
			mu.Unlock()
			if err := json.Unmarshal(b, &got); err != nil || len(got.Commands) != 1 || len(got.Commands[0].Previous) != 1 {
				t.Fatalf("owed record at the rename = %s (%v), want one reload with one previous file", b, err)
			}
			if p := got.Commands[0].Previous[0]; string(p.Data) != tc.wantPrev || !slices.Equal(p.Installed, tc.wantSums) {
				t.Fatalf("previous file recorded = %q, installed %v; want %q, %v", p.Data, p.Installed, tc.wantPrev, tc.wantSums)
			}
			if got := read(t, dir+"/a"); got != tc.wantBack {
				t.Fatalf("a = %q after the failed reload, want %q", got, tc.wantBack)
			}
			if got, want := strings.Join(lines(t, dir+"/commands"), ","), "v=bad2,"+tc.wantBack; got != want {
				t.Fatalf("commands saw %q, want %q", got, want)
			}
		})
	}
}

// A rollout's candidate installed over a file whose reload a killed run owed (the run was killed
// in the reload of what it installed there) is undone, when its reload fails, to the last file
// known good: what the killed run's install replaced, which the owed record kept, not the killed
// run's file, whose reload never completed. The candidate's undo record, written before the
// rename, names that file too, so that the halt of the rollout (after a restart as well) puts
// it back. When the killed run's install created the file (no file was known good before it),
// the undo keeps the killed run's file, as the rollback of a first install keeps the new file:
// it is what the live view renders, and the reload run after the undo completes the one the
// killed run owed. Over anything else (an operator's file) the undo puts back what the
// candidate replaced. (Before, the candidate's undo put the killed run's file back in every
// case.)
func TestAgent_CandidateOverAnOwedInstallUndoesToTheLastGoodFile(t *testing.T) {
	sum := func(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }
	for _, tc := range []struct {
		name, held  string
		goodExisted bool
		wantBack    string
	}{
		{"killed run's file", "v=bad1", true, "v=good"},
		{"killed run's first file", "v=bad1", false, "v=bad1"},
		{"operator's file", "v=mine", true, "v=mine"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newViewServer(t, map[string]string{"v": "bad2"})
			srv.rollout = "ro-1"
			const command = "cat $DIR/a >> $DIR/commands; echo >> $DIR/commands; ! grep -q bad $DIR/a"
			a, dir, logs := testAgent(t, srv, header+`templates:
  - contents: "v={{ key \"v\" }}"
    destination: $DIR/a
    command: `+command+`
`)
			if err := os.WriteFile(dir+"/a", []byte(tc.held), 0o644); err != nil {
				t.Fatal(err)
			}
			os.MkdirAll(dir+"/cache", 0o700)
			good := map[string]any{"destination": dir + "/a", "path": dir + "/a", "existed": tc.goodExisted,
				"uid": os.Getuid(), "gid": os.Getgid(), "installed": []string{sum("v=bad1")}}
			if tc.goodExisted {
				good["data"], good["mode"] = []byte("v=good"), 0o644
			}
			rec, _ := json.Marshal(map[string]any{"appliance": "web", "commands": []any{map[string]any{
				"command": strings.ReplaceAll(command, "$DIR", dir), "timeout_ms": 5000, "destinations": []string{dir + "/a"},
				"revision": 9, "previous": []any{good},
			}}})
			if err := os.WriteFile(agent.OwedPath(dir+"/cache", "web"), rec, 0o600); err != nil {
				t.Fatal(err)
			}
			var (
				mu                sync.Mutex // the hook runs in the agent's goroutine
				candidateAtRename []byte
			)
			defer agent.SetInstallStaged(func(s *atomicfile.Staged) error {
				b, _ := os.ReadFile(agent.CandidatePath(dir+"/cache", "web"))
				mu.Lock()
				candidateAtRename = b
				mu.Unlock()
				return s.Install()
			})()
			stop := runAgent(t, a)
			syncLogged(t, logs, 10)
			stop()
			var got struct {
				Files []struct {
					Rollout string
					Existed bool
					Data    []byte
				}
			}
			mu.Lock()
			b := candidateAtRename
			mu.Unlock()
			if err := json.Unmarshal(b, &got); err != nil || len(got.Files) != 1 {
				t.Fatalf("candidate record at the rename = %s (%v), want one file", b, err)
			}
			if f := got.Files[0]; f.Rollout != "ro-1" || !f.Existed || string(f.Data) != tc.wantBack {
				t.Fatalf("candidate's undo recorded = %+v (data %q), want rollout ro-1 and %q", f, f.Data, tc.wantBack)
			}
			if got := read(t, dir+"/a"); got != tc.wantBack {
				t.Fatalf("a = %q after the candidate's failed reload, want %q", got, tc.wantBack)
			}
			if got, want := strings.Join(lines(t, dir+"/commands"), ","), "v=bad2,"+tc.wantBack; got != want {
				t.Fatalf("commands saw %q, want %q", got, want)
			}
			// What the candidate replaced is back: nothing is left to undo, nothing is owed.
			for _, p := range []string{agent.CandidatePath(dir+"/cache", "web"), agent.OwedPath(dir+"/cache", "web")} {
				if _, err := os.Stat(p); !os.IsNotExist(err) {
					b, _ := os.ReadFile(p)
					t.Fatalf("%s left after the undo: %v %s", p, err, b)
				}
			}
		})
	}
}

// The install of the live view over a rollout's candidate after a halt or abort records, in
// the owed record before its rename, what the candidate replaced (the file the failed reload
// of this install goes back to), with the fingerprint of what it installs: an agent killed in
// that reload puts it back at its next start when the reload it owed fails there. So it does
// when the candidate was installed over a file whose reload a killed run owed: the last file
// known good, which the candidate's record kept. (Before, the owed record kept nothing for a
// file that held a candidate, and the candidate's record was cleared before the reload: after
// the kill, the live view's file stayed, and the file before the candidate was lost.)
func TestAgent_OwedLiveInstallOverAHaltedCandidateKeepsWhatItReplaced(t *testing.T) {
	sum := func(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }
	for _, tc := range []struct {
		name string
		// owed: the candidate is installed over a file a killed run owed the reload of.
		owed     bool
		wantPrev string
	}{
		{"candidate over the live file", false, "v=one"},
		{"candidate over a killed run's file", true, "v=good"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const command = "cat $DIR/a >> $DIR/commands; echo >> $DIR/commands"
			srv := newViewServer(t, map[string]string{"v": "one"})
			a, dir, logs := testAgent(t, srv, header+`templates:
  - contents: "v={{ key \"v\" }}"
    destination: $DIR/a
    command: `+command+`
`)
			if tc.owed {
				// The killed run installed v=one over v=good and was killed in its reload.
				if err := os.WriteFile(dir+"/a", []byte("v=one"), 0o644); err != nil {
					t.Fatal(err)
				}
				os.MkdirAll(dir+"/cache", 0o700)
				rec, _ := json.Marshal(map[string]any{"appliance": "web", "commands": []any{map[string]any{
					"command": strings.ReplaceAll(command, "$DIR", dir), "timeout_ms": 5000, "destinations": []string{dir + "/a"},
					"revision": 9, "previous": []any{map[string]any{"destination": dir + "/a", "path": dir + "/a", "existed": true,
						"data": []byte("v=good"), "mode": 0o644, "uid": os.Getuid(), "gid": os.Getgid(), "installed": []string{sum("v=one")}}},
				}}})
				if err := os.WriteFile(agent.OwedPath(dir+"/cache", "web"), rec, 0o600); err != nil {
					t.Fatal(err)
				}
				srv.setView("ro-1", map[string]string{"v": "fixed"})
			}
			var (
				mu           sync.Mutex // the hook runs in the agent's goroutine
				owedAtRename [][]byte
			)
			defer agent.SetInstallStaged(func(s *atomicfile.Staged) error {
				b, _ := os.ReadFile(agent.OwedPath(dir+"/cache", "web"))
				mu.Lock()
				owedAtRename = append(owedAtRename, b)
				mu.Unlock()
				return s.Install()
			})()
			stop := sync.OnceFunc(runAgent(t, a))
			defer stop()
			if !tc.owed {
				waitFor(t, "the live view", fileIs(dir+"/a", "v=one"))
				srv.setView("ro-1", map[string]string{"v": "fixed"})
			}
			waitFor(t, "the candidate", fileIs(dir+"/a", "v=fixed"))
			waitFor(t, "the candidate's reload", func() bool { return slices.Contains(lines(t, dir+"/commands"), "v=fixed") })
			// Aborted: the live view, changed meanwhile.
			srv.setView("", map[string]string{"v": "two"})
			waitFor(t, "the live view after the abort", fileIs(dir+"/a", "v=two"))
			waitFor(t, "its reload", func() bool { return slices.Contains(lines(t, dir+"/commands"), "v=two") })
			stop()
			mu.Lock()
			b := owedAtRename[len(owedAtRename)-1]
			mu.Unlock()
			var got struct {
				Commands []struct {
					Previous []struct {
						Data      []byte
						Installed []string
					}
				}
			}
			if err := json.Unmarshal(b, &got); err != nil || len(got.Commands) != 1 || len(got.Commands[0].Previous) != 1 {
				t.Fatalf("owed record at the rename of the live view = %s (%v), want one reload with one previous file\n%s", b, err, logs.String())
			}
			if p := got.Commands[0].Previous[0]; string(p.Data) != tc.wantPrev || !slices.Equal(p.Installed, []string{sum("v=two")}) {
				t.Fatalf("previous file recorded = %q, installed %v; want %q, [sum of v=two]", p.Data, p.Installed, tc.wantPrev)
			}
		})
	}
}

// A failed reload of a group that runs a reload a killed run owed (its files installed, the
// run killed in their reload) puts back the last file known good of each file of that run the
// pass did not replace, as the same failure without an install in the pass does (owedFailed),
// not only of the files the pass installed: otherwise a file whose reload never completed
// stays beside files put back (a mix that was never reloaded together), and the command runs
// again on it. So it does for a rollout's candidate changing one file of the group. (Before,
// the rollback restored the installed file alone: b kept the killed run's "b=bad1".)
func TestAgent_OwedReloadFailedWithAnInstallRestoresTheOtherOwedFiles(t *testing.T) {
	sum := func(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }
	for _, rollout := range []string{"", "ro-1"} {
		t.Run("rollout "+rollout, func(t *testing.T) {
			srv := newViewServer(t, map[string]string{"a": "bad2", "b": "bad1"})
			srv.rollout = rollout
			const command = "cat $DIR/a $DIR/b | paste -sd, - >> $DIR/commands; ! grep -q bad $DIR/a $DIR/b"
			a, dir, logs := testAgent(t, srv, header+`templates:
  - contents: "a={{ key \"a\" }}\n"
    destination: $DIR/a
    command: `+command+`
  - contents: "b={{ key \"b\" }}\n"
    destination: $DIR/b
    command: `+command+`
`)
			var prev []any
			for _, f := range []string{"a", "b"} {
				if err := os.WriteFile(dir+"/"+f, []byte(f+"=bad1\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				prev = append(prev, map[string]any{"destination": dir + "/" + f, "path": dir + "/" + f, "existed": true,
					"data": []byte(f + "=good\n"), "mode": 0o644, "uid": os.Getuid(), "gid": os.Getgid(), "installed": []string{sum(f + "=bad1\n")}})
			}
			os.MkdirAll(dir+"/cache", 0o700)
			rec, _ := json.Marshal(map[string]any{"appliance": "web", "commands": []any{map[string]any{
				"command": strings.ReplaceAll(command, "$DIR", dir), "timeout_ms": 5000, "destinations": []string{dir + "/a", dir + "/b"},
				"revision": 9, "previous": prev,
			}}})
			if err := os.WriteFile(agent.OwedPath(dir+"/cache", "web"), rec, 0o600); err != nil {
				t.Fatal(err)
			}
			stop := runAgent(t, a)
			syncLogged(t, logs, 10)
			stop()
			for _, f := range []string{"a", "b"} {
				if got := read(t, dir+"/"+f); got != f+"=good\n" {
					t.Errorf("%s = %q after the failed reload, want %q (the last file known good)", f, got, f+"=good\n")
				}
			}
			if got, want := strings.Join(lines(t, dir+"/commands"), " "), "a=bad2,b=bad1 a=good,b=good"; got != want {
				t.Fatalf("commands saw %q, want %q", got, want)
			}
		})
	}
}

// An install that fails in a group (here b's, its .bak's name a directory that is not empty)
// puts back what it replaced in each file renamed before it: over a file whose reload a killed
// run owed, that file, not the last file known good that a failed reload of the install would
// go back to. Nothing of the group changed, so the reload the killed run owed runs on its own
// files, and goes back to the last good file only if it fails. (Before, the put back wrote the
// last good file over the killed run's, or removed it when that run had created it, though no
// reload of it had failed: a live view and a rollout's candidate alike.) The candidate's undo
// entry of a file put back goes with the install: what it was before, none here. (Before, a
// kept the entry the failed install wrote, naming the last good file as what it replaced.)
func TestAgent_OwedInstallThatFailsPutsBackTheKilledRunsFile(t *testing.T) {
	sum := func(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }
	for _, tc := range []struct {
		name, rollout string
		goodExisted   bool
	}{
		{"live view", "", true},
		{"live view, the killed run's first file", "", false},
		{"rollout's candidate", "ro-1", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newViewServer(t, map[string]string{"a": "bad2", "b": "new"})
			srv.rollout = tc.rollout
			const command = "cat $DIR/a $DIR/b | paste -sd, - >> $DIR/commands; ! grep -q bad2 $DIR/a $DIR/b"
			a, dir, logs := testAgent(t, srv, header+`templates:
  - contents: "a={{ key \"a\" }}\n"
    destination: $DIR/a
    command: `+command+`
  - contents: "b={{ key \"b\" }}\n"
    destination: $DIR/b
    backup: true
    command: `+command+`
`)
			for f, data := range map[string]string{"a": "a=bad1\n", "b": "b=old\n"} {
				if err := os.WriteFile(dir+"/"+f, []byte(data), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.MkdirAll(dir+"/b.bak/x", 0o755); err != nil {
				t.Fatal(err)
			}
			good := map[string]any{"destination": dir + "/a", "path": dir + "/a", "existed": tc.goodExisted,
				"uid": os.Getuid(), "gid": os.Getgid(), "installed": []string{sum("a=bad1\n")}}
			if tc.goodExisted {
				good["data"], good["mode"] = []byte("a=good\n"), 0o644
			}
			os.MkdirAll(dir+"/cache", 0o700)
			rec, _ := json.Marshal(map[string]any{"appliance": "web", "commands": []any{map[string]any{
				"command": strings.ReplaceAll(command, "$DIR", dir), "timeout_ms": 5000, "destinations": []string{dir + "/a"},
				"revision": 9, "previous": []any{good},
			}}})
			if err := os.WriteFile(agent.OwedPath(dir+"/cache", "web"), rec, 0o600); err != nil {
				t.Fatal(err)
			}
			stop := runAgent(t, a)
			syncLogged(t, logs, 10)
			stop()
			if got := readFileOr(dir + "/a"); got != "a=bad1\n" {
				t.Errorf("a = %q after the failed install, want %q (what the install replaced)", got, "a=bad1\n")
			}
			if got, want := strings.Join(lines(t, dir+"/commands"), " "), "a=bad1,b=old"; got != want {
				t.Fatalf("commands saw %q, want the owed reload once on %q", got, want)
			}
			// a holds what it held before the candidate, which had no undo before: none is left
			// (a halt would otherwise take the killed run's file for an operator's edit).
			if b, err := os.ReadFile(agent.CandidatePath(dir+"/cache", "web")); !os.IsNotExist(err) {
				t.Errorf("candidate record after the failed install: %s (%v), want none", b, err)
			}
		})
	}
}

// An agent killed in the reload of a live view's install (its reload owed, the owed record
// keeping the last file known good), restarted on a rollout's view and killed again right
// before the candidate's rename (its undo record written, naming that last good file as what
// the candidate replaced) left the killed run's file in place: the candidate was never
// installed. When the halt's live view then cannot render the file, the halt finds there what
// the candidate was to replace, the killed run's file, and says so: nothing of the candidate
// to undo, the undo dropped, and the file left to the reload the killed run owed, which runs
// once on it, as without the candidate. (Before, it logged that the file had "changed since
// the candidate installed it", an operator's edit, of a file the candidate never replaced.)
//
// The kill before the rename is the install's hook at the rename: it keeps the records as they
// are then and fails the install instead, and they are put back on disk after the run, with
// no command run since, as a kill there leaves them.
func TestAgent_HaltOfACandidateKilledBeforeItsRenameSaysItWasNeverInstalled(t *testing.T) {
	sum := func(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }
	srv := newViewServer(t, map[string]string{"v": "fixed"})
	srv.rollout = "ro-1"
	const command = "cat $DIR/a >> $DIR/commands; echo >> $DIR/commands"
	const config = header + `templates:
  - contents: "v={{ key \"v\" }}"
    destination: $DIR/a
    command: ` + command + `
`
	a, dir, logs := testAgent(t, srv, config)
	// The first run installed v=bad1 over v=good and was killed in its reload.
	if err := os.WriteFile(dir+"/a", []byte("v=bad1"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(dir+"/cache", 0o700)
	rec, _ := json.Marshal(map[string]any{"appliance": "web", "commands": []any{map[string]any{
		"command": strings.ReplaceAll(command, "$DIR", dir), "timeout_ms": 5000, "destinations": []string{dir + "/a"},
		"revision": 9, "previous": []any{map[string]any{"destination": dir + "/a", "path": dir + "/a", "existed": true,
			"data": []byte("v=good"), "mode": 0o644, "uid": os.Getuid(), "gid": os.Getgid(), "installed": []string{sum("v=bad1")}}},
	}}})
	candidatePath, owedPath := agent.CandidatePath(dir+"/cache", "web"), agent.OwedPath(dir+"/cache", "web")
	if err := os.WriteFile(owedPath, rec, 0o600); err != nil {
		t.Fatal(err)
	}
	var (
		mu                  sync.Mutex // the hook runs in the agent's goroutine
		candidateAt, owedAt []byte
	)
	restoreHook := agent.SetInstallStaged(func(s *atomicfile.Staged) error {
		c, _ := os.ReadFile(candidatePath)
		o, _ := os.ReadFile(owedPath)
		mu.Lock()
		candidateAt, owedAt = c, o
		mu.Unlock()
		return errors.New("killed before the rename")
	})
	stop := runAgent(t, a)
	syncLogged(t, logs, 10)
	stop()
	restoreHook()
	mu.Lock()
	c, o := candidateAt, owedAt
	mu.Unlock()
	var got struct{ Files []struct{ Data []byte } }
	if err := json.Unmarshal(c, &got); err != nil || len(got.Files) != 1 || string(got.Files[0].Data) != "v=good" {
		t.Fatalf("candidate record at the rename = %s (%v), want the undo of a to v=good", c, err)
	}
	if err := os.WriteFile(candidatePath, c, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(owedPath, o, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Remove(dir + "/commands")
	if got := read(t, dir+"/a"); got != "v=bad1" {
		t.Fatalf("a = %q after the run killed before the candidate's rename, want the killed run's v=bad1", got)
	}

	// Halted: the live view, which has no v.
	srv.setView("", map[string]string{"w": "x"})
	a2, _, logs2 := testAgentIn(t, srv, dir, config)
	stop2 := runAgent(t, a2)
	syncLogged(t, logs2, 11)
	stop2()
	if got := read(t, dir+"/a"); got != "v=bad1" {
		t.Errorf("a = %q after the halt, want the killed run's v=bad1 left to its owed reload", got)
	}
	l := logs2.String()
	if want := `"msg":"undo of the rollout's candidate dropped: the candidate was never installed (its run stopped before the rename)","template":"` + dir + `/a"`; !strings.Contains(l, want) {
		t.Errorf("no log of the candidate never installed (%s)", want)
	}
	if strings.Contains(l, "changed since the candidate installed it") {
		t.Errorf("the killed run's file taken for an edit since the candidate installed it")
	}
	if got := strings.Join(lines(t, dir+"/commands"), ","); got != "v=bad1" {
		t.Errorf("commands saw %q, want the owed reload once on v=bad1", got)
	}
	for _, p := range []string{candidatePath, owedPath} {
		if b, err := os.ReadFile(p); !os.IsNotExist(err) {
			t.Errorf("%s left after the halt: %s (%v)", p, b, err)
		}
	}
}

// readFileOr is the content of the file at path, "" when it cannot be read.
func readFileOr(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}
