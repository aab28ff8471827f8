//go:build !windows

package main

import (
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// A file edited by hand (or overwritten by a package upgrade) is put back, with its command
// run once, when the agent's view changes — by a key no template reads, streamed to the agent
// as a delta; a file no one changed is not rewritten and its command does not run.
func TestE2E_RunPutsBackFileChangedOnDisk(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/a", "1")
	srv.put("appliances/web/b", "1")
	srv.put("appliances/web/unrelated", "1")
	e := newEnv(t, srv, "", `  - contents: "a={{ key \"a\" }}\n"
    destination: $DIR/a
    command: echo a >> $DIR/commands
  - contents: "b={{ key \"b\" }}\n"
    destination: $DIR/b
    command: echo b >> $DIR/commands
`)
	ag := e.startAgent()
	waitFor(t, "first render", func() bool { return len(commandLines(t, e.path("commands"))) == 2 })
	var b0 unix.Stat_t
	if err := unix.Stat(e.path("b"), &b0); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.path("a"), []byte("a=edited by hand\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	srv.put("appliances/web/unrelated", "2")
	waitFor(t, "a put back", fileIs(e.path("a"), "a=1\n"))
	waitFor(t, "a's command", func() bool { return len(commandLines(t, e.path("commands"))) == 3 })
	// One more change, to be sure that nothing else was coming from the one before.
	rev := srv.put("appliances/web/unrelated", "3")
	waitFor(t, "the agent to apply the next change", func() bool { return applied(t, srv) >= rev })
	if got := strings.Join(commandLines(t, e.path("commands")), ","); got != "a,b,a" {
		t.Fatalf("commands = %s, want a's once more and b's not", got)
	}
	var b1 unix.Stat_t
	if err := unix.Stat(e.path("b"), &b1); err != nil {
		t.Fatal(err)
	}
	if b1.Ino != b0.Ino || b1.Mtim != b0.Mtim || b1.Ctim != b0.Ctim {
		t.Fatal("b was rewritten though neither it nor its keys changed")
	}
	logs := ag.logs.String()
	if !strings.Contains(logs, `"msg":"file put back","template":"`+e.path("a")+`","why":"changed on disk since the agent installed it","change":"edited"`) {
		t.Fatalf("no log line names a and why it was put back:\n%s", logs)
	}
	if n := strings.Count(logs, `"msg":"file put back"`); n != 1 {
		t.Fatalf("%d files put back, want 1:\n%s", n, logs)
	}
}
