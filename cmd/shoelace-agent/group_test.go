//go:build !windows

package main

import (
	"os"
	"strings"
	"testing"
)

// End to end, real server and binaries: a group of two files that share a reload command is
// one transaction. The second check fails: neither file is installed. Then the command fails
// on the new files: both get their previous content back and the command runs again. The
// server's answer to the agent's reports (a route of another part) never fails a pass.
func TestE2E_GroupCheckAndReloadFailure(t *testing.T) {
	needBinaries(t)
	srv := startServer(t, "", t.TempDir())
	e := newEnv(t, srv, "", `  - contents: "a={{ key \"v\" }}\n"
    destination: $DIR/a.conf
    command: echo "reload $(cat $DIR/a.conf)" >> $DIR/commands; ! grep -q bad $DIR/a.conf
  - contents: "b={{ key \"v\" }}\n"
    destination: $DIR/b.conf
    check: '! grep -q nocheck "$SHOELACE_STAGED"'
    command: echo "reload $(cat $DIR/a.conf)" >> $DIR/commands; ! grep -q bad $DIR/a.conf
`)
	for _, f := range []string{"a.conf", "b.conf"} {
		if err := os.WriteFile(e.path(f), []byte("old\n"), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	srv.put("appliances/web/v", "nocheck")
	code, _, stderr := e.agentCmd("once")
	if code == 0 || !strings.Contains(stderr, "b.conf failed") {
		t.Fatalf("once exited %d, want the failed check:\n%s", code, stderr)
	}
	for _, f := range []string{"a.conf", "b.conf"} {
		if got := readFile(t, e.path(f)); got != "old\n" {
			t.Fatalf("%s = %q after a failed check in its group, want the old file", f, got)
		}
	}
	if got := commandLines(t, e.path("commands")); len(got) != 0 {
		t.Fatalf("commands = %v, want none", got)
	}
	assertNoTempFiles(t, e.dir)

	srv.put("appliances/web/v", "bad")
	a := e.startAgent()
	waitFor(t, "the reload on the restored files", func() bool { return len(commandLines(t, e.path("commands"))) == 4 })
	if got := strings.Join(commandLines(t, e.path("commands")), " "); got != "reload a=bad reload old" {
		t.Fatalf("commands = %q, want the failed reload, then one on the restored files", got)
	}
	for _, f := range []string{"a.conf", "b.conf"} {
		if got := readFile(t, e.path(f)); got != "old\n" {
			t.Fatalf("%s = %q after a failed reload, want the old file back", f, got)
		}
		if fi, err := os.Stat(e.path(f)); err != nil || fi.Mode().Perm() != 0o640 {
			t.Fatalf("%s: mode %v, %v; want 0640 back", f, fi.Mode().Perm(), err)
		}
	}
	srv.put("appliances/web/v", "good")
	waitFor(t, "the good change", fileIs(e.path("b.conf"), "b=good\n"))
	waitFor(t, "its reload", func() bool { return len(commandLines(t, e.path("commands"))) == 6 })
	if got := readFile(t, e.path("a.conf")); got != "a=good\n" {
		t.Fatalf("a.conf = %q", got)
	}
	a.stop(t)
	if !strings.Contains(a.logs.String(), "previous files restored") {
		t.Fatalf("no log of the restore:\n%s", a.logs.String())
	}
	assertNoTempFiles(t, e.dir)
}
