//go:build !windows

package main

import (
	"context"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// A SIGHUP that adds a template which cannot render (it reads a missing key) leaves the new
// config with a template not in place: the agent's report says so, and claims no revision
// applied (before, it kept claiming the revision applied under the old config).
func TestE2E_RunReloadedTemplateFailsNothingApplied(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	rev := srv.put("appliances/web/a", "1")
	good := "  - contents: \"a={{ key \\\"a\\\" }}\"\n    destination: $DIR/a\n"
	e := newEnv(t, srv, "", good)
	ag := e.startAgent()
	defer ag.stop(t)
	waitFor(t, "first render", fileIs(e.path("a"), "a=1"))
	instance := func() api.Instance {
		ins, _, err := srv.client.Instances(context.Background(), "web")
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range ins.Instances {
			if in.Instance == "vm-e2e" {
				return in
			}
		}
		return api.Instance{}
	}
	waitFor(t, "the report of the first render", func() bool { return instance().Applied >= rev })

	e.write(srv, "", good+"  - contents: \"b={{ key \\\"missing\\\" }}\"\n    destination: $DIR/b\n")
	ag.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, "the report of the render error", func() bool { return strings.Contains(instance().Error, "missing") })
	// The failure is recorded as the report is taken, the applied revision a moment later.
	var in api.Instance
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if in = instance(); in.Applied == 0 || time.Now().After(end) {
			break
		}
	}
	if in.Applied != 0 || in.ErrorStage != api.StageRender {
		t.Fatalf("instance after the reload = %+v, want applied 0 (a template of its config failed) and the render error", in)
	}
	if got := readFile(t, e.path("a")); got != "a=1" {
		t.Fatalf("a = %q, want it kept", got)
	}
	if _, err := os.Stat(e.path("b")); !os.IsNotExist(err) {
		t.Fatal("b was written though its render failed")
	}

	// Once the key exists, every template of the config is in place: that revision is applied.
	rev = srv.put("appliances/web/missing", "2")
	waitFor(t, "b rendered", fileIs(e.path("b"), "b=2"))
	waitFor(t, "the report of the good pass", func() bool { in := instance(); return in.Applied >= rev && in.Error == "" })
}
