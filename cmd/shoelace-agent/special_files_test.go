//go:build !windows

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// agentQuick runs a one-shot agent command that must end within seconds (killed after 10):
// its exit code (-1 when killed) and stderr.
func agentQuick(t *testing.T, e *env, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "shoelace-agent"), append(args, "--config", e.config)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, stderr.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), stderr.String()
	}
	t.Fatalf("run agent %v: %v", args, err)
	return 0, ""
}

// TestE2E_NamedPipesAreRefused gives the agent a named pipe (FIFO) wherever it reads a file the
// config names: each command must refuse it at once, naming it, where the agent hung on the open
// for good (SIGTERM included, since it waits for the pass) and a service manager could only kill it.
func TestE2E_NamedPipesAreRefused(t *testing.T) {
	needBinaries(t)
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/port", "80")
	e := newEnv(t, srv, "", "  - contents: \"listen {{ key \\\"port\\\" }}\\n\"\n    destination: $DIR/app.conf\n")
	good, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	fifo := func(name string) string {
		p := e.path(name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := syscall.Mkfifo(p, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	writeConfig := func(s string) {
		if err := os.WriteFile(e.config, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	base := strings.SplitN(string(good), "templates:\n", 2)[0]
	os.MkdirAll(e.path("confd/conf.d"), 0o755)
	os.MkdirAll(e.path("confd/templates"), 0o755)
	cases := []struct {
		name   string
		config func() string
		args   []string
		pipe   string
	}{
		{"ca_file", func() string { return string(good) + "ca_file: " + fifo("ca.pem") + "\n" }, nil, "ca.pem"},
		{"source", func() string {
			return base + fmt.Sprintf("templates:\n  - source: %s\n    destination: %s\n", fifo("app.tmpl"), e.path("app.conf"))
		}, nil, "app.tmpl"},
		{"templates_dir", func() string {
			fifo("templates.d/a.yaml")
			return string(good) + "templates_dir: " + e.path("templates.d") + "\n"
		}, nil, "templates.d/a.yaml"},
		{"confd resource", func() string { fifo("confd/conf.d/a.toml"); return string(good) }, []string{"--confdir", e.path("confd")}, "confd/conf.d/a.toml"},
		{"confd template", func() string {
			os.Remove(e.path("confd/conf.d/a.toml"))
			os.WriteFile(e.path("confd/conf.d/b.toml"), []byte("[template]\nsrc = \"b.tmpl\"\ndest = \""+e.path("b.conf")+"\"\n"), 0o644)
			fifo("confd/templates/b.tmpl")
			return string(good)
		}, []string{"--confdir", e.path("confd")}, "confd/templates/b.tmpl"},
		{"config", func() string { return "" }, nil, "agent.yaml"},
	}
	for _, c := range cases {
		writeConfig(c.config())
		if c.pipe == "agent.yaml" {
			os.Remove(e.config)
			fifo("agent.yaml")
		}
		for _, cmd := range []string{"validate", "render", "once"} {
			code, stderr := agentQuick(t, e, append([]string{cmd}, c.args...)...)
			want := e.path(c.pipe) + " is a named pipe (FIFO), not a regular file"
			if code != 1 || !strings.Contains(stderr, want) {
				t.Errorf("%s %s: exit %d, stderr %q; want exit 1 with %q", c.name, cmd, code, stderr, want)
			}
		}
	}
}

// TestE2E_RenderRefusesWhatOnceCannotInstallOnTheWay: a destination below a regular file
// (/etc/app.conf/x) and a backup whose .bak name is a directory fail once at every pass, and
// validate warns about both; render --dry said "would change" and exited 0 (the first with
// "current file unreadable: … it changed while it was opened").
func TestE2E_RenderRefusesWhatOnceCannotInstallOnTheWay(t *testing.T) {
	needBinaries(t)
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/port", "80")
	e := newEnv(t, srv, "", `  - contents: "a"
    destination: $DIR/app.conf/x
  - contents: "b"
    destination: $DIR/b.conf
    backup: true
  - contents: "c"
    destination: $DIR/ok.conf
    backup: true
`)
	for _, f := range []string{"app.conf", "b.conf", "ok.conf"} {
		if err := os.WriteFile(e.path(f), []byte("old\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.Mkdir(e.path("b.conf.bak"), 0o755)
	code, stdout, stderr := e.agentCmd("render", "--dry")
	for _, want := range []string{
		e.path("app.conf/x") + ": " + e.path("app.conf") + " is a regular file, not a directory: a file cannot be installed there",
		"backup keeps the previous content as " + e.path("b.conf.bak") + ", which is a directory: a file cannot be installed there",
		e.path("ok.conf") + ": would change",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("render --dry output lacks %q:\n%s", want, stdout)
		}
	}
	if code != 1 || !strings.Contains(stderr, "2 of 3 templates cannot be rendered") {
		t.Errorf("render --dry: exit %d, stderr %q; want exit 1, 2 of 3 failed", code, stderr)
	}
	code, _, stderr = e.agentCmd("once")
	if code != 1 || !strings.Contains(stderr, "2 of 3 templates not in place") {
		t.Errorf("once: exit %d, stderr %q; want exit 1, 2 of 3 not in place", code, stderr)
	}
}

// TestE2E_RenderGroupWithAFailureInstallsNone: templates that share a command are installed
// whole or not at all, so when one of them cannot be rendered render --dry says that the others
// are not installed and that the command does not run, as once then does (render listed the
// others as changes and the command as one that would run, and once installed neither).
func TestE2E_RenderGroupWithAFailureInstallsNone(t *testing.T) {
	needBinaries(t)
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/port", "80")
	e := newEnv(t, srv, "", `  - contents: "port {{ key \"port\" }}\n"
    destination: $DIR/app.conf
    command: touch $DIR/reloaded
  - contents: "db {{ key \"db/host\" }}\n"
    destination: $DIR/db.conf
    command: touch $DIR/reloaded
  - contents: "other {{ key \"port\" }}\n"
    destination: $DIR/other.conf
    command: touch $DIR/other-reloaded
`)
	code, stdout, stderr := e.agentCmd("render", "--dry")
	for _, want := range []string{
		e.path("app.conf") + ": would change (new file)\n(not installed: " + e.path("db.conf") + " of its group (command \"touch " + e.path("reloaded") + "\") fails",
		"+port 80\n",
		e.path("other.conf") + ": would change (new file)\n---",
		"# commands that would run:\ntouch " + e.path("other-reloaded") + "\n",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("render --dry output lacks %q:\n%s", want, stdout)
		}
	}
	if strings.Contains(stdout, "touch "+e.path("reloaded")+"\n") {
		t.Errorf("render --dry lists the failed group's command as one that would run:\n%s", stdout)
	}
	if code != 1 || !strings.Contains(stderr, "1 of 3 templates cannot be rendered") {
		t.Errorf("render --dry: exit %d, stderr %q; want exit 1, 1 of 3 failed", code, stderr)
	}
	// What once does: the group's other file is not installed and its command does not run.
	if code, _, stderr := e.agentCmd("once"); code != 1 {
		t.Errorf("once: exit %d, stderr %q", code, stderr)
	}
	for _, name := range []string{"app.conf", "reloaded"} {
		if _, err := os.Stat(e.path(name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("once made %s: %v", name, err)
		}
	}
	if _, err := os.Stat(e.path("other-reloaded")); err != nil {
		t.Errorf("once did not run the other group's command: %v", err)
	}
}

// TestE2E_RenderRefusesWhatOnceCannotInstall: a destination that is a directory or a named pipe
// is a failure of render --dry, as it is of once (render said "would change" and exited 0, and
// read the pipe until a writer came).
func TestE2E_RenderRefusesWhatOnceCannotInstall(t *testing.T) {
	needBinaries(t)
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/port", "80")
	e := newEnv(t, srv, "", `  - contents: "a"
    destination: $DIR/dir
  - contents: "b"
    destination: $DIR/pipe
  - contents: "c"
    destination: $DIR/ok.conf
`)
	os.Mkdir(e.path("dir"), 0o755)
	if err := syscall.Mkfifo(e.path("pipe"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := e.agentCmd("render", "--dry")
	for _, want := range []string{
		e.path("dir") + " is a directory: a file cannot be installed there",
		e.path("pipe") + " is a named pipe (FIFO): a file cannot be installed there",
		e.path("ok.conf") + ": would change (new file)",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("render --dry output lacks %q:\n%s", want, stdout)
		}
	}
	if code != 1 || !strings.Contains(stderr, "2 of 3 templates cannot be rendered") {
		t.Errorf("render --dry: exit %d, stderr %q; want exit 1, 2 of 3 failed", code, stderr)
	}
	code, _, stderr = e.agentCmd("once")
	if code != 1 || !strings.Contains(stderr, e.path("dir")+" is a directory, not a regular file") {
		t.Errorf("once: exit %d, stderr %q", code, stderr)
	}
}
