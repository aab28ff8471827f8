//go:build !windows

package main

// End-to-end tests: the built shoelace-agent against the built shoelace server on an
// embedded etcd, as a user runs them.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/client"

	"github.com/shoelace-dev/shoelace/internal/testbin"
)

var (
	binDir   string
	buildErr error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "shoelace-agent-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	for _, pkg := range []string{"shoelace", "shoelace-agent"} {
		// SHOELACE_E2E_SERVER_BIN runs a prebuilt server instead (such as one of a known-good commit).
		if prebuilt := os.Getenv("SHOELACE_E2E_SERVER_BIN"); pkg == "shoelace" && prebuilt != "" {
			if err := os.Symlink(prebuilt, filepath.Join(dir, pkg)); err != nil {
				buildErr = err
				break
			}
			continue
		}
		if _, err := testbin.Build(dir, nil, "./cmd/"+pkg); err != nil {
			buildErr = err
			break
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func needBinaries(t *testing.T) {
	t.Helper()
	if buildErr != nil {
		t.Fatal(buildErr)
	}
}

// syncBuf collects a child's (or a logger's) output while the test reads it.
type syncBuf = testbin.Buffer

// server is a running `shoelace server` child.
type server struct {
	t       *testing.T
	addr    string
	dataDir string
	cmd     *exec.Cmd
	log     *syncBuf
	token   string // the admin token, when access control is on
	// agentToken is the appliance token given to agents.
	agentToken string
	client     *client.Client
}

func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startServer starts a server on addr ("" = a free port) with its data in dataDir.
func startServer(t *testing.T, addr, dataDir string) *server {
	t.Helper()
	return startServerArgs(t, addr, dataDir)
}

// startServerArgs starts the server as startServer does, with more flags (such as
// --etcd-endpoints for replicas of one etcd).
func startServerArgs(t *testing.T, addr, dataDir string, extra ...string) *server {
	t.Helper()
	needBinaries(t)
	if addr == "" {
		addr = freePort(t)
	}
	s := &server{t: t, addr: addr, dataDir: dataDir, log: &syncBuf{}}
	args := []string{"server", "--listen", addr, "--data-dir", dataDir, "--log-level", "warn",
		"--rate-limit", "0"} // the tests write faster than a pipeline would
	s.cmd = exec.Command(filepath.Join(binDir, "shoelace"), append(args, extra...)...)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.kill() })
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) || s.cmd.ProcessState != nil {
			t.Fatalf("server on %s did not become healthy: %v\n%s", addr, err, s.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// With access control on, a request without a token is refused and the first start
	// writes an admin token to <data-dir>/admin.token: use it for writes and for the agent.
	authOn := false
	if resp, err := http.Get("http://" + addr + "/v1/appliances"); err == nil {
		resp.Body.Close()
		authOn = resp.StatusCode == http.StatusUnauthorized
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dataDir, "admin.token")); err == nil && len(bytes.TrimSpace(b)) > 0 {
			s.token = strings.TrimSpace(string(b))
			break
		}
		if !authOn {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server refuses requests without a token but wrote no %s/admin.token", dataDir)
		}
		time.Sleep(20 * time.Millisecond)
	}
	c, err := client.New("http://"+addr, client.Options{Token: s.token})
	if err != nil {
		t.Fatal(err)
	}
	s.client = c
	return s
}

// kill ends the server at once (SIGKILL), as a crash would.
func (s *server) kill() {
	if s.cmd.Process != nil && s.cmd.ProcessState == nil {
		s.cmd.Process.Kill()
		s.cmd.Wait()
	}
}

// agentTokenFor creates (once) the token an agent of appliance gets in production, with
// `shoelace token create --appliance`, which prints the secret as its last line.
func (s *server) agentTokenFor(t *testing.T, appliance string) string {
	t.Helper()
	if s.agentToken != "" {
		return s.agentToken
	}
	adminFile := filepath.Join(s.dataDir, "admin.token")
	out, err := exec.Command(filepath.Join(binDir, "shoelace"), "token", "create", "--name", appliance+"-agent", "--appliance", appliance,
		"--addr", "http://"+s.addr, "--token-file", adminFile).CombinedOutput()
	if err != nil {
		t.Fatalf("shoelace token create: %v\n%s", err, out)
	}
	s.agentToken = lastLine(string(out))
	return s.agentToken
}

func (s *server) put(key, value string) int64 {
	s.t.Helper()
	rev, err := s.client.Put(context.Background(), key, []byte(value), client.NoCAS)
	if err != nil {
		s.t.Fatalf("put %s: %v", key, err)
	}
	return rev
}

// env is one test's directory with an agent config for a server.
type env struct {
	t      *testing.T
	dir    string
	config string
	// agentEnv is added to the environment of `run`.
	agentEnv []string
}

// newEnv writes agent.yaml for srv with the templates YAML (in which $DIR is the test dir).
func newEnv(t *testing.T, srv *server, extra, templates string) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{t: t, dir: dir, config: filepath.Join(dir, "agent.yaml")}
	e.write(srv, extra, templates)
	return e
}

func (e *env) write(srv *server, extra, templates string) {
	cfg := fmt.Sprintf("server: http://%s\nappliance: web\ninstance: vm-e2e\ncache_dir: $DIR/cache\n", srv.addr)
	if srv.token != "" {
		tok := filepath.Join(e.dir, "token")
		if err := os.WriteFile(tok, []byte(srv.agentTokenFor(e.t, "web")+"\n"), 0o600); err != nil {
			e.t.Fatal(err)
		}
		cfg += "token_file: " + tok + "\n"
	} else {
		cfg += "token: no-server-to-ask\n" // a token is required even where no server answers
	}
	cfg += extra + "templates:\n" + templates
	if err := os.WriteFile(e.config, []byte(strings.ReplaceAll(cfg, "$DIR", e.dir)), 0o644); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) path(name string) string { return filepath.Join(e.dir, name) }

// agentCmd runs a one-shot agent command and returns its exit code, stdout and stderr.
func (e *env) agentCmd(args ...string) (int, string, string) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "shoelace-agent"), append(args, "--config", e.config)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			e.t.Fatalf("run agent %v: %v", args, err)
		}
		code = ee.ExitCode()
	}
	return code, stdout.String(), stderr.String()
}

// runningAgent is a `shoelace-agent run` child.
type runningAgent struct {
	cmd  *exec.Cmd
	logs *syncBuf
}

func (e *env) startAgent(args ...string) *runningAgent {
	e.t.Helper()
	a := &runningAgent{logs: &syncBuf{}}
	a.cmd = exec.Command(filepath.Join(binDir, "shoelace-agent"), append([]string{"run", "--config", e.config, "--log-level", "debug"}, args...)...)
	a.cmd.Stdout, a.cmd.Stderr = a.logs, a.logs
	a.cmd.Env = append(os.Environ(), e.agentEnv...)
	if err := a.cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		a.stop(e.t)
		if e.t.Failed() {
			e.t.Logf("agent logs:\n%s", a.logs.String())
		}
	})
	return a
}

// stop sends SIGTERM and waits; the agent must exit 0.
func (a *runningAgent) stop(t *testing.T) {
	if a.cmd.ProcessState != nil {
		return
	}
	a.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- a.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("agent exited with %v", err)
		}
	case <-time.After(20 * time.Second):
		a.cmd.Process.Kill()
		<-done
		t.Error("agent did not stop on SIGTERM")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func fileIs(path, want string) func() bool {
	return func() bool { b, err := os.ReadFile(path); return err == nil && string(b) == want }
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func commandLines(t *testing.T, path string) []string {
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(b))
}

func TestE2E_OnceStagesPermsOwnerAndCommands(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	srv.put("shared/system/ntp", "pool.ntp.org")
	srv.put("appliances/web/system/ntp", "ntp.web.internal")
	srv.put("appliances/web/port", "8080")
	// As root (as the agent runs, and as CI runs) the file goes to nobody:65534, by name and id.
	owner, group := "nobody", "65534"
	if os.Geteuid() != 0 {
		owner, group = fmt.Sprint(os.Geteuid()), fmt.Sprint(os.Getegid())
	}
	e := newEnv(t, srv, "", `  - contents: "server {{ key \"system/ntp\" }}\n"
    destination: $DIR/ntp.conf
    stage: system
    perms: "0640"
    owner: "`+owner+`"
    group: "`+group+`"
    command: echo ntp >> $DIR/commands
  - contents: "listen {{ key \"port\" }}\n"
    destination: $DIR/app.conf
    command: echo app >> $DIR/commands
  - contents: "upstream {{ key \"port\" }}\n"
    destination: $DIR/upstream.conf
    command: echo app >> $DIR/commands
`)
	code, _, stderr := e.agentCmd("once", "--stage", "system")
	if code != 0 {
		t.Fatalf("once --stage system exited %d: %s", code, stderr)
	}
	if got := readFile(t, e.path("ntp.conf")); got != "server ntp.web.internal\n" {
		t.Fatalf("ntp.conf = %q (the appliance's key must win)", got)
	}
	fi, _ := os.Stat(e.path("ntp.conf"))
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode().Perm() != 0o640 || (os.Geteuid() == 0 && (st.Uid != 65534 || st.Gid != 65534)) {
		t.Fatalf("ntp.conf mode %v owner %d:%d", fi.Mode().Perm(), st.Uid, st.Gid)
	}
	if _, err := os.Stat(e.path("app.conf")); !os.IsNotExist(err) {
		t.Fatal("--stage system rendered an application template")
	}
	// once records its status, never the view: the cache dir holds no cached view.
	if ents, _ := os.ReadDir(e.path("cache")); len(ents) > 0 {
		for _, ent := range ents {
			if !strings.HasSuffix(ent.Name(), ".status.json") {
				t.Fatalf("once wrote %s into the cache dir", ent.Name())
			}
		}
	}

	code, _, stderr = e.agentCmd("once", "--stage", "application")
	if code != 0 {
		t.Fatalf("once --stage application exited %d: %s", code, stderr)
	}
	if got := strings.Join(commandLines(t, e.path("commands")), ","); got != "ntp,app" {
		t.Fatalf("commands = %s, want ntp,app: a command shared by two changed templates runs once", got)
	}
	if got := readFile(t, e.path("upstream.conf")); got != "upstream 8080\n" {
		t.Fatalf("upstream.conf = %q", got)
	}
	if !strings.Contains(stderr, `"msg":"command ran"`) || !strings.Contains(stderr, `"msg":"rendered"`) {
		t.Fatalf("logs lack what changed and what ran:\n%s", stderr)
	}

	// Unchanged: nothing written, nothing run.
	code, _, _ = e.agentCmd("once")
	if code != 0 || len(commandLines(t, e.path("commands"))) != 2 {
		t.Fatalf("second once: exit %d, commands %v", code, commandLines(t, e.path("commands")))
	}
	// --no-commands: rendered, not run.
	srv.put("appliances/web/port", "9090")
	code, _, _ = e.agentCmd("once", "--no-commands")
	if code != 0 || readFile(t, e.path("app.conf")) != "listen 9090\n" || len(commandLines(t, e.path("commands"))) != 2 {
		t.Fatalf("once --no-commands: exit %d, app.conf %q, commands %v", code, readFile(t, e.path("app.conf")), commandLines(t, e.path("commands")))
	}
}

func TestE2E_OnceErrors(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/conf", "bad")
	e := newEnv(t, srv, "", `  - contents: "{{ key \"conf\" }} {{ key \"nope/missing\" }}"
    destination: $DIR/missing.conf
  - contents: "{{ key \"conf\" }}"
    destination: $DIR/checked.conf
    check: grep -q good "$SHOELACE_STAGED"
    command: touch $DIR/ran
`)
	os.WriteFile(e.path("missing.conf"), []byte("old missing"), 0o644)
	os.WriteFile(e.path("checked.conf"), []byte("old good"), 0o644)
	code, _, stderr := e.agentCmd("once")
	if code == 0 {
		t.Fatal("once exited 0 with a missing key and a failing check")
	}
	last := lastLine(stderr)
	for _, want := range []string{"shoelace-agent: 2 of 2 templates not in place", `key "nope/missing"`, "check of " + e.path("checked.conf") + " failed, old file kept"} {
		if !strings.Contains(last, want) {
			t.Errorf("error line lacks %q: %s", want, last)
		}
	}
	if readFile(t, e.path("missing.conf")) != "old missing" || readFile(t, e.path("checked.conf")) != "old good" {
		t.Fatal("a failed template replaced its file")
	}
	if _, err := os.Stat(e.path("ran")); !os.IsNotExist(err) {
		t.Fatal("a command ran after a failed check")
	}
	assertNoTempFiles(t, e.dir)

	// Selecting no template is an error too.
	code, _, stderr = e.agentCmd("once", "--stage", "system")
	if code == 0 || !strings.Contains(stderr, `no templates with stage "system"`) {
		t.Fatalf("once --stage system with none: exit %d: %s", code, stderr)
	}
	// An unreachable server is an error, not a cached render.
	e2 := newEnv(t, &server{addr: freePort(t)}, "", "  - contents: x\n    destination: $DIR/x\n")
	code, _, stderr = e2.agentCmd("once")
	if code == 0 || !strings.Contains(stderr, "fetch view of web") {
		t.Fatalf("once with no server: exit %d: %s", code, stderr)
	}
}

func lastLine(s string) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	return l[len(l)-1]
}

// assertNoTempFiles fails when a temp file is left in dir: any dot name but an empty spare
// (.<name>.shoelace-spare, kept for the next install; see docs/DESIGN.md).
func assertNoTempFiles(t *testing.T, dir string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), ".") {
			continue
		}
		if fi, err := e.Info(); err == nil && strings.HasSuffix(e.Name(), ".shoelace-spare") && fi.Mode().IsRegular() && fi.Size() == 0 {
			continue
		}
		t.Fatalf("temp file left: %s", e.Name())
	}
}

func TestE2E_RenderDryWritesNothing(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/port", "80")
	srv.put("appliances/web/db/secrets/password", "hunter2")
	e := newEnv(t, srv, "", `  - contents: "listen {{ key \"port\" }}\n"
    destination: $DIR/app.conf
    command: touch $DIR/ran
  - contents: "pw {{ key \"db/secrets/password\" }}\n"
    destination: $DIR/db.conf
`)
	os.WriteFile(e.path("app.conf"), []byte("listen 8080\n"), 0o644)
	before, _ := os.ReadDir(e.dir)
	code, stdout, stderr := e.agentCmd("render", "--dry")
	if code != 0 {
		t.Fatalf("render --dry exited %d: %s", code, stderr)
	}
	for _, want := range []string{"-listen 8080\n+listen 80\n", "db.conf: would change (new file)", "commands that would run:\ntouch " + e.dir + "/ran"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
	if strings.Contains(stdout+stderr, "hunter2") {
		t.Fatal("render --dry showed a secret")
	}
	after, _ := os.ReadDir(e.dir)
	if len(after) != len(before) || readFile(t, e.path("app.conf")) != "listen 8080\n" {
		t.Fatalf("render --dry wrote files: before %v after %v", before, after)
	}
}

// render --dry with a token the server refuses renders the cached view, as run would, and
// its first line says why without calling the server unreachable (it answered: 401).
func TestE2E_RenderDryWithARefusedTokenSaysSo(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/port", "80")
	e := newEnv(t, srv, "", `  - contents: "listen {{ key \"port\" }}\n"
    destination: $DIR/app.conf
`)
	ag := e.startAgent() // run keeps the view in cache_dir (once does not)
	waitFor(t, "the view cached", func() bool {
		_, err := os.Stat(filepath.Join(e.dir, "cache", "web.json"))
		return err == nil
	})
	ag.stop(t)
	if err := os.WriteFile(filepath.Join(e.dir, "token"), []byte("sl_"+strings.Repeat("0", 40)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := e.agentCmd("render", "--dry")
	if code != 0 {
		t.Fatalf("render --dry exited %d: %s", code, stderr)
	}
	first, _, _ := strings.Cut(stdout, "\n")
	if !strings.HasPrefix(first, "# no view from the server (") || !strings.Contains(first, "using the cached view at revision") || strings.Contains(first, "unreachable") {
		t.Fatalf("first line %q, want the cached view and why, not \"unreachable\"", first)
	}
}

// render --dry prints a unified diff whose hunk header counts its context lines as diff -u
// does (before, "@@ -5,1 +5,1 @@" over seven lines, which patch refused as malformed), and
// marks a last line without a newline (before, a file that lacked only its final newline
// "would change" with a diff showing no change).
func TestE2E_RenderDryDiffIsUnified(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/five", "X5")
	e := newEnv(t, srv, "", `  - contents: "l1\nl2\nl3\nl4\n{{ key \"five\" }}\nl6\nl7\nl8\n"
    destination: $DIR/mid.conf
  - contents: "last\n"
    destination: $DIR/eol.conf
  - contents: "a\nb\n"
    destination: $DIR/new.conf
`)
	os.WriteFile(e.path("mid.conf"), []byte("l1\nl2\nl3\nl4\nl5\nl6\nl7\nl8\n"), 0o644)
	os.WriteFile(e.path("eol.conf"), []byte("last"), 0o644)
	code, stdout, stderr := e.agentCmd("render", "--dry")
	if code != 0 {
		t.Fatalf("render --dry exited %d: %s", code, stderr)
	}
	for _, want := range []string{
		"@@ -2,7 +2,7 @@\n l2\n l3\n l4\n-l5\n+X5\n l6\n l7\n l8\n",
		"@@ -1,1 +1,1 @@\n-last\n\\ No newline at end of file\n+last\n",
		"@@ -0,0 +1,2 @@\n+a\n+b\n",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
}

// A bake in two runs, once --stage system then (at first boot) once --stage application, each
// its own process, records the view as applied once every template of the config is in place
// (DESIGN.md). Before, each once counted the stage it did not select as missing, so status said
// "applied 0" after both; a file of the other stage that does not hold its render still is.
func TestE2E_OnceStagesInTwoRunsApply(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	rev := srv.put("appliances/web/port", "80")
	e := newEnv(t, srv, "", `  - contents: "ntp\n"
    destination: $DIR/ntp.conf
    stage: system
    perms: "0640"
  - contents: "listen {{ key \"port\" }}\n"
    destination: $DIR/app.conf
`)
	status := func() statusJSON {
		t.Helper()
		_, stdout, _ := e.agentCmd("status", "--json")
		var st statusJSON
		if err := json.Unmarshal([]byte(stdout), &st); err != nil || st.Agent == nil {
			t.Fatalf("status --json: %v\n%s", err, stdout)
		}
		return st
	}
	if code, _, stderr := e.agentCmd("once", "--stage", "system", "--no-commands"); code != 0 {
		t.Fatalf("once --stage system: exit %d: %s", code, stderr)
	}
	if code, _, stderr := e.agentCmd("once", "--stage", "application"); code != 0 {
		t.Fatalf("once --stage application: exit %d: %s", code, stderr)
	}
	st := status()
	if st.Agent.Applied < rev || st.Agent.Applied != st.Agent.Revision {
		t.Fatalf("applied %d at revision %d after both stages were installed, want the view's revision", st.Agent.Applied, st.Agent.Revision)
	}
	for _, tp := range st.Agent.Templates {
		if !tp.InPlace {
			t.Fatalf("%s not in place: %+v", tp.Destination, st.Agent.Templates)
		}
	}
	// The system file edited since: not in place, nothing applied.
	os.WriteFile(e.path("ntp.conf"), []byte("edited\n"), 0o640)
	srv.put("appliances/web/port", "81")
	if code, _, stderr := e.agentCmd("once", "--stage", "application"); code != 0 {
		t.Fatalf("once --stage application: exit %d: %s", code, stderr)
	}
	if st := status(); st.Agent.Applied != 0 {
		t.Fatalf("applied %d with ntp.conf edited, want 0", st.Agent.Applied)
	}
}

// TestE2E_DesignSchemaExample runs `once` with every field of DESIGN.md's config schema, written
// as the example there writes them (left_delimiter alone, a trailing slash on allowed_dirs,
// wait and metrics_listen at their defaults, a templates_dir drop-in).
func TestE2E_DesignSchemaExample(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/nginx/workers", "4")
	e := newEnv(t, srv, `wait: {min: 0s, max: 0s}                 # default off
metrics_listen: ""
allowed_dirs: [$DIR/etc/]
templates_dir: $DIR/templates.d
`, fmt.Sprintf(`  - contents: "worker_processes {{ key \"nginx/workers\" }};\n"
    destination: $DIR/etc/nginx/nginx.conf
    stage: application
    perms: "0640"
    owner: "%d"
    group: "%d"
    backup: true
    left_delimiter: "{{"                 # and right_delimiter
    check: grep -q worker_processes "$SHOELACE_STAGED"
    command: echo reload >> $DIR/reloads
    command_timeout: 30s
    on_command_failure: rollback
    health: echo health >> $DIR/health
    health_timeout: 10s
    health_retries: 3
    health_interval: 1s
`, os.Getuid(), os.Getgid()))
	os.Mkdir(e.path("templates.d"), 0o755)
	dropIn := "- contents: \"[[ key \\\"nginx/workers\\\" ]] {{ literal }}\\n\"\n  destination: " + e.path("etc/workers") +
		"\n  stage: system\n  left_delimiter: \"[[\"\n  right_delimiter: \"]]\"\n"
	if err := os.WriteFile(e.path("templates.d/workers.yaml"), []byte(dropIn), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := e.agentCmd("validate"); code != 0 {
		t.Fatalf("validate of the schema example: exit %d: %s", code, stderr)
	}
	if code, _, stderr := e.agentCmd("once"); code != 0 {
		t.Fatalf("once with the schema example: exit %d: %s", code, stderr)
	}
	if got := readFile(t, e.path("etc/nginx/nginx.conf")); got != "worker_processes 4;\n" {
		t.Fatalf("nginx.conf = %q", got)
	}
	if got := readFile(t, e.path("etc/workers")); got != "4 {{ literal }}\n" {
		t.Fatalf("drop-in template = %q", got)
	}
	if fi, err := os.Stat(e.path("etc/nginx/nginx.conf")); err != nil || fi.Mode().Perm() != 0o640 {
		t.Fatalf("nginx.conf mode: %v %v", fi.Mode(), err)
	}
	srv.put("appliances/web/nginx/workers", "8")
	if code, _, stderr := e.agentCmd("once", "--stage", "application"); code != 0 {
		t.Fatalf("second once: exit %d: %s", code, stderr)
	}
	if got := readFile(t, e.path("etc/nginx/nginx.conf.bak")); got != "worker_processes 4;\n" {
		t.Fatalf("nginx.conf.bak = %q", got)
	}
	if got := commandLines(t, e.path("reloads")); len(got) != 2 {
		t.Fatalf("command ran %d times, want 2 (one per change)", len(got))
	}
	if got := commandLines(t, e.path("health")); len(got) != 2 {
		t.Fatalf("health ran %d times, want 2 (once after each reload)", len(got))
	}
	// version takes --config like every command of DESIGN.md's synopsis.
	if code, stdout, stderr := e.agentCmd("version"); code != 0 || !strings.HasPrefix(stdout, "shoelace-agent ") {
		t.Fatalf("version --config: exit %d: %s%s", code, stdout, stderr)
	}
}

func TestE2E_Validate(t *testing.T) {
	needBinaries(t)
	srv := &server{addr: "127.0.0.1:1"}
	e := newEnv(t, srv, "", `  - contents: "{{ key \"a\" }} {{ now }}"
    destination: $DIR/a
`)
	code, stdout, stderr := e.agentCmd("validate")
	if code != 0 || !strings.Contains(stdout, "ok, 1 template") || !strings.Contains(stdout, "warning:") || !strings.Contains(stdout, "now") {
		t.Fatalf("validate good: exit %d\nstdout %s\nstderr %s", code, stdout, stderr)
	}
	// A native template that calls confd's names gets both meanings, and the way out.
	e.write(srv, "", "  - contents: '{{ if contains \"a\" \"b\" }}x{{ end }}'\n    destination: $DIR/a\n")
	code, stdout, _ = e.agentCmd("validate")
	if code != 0 || !strings.Contains(stdout, "warning: "+e.config+":7: template "+e.path("a")+": contains:") || !strings.Contains(stdout, "functions: confd") {
		t.Fatalf("validate of confd's contains in native mode: exit %d\n%s", code, stdout)
	}
	e.write(srv, "colour: blue\n", "  - contents: \"{{ key \\\"a\\\" \"\n    destination: $DIR/a\n")
	code, _, stderr = e.agentCmd("validate")
	if code == 0 || !strings.Contains(stderr, e.config+`:6: unknown field "colour"`) {
		t.Fatalf("validate unknown field: exit %d: %s", code, stderr)
	}
	e.write(srv, "", "  - contents: \"{{ key \\\"a\\\" \"\n    destination: $DIR/a\n")
	code, _, stderr = e.agentCmd("validate")
	if code == 0 || !strings.Contains(stderr, e.config+":7: template "+e.path("a")) {
		t.Fatalf("validate template parse error: exit %d: %s", code, stderr)
	}
}

// The server is killed and restarted under a running agent: the agent keeps its files,
// retries, and renders the next change once the server is back.
func TestE2E_RunServerKilledAndRestarted(t *testing.T) {
	data := t.TempDir()
	srv := startServer(t, "", data)
	srv.put("appliances/web/a", "1")
	e := newEnv(t, srv, "", "  - contents: \"a={{ key \\\"a\\\" }}\"\n    destination: $DIR/a\n")
	ag := e.startAgent()
	waitFor(t, "first render", fileIs(e.path("a"), "a=1"))
	rev := srv.put("appliances/web/a", "2")
	waitFor(t, "render of a change", fileIs(e.path("a"), "a=2"))
	// The agent reports its instance and the revision it applied on its next long-poll, with
	// the instance token it enrolled for (kept in cache_dir, 0600).
	waitFor(t, "the server to record the applied revision", func() bool {
		var got struct {
			Instances []struct {
				Instance string `json:"instance"`
				Applied  int64  `json:"applied"`
				Enrolled bool   `json:"enrolled"`
				Token    string `json:"token"`
			} `json:"instances"`
		}
		if _, err := srv.client.Do(context.Background(), client.Request{Method: http.MethodGet, Path: "/v1/appliances/web/instances"}, &got); err != nil {
			t.Logf("instances: %v", err)
			return false
		}
		for _, in := range got.Instances {
			if in.Instance == "vm-e2e" && in.Applied >= rev && in.Enrolled && in.Token == "instance:web:vm-e2e" {
				return true
			}
		}
		return false
	})

	if fi, err := os.Stat(e.path("cache/web.instance-token")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("instance token file: %v, %v", fi, err)
	}
	srv.kill()
	waitFor(t, "the agent to notice", func() bool { return strings.Contains(ag.logs.String(), "server unreachable; keeping files") })
	if got := readFile(t, e.path("a")); got != "a=2" {
		t.Fatalf("file changed while the server was down: %q", got)
	}
	srv2 := startServer(t, srv.addr, data)
	srv2.put("appliances/web/a", "3")
	waitFor(t, "render after the restart", fileIs(e.path("a"), "a=3"))
	waitFor(t, "a log of the recovery", func() bool { return strings.Contains(ag.logs.String(), "server reachable again") })
}

// With the server down at start, the agent renders from its cache and says so.
func TestE2E_RunStartsFromCacheWithServerDown(t *testing.T) {
	data := t.TempDir()
	srv := startServer(t, "", data)
	srv.put("appliances/web/a", "1")
	e := newEnv(t, srv, "", "  - contents: \"a={{ key \\\"a\\\" }}\"\n    destination: $DIR/a\n    perms: \"0600\"\n")
	ag := e.startAgent()
	waitFor(t, "first render", fileIs(e.path("a"), "a=1"))
	cache := filepath.Join(e.dir, "cache", "web.json")
	waitFor(t, "the cache", func() bool { _, err := os.Stat(cache); return err == nil })
	ag.stop(t)
	if fi, _ := os.Stat(cache); fi.Mode().Perm() != 0o600 {
		t.Fatalf("cache mode %v, want 0600", fi.Mode().Perm())
	}
	srv.kill()
	os.Remove(e.path("a"))

	ag2 := e.startAgent()
	waitFor(t, "render from the cache", fileIs(e.path("a"), "a=1"))
	// The agent's stderr is read as it comes: the line logged before the render may be read
	// after the file is seen.
	waitFor(t, "a log line saying the cache was used", func() bool { return strings.Contains(ag2.logs.String(), "rendering from cache") })
	srv2 := startServer(t, srv.addr, data)
	srv2.put("appliances/web/a", "2")
	waitFor(t, "render once the server is up", fileIs(e.path("a"), "a=2"))
}

// A template source edited on disk is re-rendered without a restart.
func TestE2E_RunTemplateSourceEdited(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/a", "1")
	srcDir := t.TempDir()
	src := filepath.Join(srcDir, "a.tmpl")
	os.WriteFile(src, []byte(`v1 {{ key "a" }}`), 0o644)
	e := newEnv(t, srv, "", "  - source: "+src+"\n    destination: $DIR/a\n    command: echo x >> $DIR/commands\n")
	e.startAgent()
	waitFor(t, "first render", fileIs(e.path("a"), "v1 1"))
	// An editor's save: write a new file and rename it over the source.
	os.WriteFile(src+".swp", []byte(`v2 {{ key "a" }}`), 0o644)
	os.Rename(src+".swp", src)
	waitFor(t, "render of the edited source", fileIs(e.path("a"), "v2 1"))
	waitFor(t, "its command", func() bool { return len(commandLines(t, e.path("commands"))) == 2 })
}

// The store is replaced under a running agent (a new store id, revisions starting over):
// the agent re-reads and re-renders everything.
func TestE2E_RunStoreReplaced(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	for i := 0; i < 20; i++ { // push the first store's revision above the second's
		srv.put("appliances/web/a", fmt.Sprint(i))
	}
	srv.put("appliances/web/b", "1")
	e := newEnv(t, srv, "", `  - contents: "a={{ key \"a\" }}"
    destination: $DIR/a
  - contents: "b={{ key \"b\" }}"
    destination: $DIR/b
`)
	ag := e.startAgent()
	waitFor(t, "first render", fileIs(e.path("b"), "b=1"))
	os.WriteFile(e.path("b"), []byte("hand edit"), 0o644)

	srv.kill()
	srv2 := startServer(t, srv.addr, t.TempDir()) // a fresh store on the same address
	if srv2.token != "" && srv2.token != srv.token {
		e.write(srv2, "", `  - contents: "a={{ key \"a\" }}"
    destination: $DIR/a
  - contents: "b={{ key \"b\" }}"
    destination: $DIR/b
`)
		ag.cmd.Process.Signal(syscall.SIGHUP)
	}
	srv2.put("appliances/web/b", "1")
	srv2.put("appliances/web/a", "new")
	waitFor(t, "a from the new store", fileIs(e.path("a"), "a=new"))
	waitFor(t, "b re-rendered in full", fileIs(e.path("b"), "b=1"))
	waitFor(t, "a log of the store change", func() bool { return strings.Contains(ag.logs.String(), "store changed") })
}

// A reader that keeps reading a destination while 1,000 changes are rendered never sees a
// partial file. It also logs how fast a write reaches the file.
func TestE2E_ReaderNeverSeesPartialFile(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000 changes: skipped with -short")
	}
	srv := startServer(t, "", t.TempDir())
	body := func(i int) string { return strings.Repeat(fmt.Sprintf("%06d", i), 100+i%300) }
	srv.put("appliances/web/v", body(0))
	e := newEnv(t, srv, "", "  - contents: \"begin\\n{{ key \\\"v\\\" }}\\nend\\n\"\n    destination: $DIR/out.conf\n")
	e.startAgent()
	dst := e.path("out.conf")
	want := func(i int) string { return "begin\n" + body(i) + "\nend\n" }
	waitFor(t, "first render", fileIs(dst, want(0)))

	var stop atomic.Bool
	var reads, bad atomic.Int64
	var firstBad atomic.Value
	done := make(chan struct{})
	go func() {
		defer close(done)
		for !stop.Load() {
			b, err := os.ReadFile(dst)
			if err != nil {
				bad.Add(1)
				firstBad.CompareAndSwap(nil, err.Error())
				continue
			}
			reads.Add(1)
			s := string(b)
			var n int
			if len(s) < 12 || !strings.HasPrefix(s, "begin\n") {
				bad.Add(1)
				firstBad.CompareAndSwap(nil, fmt.Sprintf("torn read: %d bytes", len(s)))
				continue
			}
			fmt.Sscanf(s[6:12], "%06d", &n)
			if s != want(n) {
				bad.Add(1)
				firstBad.CompareAndSwap(nil, fmt.Sprintf("torn read of version %d: %d bytes", n, len(s)))
			}
		}
	}()
	var lat []time.Duration
	for i := 1; i <= 1000; i++ {
		start := time.Now()
		srv.put("appliances/web/v", body(i))
		if i%5 == 0 { // every fifth change: wait for it, to measure write → file
			waitFor(t, fmt.Sprintf("version %d", i), fileIs(dst, want(i)))
			lat = append(lat, time.Since(start))
		}
	}
	waitFor(t, "the last version", fileIs(dst, want(1000)))
	stop.Store(true)
	<-done
	if bad.Load() != 0 {
		t.Fatalf("%d bad reads of %d; first: %v", bad.Load(), reads.Load(), firstBad.Load())
	}
	if reads.Load() < 100 {
		t.Fatalf("only %d reads: the reader did not overlap the writes", reads.Load())
	}
	assertNoTempFiles(t, e.dir)
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	t.Logf("%d reads, none partial; put → rendered file: p50 %s, p99 %s (n=%d, polling the file every 5ms adds up to 5ms)",
		reads.Load(), lat[len(lat)/2], lat[len(lat)*99/100], len(lat))
}

// TestE2E_WriteToFileLatency measures how long a write takes to reach the rendered file
// (put sent → file holds the value), one change at a time. It asserts only correctness;
// the numbers are logged (go test -v -run Latency) to compare with confd -watch.
// Under systemd (Type=notify) the agent reports READY after its first render, RELOADING and
// READY around a SIGHUP reload, and STOPPING on SIGTERM.
func TestE2E_RunNotifiesSystemd(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/a", "1")
	e := newEnv(t, srv, "", "  - contents: \"a={{ key \\\"a\\\" }}\"\n    destination: $DIR/a\n")
	sock := filepath.Join(e.dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var mu sync.Mutex
	var got []string
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				return
			}
			mu.Lock()
			got = append(got, string(buf[:n]))
			mu.Unlock()
		}
	}()
	messages := func() string { mu.Lock(); defer mu.Unlock(); return strings.Join(got, "|") }
	e.agentEnv = []string{"NOTIFY_SOCKET=" + sock}
	ag := e.startAgent()
	waitFor(t, "READY=1", func() bool { return strings.Contains(messages(), "READY=1") })
	if _, err := os.Stat(e.path("a")); err != nil {
		t.Fatal("READY was sent before the first render")
	}
	ag.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, "RELOADING=1 then READY=1", func() bool {
		m := messages()
		i := strings.Index(m, "RELOADING=1")
		return i >= 0 && strings.Contains(m[i:], "READY=1")
	})
	ag.stop(t)
	waitFor(t, "STOPPING=1", func() bool { return strings.Contains(messages(), "STOPPING=1") })
}

// A graceful restart (SIGTERM: open long-polls are answered, then the server exits) is an
// outage like any other to the agent.
func TestE2E_RunServerGracefulRestart(t *testing.T) {
	data := t.TempDir()
	srv := startServer(t, "", data)
	srv.put("appliances/web/a", "1")
	e := newEnv(t, srv, "", "  - contents: \"a={{ key \\\"a\\\" }}\"\n    destination: $DIR/a\n")
	e.startAgent()
	waitFor(t, "first render", fileIs(e.path("a"), "a=1"))
	srv.cmd.Process.Signal(syscall.SIGTERM)
	if err := srv.cmd.Wait(); err != nil {
		t.Fatalf("server exit after SIGTERM: %v\n%s", err, srv.log.String())
	}
	if got := readFile(t, e.path("a")); got != "a=1" {
		t.Fatalf("file changed during the restart: %q", got)
	}
	srv2 := startServer(t, srv.addr, data)
	srv2.put("appliances/web/a", "2")
	waitFor(t, "render after the restart", fileIs(e.path("a"), "a=2"))
}

// TestE2E_OnceFetchFailureInStatus: once records its result for status, but a once that could
// not fetch the view (the server away) recorded nothing, so that status still showed the last
// success, without an error, after the bake step had failed. Now status shows the failure as
// the last error, with the files and revision of the last record, which are still in place.
func TestE2E_OnceFetchFailureInStatus(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/conf", "v1")
	e := newEnv(t, srv, "", "  - contents: \"{{ key \\\"conf\\\" }}\"\n    destination: $DIR/a.conf\n")
	type status struct {
		Agent *struct {
			Revision  int64  `json:"revision"`
			Applied   int64  `json:"applied"`
			LastError string `json:"last_error"`
			Templates []struct {
				InPlace bool `json:"in_place"`
			} `json:"templates"`
		} `json:"agent"`
	}
	readStatus := func() status {
		t.Helper()
		var st status
		code, stdout, stderr := e.agentCmd("status", "--json")
		if err := json.Unmarshal([]byte(stdout), &st); err != nil || st.Agent == nil {
			t.Fatalf("status --json: exit %d, %v: %s %s", code, err, stdout, stderr)
		}
		return st
	}
	if code, _, stderr := e.agentCmd("once"); code != 0 {
		t.Fatalf("once: exit %d: %s", code, stderr)
	}
	before := readStatus()
	if before.Agent.Applied == 0 || before.Agent.LastError != "" {
		t.Fatalf("status after once: %+v", *before.Agent)
	}
	srv.kill()
	code, _, stderr := e.agentCmd("once")
	if code == 0 || !strings.Contains(stderr, "fetch view of web") {
		t.Fatalf("once with the server away: exit %d: %s", code, stderr)
	}
	after := readStatus()
	if a := after.Agent; !strings.Contains(a.LastError, "fetch view of web") || a.Revision != before.Agent.Revision ||
		a.Applied != before.Agent.Applied || len(a.Templates) != 1 || !a.Templates[0].InPlace {
		t.Errorf("status after a once that could not fetch: %+v", *a)
	}
	if code, stdout, _ := e.agentCmd("status"); !strings.Contains(stdout, "last error: fetch view of web") {
		t.Errorf("status: exit %d:\n%s", code, stdout)
	}
	if readFile(t, e.path("a.conf")) != "v1" {
		t.Error("the file changed")
	}
}

// TestE2E_RunServerDownNoCacheInStatus: a run started with the server away and no cached view
// recorded nothing, so that `status` said "the agent has not run (run or once) with this
// config" about an agent that was running and failing. Now status shows the failed first sync
// as its last error, every template not in place.
func TestE2E_RunServerDownNoCacheInStatus(t *testing.T) {
	e := newEnv(t, &server{addr: freePort(t)}, "", "  - contents: x\n    destination: $DIR/x\n")
	ag := e.startAgent()
	waitFor(t, "the first sync to fail", func() bool { return strings.Contains(ag.logs.String(), "no cached view to render from") })
	var out string
	waitFor(t, "status to show the failure", func() bool {
		_, out, _ = e.agentCmd("status")
		return strings.Contains(out, "last error: fetch view of web")
	})
	if !strings.Contains(out, "instance vm-e2e: no view yet") || !strings.Contains(out, e.path("x")+": NOT in place: no view to render it from yet") ||
		strings.Contains(out, "has not run") {
		t.Errorf("status:\n%s", out)
	}
	ag.stop(t)
	if _, err := os.Stat(e.path("x")); !os.IsNotExist(err) {
		t.Errorf("a file was written without a view: %v", err)
	}
}

// TestE2E_OnceInterruptedReloadsWhatItInstalled: Ctrl-C (SIGINT) while once runs a reload command
// lets that command finish (the file is already in place: a service must not be left on the
// old config with the new file) and once exits as its files say (0: every one in place).
func TestE2E_OnceInterruptedReloadsWhatItInstalled(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/port", "8080")
	e := newEnv(t, srv, "", `  - contents: "port {{ key \"port\" }}\n"
    destination: $DIR/port.conf
    command: touch $DIR/reloading; sleep 2; echo done > $DIR/reloaded
`)
	cmd := exec.Command(filepath.Join(binDir, "shoelace-agent"), "once", "--config", e.config)
	logs := &syncBuf{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the reload command to start", func() bool { _, err := os.Stat(e.path("reloading")); return err == nil })
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	if err != nil {
		t.Fatalf("once interrupted while every file was in place: %v\n%s", err, logs.String())
	}
	if got := readFile(t, e.path("reloaded")); got != "done\n" {
		t.Errorf("the reload command started before the interrupt wrote %q, want it to have finished", got)
	}
	if !strings.Contains(logs.String(), "interrupted: no more templates are rendered; the files already installed still get their reload commands") {
		t.Errorf("once did not say what an interrupt does while a reload runs:\n%s", logs.String())
	}
	if got := readFile(t, e.path("port.conf")); got != "port 8080\n" {
		t.Errorf("port.conf holds %q", got)
	}
}
