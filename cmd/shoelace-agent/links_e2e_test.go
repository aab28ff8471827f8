//go:build !windows

package main

import (
	"os"
	"strings"
	"testing"
)

// A symbolic link that another user owns at a destination is not followed by once and run, so
// every install there fails. validate warns about it, and render --dry reports it as the
// failure it is (exit 1) without reading through it; before, validate said nothing and render
// --dry exited 0 with a diff against the file the link leads to, printing its content.
func TestE2E_RenderDryRefusesWhatALinkMakesFail(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/port", "80")
	e := newEnv(t, srv, "", `  - contents: "port={{ key \"port\" }}\n"
    destination: $DIR/app.conf
`)
	victim := e.path("victim")
	if err := os.WriteFile(victim, []byte("root's secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, e.path("app.conf")); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(e.path("app.conf"), 4242, 4242); err != nil {
		t.Fatal(err)
	}
	why := "refusing to follow the symbolic link " + e.path("app.conf") + ": it is owned by uid 4242"

	code, stdout, stderr := e.agentCmd("validate")
	if code != 0 || !strings.Contains(stdout+stderr, "destination "+e.path("app.conf")+": "+why) || !strings.Contains(stdout+stderr, "every render of it will fail") {
		t.Errorf("validate: exit %d, want 0 and a warning that names the link; output:\n%s%s", code, stdout, stderr)
	}
	code, stdout, stderr = e.agentCmd("render", "--dry")
	if code != 1 || !strings.Contains(stdout, "!!! "+e.path("app.conf")+": "+e.path("app.conf")+": "+why) || !strings.Contains(stderr, "1 of 1 templates cannot be rendered") {
		t.Errorf("render --dry: exit %d, want 1 naming the link; stdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if strings.Contains(stdout, "root's secret") || strings.Contains(stdout, "would change") {
		t.Errorf("render --dry read through the link:\n%s", stdout)
	}
	if code, _, stderr := e.agentCmd("once"); code != 1 || !strings.Contains(stderr, why) {
		t.Errorf("once: exit %d, stderr:\n%s", code, stderr)
	}
	if got := readFile(t, victim); got != "root's secret\n" {
		t.Fatalf("the link's target holds %q", got)
	}
}
