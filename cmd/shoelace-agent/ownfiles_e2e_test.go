//go:build !windows

package main

import (
	"os"
	"strings"
	"testing"
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
