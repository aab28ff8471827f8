//go:build !windows

package main

import (
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// A template never renders over the agent's own files. validate refuses a destination that
// is its token_file, its config or in cache_dir (before, once replaced the token with the
// rendered bytes and every later request was refused); and a symbolic link to the token
// planted at a destination while run runs is not followed: the install fails, saying why,
// and the token stays as it was.
func TestE2E_RunNeverRendersOverItsOwnFiles(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/a", "1")
	for _, dest := range []string{"$DIR/token", "$DIR/agent.yaml", "$DIR/cache/web.json"} {
		e := newEnv(t, srv, "", "  - contents: \"a={{ key \\\"a\\\" }}\\n\"\n    destination: "+dest+"\n")
		token := readFile(t, e.path("token"))
		code, _, stderr := e.agentCmd("validate")
		want := strings.ReplaceAll(dest, "$DIR", e.dir)
		if code != 1 || !strings.Contains(stderr, "destination "+want+" is ") || !strings.Contains(stderr, "a template must not replace it") {
			t.Fatalf("validate of a destination %s: exit %d, stderr:\n%s", dest, code, stderr)
		}
		if code, _, stderr := e.agentCmd("once"); code != 1 || !strings.Contains(stderr, "a template must not replace it") {
			t.Fatalf("once of a destination %s: exit %d, stderr:\n%s", dest, code, stderr)
		}
		if got := readFile(t, e.path("token")); got != token {
			t.Fatalf("the token file holds %q after once", got)
		}
	}

	e := newEnv(t, srv, "", `  - contents: "a={{ key \"a\" }}\n"
    destination: $DIR/out/a.conf
`)
	token := readFile(t, e.path("token"))
	ag := e.startAgent()
	waitFor(t, "first render", fileIs(e.path("out/a.conf"), "a=1\n"))
	if err := os.Remove(e.path("out/a.conf")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(e.path("token"), e.path("out/a.conf")); err != nil {
		t.Fatal(err)
	}
	srv.put("appliances/web/a", "2")
	waitFor(t, "the install refused", func() bool {
		return strings.Contains(ag.logs.String(), "leads through a symbolic link to") || strings.Contains(ag.logs.String(), "destination "+e.path("token")+" is the agent's token_file")
	})
	if got := readFile(t, e.path("token")); got != token {
		t.Fatalf("the token file holds %q: the render went through the link", got)
	}
	// The token still works: with the link gone, the next change is rendered.
	if err := os.Remove(e.path("out/a.conf")); err != nil {
		t.Fatal(err)
	}
	srv.put("appliances/web/a", "3")
	waitFor(t, "the next change rendered", fileIs(e.path("out/a.conf"), "a=3\n"))
}

// A named pipe at the name of one of the agent's own files in cache_dir (its view, status or
// owed commands) is replaced, as a link there is, never opened. Before, run refused to save
// over it at every pass ("cache not saved", "status not saved", "owed command not recorded"):
// no last-known-good view for a start with the server away, no status, no owed commands.
func TestE2E_RunReplacesAPipeAtItsOwnFiles(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/a", "1")
	e := newEnv(t, srv, "", `  - contents: "a={{ key \"a\" }}\n"
    destination: $DIR/out/a.conf
    command: echo ran >> $DIR/commands
`)
	if err := os.Mkdir(e.path("cache"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"web.json", "web.status.json", "web.owed.json"} {
		if err := unix.Mkfifo(e.path("cache/"+name), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ag := e.startAgent()
	waitFor(t, "first render", fileIs(e.path("out/a.conf"), "a=1\n"))
	waitFor(t, "the cache saved", func() bool { return strings.Contains(readIfRegular(e.path("cache/web.json")), `"a":"1"`) })
	waitFor(t, "the status saved", func() bool {
		return strings.Contains(readIfRegular(e.path("cache/web.status.json")), e.path("out/a.conf"))
	})
	srv.put("appliances/web/a", "2")
	waitFor(t, "the next change", fileIs(e.path("out/a.conf"), "a=2\n"))
	waitFor(t, "its command", func() bool { return len(commandLines(t, e.path("commands"))) == 2 })
	for _, bad := range []string{"cache not saved", "status not saved", "owed command not recorded"} {
		if logs := ag.logs.String(); strings.Contains(logs, bad) {
			t.Fatalf("run logged %q:\n%s", bad, logs)
		}
	}
	if code, stdout, stderr := e.agentCmd("status"); code != 0 || !strings.Contains(stdout, e.path("out/a.conf")+": in place") {
		t.Fatalf("status: exit %d\n%s%s", code, stdout, stderr)
	}
}

// readIfRegular is the content of path when it is a regular file, else "".
func readIfRegular(path string) string {
	fi, err := os.Lstat(path)
	if err != nil || !fi.Mode().IsRegular() {
		return ""
	}
	b, _ := os.ReadFile(path)
	return string(b)
}
