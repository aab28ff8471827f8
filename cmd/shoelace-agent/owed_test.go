//go:build !windows

package main

import (
	"errors"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// An agent killed (SIGKILL) after a file was renamed into place but before its reload command
// ran runs that command at its next start, once. The kill comes from the check of the next
// template, which runs after the first template's rename and before any command.
func TestE2E_RunKilledBetweenInstallAndCommand(t *testing.T) {
	needBinaries(t)
	srv := startServer(t, "", t.TempDir())
	e := newEnv(t, srv, "", `  - contents: "v={{ key \"v\" }}\n"
    destination: $DIR/a.conf
    command: echo "reload $SHOELACE_REVISION" >> $DIR/commands
  - contents: "w={{ key \"v\" }}\n"
    destination: $DIR/b.conf
    check: 'if [ ! -e $DIR/killed ]; then touch $DIR/killed; kill -9 $PPID; sleep 5; fi'
`)
	rev := srv.put("appliances/web/v", "1")
	a := e.startAgent()
	done := make(chan error, 1)
	go func() { done <- a.cmd.Wait() }()
	waitKilled(t, done, "the agent", "by its check")
	if got := readFile(t, e.path("a.conf")); got != "v=1\n" {
		t.Fatalf("a.conf = %q, want it installed before the kill", got)
	}
	if _, err := os.Stat(e.path("b.conf")); !os.IsNotExist(err) {
		t.Fatalf("b.conf installed although its check killed the agent: %v", err)
	}
	if got := commandLines(t, e.path("commands")); len(got) != 0 {
		t.Fatalf("commands = %v before the restart, want none (the agent died first)", got)
	}

	// The restarted agent finds a.conf unchanged, b.conf new (its check passes now), and runs
	// the command it owed for a.conf, once.
	a2 := e.startAgent()
	waitFor(t, "b.conf", fileIs(e.path("b.conf"), "w=1\n"))
	waitFor(t, "the first pass of the restarted agent", func() bool { return strings.Contains(a2.logs.String(), `"msg":"sync"`) })
	// The owed command runs with the revision a.conf was installed at: the view's revision when
	// the first agent read it (the store's, at or after the put: the agent's enrollment writes
	// to the store before its first read).
	m := regexp.MustCompile(`"msg":"rendered","template":"[^"]*/a\.conf","revision":(\d+)`).FindStringSubmatch(a.logs.String())
	if m == nil {
		t.Fatalf("the first agent did not log rendering a.conf:\n%s", a.logs.String())
	}
	if n, _ := strconv.ParseInt(m[1], 10, 64); n < rev {
		t.Fatalf("a.conf rendered at revision %d, before the put at %d", n, rev)
	}
	if got, want := strings.Join(commandLines(t, e.path("commands")), " "), "reload "+m[1]; got != want {
		t.Fatalf("commands after the restart = %q, want the owed reload once: %q", got, want)
	}
	waitFor(t, "the restarted agent's log of the owed command", func() bool { return strings.Contains(a2.logs.String(), "command owed by the last run") })
	a2.stop(t)

	// A third start owes nothing.
	a3 := e.startAgent()
	waitFor(t, "the first pass of the third agent", func() bool { return strings.Contains(a3.logs.String(), `"msg":"nothing changed"`) })
	if got := commandLines(t, e.path("commands")); len(got) != 2 {
		t.Fatalf("commands after a third start = %v, want the owed reload once", got)
	}
}

// An install that the file system refuses (here its .bak's name is a directory that is not
// empty, which no rename replaces) changes no file: its command and health check do not run,
// neither then nor at each try again of the install, and they run once the install succeeds.
// (Before, the command owed for the install ran all the same in the same pass, as if a killed
// run had owed it, at every try: the service was reloaded every second, then every minute, for
// a file that had not changed.)
func TestE2E_RunFailedInstallRunsNoCommand(t *testing.T) {
	needBinaries(t)
	srv := startServer(t, "", t.TempDir())
	e := newEnv(t, srv, "", `  - contents: "v={{ key \"v\" }}\n"
    destination: $DIR/a.conf
    backup: true
    command: echo "reload $SHOELACE_REVISION" >> $DIR/commands
    health: echo "health $SHOELACE_REVISION" >> $DIR/health
`)
	srv.put("appliances/web/v", "1")
	a := e.startAgent()
	waitFor(t, "a.conf", fileIs(e.path("a.conf"), "v=1\n"))
	waitFor(t, "the first reload", func() bool { return len(commandLines(t, e.path("health"))) == 2 })
	if err := os.MkdirAll(e.path("a.conf.bak/x"), 0o755); err != nil {
		t.Fatal(err)
	}

	srv.put("appliances/web/v", "2")
	waitFor(t, "the install tried again", func() bool { return strings.Count(a.logs.String(), `"msg":"template not installed"`) >= 3 })
	if got := readFile(t, e.path("a.conf")); got != "v=1\n" {
		t.Fatalf("a.conf = %q, want it as it was (the install failed)", got)
	}
	if got := commandLines(t, e.path("commands")); len(got) != 2 {
		t.Fatalf("commands = %v, want the first render's only: no file changed since", got)
	}
	if got := commandLines(t, e.path("health")); len(got) != 2 {
		t.Fatalf("health checks = %v, want the first render's only: no file changed since", got)
	}

	if err := os.RemoveAll(e.path("a.conf.bak")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a.conf installed once the way is clear", fileIs(e.path("a.conf"), "v=2\n"))
	waitFor(t, "its reload", func() bool { return len(commandLines(t, e.path("health"))) == 4 })
	if got := commandLines(t, e.path("commands")); len(got) != 4 {
		t.Fatalf("commands = %v, want the first render's and the install's", got)
	}
}

// An agent killed between a file's rename and its command whose record of the owed command is
// then unreadable (here cut in half; a record filled with garbage, or not the agent's, alike)
// runs every template's reload once at its next start: which one was owed is not known, and
// none may be lost. Before, the restart logged the record unreadable and ran nothing: the
// service kept its old configuration under the new file until the next change, and the record
// stayed, logged again at every start.
func TestE2E_RunOwedRecordUnreadableOwesEveryReload(t *testing.T) {
	needBinaries(t)
	srv := startServer(t, "", t.TempDir())
	e := newEnv(t, srv, "", `  - contents: "v={{ key \"v\" }}\n"
    destination: $DIR/a.conf
    command: echo "reload $SHOELACE_REVISION" >> $DIR/commands
  - contents: "w={{ key \"v\" }}\n"
    destination: $DIR/b.conf
    check: 'if [ ! -e $DIR/killed ]; then touch $DIR/killed; kill -9 $PPID; sleep 5; fi'
    health: echo "health $SHOELACE_DESTINATIONS" >> $DIR/health
`)
	srv.put("appliances/web/v", "1")
	a := e.startAgent()
	done := make(chan error, 1)
	go func() { done <- a.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the agent was not killed by its check")
	}
	if got := readFile(t, e.path("a.conf")); got != "v=1\n" {
		t.Fatalf("a.conf = %q, want it installed before the kill", got)
	}
	owed := e.path("cache/web.owed.json")
	rec, err := os.ReadFile(owed)
	if err != nil || !strings.Contains(string(rec), "reload") {
		t.Fatalf("owed record = %q (%v), want the reload of a.conf", rec, err)
	}
	if err := os.WriteFile(owed, rec[:len(rec)/2], 0o600); err != nil {
		t.Fatal(err)
	}

	a2 := e.startAgent()
	waitFor(t, "b.conf", fileIs(e.path("b.conf"), "w=1\n"))
	waitFor(t, "the first pass of the restarted agent", func() bool { return strings.Contains(a2.logs.String(), `"msg":"sync"`) })
	if !strings.Contains(a2.logs.String(), "owed commands unreadable") {
		t.Fatalf("the restarted agent did not say the record is unreadable:\n%s", a2.logs.String())
	}
	m := regexp.MustCompile(`"msg":"rendered","template":"[^"]*/a\.conf","revision":(\d+)`).FindStringSubmatch(a.logs.String())
	if m == nil {
		t.Fatalf("the first agent did not log rendering a.conf:\n%s", a.logs.String())
	}
	// Owed at no known revision: it runs with that of the view of the restart's pass, whose
	// a.conf is the one installed (the enrollments wrote to the store since, nothing else).
	got := linesOf(e.path("commands"))
	if len(got) != 1 || !strings.HasPrefix(got[0], "reload ") {
		t.Fatalf("commands after the restart = %q, want a.conf's reload once", got)
	}
	installedAt, _ := strconv.ParseInt(m[1], 10, 64)
	if n, err := strconv.ParseInt(strings.TrimPrefix(got[0], "reload "), 10, 64); err != nil || n < installedAt {
		t.Fatalf("the reload ran at revision %q, want the restart's view's, at or after a.conf's %d", got[0], installedAt)
	}
	if got := linesOf(e.path("health")); len(got) != 1 {
		t.Fatalf("health checks after the restart = %v, want b.conf's once (its install's)", got)
	}
	waitFor(t, "the unreadable record cleared", func() bool { _, err := os.Lstat(owed); return os.IsNotExist(err) })
	a2.stop(t)

	a3 := e.startAgent()
	waitFor(t, "the first pass of the third agent", func() bool { return strings.Contains(a3.logs.String(), `"msg":"nothing changed"`) })
	a3.stop(t)
	if got := linesOf(e.path("commands")); len(got) != 1 {
		t.Fatalf("commands after a third start = %v, want none more", got)
	}
	if strings.Contains(a3.logs.String(), "owed commands unreadable") {
		t.Fatalf("the third start found the record unreadable still:\n%s", a3.logs.String())
	}
}

// linesOf is the lines of the file at path, none when it cannot be read.
func linesOf(path string) []string {
	if s := strings.TrimSpace(readFileOr(path)); s != "" {
		return strings.Split(s, "\n")
	}
	return nil
}

// An agent killed (SIGKILL) while the command of a plain write runs, a command that fails on
// the new file, puts the previous file back at its next start when the reload it owed fails
// there (the view unchanged: the file holds it already, nothing is installed), and runs the
// command again with it, as a failed reload does without a restart. (Before, the file kept
// the content that failed: what the install replaced was not kept across the restart.)
func TestE2E_RunKilledInAFailingReloadRestoresAtRestart(t *testing.T) {
	_, e := killedInFailingReload(t)
	a2 := e.startAgent()
	waitFor(t, "the previous file back", fileIs(e.path("app.conf"), "v=good\n"))
	waitFor(t, "the command run again", func() bool { return len(commandLines(t, e.path("commands"))) == 4 })
	if got, want := strings.Join(commandLines(t, e.path("commands")), " "), "v=good v=bad v=bad v=good"; got != want {
		t.Fatalf("commands saw %q, want %q: the owed reload fails, the command runs again on the previous file", got, want)
	}
	if fi, err := os.Stat(e.path("app.conf")); err != nil || fi.Mode().Perm() != 0o640 {
		t.Fatalf("app.conf after the restore: %v, %v; want mode 0640", fi, err)
	}
	a2.stop(t)
	if _, err := os.Stat(e.path("cache/web.owed.json")); !os.IsNotExist(err) {
		t.Fatalf("owed record left after the reload was done: %v", err)
	}
}

// An agent killed after the record of what an install replaces was written but before the
// rename (here: the file put back by hand to what it held, the view back to it) restores
// nothing when the reload it owed fails at its next start: the file holds no content that
// the record says was installed. It is left as it is (the same file), and the command is not
// run again.
func TestE2E_RunKilledBeforeTheRenameRestoresNothing(t *testing.T) {
	srv, e := killedInFailingReload(t)
	if err := os.WriteFile(e.path("app.conf"), []byte("v=good\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	before, err := os.Stat(e.path("app.conf"))
	if err != nil {
		t.Fatal(err)
	}
	srv.put("appliances/web/v", "good")
	if err := os.WriteFile(e.path("fail"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	a2 := e.startAgent()
	waitFor(t, "the owed reload", func() bool { return strings.Contains(a2.logs.String(), `"msg":"sync"`) })
	a2.stop(t)
	if got, want := strings.Join(commandLines(t, e.path("commands")), " "), "v=good v=bad v=good"; got != want {
		t.Fatalf("commands saw %q, want %q: the owed reload once, no rollback", got, want)
	}
	after, err := os.Stat(e.path("app.conf"))
	if err != nil || !os.SameFile(before, after) || readFile(t, e.path("app.conf")) != "v=good\n" {
		t.Fatalf("app.conf replaced (%v): nothing of the record was installed there", err)
	}
	if strings.Contains(a2.logs.String(), "previous file restored") {
		t.Fatalf("a file restored:\n%s", a2.logs.String())
	}
}

// killedInFailingReload starts an agent whose template's command fails on "bad" (and while
// $DIR/fail exists), renders "good", puts "bad" and waits for the command to kill the agent
// (SIGKILL) while it runs for the new file.
func killedInFailingReload(t *testing.T) (*server, *env) {
	return killedInReload(t, `cat $DIR/app.conf >> $DIR/commands; if grep -q bad $DIR/app.conf && [ ! -e $DIR/killed ]; then touch $DIR/killed; kill -9 $PPID; sleep 3; fi; [ ! -e $DIR/fail ] && ! grep -q bad $DIR/app.conf`, "bad", nil)
}

// killedInReload starts an agent whose template (v={{ key "v" }} in $DIR/app.conf) has command
// (which appends what it reloads to $DIR/commands), renders "good", calls arm, puts bad and
// waits for the command to kill the agent (SIGKILL) while it runs for the new file.
func killedInReload(t *testing.T, command, bad string, arm func(e *env)) (*server, *env) {
	t.Helper()
	needBinaries(t)
	srv := startServer(t, "", t.TempDir())
	e := newEnv(t, srv, "", `  - contents: "v={{ key \"v\" }}\n"
    destination: $DIR/app.conf
    perms: "0640"
    command: '`+command+`'
`)
	srv.put("appliances/web/v", "good")
	a := e.startAgent()
	waitFor(t, "the first reload", func() bool { return len(commandLines(t, e.path("commands"))) == 1 })
	if arm != nil {
		arm(e)
	}
	done := make(chan error, 1)
	go func() { done <- a.cmd.Wait() }()
	srv.put("appliances/web/v", bad)
	waitKilled(t, done, "the agent", "in its command")
	if got := readFile(t, e.path("app.conf")); got != "v="+bad+"\n" {
		t.Fatalf("app.conf = %q before the restart, want the install that the command killed", got)
	}
	return srv, e
}

// waitKilled waits for done, the Wait of an agent's process, to say that it was killed
// (SIGKILL, by a test's command or check), at most 30 s; who and how name it and by what in
// the failure ("the agent", "by its check").
func waitKilled(t *testing.T, done <-chan error, who, how string) {
	t.Helper()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ProcessState.String() != "signal: killed" {
			t.Fatalf("%s ended with %v, want it killed %s", who, err, how)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("%s was not killed %s", who, how)
	}
}

// An agent killed in the reload of bad1, restarted on bad2 and killed again in its reload
// (the first's still owed), puts back at its third start, when the reload it owed fails, the
// last file whose reload succeeded, good: neither bad1 nor bad2 was ever reloaded. (Before, the
// record kept only the first install's previous file and the fingerprint of bad1: bad2 stayed.)
func TestE2E_RunKilledTwiceRestoresTheLastGoodFile(t *testing.T) {
	srv, e := killedOnceOwingReload(t)
	srv.put("appliances/web/v", "bad2")
	if err := os.WriteFile(e.path("kill-bad2"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	a2 := e.startAgent()
	done := make(chan error, 1)
	go func() { done <- a2.cmd.Wait() }()
	waitKilled(t, done, "the restarted agent", "in its command")
	if got := readFile(t, e.path("app.conf")); got != "v=bad2\n" {
		t.Fatalf("app.conf = %q before the third start, want the install that the command killed", got)
	}
	a3 := e.startAgent()
	waitFor(t, "the owed reload", func() bool { return strings.Contains(a3.logs.String(), `"msg":"sync"`) })
	a3.stop(t)
	if got := readFile(t, e.path("app.conf")); got != "v=good\n" {
		t.Fatalf("app.conf = %q after the owed reload failed, want the last file whose reload succeeded", got)
	}
	if got, want := strings.Join(commandLines(t, e.path("commands")), " "), "v=good v=bad1 v=bad2 v=bad2 v=good"; got != want {
		t.Fatalf("commands saw %q, want %q: the owed reload fails, the command runs again on the last good file", got, want)
	}
	if _, err := os.Stat(e.path("cache/web.owed.json")); !os.IsNotExist(err) {
		t.Fatalf("owed record left after the reload was done: %v", err)
	}
}

// An agent killed in the reload of bad1 and restarted on bad2, whose reload fails (the agent
// not killed), rolls back to good, the last file whose reload succeeded, not to bad1, whose
// reload never completed. (Before, the rollback put bad1 back, what the restarted run's
// install replaced, and the command failed again on it.)
func TestE2E_RunRollbackAfterAKillSkipsTheKilledInstall(t *testing.T) {
	srv, e := killedOnceOwingReload(t)
	srv.put("appliances/web/v", "bad2")
	a2 := e.startAgent()
	waitFor(t, "the rollback", func() bool { return len(commandLines(t, e.path("commands"))) == 4 })
	waitFor(t, "the pass done", func() bool { return strings.Contains(a2.logs.String(), `"msg":"sync"`) })
	a2.stop(t)
	if got := readFile(t, e.path("app.conf")); got != "v=good\n" {
		t.Fatalf("app.conf = %q after the reload failed, want the last file whose reload succeeded", got)
	}
	if got, want := strings.Join(commandLines(t, e.path("commands")), " "), "v=good v=bad1 v=bad2 v=good"; got != want {
		t.Fatalf("commands saw %q, want %q: the rollback puts the last good file back", got, want)
	}
	if _, err := os.Stat(e.path("cache/web.owed.json")); !os.IsNotExist(err) {
		t.Fatalf("owed record left after the reload was done: %v", err)
	}
}

// killedOnceOwingReload starts an agent whose template's command fails on "bad" and kills the
// agent (SIGKILL) on the value v once $DIR/kill-v exists; it renders "good", puts "bad1" and
// waits for the command to kill the agent in the reload of bad1.
func killedOnceOwingReload(t *testing.T) (*server, *env) {
	return killedInReload(t, `cat $DIR/app.conf >> $DIR/commands; v=$(cut -d= -f2 $DIR/app.conf); if [ -e $DIR/kill-$v ]; then rm $DIR/kill-$v; kill -9 $PPID; sleep 3; fi; ! grep -q bad $DIR/app.conf`, "bad1", func(e *env) {
		if err := os.WriteFile(e.path("kill-bad1"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	})
}
