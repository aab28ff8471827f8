//go:build !windows

package agent_test

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/shoelace-dev/shoelace/agent"
	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/atomicfile"
)

// fileState is a file's bytes, mode, owner and inode, to compare a restored file with.
type fileState struct {
	data     string
	mode     os.FileMode
	uid, gid uint32
}

func stateOf(t *testing.T, path string) fileState {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return fileState{data: string(b), mode: fi.Mode(), uid: st.Uid, gid: st.Gid}
}

// oldFiles writes the files a group replaces: a (mode 0640) and b (mode 0600).
func oldFiles(t *testing.T, dir string) (a, b fileState) {
	t.Helper()
	for name, mode := range map[string]os.FileMode{"a": 0o640, "b": 0o600} {
		if err := os.WriteFile(dir+"/"+name, []byte("old "+name+"\n"), mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(dir+"/"+name, mode)
	}
	return stateOf(t, dir+"/a"), stateOf(t, dir+"/b")
}

// assertNoTemp fails when a temp file is left in dir: any .shoelace- name but an empty spare
// (kept for the next install).
func assertNoTemp(t *testing.T, dir string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if !strings.Contains(e.Name(), ".shoelace-") {
			continue
		}
		if fi, err := e.Info(); err == nil && strings.HasSuffix(e.Name(), ".shoelace-spare") && fi.Mode().IsRegular() && fi.Size() == 0 {
			continue
		}
		t.Errorf("temp file left: %s", e.Name())
	}
}

// Two templates that share a command are one group: when the check of the second fails, the
// first is not installed either, and the command does not run.
func TestAgent_GroupCheckFailureInstallsNothing(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1", "b": "1"})
	a, dir, _ := testAgent(t, srv, header+`templates:
  - contents: "a={{ key \"a\" }}\n"
    destination: $DIR/a
    check: "true"
    command: echo reload >> $DIR/commands
  - contents: "b={{ key \"b\" }}\n"
    destination: $DIR/b
    check: "false"
    command: echo reload >> $DIR/commands
`)
	wantA, wantB := oldFiles(t, dir)
	err := a.Once(context.Background(), "", false)
	if err == nil || !strings.Contains(err.Error(), "check of "+dir+"/b failed") || !strings.Contains(err.Error(), dir+"/a not installed: "+dir+"/b of its group") {
		t.Fatalf("Once = %v, want b's check failure and a not installed because of it", err)
	}
	if got := stateOf(t, dir+"/a"); got != wantA {
		t.Fatalf("a = %+v, want it untouched %+v", got, wantA)
	}
	if got := stateOf(t, dir+"/b"); got != wantB {
		t.Fatalf("b = %+v, want it untouched %+v", got, wantB)
	}
	if got := lines(t, dir+"/commands"); len(got) != 0 {
		t.Fatalf("commands = %v, want none", got)
	}
	assertNoTemp(t, dir)
}

// A group whose command fails gets its previous files back, byte for byte with their mode and
// owner, and its command runs again on them.
func TestAgent_GroupFailedCommandRestoresFiles(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "bad", "b": "2"})
	a, dir, _ := testAgent(t, srv, header+`templates:
  - contents: "a={{ key \"a\" }}\n"
    destination: $DIR/a
    perms: "0644"
    backup: true
    command: echo "reload $(cat $DIR/a | tr -d '\n')" >> $DIR/commands; ! grep -q bad $DIR/a
  - contents: "b={{ key \"b\" }}\n"
    destination: $DIR/b
    perms: "0644"
    command: echo "reload $(cat $DIR/a | tr -d '\n')" >> $DIR/commands; ! grep -q bad $DIR/a
`)
	wantA, wantB := oldFiles(t, dir)
	err := a.Once(context.Background(), "", false)
	if err == nil || !strings.Contains(err.Error(), "previous files restored") || !strings.Contains(err.Error(), "exited with status 1") {
		t.Fatalf("Once = %v, want the failed reload, restored", err)
	}
	if got := stateOf(t, dir+"/a"); got != wantA {
		t.Fatalf("a = %+v, want it restored %+v", got, wantA)
	}
	if got := stateOf(t, dir+"/b"); got != wantB {
		t.Fatalf("b = %+v, want it restored %+v", got, wantB)
	}
	if got := strings.Join(lines(t, dir+"/commands"), " "); got != "reload a=bad reload old a" {
		t.Fatalf("commands = %q, want the reload on the new files, then on the restored ones", got)
	}
	assertNoTemp(t, dir)
}

// With on_command_failure: keep the new files stay after a failed command; a first install
// (no previous file) keeps them whatever the setting. Either way once exits 0: they are in place.
func TestAgent_FailedCommandKeepsFiles(t *testing.T) {
	for _, tc := range []struct{ name, extra string }{
		{"keep", "    on_command_failure: keep\n"},
		{"first install", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newViewServer(t, map[string]string{"a": "new"})
			a, dir, logs := testAgent(t, srv, header+`templates:
  - contents: "a={{ key \"a\" }}\n"
    destination: $DIR/a
    command: echo reload >> $DIR/commands; false
`+tc.extra)
			if tc.name == "keep" {
				oldFiles(t, dir)
			}
			if err := a.Once(context.Background(), "", false); err != nil {
				t.Fatalf("Once = %v, want nil: the file is in place", err)
			}
			if got := read(t, dir+"/a"); got != "a=new\n" {
				t.Fatalf("a = %q, want the new file kept", got)
			}
			if got := lines(t, dir+"/commands"); len(got) != 1 {
				t.Fatalf("commands = %v, want one run", got)
			}
			if !strings.Contains(logs.String(), "reload failed: the new files are kept") {
				t.Fatalf("no log of the kept files:\n%s", logs.String())
			}
		})
	}
}

// A failing health command after a good reload command counts as a failed reload: the files
// are restored and the command runs again. Health runs 1 + health_retries times.
func TestAgent_HealthFailureRestoresFiles(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "new"})
	a, dir, _ := testAgent(t, srv, header+`templates:
  - contents: "a={{ key \"a\" }}\n"
    destination: $DIR/a
    command: echo reload >> $DIR/commands
    health: echo health >> $DIR/health; false
    health_retries: 2
    health_interval: 10ms
    health_timeout: 5s
`)
	wantA, _ := oldFiles(t, dir)
	err := a.Once(context.Background(), "", false)
	if err == nil || !strings.Contains(err.Error(), "previous files restored") || !strings.Contains(err.Error(), "after 3 tries") {
		t.Fatalf("Once = %v, want the failed health, restored", err)
	}
	if got := stateOf(t, dir+"/a"); got != wantA {
		t.Fatalf("a = %+v, want it restored %+v", got, wantA)
	}
	if got := lines(t, dir+"/commands"); len(got) != 2 {
		t.Fatalf("commands = %v, want the reload, then the one on the restored file", got)
	}
	if got := lines(t, dir+"/health"); len(got) != 3 {
		t.Fatalf("health ran %d times, want 3 (1 + health_retries)", len(got))
	}
}

// After a failed reload the agent does not try the same inputs again: a view that changes
// other keys leaves the failure standing, SIGHUP tries again, and a view that changes the
// template's inputs does too.
func TestAgent_RunNoRetryOfFailedInputs(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "good", "other": "1"})
	text := strings.ReplaceAll(header+`templates:
  - contents: "a={{ key \"a\" }}\n"
    destination: $DIR/a
    command: echo "reload $SHOELACE_REVISION" >> $DIR/commands; ! grep -q bad $DIR/a
`, "$URL", srv.URL)
	dir, path := writeConfig(t, text)
	a, logs, reload := reloadableAgent(t, path)
	stop := runAgent(t, a)
	defer stop()
	syncLogged(t, logs, 10)
	srv.set(map[string]*string{"a": str("bad")})
	syncLogged(t, logs, 11)
	if got := strings.Join(lines(t, dir+"/commands"), ","); got != "reload,10,reload,11,reload,11" {
		t.Fatalf("commands = %q, want the first reload, the failed one and the one on the restored file", got)
	}
	if got := read(t, dir+"/a"); got != "a=good\n" {
		t.Fatalf("a = %q, want it restored", got)
	}
	// Another key changes: the template's inputs are the failed ones; nothing is tried.
	srv.set(map[string]*string{"other": str("2")})
	syncLogged(t, logs, 12)
	// (lines splits on white space: each run is two fields, "reload" and its revision.)
	if got := lines(t, dir+"/commands"); len(got) != 6 {
		t.Fatalf("commands = %v after a view that did not change the failed inputs, want no new run", got)
	}
	st, err := agent.LoadStatus(dir+"/cache", "web")
	waitFor(t, "the status at revision 12", func() bool {
		st, err = agent.LoadStatus(dir+"/cache", "web")
		return err == nil && st.Revision == 12
	})
	if st.Applied != 10 || !strings.Contains(st.LastError, "previous files restored") {
		t.Fatalf("status = %+v, want applied 10 and the failure standing", st)
	}
	// SIGHUP tries again (and fails again).
	reload <- struct{}{}
	waitFor(t, "the reload after SIGHUP", func() bool { return len(lines(t, dir+"/commands")) == 10 })
	// A view that changes the inputs tries again, and succeeds.
	srv.set(map[string]*string{"a": str("fixed")})
	waitFor(t, "the fixed file", fileIs(dir+"/a", "a=fixed\n"))
	waitFor(t, "the server to hear applied 13", func() bool {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return len(srv.applied) > 0 && srv.applied[len(srv.applied)-1] == "13"
	})
	if got := lines(t, dir+"/commands"); len(got) != 12 || got[11] != "13" {
		t.Fatalf("commands = %v, want one more reload at 13", got)
	}
}

// After each pass whose outcome changed the agent reports it: the failure with its stage,
// template and the view's rollout (secrets masked), then the recovery; long-polls carry the
// rollout with the applied revision, and the cache and status file keep it.
func TestAgent_RunReportsFailureAndRollout(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "good", "secrets/pw": "hunter2-secret"})
	srv.rollout = "ro-1"
	text := strings.ReplaceAll(header+`templates:
  - contents: "a={{ key \"a\" }} pw={{ key \"secrets/pw\" }}\n"
    destination: $DIR/a
    command: cat $DIR/a; ! grep -q bad $DIR/a
`, "$URL", srv.URL)
	dir, path := writeConfig(t, text)
	cfg, err := agent.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	a, err := agent.New(cfg, agent.Options{Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), Version: "v-test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent logs:\n%s", logs.String())
		}
	})
	reports := func() []api.Report {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return append([]api.Report(nil), srv.reports...)
	}
	stop := runAgent(t, a)
	defer stop()
	waitFor(t, "the first report", func() bool { return len(reports()) == 1 })
	if r := reports()[0]; r != (api.Report{Instance: "vm-1", Revision: 10, Applied: 10, Rollout: "ro-1", AppliedRollout: "ro-1", Version: "v-test"}) {
		t.Fatalf("first report = %+v", r)
	}
	srv.set(map[string]*string{"a": str("bad")})
	waitFor(t, "the failure report", func() bool { return len(reports()) == 2 })
	r := reports()[1]
	if r.Revision != 11 || r.Applied != 10 || r.Rollout != "ro-1" || r.Stage != api.StageCommand || r.Template != dir+"/a" ||
		!strings.Contains(r.Error, "previous files restored") || !strings.Contains(r.Error, "a=bad pw=[redacted]") || strings.Contains(r.Error, "hunter2") {
		t.Fatalf("failure report = %+v", r)
	}
	// The same failure at a new revision (another key) is not reported again; a fix is.
	srv.set(map[string]*string{"other": str("1")})
	syncLogged(t, logs, 12)
	srv.set(map[string]*string{"a": str("fixed")})
	waitFor(t, "the recovery report", func() bool { return len(reports()) >= 3 })
	if got := reports(); len(got) != 3 || got[2] != (api.Report{Instance: "vm-1", Revision: 13, Applied: 13, Rollout: "ro-1", AppliedRollout: "ro-1", Version: "v-test"}) {
		t.Fatalf("reports = %+v, want the recovery at 13 as the third", got)
	}
	waitFor(t, "a long-poll with the applied rollout", func() bool {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return len(srv.rollouts) > 0 && srv.rollouts[len(srv.rollouts)-1] == "13/ro-1"
	})
	waitFor(t, "the cache at 13", func() bool { c, err := agent.LoadCache(dir+"/cache", "web"); return err == nil && c.Revision == 13 })
	if c, _ := agent.LoadCache(dir+"/cache", "web"); c.Rollout != "ro-1" {
		t.Fatalf("cache rollout = %q", c.Rollout)
	}
	waitFor(t, "the status at 13", func() bool {
		st, err := agent.LoadStatus(dir+"/cache", "web")
		return err == nil && st.Revision == 13 && st.Rollout == "ro-1" && st.Applied == 13
	})
}

// An install that fails midway through a group (the rename of its second file) puts the first
// file back, and the command does not run.
func TestAgent_GroupInstallFailurePutsBackTheFirstFile(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1", "b": "1"})
	a, dir, _ := testAgent(t, srv, header+`templates:
  - contents: "a={{ key \"a\" }}\n"
    destination: $DIR/a
    command: echo reload >> $DIR/commands
  - contents: "b={{ key \"b\" }}\n"
    destination: $DIR/b
    command: echo reload >> $DIR/commands
`)
	wantA, wantB := oldFiles(t, dir)
	defer agent.SetInstallStaged(func(s *atomicfile.Staged) error {
		if strings.HasSuffix(s.Path(), "/b") {
			s.Discard()
			return syscall.EIO
		}
		return s.Install()
	})()
	err := a.Once(context.Background(), "", false)
	if err == nil || !strings.Contains(err.Error(), "install "+dir+"/b") || !strings.Contains(err.Error(), dir+"/a put back") {
		t.Fatalf("Once = %v, want b's install failure and a put back", err)
	}
	if got := stateOf(t, dir+"/a"); got != wantA {
		t.Fatalf("a = %+v, want it put back %+v", got, wantA)
	}
	if got := stateOf(t, dir+"/b"); got != wantB {
		t.Fatalf("b = %+v, want it untouched %+v", got, wantB)
	}
	if got := lines(t, dir+"/commands"); len(got) != 0 {
		t.Fatalf("commands = %v, want none", got)
	}
	assertNoTemp(t, dir)
}

// A group whose second template fails its check installs nothing, and the report names that
// check (stage, template, its output), the first failure of the pass: not the first template
// of the group, which was only left out because of it (before, the report said the first
// template was "not installed", at stage render, and the check's output was nowhere).
func TestAgent_ReportNamesTheFailureNotTheTemplateItLeftOut(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1", "b": "1"})
	a, dir, _ := testAgent(t, srv, header+`templates:
  - contents: "a={{ key \"a\" }}\n"
    destination: $DIR/a
    command: echo reload >> $DIR/commands
  - contents: "b={{ key \"b\" }}\n"
    destination: $DIR/b
    check: if grep -q BAD "$SHOELACE_STAGED"; then echo "b says BAD"; exit 1; fi
    command: echo reload >> $DIR/commands
`)
	reports := func() []api.Report {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return append([]api.Report(nil), srv.reports...)
	}
	stop := runAgent(t, a)
	defer stop()
	waitFor(t, "the first report", func() bool { return len(reports()) == 1 })
	srv.set(map[string]*string{"a": str("2"), "b": str("BAD")})
	waitFor(t, "the failure report", func() bool { return len(reports()) == 2 })
	r := reports()[1]
	if r.Applied != 10 || r.Stage != api.StageCheck || r.Template != dir+"/b" || !strings.Contains(r.Error, "b says BAD") {
		t.Fatalf("failure report = %+v, want b's failed check", r)
	}
	if got := read(t, dir+"/a"); got != "a=1\n" {
		t.Fatalf("a = %q, want it left as it was (its group failed)", got)
	}
	if got := lines(t, dir+"/commands"); len(got) != 1 {
		t.Fatalf("commands = %v, want only the first render's", got)
	}
}

// reloadableAgent is the agent of the config at path, logging at debug level into logs (shown
// when the test fails), reloading its config when reload is sent to.
func reloadableAgent(t *testing.T, path string) (*agent.Agent, *syncBuffer, chan struct{}) {
	t.Helper()
	cfg, err := agent.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	reload := make(chan struct{}, 1)
	a, err := agent.New(cfg, agent.Options{Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), ConfigPath: path, Reload: reload})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent logs:\n%s", logs.String())
		}
	})
	return a, logs, reload
}
