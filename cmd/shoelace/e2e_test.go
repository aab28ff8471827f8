package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/client"
	"github.com/shoelace-dev/shoelace/internal/testbin"
)

// The end-to-end tests build the shoelace binary once, start "shoelace server" as a child
// process on an embedded etcd, and run the CLI against it as a user would.

// e2eVersion is stamped into the test binary with -ldflags -X main.version.
const e2eVersion = "v0.0.0-e2e"

var binPath string

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "shoelace-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	bins, err := testbin.Build(dir, []string{"-ldflags", "-X main.version=" + e2eVersion}, "./cmd/shoelace")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	binPath = bins[0]
	code := m.Run()
	stopSharedServer()
	return code
}

// testServer is a "shoelace server" child process.
type testServer struct {
	addr    string
	dataDir string
	cmd     *exec.Cmd
	stderr  *syncBuffer
	done    chan error
}

// syncBuffer collects a child's (or a logger's) output while the test reads it.
type syncBuffer = testbin.Buffer

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// startServer starts a server with its own data dir and waits for /health. extraEnv and
// extraArgs are added to the child's environment and command line.
func startServer(dataDir string, extraEnv []string, extraArgs ...string) (*testServer, error) {
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ { // a free port may be taken before the child binds it
		addr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		s := &testServer{addr: addr, dataDir: dataDir, stderr: &syncBuffer{}, done: make(chan error, 1)}
		args := append([]string{"server", "--listen", addr, "--data-dir", dataDir, "--log-level", "warn"}, extraArgs...)
		s.cmd = exec.Command(binPath, args...)
		s.cmd.Env = append(cleanEnv(), extraEnv...)
		s.cmd.Stdout = s.stderr
		s.cmd.Stderr = s.stderr
		if err := s.cmd.Start(); err != nil {
			return nil, err
		}
		go func() { s.done <- s.cmd.Wait() }()
		if lastErr = s.waitHealthy(60 * time.Second); lastErr == nil {
			return s, nil
		}
		s.stop()
	}
	return nil, lastErr
}

func (s *testServer) url() string { return "http://" + s.addr }

func (s *testServer) waitHealthy(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	hc := &http.Client{Timeout: 2 * time.Second}
	for time.Now().Before(deadline) {
		select {
		case err := <-s.done:
			s.done <- err
			return fmt.Errorf("server exited before it was healthy (%v): %s", err, s.stderr.String())
		default:
		}
		resp, err := hc.Get(s.url() + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("server not healthy after %s: %s", timeout, s.stderr.String())
}

// stop sends SIGTERM and waits for the process; it kills it after 15 s.
func (s *testServer) stop() error {
	if s.cmd.Process == nil {
		return nil
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.done:
		s.done <- err
		return err
	case <-time.After(15 * time.Second):
		_ = s.cmd.Process.Kill()
		err := <-s.done
		s.done <- err
		return fmt.Errorf("server did not stop within 15s of SIGTERM: %v", err)
	}
}

// adminTokenFile is the server's admin token file, "" if the server wrote none.
func (s *testServer) adminTokenFile() string {
	p := filepath.Join(s.dataDir, "admin.token")
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

var (
	sharedOnce sync.Once
	shared     *testServer
	sharedErr  error
	sharedDir  string
)

// sharedServer is one server for the tests that only need distinct keys.
func sharedServer(t *testing.T) *testServer {
	t.Helper()
	sharedOnce.Do(func() {
		sharedDir, sharedErr = os.MkdirTemp("", "shoelace-e2e-data-")
		if sharedErr == nil {
			shared, sharedErr = startServer(sharedDir, nil)
		}
	})
	if sharedErr != nil {
		t.Fatalf("start server: %v", sharedErr)
	}
	return shared
}

func stopSharedServer() {
	if shared != nil {
		if err := shared.stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stop shared server:", err)
		}
	}
	if sharedDir != "" {
		os.RemoveAll(sharedDir)
	}
}

// cleanEnv is the test process's environment without SHOELACE_ variables.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SHOELACE_") {
			env = append(env, kv)
		}
	}
	return env
}

// result is what one CLI run did.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
}

// runner runs the binary against a server.
type runner struct {
	t   *testing.T
	env []string
}

// newCLI returns a runner with SHOELACE_ADDR (and the admin token file, once the server
// writes one) set for s.
func newCLI(t *testing.T, s *testServer) *runner {
	env := []string{"SHOELACE_ADDR=" + s.url()}
	if f := s.adminTokenFile(); f != "" {
		env = append(env, "SHOELACE_TOKEN_FILE="+f)
	}
	return &runner{t: t, env: env}
}

func (c *runner) with(env ...string) *runner {
	return &runner{t: c.t, env: append(append([]string(nil), c.env...), env...)}
}

func (c *runner) run(args ...string) result { return c.runStdin(nil, args...) }

func (c *runner) runStdin(stdin []byte, args ...string) result {
	c.t.Helper()
	// No CLI run may hang the suite: each gets a generous deadline.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, args...)
	cmd.Env = append(cleanEnv(), c.env...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case ctx.Err() != nil:
		c.t.Fatalf("shoelace %q did not finish within 2 minutes: %s", args, r)
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		c.t.Fatalf("run shoelace %q: %v", args, err)
	}
	return r
}

// ok runs args and fails the test unless it exits 0 with nothing on stderr.
func (c *runner) ok(args ...string) string {
	c.t.Helper()
	r := c.run(args...)
	if r.code != 0 {
		c.t.Fatalf("shoelace %s: %s", strings.Join(args, " "), r)
	}
	return r.stdout
}

// fails runs args and checks the exit code and that stderr is one "shoelace: …" line holding want.
func (c *runner) fails(code int, want string, args ...string) result {
	c.t.Helper()
	r := c.run(args...)
	checkFailure(c.t, r, code, want, args)
	return r
}

func checkFailure(t *testing.T, r result, code int, want string, args []string) {
	t.Helper()
	if r.code != code {
		t.Errorf("shoelace %s: %s; want exit %d", strings.Join(args, " "), r, code)
	}
	if !strings.HasPrefix(r.stderr, "shoelace: ") || strings.Count(r.stderr, "\n") != 1 || !strings.HasSuffix(r.stderr, "\n") {
		t.Errorf("shoelace %s: stderr %q is not one \"shoelace: …\" line", strings.Join(args, " "), r.stderr)
	}
	if !strings.Contains(r.stderr, want) {
		t.Errorf("shoelace %s: stderr %q does not say %q", strings.Join(args, " "), r.stderr, want)
	}
}

func revisionOf(t *testing.T, stdout string) int64 {
	t.Helper()
	s, ok := strings.CutPrefix(stdout, "revision ")
	if !ok || !strings.HasSuffix(s, "\n") {
		t.Fatalf("write printed %q, want \"revision N\\n\"", stdout)
	}
	rev, err := strconv.ParseInt(strings.TrimSuffix(s, "\n"), 10, 64)
	if err != nil || rev <= 0 {
		t.Fatalf("write printed %q: %v", stdout, err)
	}
	return rev
}

func TestE2E_KV(t *testing.T) {
	c := newCLI(t, sharedServer(t))

	rev1 := revisionOf(t, c.ok("kv", "put", "e2ekv/app/port", "8080"))
	rev2 := revisionOf(t, c.ok("kv", "put", "e2ekv/app/host", "example.org"))
	if rev2 <= rev1 {
		t.Errorf("second write at revision %d, not after %d", rev2, rev1)
	}
	c.ok("kv", "put", "e2ekv/app-other/port", "9090")
	if got := c.ok("kv", "get", "e2ekv/app/port"); got != "8080" {
		t.Errorf("kv get = %q, want 8080 with no newline added", got)
	}

	// Listings cover whole segments only.
	if got := c.ok("kv", "ls", "e2ekv/app"); got != "e2ekv/app/host\ne2ekv/app/port\n" {
		t.Errorf("kv ls e2ekv/app = %q", got)
	}
	if got := c.ok("kv", "ls", "e2ekv/"); got != "e2ekv/app-other/port\ne2ekv/app/host\ne2ekv/app/port\n" &&
		got != "e2ekv/app/host\ne2ekv/app/port\ne2ekv/app-other/port\n" {
		t.Errorf("kv ls e2ekv/ = %q", got)
	}
	var list struct {
		Revision int64 `json:"revision"`
		Entries  []struct {
			Key, Value  string
			ModRevision int64 `json:"mod_revision"`
		} `json:"entries"`
	}
	if err := json.Unmarshal([]byte(c.ok("kv", "ls", "e2ekv/app", "--output", "json")), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Entries) != 2 || list.Entries[1].Key != "e2ekv/app/port" || list.Entries[1].Value != "8080" ||
		list.Entries[1].ModRevision != rev1 || list.Revision < rev2 {
		t.Errorf("kv ls -o json = %+v", list)
	}

	// rm deletes exactly one key; rm --recurse a subtree, and not its namesakes.
	revisionOf(t, c.ok("kv", "rm", "e2ekv/app/host"))
	c.fails(exitNotFound, `"e2ekv/app/host" not found`, "kv", "get", "e2ekv/app/host")
	c.fails(exitNotFound, "not found", "kv", "rm", "e2ekv/app/host")
	r := c.run("kv", "rm", "e2ekv/app", "--recurse")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "revision ") || r.stderr != "deleted 1 key\n" {
		t.Errorf("kv rm --recurse: %s", r)
	}
	c.fails(exitNotFound, "not found", "kv", "get", "e2ekv/app/port")
	if got := c.ok("kv", "get", "e2ekv/app-other/port"); got != "9090" {
		t.Errorf("kv rm --recurse e2ekv/app removed its namesake e2ekv/app-other: got %q", got)
	}
	// An empty listing is still {"revision","entries":[]} in JSON, and nothing in text.
	if got := c.ok("kv", "ls", "e2ekv/app", "-o", "json"); !strings.HasPrefix(got, `{"revision":`) || !strings.HasSuffix(got, `,"entries":[]}`+"\n") {
		t.Errorf("kv ls of an empty prefix -o json = %q, want {\"revision\":N,\"entries\":[]}", got)
	}
	if got := c.ok("kv", "ls", "e2ekv/app"); got != "" {
		t.Errorf("kv ls of an empty prefix = %q, want nothing", got)
	}
}

func TestE2E_CASConflict(t *testing.T) {
	c := newCLI(t, sharedServer(t))
	t.Cleanup(func() { c.run("kv", "rm", "e2ecas", "--recurse") }) // so that -count=N runs again
	rev := revisionOf(t, c.ok("kv", "put", "e2ecas/k", "one", "--cas", "0"))
	c.fails(exitConflict, `conflict on key "e2ecas/k"`, "kv", "put", "e2ecas/k", "two", "--cas", "0")
	c.fails(exitConflict, "conflict", "kv", "put", "e2ecas/k", "two", "--cas", strconv.FormatInt(rev-1, 10))
	if got := c.ok("kv", "get", "e2ecas/k"); got != "one" {
		t.Fatalf("a refused cas write changed the value to %q", got)
	}
	revisionOf(t, c.ok("kv", "put", "e2ecas/k", "two", "--cas", strconv.FormatInt(rev, 10)))
	if got := c.ok("kv", "get", "e2ecas/k"); got != "two" {
		t.Fatalf("cas write with the right revision: value %q, want two", got)
	}
}

func TestE2E_StdinVerbatim(t *testing.T) {
	c := newCLI(t, sharedServer(t))
	values := map[string][]byte{
		"e2estdin/text":     []byte("héllo wörld ✓\n"),
		"e2estdin/newlines": []byte("\n\nline\r\nlast line\n\n"),
		"e2estdin/control":  []byte("nul\x00tab\tbell\x07 \U0001F600"),
		"e2estdin/empty":    {},
		"e2estdin/json":     []byte(`{"a": "<b>&amp;</b>"}` + "\n"),
	}
	for key, value := range values {
		r := c.runStdin(value, "kv", "put", key, "-")
		if r.code != 0 {
			t.Fatalf("put %s from stdin: %s", key, r)
		}
		if got := c.ok("kv", "get", key); got != string(value) {
			t.Errorf("%s: got back %q, want %q", key, got, value)
		}
	}
	// Not UTF-8: the server refuses it, says why, and nothing is written.
	r := c.runStdin([]byte{0xff, 0xfe, 'x'}, "kv", "put", "e2estdin/binary", "-")
	checkFailure(t, r, exitError, "not valid UTF-8", []string{"kv", "put", "e2estdin/binary", "-"})
	c.fails(exitNotFound, "not found", "kv", "get", "e2estdin/binary")
}

func TestE2E_ApplyAndView(t *testing.T) {
	c := newCLI(t, sharedServer(t))
	dir := t.TempDir()
	c.ok("kv", "put", "shared/e2eview/ntp", "pool.ntp.org")
	c.ok("kv", "put", "shared/e2eview/dns", "1.1.1.1")
	yamlFile := filepath.Join(dir, "web.yaml")
	writeFile(t, yamlFile, `# the web appliance
keys:
  e2eview:
    ntp: time.example.org
  port: 8080
  enabled: true
  motd: |
    hello
    world
`)
	rev := revisionOf(t, c.ok("appliance", "apply", "e2e-web", "-f", yamlFile))

	var view struct {
		Appliance string            `json:"appliance"`
		Revision  int64             `json:"revision"`
		Keys      map[string]string `json:"keys"`
	}
	if err := json.Unmarshal([]byte(c.ok("appliance", "get", "e2e-web", "-o", "json")), &view); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"e2eview/ntp": "time.example.org", // the appliance's value wins over shared/
		"e2eview/dns": "1.1.1.1",          // shared/ shows through
		"port":        "8080",             // scalars keep their text
		"enabled":     "true",
		"motd":        "hello\nworld\n",
	}
	if view.Appliance != "e2e-web" || view.Revision < rev {
		t.Errorf("view %q at %d, want e2e-web at >= %d", view.Appliance, view.Revision, rev)
	}
	for k, v := range want {
		if view.Keys[k] != v {
			t.Errorf("view[%q] = %q, want %q", k, view.Keys[k], v)
		}
	}

	text := c.ok("appliance", "get", "e2e-web")
	for _, line := range []string{"e2eview/ntp=time.example.org\n", "e2eview/dns=1.1.1.1\n", "port=8080\n", `motd="hello\nworld\n"` + "\n"} {
		if !strings.Contains(text, line) {
			t.Errorf("appliance get text %q lacks %q", text, line)
		}
	}
	if got := c.ok("appliance", "ls"); !strings.Contains("\n"+got, "\ne2e-web\n") {
		t.Errorf("appliance ls = %q, want e2e-web listed", got)
	}

	// Apply replaces the whole tree: a key left out of the file is gone. JSON from stdin.
	r := c.runStdin([]byte(`{"keys":{"port":"9090"}}`), "appliance", "apply", "e2e-web", "-f", "-")
	if r.code != 0 {
		t.Fatalf("apply from stdin: %s", r)
	}
	c.fails(exitNotFound, "not found", "kv", "get", "appliances/e2e-web/motd")
	if got := c.ok("kv", "get", "appliances/e2e-web/port"); got != "9090" {
		t.Errorf("port after apply = %q", got)
	}

	// --cas: a stale revision is a conflict and writes nothing.
	c.fails(exitConflict, "conflict", "appliance", "apply", "e2e-web", "-f", yamlFile, "--cas", strconv.FormatInt(rev, 10))
	if got := c.ok("kv", "get", "appliances/e2e-web/port"); got != "9090" {
		t.Errorf("a refused apply changed port to %q", got)
	}

	// A bad body: the server's message is shown, nothing is written.
	bad := filepath.Join(dir, "bad.yaml")
	writeFile(t, bad, "keys:\n  port: null\n")
	r = c.run("appliance", "apply", "e2e-web", "-f", bad)
	if r.code != exitError || !strings.Contains(r.stderr, "null") {
		t.Errorf("apply with a null: %s; want exit 1 naming the null", r)
	}
	c.fails(exitNotFound, "appliance", "appliance", "get", "e2e-nothing")
	c.fails(exitError, "apply e2e-web: open "+filepath.Join(dir, "missing.yaml")+": no such file", "appliance", "apply", "e2e-web", "-f", filepath.Join(dir, "missing.yaml"))
	c.fails(exitError, "apply e2e-web: read "+dir+": is a directory", "appliance", "apply", "e2e-web", "-f", dir)
}

func TestE2E_ExportApplyRoundTrip(t *testing.T) {
	c := newCLI(t, sharedServer(t))
	dir := t.TempDir()
	src := filepath.Join(dir, "src.json")
	keys := map[string]string{
		"port":             "8080",
		"motd":             "line 1\nline 2\n",
		"quoted":           `"x" <y> & z`,
		"nested/deep/key":  "v",
		"secrets/db":       "hunter2",
		"tls/secrets/key":  "PRIVATE KEY",
		"numberish":        "007",
		"empty":            "",
		"trailing-space/x": "x ",
	}
	body, _ := json.Marshal(map[string]any{"keys": keys})
	writeFile(t, src, string(body))
	c.ok("appliance", "apply", "e2e-exp", "-f", src)

	// Without --include-secrets: secrets are left out, and stderr says which.
	r := c.run("appliance", "export", "e2e-exp")
	if r.code != 0 {
		t.Fatalf("export: %s", r)
	}
	if strings.Contains(r.stdout, "hunter2") || strings.Contains(r.stdout, "PRIVATE KEY") {
		t.Errorf("export without --include-secrets printed a secret: %s", r.stdout)
	}
	if !strings.Contains(r.stderr, "left out 2 secret keys") || !strings.Contains(r.stderr, "secrets/db") || !strings.Contains(r.stderr, "tls/secrets/key") {
		t.Errorf("export stderr %q does not list the secrets left out", r.stderr)
	}
	if strings.Contains(r.stderr, "hunter2") {
		t.Errorf("export stderr shows a secret value: %q", r.stderr)
	}

	for _, format := range []string{"json", "yaml"} {
		t.Run(format, func(t *testing.T) {
			r := c.run("appliance", "export", "e2e-exp", "--include-secrets", "--format", format)
			if r.code != 0 || !strings.Contains(r.stderr, "included 2 secret keys") {
				t.Fatalf("export --include-secrets: %s", r)
			}
			file := filepath.Join(dir, "export."+format)
			writeFile(t, file, r.stdout)
			target := "e2e-exp-" + format
			c.ok("appliance", "apply", target, "-f", file)
			again := c.run("appliance", "export", target, "--include-secrets", "--format", format)
			if again.stdout != r.stdout {
				t.Errorf("round trip through %s differs:\n%s\nvs\n%s", format, r.stdout, again.stdout)
			}
			for k, v := range keys {
				if got := c.ok("kv", "get", "appliances/"+target+"/"+k); got != v {
					t.Errorf("%s: %q came back as %q", k, v, got)
				}
			}
		})
	}
	c.fails(exitNotFound, `appliance "e2e-none" has no keys`, "appliance", "export", "e2e-none")
}

func TestE2E_OutputJSON(t *testing.T) {
	c := newCLI(t, sharedServer(t))
	var w struct {
		Revision int64 `json:"revision"`
	}
	out := c.ok("kv", "put", "e2ejson/k", "v<&>", "--output", "json")
	if err := json.Unmarshal([]byte(out), &w); err != nil || w.Revision <= 0 || out != fmt.Sprintf(`{"revision":%d}`+"\n", w.Revision) {
		t.Fatalf("put -o json printed %q", out)
	}
	var kv struct {
		Key         string `json:"key"`
		Value       string `json:"value"`
		ModRevision int64  `json:"mod_revision"`
		Version     int64  `json:"version"`
	}
	out = c.with("SHOELACE_OUTPUT=json").ok("kv", "get", "e2ejson/k")
	if err := json.Unmarshal([]byte(out), &kv); err != nil {
		t.Fatalf("get with SHOELACE_OUTPUT=json printed %q: %v", out, err)
	}
	if kv.Key != "e2ejson/k" || kv.Value != "v<&>" || kv.ModRevision != w.Revision || kv.Version != 1 {
		t.Errorf("get -o json = %+v", kv)
	}
	out = c.ok("kv", "rm", "e2ejson/k", "-o", "json")
	var d struct {
		Revision int64 `json:"revision"`
		Deleted  int64 `json:"deleted"`
	}
	if err := json.Unmarshal([]byte(out), &d); err != nil || d.Deleted != 1 || d.Revision <= w.Revision {
		t.Errorf("rm -o json printed %q", out)
	}
	c.fails(exitUsage, `--output "xml": must be text or json`, "kv", "get", "e2ejson/k", "-o", "xml")
}

func TestE2E_FlagsAfterPositionals(t *testing.T) {
	s := sharedServer(t)
	dead, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	// SHOELACE_ADDR points nowhere: only --addr after the positionals reaches the server.
	c := newCLI(t, s).with("SHOELACE_ADDR=http://" + dead)
	t.Cleanup(func() { c.run("kv", "rm", "e2eflags", "--recurse", "--addr", s.url()) })
	out := c.ok("kv", "put", "e2eflags/k", "v1", "--addr", s.url(), "--cas", "0", "--message", "e2e test", "--source", "pipeline-1")
	rev := revisionOf(t, out)
	if got := c.ok("kv", "get", "e2eflags/k", "--addr", s.url()); got != "v1" {
		t.Errorf("get with --addr after the key = %q", got)
	}
	c.ok("kv", "--addr", s.url(), "put", "e2eflags/k", "v2", "--cas", strconv.FormatInt(rev, 10))
	if got := c.ok("kv", "get", "--addr="+s.url(), "e2eflags/k", "--output", "json"); !strings.Contains(got, `"value":"v2"`) {
		t.Errorf("get --addr= … --output json = %q", got)
	}
	// "--" ends the flags: a value that looks like a flag is stored as is.
	c.ok("kv", "put", "--addr", s.url(), "e2eflags/dash", "--", "--not-a-flag")
	if got := c.ok("kv", "get", "e2eflags/dash", "--addr", s.url()); got != "--not-a-flag" {
		t.Errorf("value after -- = %q", got)
	}
	// Without --addr, the dead SHOELACE_ADDR is used: the flag really was what worked.
	c.fails(exitUnavailable, "cannot reach the server", "kv", "get", "e2eflags/k")
}

func TestE2E_ExitCodes(t *testing.T) {
	s := sharedServer(t)
	c := newCLI(t, s)
	c.fails(exitNotFound, `key "e2eexit/missing" not found`, "kv", "get", "e2eexit/missing")
	// The server's 400 message names the rule that was broken.
	c.fails(exitError, `only letters, digits, '.', '_' and '-' are allowed`, "kv", "put", "e2eexit/bad key", "v")
	c.fails(exitError, `segment 2 "été" has 'é', which is not ASCII`, "kv", "put", "e2eexit/été", "v")
	c.fails(exitError, "longer than 128 bytes", "kv", "get", "e2eexit/"+strings.Repeat("x", 129))
	c.fails(exitError, "segment 2 is empty", "kv", "get", "e2eexit//x")
	big := bytes.Repeat([]byte("x"), 1<<20+1)
	r := c.runStdin(big, "kv", "put", "e2eexit/big", "-")
	checkFailure(t, r, exitError, "over the limit of 1048576 bytes", []string{"kv", "put", "e2eexit/big", "-"})
	c.fails(exitNotFound, "not found", "kv", "get", "e2eexit/big")

	c.fails(exitUsage, `unknown command "frob"`, "frob")
	c.fails(exitUsage, `kv: unknown command "fetch"`, "kv", "fetch", "x")
	c.fails(exitUsage, "flag provided but not defined: -bogus", "kv", "get", "x", "--bogus")
	c.fails(exitUsage, "missing argument", "kv", "put", "x")
	// A negative number is taken for a flag: the message shows where it goes.
	c.fails(exitUsage, `goes after "--": shoelace kv put KEY -- -5`, "kv", "put", "e2eexit/offset", "-5")

	dead, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	c.fails(exitUnavailable, "cannot reach the server", "kv", "get", "x", "--addr", "http://"+dead)
	c.fails(exitUnavailable, "connection refused", "appliance", "ls", "--addr", dead)

	// An --addr that reaches the server on a wrong path, or reaches another service, is a wrong
	// address (exit 1, and the message says so), never "not found" (exit 3) for the key.
	c.fails(exitError, "check --addr", "kv", "get", "e2eexit/missing", "--addr", s.url()+"/v1")
	other := httptest.NewServer(http.NotFoundHandler())
	defer other.Close()
	r = c.fails(exitError, "is not answering as a Shoelace server", "kv", "get", "e2eexit/missing", "--addr", other.URL)
	if !strings.Contains(r.stderr, other.URL) {
		t.Errorf("wrong --addr: stderr %q does not name the address", r.stderr)
	}
	forbidden := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "go away", http.StatusForbidden)
	}))
	defer forbidden.Close()
	c.fails(exitError, "check --addr", "kv", "put", "e2eexit/x", "1", "--addr", forbidden.URL)
	c.fails(exitError, "check --addr", "health", "--addr", s.url()+"/v1")
	c.fails(exitError, "check --addr", "health", "--addr", other.URL)
	c.fails(exitError, "check --addr", "health", "--addr", forbidden.URL)
	// Another service's 200 in JSON: health passed it, exit 0, with the other body under -o json.
	for _, body := range []string{`{"status":"UP"}`, `{"hello":"world"}`, `{"status":"ok"}`, `[]`, `"ok"`} {
		json200 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, body)
		}))
		for _, args := range [][]string{{"health", "--addr", json200.URL}, {"health", "-o", "json", "--addr", json200.URL}} {
			if r := c.fails(exitError, "is not answering as a Shoelace server (GET /health answered 200 with", args...); r.stdout != "" {
				t.Errorf("%v against %s: stdout %q", args, body, r.stdout)
			}
		}
		json200.Close()
	}
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "<html>backend down</html>", http.StatusInternalServerError)
	}))
	defer down.Close()
	c.fails(exitUnavailable, "", "health", "--addr", down.URL) // a proxy's error page: unavailable

	// An insecure token file is refused before any request, with the fix in the message.
	tok := filepath.Join(t.TempDir(), "token")
	writeFile(t, tok, "whatever")
	if err := os.Chmod(tok, 0o644); err != nil {
		t.Fatal(err)
	}
	c.with("SHOELACE_TOKEN_FILE="+tok).fails(exitUsage, "chmod 600 "+tok, "kv", "get", "x")
}

// kv rm / --recurse (or //, or "") is refused as the root's recursive delete, as the server
// refuses /v1/kv/%2F?recurse, and nothing is deleted; kv ls / lists the root. Before, the CLI
// judged "/" as a key and said that its segment 1 is empty.
func TestE2E_KvRmOfTheRootSaysItIsTheRoot(t *testing.T) {
	s := sharedServer(t)
	c := newCLI(t, s)
	c.ok("kv", "put", "e2erootrm/a", "1")
	for _, root := range []string{"/", "//", ""} {
		c.fails(exitError, "refusing to delete the root recursively: name a prefix", "kv", "rm", root, "--recurse")
	}
	c.fails(exitError, "segment 1 is empty", "kv", "rm", "/") // without --recurse, a key
	if out := c.ok("kv", "get", "e2erootrm/a"); out != "1" {
		t.Fatalf("kv get after the refused deletes: %q", out)
	}
}

func TestE2E_HealthStatusVersion(t *testing.T) {
	s := sharedServer(t)
	c := newCLI(t, s)
	if got := c.ok("health"); got != "ok\n" {
		t.Errorf("health = %q", got)
	}
	// /health tells no more than a probe needs: the version and the rest are behind a token.
	if got := c.ok("health", "-o", "json"); got != `{"status":"ok","maintenance":false}`+"\n" {
		t.Errorf("health -o json = %q; want only status and maintenance", got)
	}
	// status -o json prints GET /v1/status's answer as it is, as curl gets it (it was wrapped in
	// {"addr","health","deps"}, and .store_id read null).
	var st struct {
		Status  string `json:"status"`
		Version string `json:"version"`
		StoreID string `json:"store_id"`
		Etcd    struct {
			Reachable bool `json:"reachable"`
		} `json:"etcd"`
		Health *json.RawMessage `json:"health"`
	}
	if err := json.Unmarshal([]byte(c.ok("status", "-o", "json")), &st); err != nil || st.Status != "ok" || st.StoreID == "" || !st.Etcd.Reachable || st.Health != nil {
		t.Errorf("status -o json: %+v %v", st, err)
	}
	if st.Version != e2eVersion {
		t.Errorf("server reports version %q, want %q (main.version → server.Config.Version)", st.Version, e2eVersion)
	}
	c.with("SHOELACE_TOKEN_FILE=", "SHOELACE_TOKEN=").fails(exitAuth, "missing token", "status")
	// health needs no token, and an unusable token file does not stop it.
	if got := c.with("SHOELACE_TOKEN_FILE=/nonexistent").ok("health"); got != "ok\n" {
		t.Errorf("health with a missing token file = %q", got)
	}
	dead, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	c.fails(exitUnavailable, "cannot reach the server", "health", "--addr", dead)

	out := c.ok("status")
	for _, want := range []string{"addr: " + s.url() + "\n", "status: ok\n", "etcd.reachable: true\n", "version: " + e2eVersion + "\n", "\nstore_id: ", "\nreplicas seen: "} {
		if !strings.Contains(out, want) {
			t.Errorf("status output %q lacks %q", out, want)
		}
	}
	if got := c.ok("version"); got != "shoelace "+e2eVersion+"\n" {
		t.Errorf("version = %q", got)
	}
	if got := c.ok("version", "-o", "json"); got != `{"version":"`+e2eVersion+`"}`+"\n" {
		t.Errorf("version -o json = %q", got)
	}
}

func TestE2E_ServerFlagsFromEnvAndShutdown(t *testing.T) {
	dir := t.TempDir()
	addr, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	// Every server flag also reads SHOELACE_<FLAG>: here the listen address and the data dir.
	s := &testServer{addr: addr, dataDir: dir, stderr: &syncBuffer{}, done: make(chan error, 1)}
	s.cmd = exec.Command(binPath, "server")
	s.cmd.Env = append(cleanEnv(), "SHOELACE_LISTEN="+addr, "SHOELACE_DATA_DIR="+dir, "SHOELACE_LOG_LEVEL=info",
		"SHOELACE_MAX_VALUE_BYTES=16", "SHOELACE_MAX_CONNS=200", "SHOELACE_MAX_CONNS_PER_ADDR=7", "SHOELACE_UNAUTH_IDLE_TIMEOUT=3s")
	s.cmd.Stdout, s.cmd.Stderr = s.stderr, s.stderr
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.done <- s.cmd.Wait() }()
	if err := s.waitHealthy(60 * time.Second); err != nil {
		s.stop()
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "etcd")); err != nil {
		t.Errorf("embedded etcd not in SHOELACE_DATA_DIR: %v", err)
	}
	c := newCLI(t, s)
	c.ok("kv", "put", "k", "secret-value-16b", "--message", "e2e message", "--source", "pipeline-42")
	c.fails(exitError, "over the limit of 16 bytes", "kv", "put", "k", strings.Repeat("x", 17))

	if err := s.stop(); err != nil {
		t.Errorf("server exit after SIGTERM: %v\n%s", err, s.stderr.String())
	}
	// Logs are JSON lines; the write's audit line carries --message and --source, never the value.
	audited, limits := false, false
	for _, line := range strings.Split(strings.TrimSpace(s.stderr.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("server log line is not JSON: %q", line)
			continue
		}
		if rec["audit"] == true && rec["message"] == "e2e message" && rec["source"] == "pipeline-42" {
			audited = true
		}
		if rec["msg"] == "connection limits" && rec["max_conns"] == 200.0 && rec["max_conns_per_addr"] == 7.0 && rec["unauth_idle_timeout"] == "3s" {
			limits = true
		}
	}
	if !limits {
		t.Errorf("no connection limits line with SHOELACE_MAX_CONNS, _PER_ADDR and SHOELACE_UNAUTH_IDLE_TIMEOUT in the server log:\n%s", s.stderr.String())
	}
	if !audited {
		t.Errorf("no audit line with the write's --message and --source in the server log:\n%s", s.stderr.String())
	}
	if strings.Contains(s.stderr.String(), "secret-value-16b") {
		t.Errorf("the server logged a value")
	}
	c.fails(exitUnavailable, "cannot reach the server", "kv", "get", "k")
}

func TestE2E_ServerBadConfig(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"server", "--listen", "nonsense"}, `--listen "nonsense"`},
		{[]string{"server", "--tls-cert", "c.pem"}, "--tls-cert and --tls-key must be given together"},
		{[]string{"server", "--rate-limit", "-1"}, "--rate-limit"},
		{[]string{"server", "--token-rate-limit", "-1"}, "--token-rate-limit"},
		{[]string{"server", "--max-instances", "0"}, "--max-instances"},
		{[]string{"server", "--instance-stale", "0s"}, "--instance-stale 0s must be > 0"},
		{[]string{"server", "--instance-stale", "90s"}, "--instance-stale 1m30s must be at least 5m0s"},
		{[]string{"server", "--max-long-polls", "0"}, "--max-long-polls"},
		{[]string{"server", "--max-long-polls-per-token", "-1"}, "--max-long-polls-per-token"},
		{[]string{"server", "--max-value-bytes", "0"}, "--max-value-bytes"},
		{[]string{"server", "--max-conns", "-1"}, "--max-conns -1 must be >= 0"},
		{[]string{"server", "--max-conns-per-addr", "-1"}, "--max-conns-per-addr -1 must be >= 0"},
		{[]string{"server", "--unauth-idle-timeout", "-1s"}, "--unauth-idle-timeout -1s must be >= 0"},
		{[]string{"server", "--min-free-disk", "-1"}, "--min-free-disk -1 must be >= 0"},
		{[]string{"server", "--bogus"}, "flag provided but not defined: -bogus"},
	}
	c := &runner{t: t}
	for _, tt := range tests {
		c.fails(exitUsage, tt.want, tt.args...)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestE2E_ExportImport(t *testing.T) {
	c := newCLI(t, sharedServer(t))
	c.ok("kv", "put", "e2eimp/plain", "v1")
	c.ok("kv", "put", "e2eimp/multi", "a\nb\n")
	c.ok("kv", "put", "e2eimp/secrets/pw", "hunter2")

	r := c.run("export")
	if r.code != 0 || strings.Contains(r.stdout, "hunter2") || !strings.Contains(r.stderr, "e2eimp/secrets/pw") {
		t.Fatalf("export without secrets: %s", r)
	}
	r = c.run("export", "--include-secrets")
	if r.code != 0 || !strings.Contains(r.stderr, "included") {
		t.Fatalf("export --include-secrets: %s", r)
	}
	var d struct {
		Revision int64             `json:"revision"`
		Keys     map[string]string `json:"keys"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &d); err != nil || d.Revision <= 0 || d.Keys["e2eimp/secrets/pw"] != "hunter2" || d.Keys["e2eimp/multi"] != "a\nb\n" {
		t.Fatalf("export --include-secrets = %s (%v)", r.stdout, err)
	}
	file := filepath.Join(t.TempDir(), "all.json")
	writeFile(t, file, r.stdout)

	c.ok("kv", "rm", "e2eimp", "--recurse")
	c.ok("kv", "put", "e2eimp/plain", "changed")
	c.ok("kv", "put", "e2eimp/other", "kept")
	r = c.run("import", file, "--merge")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "revision ") || !strings.Contains(r.stderr, "imported") {
		t.Fatalf("import: %s", r)
	}
	for k, want := range map[string]string{"e2eimp/plain": "v1", "e2eimp/multi": "a\nb\n", "e2eimp/secrets/pw": "hunter2", "e2eimp/other": "kept"} {
		if got := c.ok("kv", "get", k); got != want {
			t.Errorf("after import %s = %q, want %q", k, got, want)
		}
	}
	// A bad file writes nothing.
	bad := filepath.Join(t.TempDir(), "bad.json")
	writeFile(t, bad, `{"keys":{"e2eimp/new":"x","e2eimp/bad key":"y"}}`)
	c.fails(exitError, `invalid key "e2eimp/bad key"`, "import", bad)
	c.fails(exitNotFound, "not found", "kv", "get", "e2eimp/new")
}

func TestE2E_TokensAndMaintenance(t *testing.T) {
	s, err := startServer(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.stop()
	adminFile := s.adminTokenFile()
	if adminFile == "" {
		t.Fatal("the server wrote no admin token file on first start")
	}
	if fi, err := os.Stat(adminFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin token file: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	admin := newCLI(t, s)
	anon := &runner{t: t, env: []string{"SHOELACE_ADDR=" + s.url()}}

	// Without a token, or with an unknown one: exit 5, and the error says what is missing.
	anon.fails(exitAuth, "no token given: set --token-file or SHOELACE_TOKEN_FILE", "kv", "get", "shared/x")
	anon.fails(exitAuth, "unknown or revoked token", "kv", "get", "shared/x", "--token", "bogus")

	admin.ok("kv", "put", "shared/x", "1")
	admin.ok("kv", "put", "appliances/web/port", "80")
	admin.ok("kv", "put", "appliances/db/port", "5432")

	// An agent token reads its appliance's view and nothing else.
	out := admin.ok("token", "create", "--name", "web-agent", "--appliance", "web")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	secret := lines[len(lines)-1]
	if len(lines) != 3 || !strings.Contains(lines[1], "web-agent") || len(secret) < 22 || strings.ContainsAny(secret, " \t") {
		t.Fatalf("token create printed %q; want the revision, a description, then the secret alone on the last line", out)
	}
	// A write command: it prints its revision like the others.
	revisionOf(t, lines[0]+"\n")
	agentFile := filepath.Join(t.TempDir(), "agent.token")
	writeFile(t, agentFile, secret+"\n")
	agent := anon.with("SHOELACE_TOKEN_FILE=" + agentFile)
	if got := agent.ok("appliance", "get", "web"); !strings.Contains(got, "port=80\n") || !strings.Contains(got, "x=1\n") {
		t.Errorf("agent view of web = %q", got)
	}
	agent.fails(exitAuth, "may not", "appliance", "get", "db")
	agent.fails(exitAuth, "may not write", "kv", "put", "shared/x", "2")
	agent.fails(exitAuth, "not an admin", "token", "ls")
	agent.fails(exitAuth, "not an admin", "maintenance", "on")
	agent.fails(exitAuth, "read, write or admin token", "status")
	// The secret also works from --token (given after the positionals).
	if got := anon.ok("appliance", "get", "web", "--token", secret, "-o", "json"); !strings.Contains(got, `"port":"80"`) {
		t.Errorf("view with --token = %q", got)
	}

	// A pipeline token writes under its prefixes only.
	out = admin.ok("token", "create", "--name", "deploy", "--write", "appliances/web", "--read", "shared", "-o", "json")
	var created struct {
		Name  string   `json:"name"`
		Write []string `json:"write"`
		Token string   `json:"token"`
	}
	if err := json.Unmarshal([]byte(out), &created); err != nil || created.Name != "deploy" || created.Token == "" ||
		len(created.Write) != 1 || created.Write[0] != "appliances/web" {
		t.Fatalf("token create -o json = %q (%v)", out, err)
	}
	deploy := anon.with("SHOELACE_TOKEN=" + created.Token)
	deploy.ok("kv", "put", "appliances/web/port", "8080")
	if got := deploy.ok("status"); !strings.Contains(got, "store_id: ") {
		t.Errorf("status with a pipeline token = %q", got)
	}
	deploy.fails(exitAuth, "may not write", "kv", "put", "appliances/web-frontend/port", "1")
	deploy.fails(exitAuth, "may not write", "kv", "put", "shared/x", "2")
	if got := deploy.ok("kv", "get", "shared/x"); got != "1" {
		t.Errorf("deploy token reads shared/x = %q", got)
	}
	admin.fails(exitConflict, "exists already", "token", "create", "--name", "deploy", "--admin")
	// appliance ls lists the appliances whose own keys a token may read or write, as the console
	// does, without a grant on shared/ (which their view needs): a pipeline token made with
	// --write appliances/web alone was listed none.
	out = admin.ok("token", "create", "--name", "web-keys", "--write", "appliances/web", "-o", "json")
	if err := json.Unmarshal([]byte(out), &created); err != nil || created.Token == "" {
		t.Fatalf("token create -o json = %q (%v)", out, err)
	}
	webKeys := anon.with("SHOELACE_TOKEN=" + created.Token)
	if got := webKeys.ok("appliance", "ls"); got != "web\n" {
		t.Errorf("appliance ls with a token that writes appliances/web alone = %q, want web", got)
	}
	webKeys.fails(exitAuth, "may not read shared/", "appliance", "get", "web")

	ls := admin.ok("token", "ls")
	for _, want := range []string{"deploy\tread=shared write=appliances/web", "web-agent\tappliance=web"} {
		if !strings.Contains(ls, want) {
			t.Errorf("token ls = %q, lacks %q", ls, want)
		}
	}
	lsJSON := admin.ok("token", "ls", "-o", "json")
	if strings.Contains(ls+lsJSON, secret) || strings.Contains(ls+lsJSON, created.Token) {
		t.Errorf("token ls shows a secret")
	}

	// Revoking ends the token at once.
	revisionOf(t, admin.ok("token", "revoke", "web-agent"))
	agent.fails(exitAuth, "unknown or revoked token", "appliance", "get", "web")
	admin.fails(exitNotFound, "not found", "token", "revoke", "web-agent")
	// A secret pasted in place of the name is refused before it is sent, and not printed back
	// into the CI log (it was sent, and the 404 quoted it whole).
	if r := admin.fails(exitUsage, "a token's secret (sl_…), not its name", "token", "revoke", created.Token); strings.Contains(r.stdout+r.stderr, created.Token) {
		t.Errorf("token revoke SECRET printed the secret: %s", r)
	}

	// Maintenance: writes refused with exit 6 and a message that says so; reads go on.
	if got := admin.ok("maintenance"); got != "off\n" {
		t.Errorf("maintenance = %q, want off", got)
	}
	r := admin.run("maintenance", "on")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "revision ") || !strings.Contains(r.stderr, "maintenance is on") {
		t.Fatalf("maintenance on: %s", r)
	}
	if got := admin.ok("maintenance", "status", "-o", "json"); got != `{"on":true}`+"\n" {
		t.Errorf("maintenance status -o json = %q", got)
	}
	admin.fails(exitUnavailable, "maintenance is on", "kv", "put", "shared/x", "3")
	deploy.fails(exitUnavailable, "maintenance is on", "appliance", "apply", "web", "-f", writeTemp(t, `{"keys":{"a":"b"}}`))
	if got := deploy.ok("kv", "get", "shared/x"); got != "1" {
		t.Errorf("read during maintenance = %q", got)
	}
	admin.ok("maintenance", "off")
	admin.ok("kv", "put", "shared/x", "3")
	if got := admin.ok("kv", "get", "shared/x"); got != "3" {
		t.Errorf("after maintenance off, shared/x = %q", got)
	}
}

func writeTemp(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "body.json")
	writeFile(t, p, content)
	return p
}

// healthOf reads the server's store id and revision (shoelace status).
func healthOf(t *testing.T, c *runner) (storeID string, revision int64) {
	t.Helper()
	var st struct {
		StoreID  string `json:"store_id"`
		Revision int64  `json:"revision"`
	}
	if err := json.Unmarshal([]byte(c.ok("status", "-o", "json")), &st); err != nil || st.StoreID == "" {
		t.Fatalf("status -o json: %+v, %v", st, err)
	}
	return st.StoreID, st.Revision
}

func TestE2E_SnapshotRestore(t *testing.T) {
	oldDir := t.TempDir()
	s, err := startServer(oldDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := newCLI(t, s)
	c.ok("kv", "put", "shared/ntp", "pool.ntp.org")
	c.ok("kv", "put", "appliances/web/secrets/pw", "hunter2")
	oldID, _ := healthOf(t, c)
	defer s.stop()
	adminToken := s.adminTokenFile()

	snap := filepath.Join(t.TempDir(), "backup.db")
	r := c.run("snapshot", "save", snap)
	if r.code != 0 || !strings.HasPrefix(r.stdout, "saved "+snap+" (") {
		t.Fatalf("snapshot save: %s", r)
	}
	if fi, err := os.Stat(snap); err != nil || fi.Size() == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("snapshot file: %v %v; want a non-empty file of mode 0600", fi, err)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(snap), ".*tmp*")); len(leftovers) != 0 {
		t.Errorf("snapshot save left temporary files: %q", leftovers)
	}
	// "-" is not stdout here (it made a file named "-" in the working directory).
	c.fails(exitUsage, `FILE is a file, not "-" (stdout)`, "snapshot", "save", "-")
	// A directory is refused before the store is streamed (the rename at the end failed, "file exists").
	dir := t.TempDir()
	c.fails(exitUsage, "is a directory: give the name of the file to write, such as "+filepath.Join(dir, "shoelace.db"), "snapshot", "save", dir)
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("snapshot save into a directory left %v", left)
	}
	newCLI(t, s).with("SHOELACE_TOKEN=x", "SHOELACE_TOKEN_FILE=").fails(exitAuth, "unknown or revoked token", "snapshot", "save", snap+".2")
	if _, err := os.Stat(snap + ".2"); !os.IsNotExist(err) {
		t.Errorf("a refused snapshot save wrote %s: %v", snap+".2", err)
	}
	if err := s.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}

	newDir := filepath.Join(t.TempDir(), "restored")
	restore := &runner{t: t}
	// A snapshot cut short, damaged or not a snapshot at all is refused before anything is
	// created, in words that say so (etcd's named a flag of etcdutl's, "seek: invalid argument"
	// or two byte arrays, and left the data dir behind).
	whole, err := os.ReadFile(snap)
	if err != nil {
		t.Fatal(err)
	}
	damaged := bytes.Clone(whole)
	damaged[len(damaged)/2] ^= 0xff
	for name, b := range map[string][]byte{"cut.db": whole[:len(whole)/3], "garbage.db": []byte("garbage"), "damaged.db": damaged} {
		bad := filepath.Join(t.TempDir(), name)
		writeFile(t, bad, string(b))
		badDir := filepath.Join(t.TempDir(), "restored-"+name)
		want := map[string]string{"cut.db": "it was cut short", "garbage.db": "it was cut short", "damaged.db": "does not match its content"}[name]
		r := restore.fails(exitError, want, "snapshot", "restore", bad, "--data-dir", badDir)
		if !strings.Contains(r.stderr, "nothing was restored") || strings.Contains(r.stderr, "skip-hash-check") {
			t.Errorf("restore of %s: stderr %q", name, r.stderr)
		}
		if _, err := os.Stat(badDir); !os.IsNotExist(err) {
			t.Errorf("a refused restore of %s left %s: %v", name, badDir, err)
		}
	}
	r = restore.run("snapshot", "restore", snap, "--data-dir", newDir)
	if r.code != 0 || !strings.Contains(r.stdout, "store id ") {
		t.Fatalf("snapshot restore: %s", r)
	}
	restore.fails(exitError, "already holds an etcd", "snapshot", "restore", snap, "--data-dir", newDir)

	s2, err := startServer(newDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.stop()
	// The restored store keeps its tokens: the old admin token works.
	c2 := (&runner{t: t, env: []string{"SHOELACE_ADDR=" + s2.url(), "SHOELACE_TOKEN_FILE=" + adminToken}})
	if got := c2.ok("kv", "get", "shared/ntp"); got != "pool.ntp.org" {
		t.Errorf("restored shared/ntp = %q", got)
	}
	if got := c2.ok("kv", "get", "appliances/web/secrets/pw"); got != "hunter2" {
		t.Errorf("restored secret = %q", got)
	}
	newID, rev := healthOf(t, c2)
	if newID == oldID {
		t.Errorf("restored store kept its id %s; agents would not notice the restore", oldID)
	}
	if rev < 1_000_000_000 {
		t.Errorf("restored store at revision %d; want revisions bumped past 1e9", rev)
	}
	if strings.Contains(r.stdout, newID) == false {
		t.Errorf("restore printed %q, want the new store id %s", r.stdout, newID)
	}
}

func TestE2E_Timeout(t *testing.T) {
	// A server that accepts connections and never answers.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, conn)
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	}()
	c := &runner{t: t, env: []string{"SHOELACE_ADDR=http://" + ln.Addr().String(), "SHOELACE_TOKEN=x"}}
	c.fails(exitUnavailable, "no answer before the timeout (--timeout)", "kv", "get", "k", "--timeout", "300ms")
	c.fails(exitUnavailable, "no answer before the timeout", "health", "--timeout", "300ms")
	c.with("SHOELACE_TIMEOUT=300ms").fails(exitUnavailable, "no answer before the timeout", "appliance", "ls")
	// A write that was sent and never answered may have been applied: exit 7, not 6 ("retry").
	c.fails(exitUnknown, "the write was sent but not answered (no answer before the timeout (--timeout)): its outcome is unknown; read the key or the appliance to check", "kv", "put", "k", "v", "--timeout", "300ms")
	// A negative timeout (a deadline a script computed, already past) is refused at once: it
	// meant "never give up", and the CLI waited on this server for good.
	c.fails(exitUsage, "--timeout -1s: a timeout is 0 (never give up) or more", "kv", "get", "k", "--timeout", "-1s")
	c.with("SHOELACE_TIMEOUT=-5s").fails(exitUsage, "--timeout -5s: a timeout is 0", "health")
	c.with("SHOELACE_TIMEOUT=-5s").fails(exitUsage, "--timeout -5s: a timeout is 0", "kv", "put", "k", "v")
}

func TestE2E_Help(t *testing.T) {
	c := &runner{t: t}
	for _, args := range [][]string{
		{"--help"}, {"kv", "--help"}, {"kv", "put", "--help"}, {"kv", "put", "k", "v", "--help"},
		{"help", "appliance", "apply"}, {"appliance", "export", "-h"}, {"token", "create", "--help"},
		{"server", "--help"}, {"maintenance", "--help"}, {"health", "--help"}, {"snapshot", "restore", "--help"},
	} {
		r := c.run(args...)
		if r.code != 0 || !strings.Contains(r.stdout, "USAGE:") || r.stderr != "" {
			t.Errorf("shoelace %s: %s", strings.Join(args, " "), r)
		}
	}
	root := c.ok("--help")
	for _, want := range []string{"EXIT CODES:", "4  conflict", "6  unavailable", "SHOELACE_ADDR"} {
		if !strings.Contains(root, want) {
			t.Errorf("shoelace --help lacks %q", want)
		}
	}
	if put := c.ok("kv", "put", "--help"); !strings.Contains(put, "EXAMPLES:") || !strings.Contains(put, "--cas") {
		t.Errorf("kv put --help = %q", put)
	}
	if srv := c.ok("server", "--help"); !strings.Contains(srv, "$SHOELACE_ETCD_ENDPOINTS") || !strings.Contains(srv, "$SHOELACE_MAX_VALUE_BYTES") {
		t.Errorf("server --help does not name the environment variables: %q", srv)
	}
}

// "shoelace help kv put" shows kv put's help, as "shoelace kv put --help" does, at any depth and
// with "h" too. Before, help took its first word only: "help kv put" printed kv's help and "help
// appliance schema set" appliance's, and "help kv bogus" printed kv's help and exit 0.
func TestE2E_HelpOfASubcommand(t *testing.T) {
	c := &runner{t: t}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"help", "kv", "put"}, "shoelace kv put - write a key's value"},
		{[]string{"help", "appliance", "apply"}, "shoelace appliance apply - "},
		{[]string{"h", "appliance", "schema", "set"}, "shoelace appliance schema set - "},
		{[]string{"help", "appliance", "rollout", "status"}, "shoelace appliance rollout status - "},
		{[]string{"--addr", "http://127.0.0.1:9", "help", "snapshot", "restore"}, "shoelace snapshot restore - "},
		{[]string{"help", "kv"}, "shoelace kv - read and write single keys"},
	} {
		r := c.run(tt.args...)
		if r.code != 0 || !strings.Contains(r.stdout, tt.want) || r.stderr != "" {
			t.Errorf("shoelace %s: want %q in its help: %s", strings.Join(tt.args, " "), tt.want, r)
		}
	}
	c.fails(exitUsage, `kv: unknown command "bogus" (see shoelace kv --help)`, "help", "kv", "bogus")
	c.fails(exitUsage, `schema: unknown command "bogus" (see shoelace appliance schema --help)`, "help", "appliance", "schema", "bogus")
}

// A key, appliance, token or instance named "help" or "h" is an argument like any other: "kv
// get help" reads the key help. Before, urfave/cli's help subcommand, which it gives every
// command, took the word: "kv get help" printed kv get's help (exit 0, no read), "kv put help
// x" said "unknown command "x"" (exit 2), and an appliance named h could not be applied or read.
func TestE2E_ArgumentNamedHelp(t *testing.T) {
	c := newCLI(t, sharedServer(t))
	c.ok("kv", "put", "help", "v1")
	if got := c.ok("kv", "get", "help"); got != "v1" {
		t.Fatalf("kv get help = %q, want v1", got)
	}
	if r := c.runStdin([]byte("keys: {port: \"1\"}\n"), "appliance", "apply", "h", "-f", "-"); r.code != 0 {
		t.Fatalf("appliance apply h: %s", r)
	}
	if got := c.ok("appliance", "get", "h"); !strings.Contains(got, "port=1\n") {
		t.Fatalf("appliance get h = %q, want its port=1", got)
	}
	c.ok("kv", "rm", "help")
	c.fails(exitNotFound, `key "help" not found`, "kv", "get", "help")
	c.ok("kv", "rm", "appliances/h", "--recurse")
	// --help and -h still show the help.
	if r := c.run("kv", "get", "--help"); r.code != 0 || !strings.Contains(r.stdout, "shoelace kv get - ") {
		t.Errorf("kv get --help: %s", r)
	}
}

// help of a command that does not exist is a usage error (exit 2) in one "shoelace: …" line, as
// the command itself is. Before, "shoelace help bogus" exited 1 with "shoelace: No help topic for
// 'bogus'".
func TestE2E_HelpUnknownCommand(t *testing.T) {
	c := &runner{t: t}
	c.fails(exitUsage, `unknown command "bogus" (see shoelace --help)`, "help", "bogus")
	c.fails(exitUsage, `kv: unknown command "bogus" (see shoelace kv --help)`, "kv", "help", "bogus")
	c.fails(exitUsage, `appliance: unknown command "nosuch" (see shoelace appliance --help)`, "appliance", "h", "nosuch")
	if r := c.run("help", "kv"); r.code != 0 || !strings.Contains(r.stdout, "USAGE:") || r.stderr != "" {
		t.Errorf("shoelace help kv: %s", r)
	}
}

// The help names only flags that exist, and every kind of release history prints. (The exit
// codes named "appliance rollout status --wait", which has no --wait; the history's KIND
// column left out rollout, the kind of a staged rollout's start.)
func TestE2E_HelpNamesRealFlagsAndKinds(t *testing.T) {
	c := &runner{t: t}
	root := strings.Join(strings.Fields(c.ok("--help")), " ")
	named := regexp.MustCompile(`\b((?:appliance|kv|token|snapshot) [a-z]+(?: (?:status|promote|abort|set|get|rm))?) (--[a-z-]+)`).FindAllStringSubmatch(root, -1)
	for _, m := range named {
		if help := c.ok(append(strings.Fields(m[1]), "--help")...); !strings.Contains(help, "  "+m[2]+" ") {
			t.Errorf("shoelace --help names %q, but %q has no %s:\n%s", m[0], m[1], m[2], help)
		}
	}
	hist := strings.Join(strings.Fields(c.ok("appliance", "history", "--help")), " ")
	for _, kind := range []string{api.KindApply, api.KindRollback, api.KindPut, api.KindDelete, api.KindTxn, api.KindImport, api.KindRollout} {
		if !regexp.MustCompile(`KIND \([^)]*\b` + kind + `\b`).MatchString(hist) {
			t.Errorf("appliance history --help does not name the kind %s:\n%s", kind, hist)
		}
	}
}

func TestE2E_ApplianceInstances(t *testing.T) {
	s := sharedServer(t)
	c := newCLI(t, s)
	rev := revisionOf(t, c.ok("kv", "put", "appliances/e2e-inst/port", "80"))
	report := agentReporter(t, c, s, "e2e-inst")
	// An agent reads its view, saying who it is and what it applied.
	report("vm-1", rev)

	want := fmt.Sprintf("INSTANCE\tAPPLIED\tLAST_SEEN\tREMOTE\tTOKEN\tENROLLED\tLAST_ERROR\nvm-1\t%d\t", rev)
	var got string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if got = c.ok("appliance", "instances", "e2e-inst"); strings.HasPrefix(got, want) {
			break
		}
	}
	if !strings.HasPrefix(got, want) || !strings.Contains(got, "\te2e-inst-agent\tno\t-\n") {
		t.Fatalf("appliance instances = %q, want a line starting %q and naming the token", got, want)
	}
	var l struct {
		Appliance string `json:"appliance"`
		Instances []struct {
			Instance string `json:"instance"`
			Applied  int64  `json:"applied"`
		} `json:"instances"`
	}
	if err := json.Unmarshal([]byte(c.ok("appliance", "instances", "e2e-inst", "-o", "json")), &l); err != nil ||
		l.Appliance != "e2e-inst" || len(l.Instances) != 1 || l.Instances[0].Instance != "vm-1" || l.Instances[0].Applied != rev {
		t.Errorf("appliance instances -o json = %+v, %v", l, err)
	}
	// The header as --help promises, alone (a script's tail -n +2 reads no line), and a note,
	// for an appliance with keys and no agent (one the server holds nothing of is exit 3).
	c.ok("kv", "put", "appliances/e2e-nobody/port", "80")
	if r := c.run("appliance", "instances", "e2e-nobody"); r.code != 0 || r.stdout != "INSTANCE\tAPPLIED\tLAST_SEEN\tREMOTE\tTOKEN\tENROLLED\tLAST_ERROR\n" || !strings.Contains(r.stderr, "no agent of e2e-nobody has reported yet") {
		t.Errorf("instances of an appliance without agents: %s", r)
	}
}

// An enrolled instance: token ls hides its instance token unless --all, and appliance forget
// frees the name at once (exit 3 when there is nothing to forget).
func TestE2E_ApplianceForget(t *testing.T) {
	s := sharedServer(t)
	c := newCLI(t, s)
	c.ok("kv", "put", "appliances/e2e-forget/port", "80")
	out := c.ok("token", "create", "--name", "e2e-forget-agent", "--appliance", "e2e-forget")
	t.Cleanup(func() { c.run("token", "revoke", "e2e-forget-agent") })
	lines := strings.Split(strings.TrimSpace(out), "\n")
	agent, err := client.New(s.url(), client.Options{Token: lines[len(lines)-1]})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := agent.Enroll(ctx, "e2e-forget", "vm-1", ""); err != nil {
		t.Fatal(err)
	}
	if ls := c.ok("token", "ls"); strings.Contains(ls, "instance:e2e-forget:vm-1") {
		t.Errorf("token ls shows an instance token:\n%s", ls)
	}
	if ls := c.ok("token", "ls", "--all"); !strings.Contains(ls, "instance:e2e-forget:vm-1\tappliance=e2e-forget instance=vm-1\t") {
		t.Errorf("token ls --all does not show the instance token:\n%s", ls)
	}
	var e *api.Error
	if _, err := agent.Enroll(ctx, "e2e-forget", "vm-1", ""); !errors.As(err, &e) || e.Status != http.StatusConflict {
		t.Fatalf("second enrollment: %v, want 409", err)
	}
	c.fails(exitError, "has ':'", "token", "create", "--name", "instance:x:y", "--appliance", "x")
	if got := c.ok("appliance", "forget", "e2e-forget", "vm-1"); !strings.HasPrefix(got, "revision ") {
		t.Errorf("appliance forget = %q", got)
	}
	if _, err := agent.Enroll(ctx, "e2e-forget", "vm-1", ""); err != nil {
		t.Fatalf("enrollment after forget: %v", err)
	}
	c.ok("appliance", "forget", "e2e-forget", "vm-1")
	c.fails(exitNotFound, "not found", "appliance", "forget", "e2e-forget", "vm-1")
}

// TestE2E_TokenLsAllTimesToTheSecond: token ls --all showed an instance token's creation time
// with nanoseconds (2026-12-07T18:20:01.123456789Z), the others' to the second; every line
// shows it to the second, in the same format.
func TestE2E_TokenLsAllTimesToTheSecond(t *testing.T) {
	s := sharedServer(t)
	c := newCLI(t, s)
	out := c.ok("token", "create", "--name", "e2e-ls-times-agent", "--appliance", "e2e-ls-times")
	t.Cleanup(func() { c.run("token", "revoke", "e2e-ls-times-agent") })
	lines := strings.Split(strings.TrimSpace(out), "\n")
	agent, err := client.New(s.url(), client.Options{Token: lines[len(lines)-1]})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := agent.Enroll(context.Background(), "e2e-ls-times", "vm-1", ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.run("appliance", "forget", "e2e-ls-times", "vm-1") })
	ls := c.ok("token", "ls", "--all")
	second := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$`)
	seen := 0
	for _, l := range strings.Split(strings.TrimSpace(ls), "\n") {
		f := strings.Split(l, "\t")
		if f[0] != "instance:e2e-ls-times:vm-1" && f[0] != "e2e-ls-times-agent" {
			continue
		}
		seen++
		if len(f) != 3 || !second.MatchString(f[2]) {
			t.Errorf("token ls --all line %q: want its creation time to the second (2006-01-02T15:04:05Z)", l)
		}
	}
	if seen != 2 {
		t.Errorf("token ls --all lists %d of the two tokens:\n%s", seen, ls)
	}
}

// apply --dry-run prints what the apply would do and writes nothing; its revision, given as
// --cas, applies exactly the reviewed change.
func TestE2E_ApplyDryRun(t *testing.T) {
	c := newCLI(t, sharedServer(t))
	t.Cleanup(func() { c.run("kv", "rm", "appliances/e2e-plan", "--recurse") }) // so that -count=N runs again
	dir := t.TempDir()
	v1, next := filepath.Join(dir, "v1.yaml"), filepath.Join(dir, "v2.yaml")
	writeFile(t, v1, "keys:\n  port: 80\n  gone: x\n  same: 1\n  secrets: {pw: hunter2}\n")
	writeFile(t, next, "keys:\n  port: 81\n  added: y\n  same: 1\n  secrets: {pw: hunter3}\n")
	c.ok("appliance", "apply", "e2e-plan", "-f", v1)

	r := c.run("appliance", "apply", "e2e-plan", "-f", next, "--dry-run")
	if r.code != 0 {
		t.Fatalf("dry run: %s", r)
	}
	want := "+ appliances/e2e-plan/added=y\n~ appliances/e2e-plan/port=81 (was 80)\n~ appliances/e2e-plan/secrets/pw=(secret) (was (secret))\n- appliances/e2e-plan/gone=x\n"
	if r.stdout != want {
		t.Errorf("dry run printed %q, want %q", r.stdout, want)
	}
	if strings.Contains(r.stdout+r.stderr, "hunter") {
		t.Errorf("the dry run printed a value: %s", r)
	}
	m := regexp.MustCompile(`at revision (\d+): would create 1, change 2, delete 1, leave 1 as they are; nothing written \(apply with --cas (\d+)`).FindStringSubmatch(r.stderr)
	if m == nil || m[1] != m[2] {
		t.Fatalf("dry run summary %q", r.stderr)
	}
	if got := c.ok("kv", "get", "appliances/e2e-plan/port"); got != "80" {
		t.Fatalf("the dry run wrote: port = %q", got)
	}
	var plan api.ApplyPlan
	if err := json.Unmarshal([]byte(c.ok("appliance", "apply", "e2e-plan", "-f", next, "--dry-run", "-o", "json")), &plan); err != nil ||
		!plan.DryRun || strconv.FormatInt(plan.Revision, 10) != m[1] || len(plan.Changed) != 2 {
		t.Errorf("dry run -o json = %+v, %v", plan, err)
	}
	c.fails(exitUsage, "give one of them", "appliance", "apply", "e2e-plan", "-f", next, "--dry-run", "--cas", m[1])
	// --canary was dropped without a word: the dry run printed the plain apply's plan, exit 0,
	// where the apply itself starts a rollout (refused, exit 4, without enrolled instances).
	c.fails(exitUsage, "--dry-run starts no rollout", "appliance", "apply", "e2e-plan", "-f", next, "--dry-run", "--canary", "10%")

	// The reviewed state, applied with its revision as --cas.
	revisionOf(t, c.ok("appliance", "apply", "e2e-plan", "-f", next, "--cas", m[1]))
	if got := c.ok("kv", "get", "appliances/e2e-plan/port"); got != "81" {
		t.Fatalf("port after the apply = %q", got)
	}
}

// appliance wait returns once the alive agents have applied the revision, and names those still
// behind when it gives up.
func TestE2E_ApplianceWait(t *testing.T) {
	s := sharedServer(t)
	c := newCLI(t, s)
	rev := revisionOf(t, c.ok("kv", "put", "appliances/e2e-wait/port", "80"))
	report := agentReporter(t, c, s, "e2e-wait")
	r := strconv.FormatInt(rev, 10)
	c.fails(exitUsage, "--revision REV is required", "appliance", "wait", "e2e-wait")
	// A server that is away is asked again until --for ends. (A --for of 1s, then 3s, left the
	// test racing the clock: the wait says it asks again only when its first failed request, after
	// the process starts and the client's own retries, leaves time for another, which a loaded
	// host may not. 10s leaves it several seconds.)
	dead, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	res := c.run("appliance", "wait", "e2e-wait", "--revision", r, "--for", "10s", "--interval", "100ms", "--addr", "http://"+dead)
	if res.code != exitUnavailable || strings.Count(res.stderr, "asking again until") != 1 || !strings.Contains(res.stderr, "cannot reach the server") {
		t.Fatalf("wait with the server away: %s", res)
	}

	report("vm-1", rev)
	report("vm-2", rev-1)
	// Reports are written within a moment: wait until both are listed.
	deadline := time.Now().Add(30 * time.Second)
	for out := ""; !strings.Contains(out, "vm-2"); out = c.ok("appliance", "instances", "e2e-wait") {
		if time.Now().After(deadline) {
			t.Fatalf("reports not listed after 30 s: %q", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// vm-2 is behind: the wait gives up and names it.
	res = c.run("appliance", "wait", "e2e-wait", "--revision", r, "--for", "8s", "--interval", "100ms")
	if res.code != exitError || !strings.Contains(res.stderr, "1 of 2 agents has not applied revision "+r+": vm-2 (applied "+strconv.FormatInt(rev-1, 10)+")") {
		t.Fatalf("wait with an agent behind: %s", res)
	}
	// While it waits it says how far it is, once 5 s have passed, and not again within 5 s.
	if want := "1 of 2 agents applied revision " + r + "; behind: vm-2 (applied " + strconv.FormatInt(rev-1, 10) + "); waiting"; strings.Count(res.stderr, want) != 1 {
		t.Fatalf("wait with an agent behind printed no single progress line %q: %s", want, res)
	}
	// A revision ahead of the store can never be applied: refused at once, not waited for.
	started := time.Now()
	c.fails(exitError, "is ahead of the store", "appliance", "wait", "e2e-wait", "--revision", strconv.FormatInt(rev+1_000_000, 10), "--for", "5m")
	if d := time.Since(started); d > time.Minute {
		t.Fatalf("a revision ahead of the store was waited for (%s)", d)
	}
	// vm-2 catches up while the wait waits: it reports only once the wait has been answered
	// (with vm-2 behind), so the wait must ask again to succeed.
	asked := instancesAnswered(t, s)
	done := make(chan result, 1)
	go func() {
		done <- c.run("appliance", "wait", "e2e-wait", "--revision", r, "--min", "2", "--for", "30s", "--interval", "100ms")
	}()
	for deadline := time.Now().Add(30 * time.Second); instancesAnswered(t, s) == asked; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("appliance wait did not ask the server for the instances within 30s")
		}
	}
	report("vm-2", rev)
	if res := <-done; res.code != 0 || res.stdout != "2 agents applied revision "+r+"\n" {
		t.Fatalf("wait: %s", res)
	}
	// Not enough agents alive.
	c.fails(exitError, "2 agents seen within", "appliance", "wait", "e2e-wait", "--revision", r, "--min", "3", "--for", "1s", "--interval", "100ms")
	var j struct {
		Revision  int64 `json:"revision"`
		Instances []struct {
			Instance string `json:"instance"`
		} `json:"instances"`
	}
	if err := json.Unmarshal([]byte(c.ok("appliance", "wait", "e2e-wait", "--revision", r, "-o", "json")), &j); err != nil || j.Revision != rev || len(j.Instances) != 2 {
		t.Errorf("wait -o json = %+v, %v", j, err)
	}
}

// agentReporter creates an agent token for appliance (revoked when the test ends) and returns
// a func that reads the appliance's view as an agent does, reporting its instance and the
// revision it applied.
// instancesAnswered is how many GET /v1/appliances/{name}/instances the server has answered, by
// its /metrics.
func instancesAnswered(t *testing.T, s *testServer) int {
	t.Helper()
	resp, err := http.Get(s.url() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v", resp.StatusCode, err)
	}
	n := 0
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "shoelace_http_requests_total{") && strings.Contains(l, `route="GET /v1/appliances/{name}/instances"`) {
			f := strings.Fields(l)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			if err != nil {
				t.Fatalf("metrics line %q: %v", l, err)
			}
			n += int(v)
		}
	}
	return n
}

func agentReporter(t *testing.T, c *runner, s *testServer, appliance string) func(instance string, applied int64) {
	t.Helper()
	name := appliance + "-agent"
	out := c.ok("token", "create", "--name", name, "--appliance", appliance)
	t.Cleanup(func() { c.run("token", "revoke", name) })
	lines := strings.Split(strings.TrimSpace(out), "\n")
	secret := lines[len(lines)-1]
	return func(instance string, applied int64) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, s.url()+"/v1/appliances/"+appliance, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+secret)
		req.Header.Set("X-Shoelace-Instance", instance)
		req.Header.Set("X-Shoelace-Applied", strconv.FormatInt(applied, 10))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("agent view: %s", resp.Status)
		}
	}
}
