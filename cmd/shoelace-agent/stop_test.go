//go:build !windows

package main

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

// SIGTERM while a render is in progress (its check is running on the staged file): the agent
// finishes that render, exits 0 and leaves no temp file. Every line the agent logged is JSON.
func TestE2E_StopMidRenderLeavesNoTempFile(t *testing.T) {
	needBinaries(t)
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/v", "old")
	e := newEnv(t, srv, "", `  - contents: "v={{ key \"v\" }}\n"
    destination: $DIR/out/app.conf
    check: 'if grep -q new "$SHOELACE_STAGED"; then touch $DIR/checking; sleep 3; fi'
`)
	if err := os.MkdirAll(e.path("out"), 0o755); err != nil {
		t.Fatal(err)
	}
	a := e.startAgent()
	dst := e.path("out/app.conf")
	waitFor(t, "first render", fileIs(dst, "v=old\n"))

	srv.put("appliances/web/v", "new")
	waitFor(t, "the check of the new render to start", func() bool {
		_, err := os.Stat(e.path("checking"))
		return err == nil
	})
	staged := false
	ents, _ := os.ReadDir(e.path("out"))
	for _, ent := range ents {
		staged = staged || strings.HasPrefix(ent.Name(), ".")
	}
	if !staged {
		t.Fatal("no staged temp file while the check runs: the test does not stop the agent mid-render")
	}
	start := time.Now()
	a.stop(t) // SIGTERM; fails the test unless the agent exits 0 within 20 s
	t.Logf("agent stopped %s after SIGTERM", time.Since(start).Round(time.Millisecond))

	assertNoTempFiles(t, e.path("out"))
	if got := readFile(t, dst); got != "v=new\n" {
		t.Fatalf("destination after stop = %q, want the render in progress finished (v=new)", got)
	}
	for i, line := range strings.Split(strings.TrimSpace(a.logs.String()), "\n") {
		var v map[string]any
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Errorf("log line %d is not JSON: %q", i+1, line)
		}
	}
}
