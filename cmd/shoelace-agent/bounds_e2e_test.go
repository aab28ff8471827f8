//go:build !windows

package main

import (
	"strings"
	"testing"
)

// A key whose value, put in place of each match in another key's value, would make a file
// larger than a render may write fails that render, naming the limit: run keeps the file it
// installed and goes on (the next good view is rendered), once exits 1. Before, the agent
// built the whole product: two 1 MiB values asked Go's runtime for a terabyte, a fatal error
// at every start on that view; here 64 KiB × 2 KiB made a 128 MiB file.
func TestE2E_RunRefusesAValueThatMultipliesAnother(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/list", "a,b")
	srv.put("appliances/web/sep", "\n")
	e := newEnv(t, srv, "", `  - contents: "{{ replace (key \"list\") \",\" (key \"sep\") -1 }}\n"
    destination: $DIR/out/list.conf
`)
	ag := e.startAgent()
	waitFor(t, "first render", fileIs(e.path("out/list.conf"), "a\nb\n"))
	srv.put("appliances/web/list", strings.Repeat(",", 64<<10))
	before := strings.Repeat("\n", 64<<10+1)
	waitFor(t, "64 Ki lines", fileIs(e.path("out/list.conf"), before))
	srv.put("appliances/web/sep", strings.Repeat("y", 2<<10))
	waitFor(t, "the render refused", func() bool { return strings.Contains(ag.logs.String(), "the limit of a render's output") })
	if got := readFile(t, e.path("out/list.conf")); got != before {
		t.Fatalf("the file holds %d bytes, want the one installed before", len(got))
	}
	if code, _, stderr := e.agentCmd("once"); code != 1 || !strings.Contains(stderr, "replace: the result would be over 67108864 bytes") {
		t.Fatalf("once: exit %d, stderr:\n%s", code, stderr)
	}
	srv.put("appliances/web/list", "c,d")
	waitFor(t, "the next good view", fileIs(e.path("out/list.conf"), "c"+strings.Repeat("y", 2<<10)+"d\n"))
	if strings.Contains(ag.logs.String(), "fatal error") {
		t.Fatalf("the agent crashed:\n%s", ag.logs.String())
	}
}

// A template that doubles a key's value as many times as another key says fails the render,
// naming the limit, and the agent lives on to render the next good view. Before, a count of 40
// asked for a terabyte: Go's runtime ended the agent with a fatal out-of-memory error.
func TestE2E_RunRefusesALoopThatDoublesAValue(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/v", "ab")
	srv.put("appliances/web/times", "1")
	e := newEnv(t, srv, "", `  - contents: "{{ $s := key \"v\" }}{{ range until (key \"times\" | atoi) }}{{ $s = printf \"%s%s\" $s $s }}{{ end }}{{ $s }}\n"
    destination: $DIR/out/doubled.conf
`)
	ag := e.startAgent()
	waitFor(t, "first render", fileIs(e.path("out/doubled.conf"), "abab\n"))
	srv.put("appliances/web/times", "27")
	waitFor(t, "the render refused", func() bool { return strings.Contains(ag.logs.String(), "the limit of a render's output") })
	if code, _, stderr := e.agentCmd("once"); code != 1 || !strings.Contains(stderr, "printf: the result would be over 67108864 bytes") {
		t.Fatalf("once: exit %d, stderr:\n%s", code, stderr)
	}
	srv.put("appliances/web/times", "2")
	waitFor(t, "the next good view", fileIs(e.path("out/doubled.conf"), "abababab\n"))
	if strings.Contains(ag.logs.String(), "fatal error") {
		t.Fatalf("the agent crashed:\n%s", ag.logs.String())
	}
}
