//go:build !windows

package agent_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/agent"
	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/atomicfile"
)

// When a rollout halts or is aborted, its cohort gets the live view again and the agent undoes
// the candidate's files, also those that the live view cannot render (a key the candidate
// added): what the candidate replaced is put back (bytes and mode), a file it created is
// removed, and the group's command runs. Before, such a file kept the candidate's content
// (a feature flag the rollout was to try on the canary stayed on after the abort), and the
// agent only logged that the live view did not render it.
func TestAgent_RunUndoesCandidateFilesTheLiveViewCannotRender(t *testing.T) {
	srv := newViewServer(t, map[string]string{"port": "80"})
	a, dir, logs := testAgent(t, srv, header+`templates:
  - contents: "feature={{ key \"feature\" }}\n"
    destination: $DIR/feat.conf
    command: echo feat >> $DIR/ran
  - contents: "flag={{ key \"flag\" }}\n"
    destination: $DIR/flag.conf
    perms: "0644"
  - contents: "port={{ key \"port\" }}\n"
    destination: $DIR/port.conf
`)
	if err := os.WriteFile(dir+"/flag.conf", []byte("old\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir+"/flag.conf", 0o640)
	view := func(rollout string, kv map[string]string) { srv.setView(rollout, kv) }
	stop := runAgent(t, a)
	defer stop()
	waitFor(t, "the live view rendered", fileIs(dir+"/port.conf", "port=80\n"))

	view("ro-1", map[string]string{"port": "80", "feature": "on", "flag": "x"})
	waitFor(t, "the candidate's files", func() bool {
		return fileIs(dir+"/feat.conf", "feature=on\n")() && fileIs(dir+"/flag.conf", "flag=x\n")()
	})

	// Aborted: the live view again, which has neither key.
	view("", map[string]string{"port": "80"})
	waitFor(t, "the candidate's files undone", func() bool {
		_, err := os.Lstat(dir + "/feat.conf")
		return os.IsNotExist(err) && fileIs(dir+"/flag.conf", "old\n")()
	})
	if fi, err := os.Stat(dir + "/flag.conf"); err != nil || fi.Mode().Perm() != 0o640 {
		t.Fatalf("flag.conf restored with %v (%v), want mode 0640", fi.Mode().Perm(), err)
	}
	waitFor(t, "the command run on the undone file", func() bool { return len(lines(t, dir+"/ran")) == 2 })
	if !strings.Contains(logs.String(), "undone") {
		t.Fatalf("the undo is not logged:\n%s", logs.String())
	}
}

// What a candidate replaced is kept in cache_dir (mode 0600) while its files may hold the
// candidate's content, so that the undo survives a restart of the agent: after the halt, a live
// view that cannot render a template puts back what the candidate replaced, removes a file it
// created and runs the command, whether the halt came while the agent was stopped or after it
// started again. Before, the undo was kept in memory only: after a restart the candidate's
// content stayed in the file for good.
func TestAgent_RunUndoesCandidateFilesAfterARestart(t *testing.T) {
	for _, haltWhileStopped := range []bool{false, true} {
		t.Run(map[bool]string{false: "halted after the start", true: "halted while stopped"}[haltWhileStopped], func(t *testing.T) {
			srv := newViewServer(t, map[string]string{"port": "80"})
			const config = header + `templates:
  - contents: "feature={{ key \"feature\" }}\n"
    destination: $DIR/feat.conf
    command: echo feat >> $DIR/ran
  - contents: "flag={{ key \"flag\" }}\n"
    destination: $DIR/flag.conf
    perms: "0644"
  - contents: "port={{ key \"port\" }}\n"
    destination: $DIR/port.conf
`
			a, dir, _ := testAgent(t, srv, config)
			if err := os.WriteFile(dir+"/flag.conf", []byte("old\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			os.Chmod(dir+"/flag.conf", 0o640)
			view := func(rollout string, kv map[string]string) { srv.setView(rollout, kv) }
			record := dir + "/cache/web.candidate.json"
			// Which candidate files the record named when they were renamed into place: it is
			// written first, so that an agent killed right after the rename still undoes them.
			var mu sync.Mutex
			recorded := map[string]bool{}
			defer agent.SetInstallStaged(func(s *atomicfile.Staged) error {
				b, _ := os.ReadFile(record)
				mu.Lock()
				recorded[filepath.Base(s.Previous().Path())] = strings.Contains(string(b), s.Previous().Path())
				mu.Unlock()
				return s.Install()
			})()
			stop := runAgent(t, a)
			waitFor(t, "the live view rendered", fileIs(dir+"/port.conf", "port=80\n"))
			view("ro-1", map[string]string{"port": "80", "feature": "on", "flag": "x"})
			waitFor(t, "the candidate's files", func() bool {
				return fileIs(dir+"/feat.conf", "feature=on\n")() && fileIs(dir+"/flag.conf", "flag=x\n")()
			})
			waitFor(t, "the command run on the candidate's file", func() bool { return len(lines(t, dir+"/ran")) == 1 })
			stop()
			mu.Lock()
			if !recorded["feat.conf"] || !recorded["flag.conf"] || recorded["port.conf"] {
				t.Errorf("named in the record when renamed into place: %v; want the candidate's files, and only them", recorded)
			}
			mu.Unlock()
			if fi, err := os.Stat(record); err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("the candidate's undo record: %v, %v; want a file of mode 0600", fi, err)
			}

			// Aborted: the live view again, which has neither key.
			if haltWhileStopped {
				view("", map[string]string{"port": "80"})
			}
			a2, _, logs := testAgentIn(t, srv, dir, config)
			stop2 := runAgent(t, a2)
			defer stop2()
			if !haltWhileStopped {
				waitFor(t, "the first pass of the agent started again", func() bool { return strings.Contains(logs.String(), `"nothing changed"`) })
				if !fileIs(dir+"/feat.conf", "feature=on\n")() || !fileIs(dir+"/flag.conf", "flag=x\n")() {
					t.Fatal("the candidate's files changed while the rollout runs")
				}
				view("", map[string]string{"port": "80"})
			}
			waitFor(t, "the candidate's files undone", func() bool {
				_, err := os.Lstat(dir + "/feat.conf")
				return os.IsNotExist(err) && fileIs(dir+"/flag.conf", "old\n")()
			})
			if fi, err := os.Stat(dir + "/flag.conf"); err != nil || fi.Mode().Perm() != 0o640 {
				t.Fatalf("flag.conf restored with %v (%v), want mode 0640", fi.Mode().Perm(), err)
			}
			waitFor(t, "the command run on the undone file", func() bool { return len(lines(t, dir+"/ran")) == 2 })
			waitFor(t, "the undo record removed", func() bool { _, err := os.Lstat(record); return os.IsNotExist(err) })
			if strings.Contains(logs.String(), "old\\n") {
				t.Fatalf("the previous content is logged:\n%s", logs.String())
			}
			if got := lines(t, dir+"/ran"); len(got) != 2 {
				t.Fatalf("the command ran %d times, want 2 (the candidate, the undo)", len(got))
			}
		})
	}
}

// A record of candidate files that the agent cannot take (unreadable, or for a destination no
// template has any more) is logged once and ignored: the agent starts and renders, and touches
// no file the record names.
func TestAgent_RunIgnoresAnUnusableCandidateRecord(t *testing.T) {
	for name, c := range map[string]struct{ record, log string }{
		"corrupt":              {`{"appliance":"web","files":[`, "undo record of the rollout's candidate unreadable"},
		"another appliance's":  {`{"appliance":"db","files":[{"destination":"$DIR/gone.conf","rollout":"ro-1","path":"$DIR/gone.conf","existed":false}]}`, "undo record of the rollout's candidate unreadable"},
		"a template not there": {`{"appliance":"web","files":[{"destination":"$DIR/gone.conf","rollout":"ro-1","path":"$DIR/gone.conf","existed":false}]}`, "no template has its destination any more"},
	} {
		t.Run(name, func(t *testing.T) {
			srv := newViewServer(t, map[string]string{"port": "80"})
			a, dir, logs := testAgent(t, srv, header+`templates:
  - contents: "port={{ key \"port\" }}\n"
    destination: $DIR/port.conf
`)
			if err := os.WriteFile(dir+"/gone.conf", []byte("kept\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			plantCandidateRecord(t, dir, c.record)
			stop := runAgent(t, a)
			defer stop()
			waitFor(t, "the live view rendered", fileIs(dir+"/port.conf", "port=80\n"))
			srv.set(map[string]*string{"port": str("81")})
			waitFor(t, "the next view rendered", fileIs(dir+"/port.conf", "port=81\n"))
			if n := strings.Count(logs.String(), c.log); n != 1 {
				t.Fatalf("%q logged %d times, want once:\n%s", c.log, n, logs.String())
			}
			if !fileIs(dir+"/gone.conf", "kept\n")() {
				t.Fatal("a file the record names, of no template, was changed")
			}
		})
	}
}

// A candidate that replaced a file over 16 MiB is undone all the same while the agent runs, but
// what it replaced is not written to cache_dir (logged, not an error).
func TestAgent_RunDoesNotRecordAHugePreviousFile(t *testing.T) {
	srv := newViewServer(t, map[string]string{"port": "80"})
	a, dir, logs := testAgent(t, srv, header+`templates:
  - contents: "flag={{ key \"flag\" }}\n"
    destination: $DIR/flag.conf
  - contents: "port={{ key \"port\" }}\n"
    destination: $DIR/port.conf
`)
	old := strings.Repeat("x", 16<<20+1)
	if err := os.WriteFile(dir+"/flag.conf", []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	stop := runAgent(t, a)
	defer stop()
	waitFor(t, "the live view rendered", fileIs(dir+"/port.conf", "port=80\n"))
	srv.setView("ro-1", map[string]string{"port": "80", "flag": "x"})
	waitFor(t, "the candidate's file", fileIs(dir+"/flag.conf", "flag=x\n"))
	if _, err := os.Lstat(dir + "/cache/web.candidate.json"); !os.IsNotExist(err) {
		t.Fatalf("a record of a previous file over 16 MiB was written (%v)", err)
	}
	if !strings.Contains(logs.String(), "over 16 MiB") {
		t.Fatalf("not recording it is not logged:\n%s", logs.String())
	}
	srv.setView("", map[string]string{"port": "80"})
	waitFor(t, "the candidate's file undone", fileIs(dir+"/flag.conf", old))
}

// The undo of a candidate's files survives a config reload (SIGHUP) too, for the templates that
// keep their destination. Before, the reload dropped it as a restart did.
func TestAgent_RunUndoesCandidateFilesAfterAReload(t *testing.T) {
	srv := newViewServer(t, map[string]string{"port": "80"})
	dir, path := writeConfig(t, strings.ReplaceAll(header+`templates:
  - contents: "flag={{ key \"flag\" }}\n"
    destination: $DIR/flag.conf
  - contents: "port={{ key \"port\" }}\n"
    destination: $DIR/port.conf
`, "$URL", srv.URL))
	a, logs, reload := reloadableAgent(t, path)
	if err := os.WriteFile(dir+"/flag.conf", []byte("old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	stop := runAgent(t, a)
	defer stop()
	waitFor(t, "the live view rendered", fileIs(dir+"/port.conf", "port=80\n"))
	srv.setView("ro-1", map[string]string{"port": "80", "flag": "x"})
	waitFor(t, "the candidate's file", fileIs(dir+"/flag.conf", "flag=x\n"))
	reload <- struct{}{}
	waitFor(t, "the config reloaded", func() bool { return strings.Contains(logs.String(), `"config reloaded"`) })
	srv.setView("", map[string]string{"port": "80"})
	waitFor(t, "the candidate's file undone", fileIs(dir+"/flag.conf", "old\n"))
}

// A file that a live view renders to the bytes it holds (the candidate's) holds nothing of the
// candidate's any more: a later live view that cannot render its template keeps it as it is,
// and does not put back what the candidate replaced over what the live view rendered. Before,
// such a render (its inputs changed, its output the same) kept the candidate's undo, and the
// file went back to the content it had before the rollout.
func TestAgent_RunLiveViewRenderingTheCandidatesBytesEndsItsUndo(t *testing.T) {
	srv := newViewServer(t, map[string]string{"port": "80"})
	a, dir, logs := testAgent(t, srv, header+`templates:
  - contents: "{{ $n := keyOrDefault \"note\" \"\" }}flag={{ key \"flag\" }}\n"
    destination: $DIR/flag.conf
    command: echo flag >> $DIR/ran
`)
	if err := os.WriteFile(dir+"/flag.conf", []byte("old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	view := func(rollout string, kv map[string]string) { srv.setView(rollout, kv) }
	view("", map[string]string{"flag": "old-live", "note": "a"})
	stop := runAgent(t, a)
	defer stop()
	waitFor(t, "the live view rendered", fileIs(dir+"/flag.conf", "flag=old-live\n"))
	view("ro-1", map[string]string{"flag": "x", "note": "a"})
	waitFor(t, "the candidate's file", fileIs(dir+"/flag.conf", "flag=x\n"))
	// Promoted, then another key the template reads changed: rendered again, the same bytes.
	view("", map[string]string{"flag": "x", "note": "b"})
	srv.mu.Lock()
	rev := srv.rev
	srv.mu.Unlock()
	waitFor(t, "the live view applied", func() bool {
		st, err := agent.LoadStatus(dir+"/cache", "web")
		return err == nil && st.Applied == rev && st.Rollout == ""
	})
	// The flag key goes: the template cannot render, and its file stays as the live view left it.
	view("", map[string]string{"note": "b"})
	waitFor(t, "the render failure", func() bool { return strings.Contains(logs.String(), "template not installed") })
	time.Sleep(300 * time.Millisecond) // an undo would have come with the failure
	if !fileIs(dir+"/flag.conf", "flag=x\n")() {
		b, _ := os.ReadFile(dir + "/flag.conf")
		t.Fatalf("flag.conf holds %q after a live view that cannot render it; want what the live view rendered last, flag=x", b)
	}
}

// An entry of the candidate record that no template takes at the start is dropped from the
// record too, not only from the run: a template given that destination again in a later
// config (restarted weeks after) must not have the old rollout's undo applied to what the file
// holds by then. Before, the record kept the entry for good, and the first pass of that later
// run that could not render the template removed the file (or put back content long stale).
func TestAgent_RunForgetsACandidateRecordOfNoTemplate(t *testing.T) {
	srv := newViewServer(t, map[string]string{"port": "80"})
	a, dir, logs := testAgent(t, srv, header+`templates:
  - contents: "port={{ key \"port\" }}\n"
    destination: $DIR/port.conf
`)
	if err := os.MkdirAll(dir+"/cache", 0o700); err != nil {
		t.Fatal(err)
	}
	record := dir + "/cache/web.candidate.json"
	if err := os.WriteFile(record, []byte(strings.ReplaceAll(`{"appliance":"web","files":[{"destination":"$DIR/gone.conf","rollout":"ro-1","path":"$DIR/gone.conf","existed":false}]}`, "$DIR", dir)), 0o600); err != nil {
		t.Fatal(err)
	}
	stop := runAgent(t, a)
	waitFor(t, "the live view rendered", fileIs(dir+"/port.conf", "port=80\n"))
	waitFor(t, "the entry dropped", func() bool { return strings.Contains(logs.String(), "no template has its destination any more") })
	stop()
	if _, err := os.Lstat(record); !os.IsNotExist(err) {
		t.Errorf("the record of a dropped entry is still there (%v)", err)
	}

	// Later: the operator writes the file by hand and gives it a template again, which the
	// live view cannot render (yet).
	if err := os.WriteFile(dir+"/gone.conf", []byte("kept\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	startAgainKeeps(t, srv, dir, header+`templates:
  - contents: "port={{ key \"port\" }}\n"
    destination: $DIR/port.conf
  - contents: "gone={{ key \"gone\" }}\n"
    destination: $DIR/gone.conf
`, "gone.conf", "kept\n", "the file of a template given back was changed by an undo of an old rollout")
}

// A reload that moves the record (cache_dir or appliance changed) writes it at its new name and
// removes it at the old one. Before, the old record stayed: once the undo was done, a later
// start with the old cache_dir took the old rollout's undo again and, in its first pass that
// could not render the template, put back long stale content over the file.
func TestAgent_RunMovesTheCandidateRecordOnAReload(t *testing.T) {
	srv := newViewServer(t, map[string]string{"port": "80"})
	const config = header + `templates:
  - contents: "flag={{ key \"flag\" }}\n"
    destination: $DIR/flag.conf
  - contents: "port={{ key \"port\" }}\n"
    destination: $DIR/port.conf
`
	dir, path := writeConfig(t, strings.ReplaceAll(config, "$URL", srv.URL))
	a, logs, reload := reloadableAgent(t, path)
	if err := os.WriteFile(dir+"/flag.conf", []byte("old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	stop := runAgent(t, a)
	waitFor(t, "the live view rendered", fileIs(dir+"/port.conf", "port=80\n"))
	srv.setView("ro-1", map[string]string{"port": "80", "flag": "x"})
	waitFor(t, "the candidate's file", fileIs(dir+"/flag.conf", "flag=x\n"))
	text, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(text), "/cache\n", "/cache2\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	reload <- struct{}{}
	waitFor(t, "the config reloaded", func() bool { return strings.Contains(logs.String(), `"config reloaded"`) })
	if _, err := os.Lstat(dir + "/cache2/web.candidate.json"); err != nil {
		t.Fatalf("no record in the new cache_dir: %v", err)
	}
	if _, err := os.Lstat(dir + "/cache/web.candidate.json"); !os.IsNotExist(err) {
		t.Errorf("the record is still in the old cache_dir (%v)", err)
	}
	srv.setView("", map[string]string{"port": "80"})
	waitFor(t, "the candidate's file undone", fileIs(dir+"/flag.conf", "old\n"))
	stop()

	// Later: the operator edits the file, and the agent starts with the old cache_dir.
	if err := os.WriteFile(dir+"/flag.conf", []byte("hand\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	startAgainKeeps(t, srv, dir, config, "flag.conf", "hand\n", "the file was changed by the undo of a rollout that ended")
}

// A destination that was a file of its own when the candidate replaced it and is a symbolic
// link now (the operator pointed it at another file while the agent was stopped) leads to
// another file: the undo is dropped, and neither the link nor the file it leads to is touched.
// Before, the undo took the destination's name as the file it recorded, replaced the link with
// what the candidate had replaced there, and removed the link where the candidate had created
// the file.
func TestAgent_RunDropsTheCandidateUndoOfADestinationNowALink(t *testing.T) {
	srv := newViewServer(t, map[string]string{"port": "80"})
	a, dir, logs := testAgent(t, srv, header+`templates:
  - contents: "flag={{ key \"flag\" }}\n"
    destination: $DIR/flag.conf
  - contents: "feature={{ key \"feature\" }}\n"
    destination: $DIR/feat.conf
  - contents: "port={{ key \"port\" }}\n"
    destination: $DIR/port.conf
`)
	if err := os.WriteFile(dir+"/real.conf", []byte("real\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"flag.conf", "feat.conf"} {
		if err := os.Symlink(dir+"/real.conf", dir+"/"+name); err != nil {
			t.Fatal(err)
		}
	}
	record := `{"appliance":"web","files":[` +
		`{"destination":"$DIR/flag.conf","rollout":"ro-1","path":"$DIR/flag.conf","existed":true,"data":"b2xkCg==","mode":420,"uid":-1,"gid":-1},` +
		`{"destination":"$DIR/feat.conf","rollout":"ro-1","path":"$DIR/feat.conf","existed":false}]}`
	plantCandidateRecord(t, dir, record)
	stop := runAgent(t, a)
	defer stop()
	waitFor(t, "the live view rendered", fileIs(dir+"/port.conf", "port=80\n"))
	srv.set(map[string]*string{"port": str("81")})
	waitFor(t, "the next view rendered", fileIs(dir+"/port.conf", "port=81\n"))
	for _, name := range []string{"flag.conf", "feat.conf"} {
		if to, err := os.Readlink(dir + "/" + name); err != nil || to != dir+"/real.conf" {
			t.Errorf("%s: link to %q (%v); want the operator's link to real.conf kept", name, to, err)
		}
	}
	if !fileIs(dir+"/real.conf", "real\n")() {
		t.Error("the file the link leads to was changed")
	}
	if n := strings.Count(logs.String(), "its destination leads to another file now"); n != 2 {
		t.Errorf("the dropped undo logged %d times, want 2", n)
	}
}

// setView makes the server answer the view of rollout (none: "") holding kv, at a new revision.
func (s *viewServer) setView(rollout string, kv map[string]string) {
	s.mu.Lock()
	s.rollout, s.keys = rollout, kv
	s.rev++
	s.cond.Broadcast()
	s.mu.Unlock()
}

// startAgainKeeps starts an agent of config on dir's cache, has it render a view of port 81, and
// fails with why unless file (in dir) still holds want.
func startAgainKeeps(t *testing.T, srv *viewServer, dir, config, file, want, why string) {
	t.Helper()
	a, _, logs := testAgentIn(t, srv, dir, config)
	stop := runAgent(t, a)
	defer stop()
	srv.set(map[string]*string{"port": str("81")})
	waitFor(t, "the next view rendered", fileIs(dir+"/port.conf", "port=81\n"))
	if !fileIs(dir+"/"+file, want)() {
		t.Fatalf("%s:\n%s", why, logs.String())
	}
}

// A file of the candidate's that the operator changed since the candidate installed it (a hand
// edit while the agent ran, or while it was stopped and the rollout halted) is the operator's: the halt keeps it as it
// is, drops its undo and logs a warning naming the destination (not its content). A file the
// candidate created and the operator since edited is kept too; a file of the candidate's that
// no one touched is undone as before. Before, the undo wrote what the candidate replaced over
// the operator's edit (or removed the file the operator had edited).
func TestAgent_RunKeepsAHandEditOfACandidateFile(t *testing.T) {
	for _, restart := range []bool{false, true} {
		t.Run(map[bool]string{false: "edited while running", true: "edited while stopped"}[restart], func(t *testing.T) {
			srv := newViewServer(t, map[string]string{"port": "80"})
			const config = header + `templates:
  - contents: "flag={{ key \"flag\" }}\n"
    destination: $DIR/flag.conf
  - contents: "feature={{ key \"feature\" }}\n"
    destination: $DIR/feat.conf
  - contents: "more={{ key \"more\" }}\n"
    destination: $DIR/more.conf
  - contents: "port={{ key \"port\" }}\n"
    destination: $DIR/port.conf
`
			a, dir, logs := testAgent(t, srv, config)
			if err := os.WriteFile(dir+"/flag.conf", []byte("old\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			stop := runAgent(t, a)
			defer func() { stop() }()
			waitFor(t, "the live view rendered", fileIs(dir+"/port.conf", "port=80\n"))
			srv.setView("ro-1", map[string]string{"port": "80", "feature": "on", "flag": "x", "more": "y"})
			waitFor(t, "the candidate's files", func() bool {
				return fileIs(dir+"/feat.conf", "feature=on\n")() && fileIs(dir+"/flag.conf", "flag=x\n")() && fileIs(dir+"/more.conf", "more=y\n")()
			})
			if restart {
				stop()
			}
			writeFiles(t, dir, map[string]string{"flag.conf": "flag=by-hand\n", "feat.conf": "feature=by-hand\n"})
			// Halted (while stopped: the agent starts on the live view).
			srv.setView("", map[string]string{"port": "80"})
			if restart {
				var a2 *agent.Agent
				a2, _, logs = testAgentIn(t, srv, dir, config)
				stop = runAgent(t, a2)
			}
			waitFor(t, "the untouched candidate file undone", func() bool { _, err := os.Lstat(dir + "/more.conf"); return os.IsNotExist(err) })
			waitFor(t, "the undo record removed", func() bool { _, err := os.Lstat(dir + "/cache/web.candidate.json"); return os.IsNotExist(err) })
			for name, want := range map[string]string{"flag.conf": "flag=by-hand\n", "feat.conf": "feature=by-hand\n"} {
				if b, err := os.ReadFile(dir + "/" + name); err != nil || string(b) != want {
					t.Errorf("%s holds %q (%v) after the halt; want the operator's edit %q kept", name, b, err, want)
				}
			}
			for _, name := range []string{"flag.conf", "feat.conf"} {
				if n := strings.Count(logs.String(), `"file of the rollout's candidate kept: changed since the candidate installed it","template":"`+dir+"/"+name+`"`); n != 1 {
					t.Errorf("the kept %s logged %d times, want once:\n%s", name, n, logs.String())
				}
			}
			if strings.Contains(logs.String(), "by-hand") {
				t.Errorf("the operator's content is logged:\n%s", logs.String())
			}
		})
	}
}

// A record written by the agent before it kept the fingerprint of what the candidate installed
// (no "installed") is read and undone as before: what the candidate replaced is put back and a
// file it created is removed, whatever they hold.
func TestAgent_RunUndoesACandidateRecordWithoutFingerprints(t *testing.T) {
	srv := newViewServer(t, map[string]string{"port": "80"})
	a, dir, _ := testAgent(t, srv, header+`templates:
  - contents: "flag={{ key \"flag\" }}\n"
    destination: $DIR/flag.conf
  - contents: "feature={{ key \"feature\" }}\n"
    destination: $DIR/feat.conf
  - contents: "port={{ key \"port\" }}\n"
    destination: $DIR/port.conf
`)
	writeFiles(t, dir, map[string]string{"flag.conf": "flag=x\n", "feat.conf": "feature=on\n"})
	record := `{"appliance":"web","files":[` +
		`{"destination":"$DIR/flag.conf","rollout":"ro-1","path":"$DIR/flag.conf","existed":true,"data":"b2xkCg==","mode":416,"uid":-1,"gid":-1},` +
		`{"destination":"$DIR/feat.conf","rollout":"ro-1","path":"$DIR/feat.conf","existed":false}]}`
	plantCandidateRecord(t, dir, record)
	stop := runAgent(t, a)
	defer stop()
	waitFor(t, "the candidate's files undone", func() bool {
		_, err := os.Lstat(dir + "/feat.conf")
		return os.IsNotExist(err) && fileIs(dir+"/flag.conf", "old\n")()
	})
	if fi, err := os.Stat(dir + "/flag.conf"); err != nil || fi.Mode().Perm() != 0o640 {
		t.Fatalf("flag.conf restored with %v (%v), want mode 0640", fi.Mode().Perm(), err)
	}
	waitFor(t, "the undo record removed", func() bool { _, err := os.Lstat(dir + "/cache/web.candidate.json"); return os.IsNotExist(err) })
}

// A destination that leads to another file at the halt than the one the candidate replaced (a
// symbolic link planted there while the agent runs, or a link there re-pointed) has its undo
// dropped while the agent runs too, as after a restart: neither the link nor a file it leads to
// (now or before) is touched, and the drop is logged. Before, the undo in memory replaced the
// planted link with what the candidate had replaced, removed it where the candidate had created
// the file, and put the previous bytes back in the file a re-pointed link no longer led to.
func TestAgent_RunDropsTheCandidateUndoOfADestinationLinkedWhileRunning(t *testing.T) {
	srv := newViewServer(t, map[string]string{"port": "80"})
	a, dir, logs := testAgent(t, srv, header+`templates:
  - contents: "flag={{ key \"flag\" }}\n"
    destination: $DIR/flag.conf
  - contents: "feature={{ key \"feature\" }}\n"
    destination: $DIR/feat.conf
  - contents: "via={{ key \"via\" }}\n"
    destination: $DIR/via.conf
  - contents: "port={{ key \"port\" }}\n"
    destination: $DIR/port.conf
`)
	writeFiles(t, dir, map[string]string{"flag.conf": "old\n", "real.conf": "real\n", "a1.conf": "a1\n", "a2.conf": "a2\n"})
	if err := os.Symlink(dir+"/a1.conf", dir+"/via.conf"); err != nil {
		t.Fatal(err)
	}
	stop := runAgent(t, a)
	defer stop()
	waitFor(t, "the live view rendered", fileIs(dir+"/port.conf", "port=80\n"))
	srv.setView("ro-1", map[string]string{"port": "80", "feature": "on", "flag": "x", "via": "y"})
	waitFor(t, "the candidate's files", func() bool {
		return fileIs(dir+"/feat.conf", "feature=on\n")() && fileIs(dir+"/flag.conf", "flag=x\n")() && fileIs(dir+"/a1.conf", "via=y\n")()
	})
	// The operator links the destinations elsewhere while the agent runs.
	for name, to := range map[string]string{"flag.conf": "real.conf", "feat.conf": "real.conf", "via.conf": "a2.conf"} {
		if err := os.Remove(dir + "/" + name); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(dir+"/"+to, dir+"/"+name); err != nil {
			t.Fatal(err)
		}
	}
	srv.setView("", map[string]string{"port": "80"})
	waitFor(t, "the undo record removed", func() bool { _, err := os.Lstat(dir + "/cache/web.candidate.json"); return os.IsNotExist(err) })
	for name, to := range map[string]string{"flag.conf": "real.conf", "feat.conf": "real.conf", "via.conf": "a2.conf"} {
		if got, err := os.Readlink(dir + "/" + name); err != nil || got != dir+"/"+to {
			t.Errorf("%s: link to %q (%v); want the operator's link to %s kept", name, got, err, to)
		}
	}
	for name, want := range map[string]string{"real.conf": "real\n", "a1.conf": "via=y\n", "a2.conf": "a2\n"} {
		if b, err := os.ReadFile(dir + "/" + name); err != nil || string(b) != want {
			t.Errorf("%s holds %q (%v); want %q, untouched", name, b, err, want)
		}
	}
	if n := strings.Count(logs.String(), "its destination leads to another file now"); n != 3 {
		t.Errorf("the dropped undo logged %d times, want 3:\n%s", n, logs.String())
	}
}

// The same holds for the undo of a record without fingerprints (of an older agent), which the
// undo cannot tell from an operator's edit: a link planted at its destination while the agent
// runs is kept, and so is the file it leads to. Before, the link was replaced with what the
// candidate had replaced there.
func TestAgent_RunDropsTheUnfingerprintedUndoOfADestinationLinkedWhileRunning(t *testing.T) {
	srv := newViewServer(t, map[string]string{"port": "80"})
	a, dir, logs := testAgent(t, srv, header+`templates:
  - contents: "flag={{ key \"flag\" }}\n"
    destination: $DIR/flag.conf
  - contents: "port={{ key \"port\" }}\n"
    destination: $DIR/port.conf
`)
	writeFiles(t, dir, map[string]string{"flag.conf": "flag=x\n", "real.conf": "real\n"})
	record := `{"appliance":"web","files":[{"destination":"$DIR/flag.conf","rollout":"ro-1","path":"$DIR/flag.conf","existed":true,"data":"b2xkCg==","mode":420,"uid":-1,"gid":-1}]}`
	plantCandidateRecord(t, dir, record)
	srv.setView("ro-1", map[string]string{"port": "80", "flag": "x"})
	stop := runAgent(t, a)
	defer stop()
	waitFor(t, "the candidate view rendered", fileIs(dir+"/port.conf", "port=80\n"))
	if err := os.Remove(dir + "/flag.conf"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(dir+"/real.conf", dir+"/flag.conf"); err != nil {
		t.Fatal(err)
	}
	srv.setView("", map[string]string{"port": "81"})
	waitFor(t, "the live view rendered", fileIs(dir+"/port.conf", "port=81\n"))
	if got, err := os.Readlink(dir + "/flag.conf"); err != nil || got != dir+"/real.conf" {
		t.Errorf("flag.conf: link to %q (%v); want the operator's link to real.conf kept", got, err)
	}
	if !fileIs(dir+"/real.conf", "real\n")() {
		t.Error("the file the link leads to was changed")
	}
	if n := strings.Count(logs.String(), "its destination leads to another file now"); n != 1 {
		t.Errorf("the dropped undo logged %d times, want once:\n%s", n, logs.String())
	}
}

// The halt of a rollout rewrites the candidate record once, after it undid every file of the
// pass, not once per file (each an fsync of the file and of cache_dir). A crash in the middle
// of the halt leaves the record as it was before the halt: at the next start, a file undone
// already is not undone again (here the operator edited it after the crash: the edit stays),
// and the files not undone yet are. Before, the record was rewritten and fsynced after each file
// undone.
func TestAgent_RunRecordsTheHaltOnce(t *testing.T) {
	srv := newViewServer(t, map[string]string{"port": "80"})
	const config = header + `templates:
  - contents: "a={{ key \"a\" }}\n"
    destination: $DIR/a.conf
  - contents: "b={{ key \"b\" }}\n"
    destination: $DIR/b.conf
  - contents: "c={{ key \"c\" }}\n"
    destination: $DIR/c.conf
  - contents: "port={{ key \"port\" }}\n"
    destination: $DIR/port.conf
`
	a, dir, _ := testAgent(t, srv, config)
	writeFiles(t, dir, map[string]string{"a.conf": "old-a\n", "c.conf": "old-c\n"})
	record := dir + "/cache/web.candidate.json"
	type seen struct {
		fi   os.FileInfo
		data []byte
	}
	var mu sync.Mutex
	var records []seen // the record as each undo of the halt found it
	defer agent.SetRestoreFile(func(p *atomicfile.Previous, opts atomicfile.Options) (bool, error) {
		fi, err := os.Stat(record)
		data, _ := os.ReadFile(record)
		if err != nil {
			t.Errorf("no record when %s is undone: %v", p.Path(), err)
		}
		mu.Lock()
		records = append(records, seen{fi, data})
		mu.Unlock()
		return p.Restore(opts)
	})()
	stop := runAgent(t, a)
	waitFor(t, "the live view rendered", fileIs(dir+"/port.conf", "port=80\n"))
	srv.setView("ro-1", map[string]string{"port": "80", "a": "1", "b": "2", "c": "3"})
	waitFor(t, "the candidate's files", func() bool {
		return fileIs(dir+"/a.conf", "a=1\n")() && fileIs(dir+"/b.conf", "b=2\n")() && fileIs(dir+"/c.conf", "c=3\n")()
	})
	srv.setView("", map[string]string{"port": "80"})
	waitFor(t, "the candidate's files undone", func() bool {
		_, err := os.Lstat(dir + "/b.conf")
		return os.IsNotExist(err) && fileIs(dir+"/a.conf", "old-a\n")() && fileIs(dir+"/c.conf", "old-c\n")()
	})
	waitFor(t, "the undo record removed", func() bool { _, err := os.Lstat(record); return os.IsNotExist(err) })
	stop()
	mu.Lock()
	if len(records) != 3 {
		t.Fatalf("%d undos, want 3", len(records))
	}
	for i, r := range records[1:] {
		if r.fi == nil || records[0].fi == nil || !os.SameFile(r.fi, records[0].fi) || string(r.data) != string(records[0].data) {
			t.Errorf("undo %d of the halt found the record rewritten since the first: want one write, after the last undo", i+2)
		}
	}
	crashed := records[1].data // a crash right after the first undo leaves this record
	mu.Unlock()

	// The crash: the record as it was then, b and c still the candidate's; since, the operator
	// edited a.conf, which the halt had undone already.
	if err := os.WriteFile(record, crashed, 0o600); err != nil {
		t.Fatal(err)
	}
	writeFiles(t, dir, map[string]string{"a.conf": "a=by-hand\n", "b.conf": "b=2\n", "c.conf": "c=3\n"})
	a2, _, _ := testAgentIn(t, srv, dir, config)
	stop2 := runAgent(t, a2)
	defer stop2()
	waitFor(t, "the rest of the halt done", func() bool {
		_, err := os.Lstat(dir + "/b.conf")
		return os.IsNotExist(err) && fileIs(dir+"/c.conf", "old-c\n")()
	})
	waitFor(t, "the undo record removed", func() bool { _, err := os.Lstat(record); return os.IsNotExist(err) })
	if b, _ := os.ReadFile(dir + "/a.conf"); string(b) != "a=by-hand\n" {
		t.Fatalf("a.conf holds %q; want the operator's edit, not a second undo", b)
	}
}

// A rollout that follows another on the same canary directly (the agent never rendered the
// live view between them: the first halted while a poll was away, or the view came in one
// answer) undoes to what the files held before the first rollout: the candidate of the first
// was never the live content. So it does when an install of the second rollout's failed in
// between (a full disk), and for a file both candidates render the same. Before, the second
// rollout's undo was what its install replaced (the first candidate's bytes), a failed install
// left the first rollout's undo for those bytes as well, and a file the second candidate
// rendered the same lost its undo: the halt left candidate content in all three.
func TestAgent_RunUndoesBackToBeforeTheFirstOfTwoRollouts(t *testing.T) {
	for _, failed := range []bool{false, true} {
		t.Run(map[bool]string{false: "directly", true: "a failed install between"}[failed], func(t *testing.T) {
			srv := newViewServer(t, map[string]string{"port": "80"})
			a, dir, _ := testAgent(t, srv, header+`templates:
  - contents: "flag={{ key \"flag\" }}\n"
    destination: $DIR/flag.conf
    command: echo g >> $DIR/ran
  - contents: "other={{ key \"other\" }}\n"
    destination: $DIR/other.conf
    command: echo g >> $DIR/ran
  - contents: "same={{ key \"same\" }}\n"
    destination: $DIR/same.conf
  - contents: "port={{ key \"port\" }}\n"
    destination: $DIR/port.conf
`)
			old := map[string]string{"flag.conf": "old-flag\n", "other.conf": "old-other\n", "same.conf": "old-same\n"}
			for name, text := range old {
				if err := os.WriteFile(dir+"/"+name, []byte(text), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			var mu sync.Mutex
			others := 0
			defer agent.SetInstallStaged(func(s *atomicfile.Staged) error {
				mu.Lock()
				defer mu.Unlock()
				if filepath.Base(s.Path()) == "other.conf" {
					if others++; failed && others == 2 {
						s.Discard()
						return errors.New("no space left on device")
					}
				}
				return s.Install()
			})()
			stop := runAgent(t, a)
			defer stop()
			waitFor(t, "the live view rendered", fileIs(dir+"/port.conf", "port=80\n"))
			srv.setView("ro-1", map[string]string{"port": "80", "flag": "1", "other": "1", "same": "s"})
			waitFor(t, "the first rollout's files", func() bool {
				return fileIs(dir+"/flag.conf", "flag=1\n")() && fileIs(dir+"/other.conf", "other=1\n")() && fileIs(dir+"/same.conf", "same=s\n")()
			})
			srv.setView("ro-2", map[string]string{"port": "80", "flag": "2", "other": "2", "same": "s"})
			waitFor(t, "the second rollout's files", func() bool {
				return fileIs(dir+"/flag.conf", "flag=2\n")() && fileIs(dir+"/other.conf", "other=2\n")()
			})
			mu.Lock()
			if failed && others != 3 {
				t.Errorf("other.conf installed %d times, want 3 (ro-1, ro-2 failed, ro-2 again)", others)
			}
			mu.Unlock()
			srv.setView("", map[string]string{"port": "80"})
			waitFor(t, "the undo record removed", func() bool { _, err := os.Lstat(dir + "/cache/web.candidate.json"); return os.IsNotExist(err) })
			for name, want := range old {
				if b, err := os.ReadFile(dir + "/" + name); err != nil || string(b) != want {
					t.Errorf("%s holds %q (%v) after the second rollout halted; want %q, what it held before the first", name, b, err, want)
				}
			}
		})
	}
}

// writeFiles writes each file of files (name → content) in dir, mode 0644.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, text := range files {
		if err := os.WriteFile(dir+"/"+name, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// plantCandidateRecord writes record, $DIR replaced by dir, as the agent's candidate record in
// dir/cache (as a run before this one left it).
func plantCandidateRecord(t *testing.T, dir, record string) {
	t.Helper()
	if err := os.MkdirAll(dir+"/cache", 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir+"/cache/web.candidate.json", []byte(strings.ReplaceAll(record, "$DIR", dir)), 0o600); err != nil {
		t.Fatal(err)
	}
}

// After a halt or abort, a live view whose reload fails on the file the candidate installed
// (the live view failed there before the rollout too: the rollout was its fix) is rolled back
// to what the candidate replaced, not to the candidate's content, which the install of the
// live view replaced. Before, the rollback put the candidate's file back, and with the
// candidate's undo ended by that install, the VM kept the candidate after the halt for good.
func TestAgent_RunRollsALiveReloadAfterAHaltBackToBeforeTheCandidate(t *testing.T) {
	srv := newViewServer(t, map[string]string{"v": "one"})
	a, dir, logs := testAgent(t, srv, header+`templates:
  - contents: "v={{ key \"v\" }}\n"
    destination: $DIR/app.conf
    perms: "0640"
    command: echo ran >> $DIR/ran; ! grep -q bad $DIR/app.conf
`)
	stop := runAgent(t, a)
	defer stop()
	waitFor(t, "the live view rendered", fileIs(dir+"/app.conf", "v=one\n"))

	// A live change whose reload fails: rolled back to v=one.
	srv.setView("", map[string]string{"v": "bad"})
	waitFor(t, "the failed live reload rolled back", func() bool {
		return len(lines(t, dir+"/ran")) == 3 && fileIs(dir+"/app.conf", "v=one\n")()
	})

	// The rollout of the fix, on this canary.
	srv.setView("ro-1", map[string]string{"v": "fixed"})
	waitFor(t, "the candidate's file", fileIs(dir+"/app.conf", "v=fixed\n"))
	waitFor(t, "the candidate's command", func() bool { return len(lines(t, dir+"/ran")) == 4 })

	// Aborted: the live view again, whose reload fails again.
	srv.setView("", map[string]string{"v": "bad"})
	waitFor(t, "the live view's failed reload rolled back", func() bool { return len(lines(t, dir+"/ran")) == 6 })
	if got, _ := os.ReadFile(dir + "/app.conf"); string(got) != "v=one\n" {
		t.Fatalf("after the abort, the live view's failed reload left %q, want v=one (what the candidate replaced):\n%s", got, logs.String())
	}
	if fi, err := os.Stat(dir + "/app.conf"); err != nil || fi.Mode().Perm() != 0o640 {
		t.Fatalf("app.conf restored with %v (%v), want mode 0640", fi.Mode().Perm(), err)
	}
	if _, err := os.Lstat(agent.CandidatePath(dir+"/cache", "web")); !os.IsNotExist(err) {
		t.Fatalf("candidate record left after the undo: %v", err)
	}
}

// With backup, the .bak after a rollout's halt or abort holds what the candidate replaced, as
// after a failed reload's rollback: the live view's install over the candidate's file does not
// back the candidate up. Before, the .bak held the candidate's content, the one file the halt
// meant to leave nothing of, and the file before it was gone.
func TestAgent_RunBackupAfterAHaltHoldsWhatTheCandidateReplaced(t *testing.T) {
	for _, live := range []string{"two", "four"} {
		t.Run("live "+live, func(t *testing.T) {
			srv := newViewServer(t, map[string]string{"v": "one"})
			a, dir, _ := testAgent(t, srv, header+`templates:
  - contents: "v={{ key \"v\" }}\n"
    destination: $DIR/app.conf
    backup: true
`)
			stop := runAgent(t, a)
			defer stop()
			waitFor(t, "the live view rendered", fileIs(dir+"/app.conf", "v=one\n"))
			srv.setView("", map[string]string{"v": "two"})
			waitFor(t, "the live change", fileIs(dir+"/app.conf", "v=two\n"))
			if got, _ := os.ReadFile(dir + "/app.conf.bak"); string(got) != "v=one\n" {
				t.Fatalf(".bak after the live change: %q", got)
			}
			srv.setView("ro-1", map[string]string{"v": "three"})
			waitFor(t, "the candidate's file", fileIs(dir+"/app.conf", "v=three\n"))
			if got, _ := os.ReadFile(dir + "/app.conf.bak"); string(got) != "v=two\n" {
				t.Fatalf(".bak after the candidate: %q", got)
			}
			// Aborted: the live view again (changed meanwhile, or not).
			srv.setView("", map[string]string{"v": live})
			waitFor(t, "the live view after the abort", fileIs(dir+"/app.conf", "v="+live+"\n"))
			waitFor(t, "the undo's record gone", func() bool {
				_, err := os.Lstat(agent.CandidatePath(dir+"/cache", "web"))
				return os.IsNotExist(err)
			})
			if got, _ := os.ReadFile(dir + "/app.conf.bak"); string(got) != "v=two\n" {
				t.Fatalf(".bak after the abort holds %q, want v=two (what the candidate replaced)", got)
			}
		})
	}
}

// A report after a failed pass says which rollout the revision it applied last was of, apart
// from the rollout of the view that failed (the server takes it from X-Shoelace-Rollout beside
// X-Shoelace-Applied). After a rollout's abort, a live view that cannot render a template the
// candidate changed undoes the candidate's file: the VM holds what it held before the
// candidate, so the report and the long-polls say the revision applied before it, of the live
// view. Before, they said the candidate's revision and rollout were applied, though no file held
// the candidate any more (and before that, that the candidate's revision was of the live view).
func TestAgent_RunReportsTheRolloutOfWhatIsApplied(t *testing.T) {
	srv := newViewServer(t, map[string]string{"port": "80", "feature": "off"})
	a, dir, _ := testAgent(t, srv, header+`templates:
  - contents: "feature={{ key \"feature\" }}\n"
    destination: $DIR/feat.conf
  - contents: "port={{ key \"port\" }}\n"
    destination: $DIR/port.conf
`)
	stop := runAgent(t, a)
	defer stop()
	last := func() api.Report {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		if len(srv.reports) == 0 {
			return api.Report{}
		}
		return srv.reports[len(srv.reports)-1]
	}
	waitFor(t, "the live view reported applied", func() bool { r := last(); return r.Applied == 10 && r.Error == "" })
	srv.setView("ro-1", map[string]string{"port": "80", "feature": "on"})
	waitFor(t, "the candidate's files", fileIs(dir+"/feat.conf", "feature=on\n"))
	waitFor(t, "the candidate reported applied", func() bool { r := last(); return r.Rollout == "ro-1" && r.Applied == 11 && r.Error == "" })
	if r := last(); r.AppliedRollout != "ro-1" {
		t.Fatalf("the candidate's report: applied %d of rollout %q, want of ro-1", r.Applied, r.AppliedRollout)
	}

	// Aborted: the live view again, which has no feature: its pass fails, and undoes the
	// candidate's feat.conf.
	srv.setView("", map[string]string{"port": "80"})
	waitFor(t, "the live view's failure reported", func() bool { r := last(); return r.Revision == 12 && r.Error != "" })
	if !fileIs(dir+"/feat.conf", "feature=off\n")() {
		t.Fatal("the candidate's feat.conf not undone")
	}
	if r := last(); r.Rollout != "" || r.Applied != 10 || r.AppliedRollout != "" {
		t.Fatalf("the failed pass's report: view rollout %q, applied %d of rollout %q; want the live view's failure, 10 of the live view applied (what the files hold)",
			r.Rollout, r.Applied, r.AppliedRollout)
	}
	waitFor(t, "a long-poll saying so", func() bool {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return len(srv.rollouts) > 0 && srv.rollouts[len(srv.rollouts)-1] == "10/"
	})
	if st, err := agent.LoadStatus(dir+"/cache", "web"); err != nil || st.Applied != 10 || st.Rollout != "" {
		t.Fatalf("status after the undo: %+v, %v; want applied 10", st, err)
	}
}

// A canary whose candidate's reload fails, and whose rollback cannot put the file back (a
// restore that fails once: a full disk), keeps the candidate's undo: the halt's live view that
// cannot render the template undoes it then. Before, the failed rollback dropped the undo
// record all the same, and the file kept the candidate's content after the halt for good.
func TestAgent_RunKeepsTheCandidateUndoWhenItsRollbackFailed(t *testing.T) {
	srv := newViewServer(t, map[string]string{"port": "80"})
	a, dir, logs := testAgent(t, srv, header+`templates:
  - contents: "flag={{ key \"flag\" }}\n"
    destination: $DIR/flag.conf
    command: "! grep -q bad $DIR/flag.conf"
  - contents: "port={{ key \"port\" }}\n"
    destination: $DIR/port.conf
`)
	writeFiles(t, dir, map[string]string{"flag.conf": "old\n"})
	var mu sync.Mutex
	failed := false
	defer agent.SetRestoreFile(func(p *atomicfile.Previous, opts atomicfile.Options) (bool, error) {
		mu.Lock()
		defer mu.Unlock()
		if !failed {
			failed = true
			return false, errors.New("no space left on device")
		}
		return p.Restore(opts)
	})()
	stop := runAgent(t, a)
	defer stop()
	waitFor(t, "the live view rendered", fileIs(dir+"/port.conf", "port=80\n"))
	srv.setView("ro-1", map[string]string{"port": "80", "flag": "bad"})
	waitFor(t, "the failed rollback", func() bool { return strings.Contains(logs.String(), "previous files not restored") })
	if !fileIs(dir+"/flag.conf", "flag=bad\n")() {
		t.Fatal("the rollback whose restore failed changed the file")
	}
	// Halted: the live view again, which has no flag.
	srv.setView("", map[string]string{"port": "80"})
	waitFor(t, "the candidate's file undone", fileIs(dir+"/flag.conf", "old\n"))
	waitFor(t, "the undo record removed", func() bool {
		_, err := os.Lstat(agent.CandidatePath(dir+"/cache", "web"))
		return os.IsNotExist(err)
	})
}

// So after an abort whose live view installs over the candidate's file (the candidate's
// change is gone from it) and fails another template: the report says the revision applied
// before the candidate, of the live view, not the candidate's. Before, it said the candidate's,
// though no file held the candidate any more.
func TestAgent_RunReportsTheRevisionBeforeTheCandidateOnceItsFilesAreReplaced(t *testing.T) {
	srv := newViewServer(t, map[string]string{"port": "80", "feature": "off"})
	a, dir, _ := testAgent(t, srv, header+`templates:
  - contents: "feature={{ key \"feature\" }}\n"
    destination: $DIR/feat.conf
  - contents: "port={{ key \"port\" }}\n"
    destination: $DIR/port.conf
`)
	stop := runAgent(t, a)
	defer stop()
	last := func() api.Report {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		if len(srv.reports) == 0 {
			return api.Report{}
		}
		return srv.reports[len(srv.reports)-1]
	}
	waitFor(t, "the live view reported applied", func() bool { r := last(); return r.Applied == 10 && r.Error == "" })
	srv.setView("ro-1", map[string]string{"port": "81", "feature": "off"})
	waitFor(t, "the candidate reported applied", func() bool { r := last(); return r.Applied == 11 && r.AppliedRollout == "ro-1" })
	// Aborted: the live view again, port 80 and no feature.
	srv.setView("", map[string]string{"port": "80"})
	waitFor(t, "the live view's failure reported", func() bool { r := last(); return r.Revision == 12 && r.Error != "" })
	if !fileIs(dir+"/port.conf", "port=80\n")() || !fileIs(dir+"/feat.conf", "feature=off\n")() {
		t.Fatal("the files after the abort are not the live view's")
	}
	if r := last(); r.Applied != 10 || r.AppliedRollout != "" {
		t.Fatalf("the failed pass's report: applied %d of rollout %q; want 10 of the live view", r.Applied, r.AppliedRollout)
	}
}

// An undo of a candidate's file that fails after the halt (the restore fails: a full disk) is
// tried again on the retry timer, as a failed install is, not only when the view next changes.
// Before, the candidate's content stayed in the file until the next change of the appliance,
// however long that took.
func TestAgent_RunTriesAFailedUndoOfTheCandidateAgain(t *testing.T) {
	srv := newViewServer(t, map[string]string{"port": "80"})
	a, dir, logs := testAgent(t, srv, header+`templates:
  - contents: "flag={{ key \"flag\" }}\n"
    destination: $DIR/flag.conf
  - contents: "port={{ key \"port\" }}\n"
    destination: $DIR/port.conf
`)
	writeFiles(t, dir, map[string]string{"flag.conf": "old\n"})
	var mu sync.Mutex
	calls := 0
	defer agent.SetRestoreFile(func(p *atomicfile.Previous, opts atomicfile.Options) (bool, error) {
		mu.Lock()
		defer mu.Unlock()
		if calls++; calls == 1 {
			return false, errors.New("no space left on device")
		}
		return p.Restore(opts)
	})()
	stop := runAgent(t, a)
	defer stop()
	waitFor(t, "the live view rendered", fileIs(dir+"/port.conf", "port=80\n"))
	srv.setView("ro-1", map[string]string{"port": "80", "flag": "x"})
	waitFor(t, "the candidate's file", fileIs(dir+"/flag.conf", "flag=x\n"))
	// Halted: the live view again, which has no flag; the first undo fails.
	srv.setView("", map[string]string{"port": "80"})
	waitFor(t, "the failed undo", func() bool { return strings.Contains(logs.String(), "file of the rollout's candidate not undone") })
	waitFor(t, "the candidate's file undone on the retry", fileIs(dir+"/flag.conf", "old\n"))
}

// A rollout's candidate whose group install fails (here b's, its .bak's name a directory that
// is not empty) after a file of the group was renamed puts that file back, and its undo entry
// back to what it was before the install: a holds the rollout's first candidate again, whose
// entry names it alone, not the second candidate that the failed install took back. (Before,
// the entry of a file put back kept what the failed install recorded: the fingerprint of
// content no longer there, or, over a file that had none, an undo of a candidate that was
// never installed.)
func TestAgent_RunCandidateInstallThatFailsKeepsTheUndoItHad(t *testing.T) {
	sum := func(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }
	srv := newViewServer(t, map[string]string{"a": "one", "b": "one"})
	a, dir, logs := testAgent(t, srv, header+`templates:
  - contents: "a={{ key \"a\" }}\n"
    destination: $DIR/a
    command: cat $DIR/a $DIR/b | paste -sd, - >> $DIR/commands
  - contents: "b={{ key \"b\" }}\n"
    destination: $DIR/b
    backup: true
    command: cat $DIR/a $DIR/b | paste -sd, - >> $DIR/commands
`)
	stop := sync.OnceFunc(runAgent(t, a))
	defer stop()
	waitFor(t, "the live view", func() bool { return fileIs(dir+"/a", "a=one\n")() && fileIs(dir+"/b", "b=one\n")() })
	srv.setView("ro-1", map[string]string{"a": "c1", "b": "c1"})
	waitFor(t, "the first candidate", func() bool { return fileIs(dir+"/a", "a=c1\n")() && fileIs(dir+"/b", "b=c1\n")() })
	if err := os.Remove(dir + "/b.bak"); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir+"/b.bak/x", 0o755); err != nil {
		t.Fatal(err)
	}
	srv.setView("ro-1", map[string]string{"a": "c2", "b": "c2"})
	syncLogged(t, logs, 12)
	if !strings.Contains(logs.String(), `"msg":"previous file restored","template":"`+dir+`/a"`) {
		t.Fatalf("a not put back after the failed install of b:\n%s", logs.String())
	}
	stop()
	if !fileIs(dir+"/a", "a=c1\n")() || !fileIs(dir+"/b", "b=c1\n")() {
		t.Fatalf("a = %q, b = %q after the failed install, want the first candidate", readFileOr(dir+"/a"), readFileOr(dir+"/b"))
	}
	b, err := os.ReadFile(agent.CandidatePath(dir+"/cache", "web"))
	var rec struct {
		Files []struct {
			Destination string
			Data        []byte
			Installed   []string
		}
	}
	if err != nil || json.Unmarshal(b, &rec) != nil || len(rec.Files) != 2 {
		t.Fatalf("candidate record = %s (%v), want an entry of a and b", b, err)
	}
	for _, f := range rec.Files {
		name := filepath.Base(f.Destination)
		if want := []string{sum(name + "=c1\n")}; string(f.Data) != name+"=one\n" || !slices.Equal(f.Installed, want) {
			t.Errorf("%s's undo = %q, installed %v; want %q, the first candidate's fingerprint alone", name, f.Data, f.Installed, name+"=one\n")
		}
	}
}

// The live view after a halt whose group install fails (b's, its .bak's name a directory that
// is not empty) after a, which held the halted rollout's candidate, was renamed over puts a
// back as it was just before the install: the candidate's file, which the service still runs
// (its command ran on it and none ran since), not what the candidate replaced, and the
// candidate's undo with it, and the report says the candidate's revision applied. (Before, a
// got what the candidate replaced, its undo was gone and the report said revision 10: the file
// said a=one while the service ran a=c1, and no command ran for it.) Once b can be installed,
// the next start installs the live view over the candidate and reloads it.
func TestAgent_LiveInstallThatFailsOverACandidatePutsBackTheCandidate(t *testing.T) {
	sum := func(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }
	srv := newViewServer(t, map[string]string{"a": "one", "b": "one"})
	const config = header + `templates:
  - contents: "a={{ key \"a\" }}\n"
    destination: $DIR/a
    command: cat $DIR/a $DIR/b | paste -sd, - >> $DIR/commands
  - contents: "b={{ key \"b\" }}\n"
    destination: $DIR/b
    backup: true
    command: cat $DIR/a $DIR/b | paste -sd, - >> $DIR/commands
`
	a, dir, logs := testAgent(t, srv, config)
	stop := sync.OnceFunc(runAgent(t, a))
	defer stop()
	waitFor(t, "the live view", func() bool { return fileIs(dir+"/a", "a=one\n")() && fileIs(dir+"/b", "b=one\n")() })
	srv.setView("ro-1", map[string]string{"a": "c1", "b": "one"})
	waitFor(t, "the candidate's reload", func() bool { return slices.Contains(lines(t, dir+"/commands"), "a=c1,b=one") })
	if err := os.RemoveAll(dir + "/b.bak"); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir+"/b.bak/x", 0o755); err != nil {
		t.Fatal(err)
	}
	// Halted: the live view, changed since.
	srv.setView("", map[string]string{"a": "two", "b": "two"})
	syncLogged(t, logs, 12)
	last := func() api.Report {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		if len(srv.reports) == 0 {
			return api.Report{}
		}
		return srv.reports[len(srv.reports)-1]
	}
	waitFor(t, "the live view's failure reported", func() bool { r := last(); return r.Revision == 12 && r.Error != "" })
	stop()
	if !strings.Contains(logs.String(), `"msg":"previous file restored","template":"`+dir+`/a"`) {
		t.Fatalf("a not put back after the failed install of b:\n%s", logs.String())
	}
	if r := last(); r.Applied != 11 || r.AppliedRollout != "ro-1" {
		t.Errorf("the failed pass's report: applied %d of rollout %q; want 11 of ro-1 (what the files hold)", r.Applied, r.AppliedRollout)
	}
	if got, got2 := readFileOr(dir+"/a"), readFileOr(dir+"/b"); got != "a=c1\n" || got2 != "b=one\n" {
		t.Errorf("a = %q, b = %q after the failed install, want the candidate's a=c1 and b=one (what the install replaced)", got, got2)
	}
	if got, want := strings.Join(lines(t, dir+"/commands"), " "), "a=one,b=one a=c1,b=one"; got != want {
		t.Errorf("commands saw %q, want %q (none for the failed install)", got, want)
	}
	b, err := os.ReadFile(agent.CandidatePath(dir+"/cache", "web"))
	var rec struct {
		Files []struct {
			Destination string
			Data        []byte
			Installed   []string
		}
	}
	if err != nil || json.Unmarshal(b, &rec) != nil || len(rec.Files) != 1 || rec.Files[0].Destination != dir+"/a" ||
		string(rec.Files[0].Data) != "a=one\n" || !slices.Equal(rec.Files[0].Installed, []string{sum("a=c1\n")}) {
		t.Fatalf("candidate record = %s (%v), want the candidate's undo of a to a=one", b, err)
	}

	// b can be installed again: the next start installs the live view and reloads it.
	if err := os.RemoveAll(dir + "/b.bak"); err != nil {
		t.Fatal(err)
	}
	a2, _, logs2 := testAgentIn(t, srv, dir, config)
	stop2 := runAgent(t, a2)
	syncLogged(t, logs2, 12)
	stop2()
	if got, got2 := readFileOr(dir+"/a"), readFileOr(dir+"/b"); got != "a=two\n" || got2 != "b=two\n" {
		t.Errorf("a = %q, b = %q, want the live view", got, got2)
	}
	if got, want := strings.Join(lines(t, dir+"/commands"), " "), "a=one,b=one a=c1,b=one a=two,b=two"; got != want {
		t.Errorf("commands saw %q, want %q", got, want)
	}
	if b, err := os.ReadFile(agent.CandidatePath(dir+"/cache", "web")); !os.IsNotExist(err) {
		t.Errorf("candidate record after the live view's install: %s (%v), want none", b, err)
	}
}
