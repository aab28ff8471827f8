package ha

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// A runbook procedure is a fenced ```sh block right after a marker line
// "<!-- runbook-test: NAME -->" in docs/RUNBOOK.md. The test runs each as written, with bash
// -euo pipefail, with the runbook's variables set for a server on loopback.

// runbookBlock is one marked procedure.
type runbookBlock struct {
	name   string
	line   int // of the marker, 1-based
	script string
}

var runbookMarker = regexp.MustCompile(`^<!-- runbook-test: ([a-z0-9][a-z0-9-]*) -->$`)

// parseRunbook returns the marked blocks of md. A marker not followed by a ```sh block, an
// unclosed block or a name used twice is an error naming the line.
func parseRunbook(md string) ([]runbookBlock, error) {
	var blocks []runbookBlock
	seen := map[string]int{}
	lines := strings.Split(md, "\n")
	for i := 0; i < len(lines); i++ {
		line := strings.TrimRight(lines[i], "\r")
		if !strings.HasPrefix(line, "<!-- runbook-test:") {
			continue
		}
		m := runbookMarker.FindStringSubmatch(line)
		if m == nil {
			return nil, fmt.Errorf("line %d: marker %q: want <!-- runbook-test: name --> with a lowercase name", i+1, line)
		}
		if prev, ok := seen[m[1]]; ok {
			return nil, fmt.Errorf("line %d: procedure %q already marked on line %d", i+1, m[1], prev)
		}
		seen[m[1]] = i + 1
		j := i + 1
		for j < len(lines) && strings.TrimSpace(lines[j]) == "" {
			j++
		}
		if j >= len(lines) || strings.TrimRight(lines[j], "\r") != "```sh" {
			return nil, fmt.Errorf("line %d: procedure %q: the marker must be followed by a ```sh block", i+1, m[1])
		}
		var body []string
		k := j + 1
		for ; k < len(lines) && strings.TrimRight(lines[k], "\r") != "```"; k++ {
			body = append(body, strings.TrimRight(lines[k], "\r"))
		}
		if k >= len(lines) {
			return nil, fmt.Errorf("line %d: procedure %q: block not closed", i+1, m[1])
		}
		blocks = append(blocks, runbookBlock{name: m[1], line: i + 1, script: strings.Join(body, "\n") + "\n"})
		i = k
	}
	return blocks, nil
}

func TestParseRunbook(t *testing.T) {
	tests := []struct {
		name, md string
		want     []string
		wantErr  string
	}{
		{"two blocks", "x\n<!-- runbook-test: a -->\n```sh\necho a\n```\n\n<!-- runbook-test: b-2 -->\n\n```sh\necho b\n```\n", []string{"a", "b-2"}, ""},
		{"unmarked blocks ignored", "```sh\nrm -rf /\n```\n", nil, ""},
		{"marker without block", "<!-- runbook-test: a -->\ntext\n", nil, "followed by a ```sh block"},
		{"other language", "<!-- runbook-test: a -->\n```bash\nx\n```\n", nil, "followed by a ```sh block"},
		{"unclosed", "<!-- runbook-test: a -->\n```sh\nx\n", nil, "not closed"},
		{"duplicate", "<!-- runbook-test: a -->\n```sh\n```\n<!-- runbook-test: a -->\n```sh\n```\n", nil, "already marked on line 1"},
		{"bad name", "<!-- runbook-test: A_b -->\n```sh\n```\n", nil, "lowercase name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseRunbook(tt.md)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, b := range got {
				names = append(names, b.name)
			}
			if strings.Join(names, ",") != strings.Join(tt.want, ",") {
				t.Fatalf("names = %v, want %v", names, tt.want)
			}
		})
	}
}

func FuzzParseRunbook(f *testing.F) {
	f.Add("<!-- runbook-test: a -->\n```sh\necho a\n```\n")
	f.Add("<!-- runbook-test: a -->\n\n```sh\n```\n<!-- runbook-test: b -->\n```sh\nx\n")
	f.Fuzz(func(t *testing.T, md string) {
		blocks, err := parseRunbook(md)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, b := range blocks {
			if !runbookMarker.MatchString("<!-- runbook-test: " + b.name + " -->") {
				t.Fatalf("block name %q does not match the marker rule", b.name)
			}
			if seen[b.name] {
				t.Fatalf("name %q twice", b.name)
			}
			seen[b.name] = true
			if strings.Contains(b.script, "\n```\n") {
				t.Fatalf("script of %q runs past its fence: %q", b.name, b.script)
			}
		}
	})
}

// systemctlStandIn manages the one unit the runbook's procedures start and stop, as
// systemd would: "shoelace server" with the settings of $RUNBOOK_STATE/server.env. There is no
// systemd in test containers; everything else the procedures run is real.
const systemctlStandIn = `#!/usr/bin/env bash
set -euo pipefail
verb=$1 unit=${2%.service}
if [ "$unit" = shoelace-agent ] && [ "$verb" = reload ]; then
	# The agent a test runs writes its pid here.
	kill -HUP "$(cat "$RUNBOOK_STATE/agent.pid")"
	exit 0
fi
[ "$unit" = shoelace-server ] || { echo "systemctl (runbook test): unknown unit $unit" >&2; exit 5; }
pidfile=$RUNBOOK_STATE/server.pid
alive() { [ -f "$pidfile" ] && [ -d /proc/$(cat "$pidfile") ] && ! grep -q ') Z' /proc/$(cat "$pidfile")/stat; }
start() {
	alive && return 0
	(set -a; . "$RUNBOOK_STATE/server.env"; set +a; exec shoelace server </dev/null >>"$RUNBOOK_STATE/server.log" 2>&1) &
	echo $! >"$pidfile"
	for _ in $(seq 300); do
		alive || { echo "shoelace-server exited; see $RUNBOOK_STATE/server.log" >&2; exit 1; }
		shoelace health --addr "http://$(. "$RUNBOOK_STATE/server.env"; echo "$SHOELACE_LISTEN")" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	echo "shoelace-server not healthy after 30 s" >&2; exit 1
}
stop() {
	alive || return 0
	kill -TERM "$(cat "$pidfile")"
	for _ in $(seq 300); do alive || { rm -f "$pidfile"; return 0; }; sleep 0.1; done
	echo "shoelace-server did not stop in 30 s" >&2; exit 1
}
case $verb in
start) start ;;
stop) stop ;;
restart) stop; start ;;
is-active) alive && echo active || { echo inactive; exit 3; } ;;
*) echo "systemctl (runbook test): unsupported verb $verb" >&2; exit 1 ;;
esac
`

// runbookEnv is a server on loopback run the way the runbook assumes, and the variables its
// procedures use.
type runbookEnv struct {
	t      *testing.T
	dir    string
	env    []string
	vars   map[string]string
	blocks map[string]runbookBlock
	admin  *apiClient
}

func newRunbookEnv(t *testing.T) *runbookEnv {
	t.Helper()
	md, err := os.ReadFile(filepath.Join(repoRoot, "docs", "RUNBOOK.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks, err := parseRunbook(string(md))
	if err != nil {
		t.Fatalf("docs/RUNBOOK.md: %v", err)
	}
	// The procedures use these besides shoelace; an operator's host has them too.
	for _, tool := range []string{"bash", "jq", "curl", "install", "chown", "du"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the runbook's procedures need %s on PATH (apt-get install jq curl coreutils): %v", tool, err)
		}
	}
	r := &runbookEnv{t: t, dir: t.TempDir(), blocks: map[string]runbookBlock{}}
	for _, b := range blocks {
		r.blocks[b.name] = b
	}
	bin := filepath.Join(r.dir, "bin")
	state := filepath.Join(r.dir, "state")
	for _, d := range []string{bin, state, filepath.Join(r.dir, "root")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range []string{shoelaceBin, agentBin, etcdutlBin} {
		if err := os.Symlink(b, filepath.Join(bin, filepath.Base(b))); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(bin, "systemctl"), []byte(systemctlStandIn), 0o755); err != nil {
		t.Fatal(err)
	}
	addr, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(r.dir, "var", "lib", "shoelace-server")
	serverEnv := fmt.Sprintf("SHOELACE_LISTEN=%s\nSHOELACE_DATA_DIR=%s\nSHOELACE_ADMIN_TOKEN_FILE=%s\nSHOELACE_LOG_LEVEL=info\n",
		addr, dataDir, filepath.Join(dataDir, "admin.token"))
	if err := os.WriteFile(filepath.Join(state, "server.env"), []byte(serverEnv), 0o600); err != nil {
		t.Fatal(err)
	}
	r.vars = map[string]string{
		"SHOELACE_ADDR":       "http://" + addr,
		"SHOELACE_TOKEN_FILE": filepath.Join(r.dir, "root", "admin.token"),
		"BACKUP_DIR":          filepath.Join(r.dir, "var", "backups", "shoelace"),
		"DATA_DIR":            dataDir,
		"RUNBOOK_STATE":       state,
		"HOME":                filepath.Join(r.dir, "root"),
	}
	r.env = append(cleanEnv(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	for k, v := range r.vars {
		r.env = append(r.env, k+"="+v)
	}
	// Install as the runbook's "Deployment" section says: start the unit, keep a copy of the
	// admin token for the operator.
	r.run("install", nil)
	t.Cleanup(func() {
		cmd := exec.Command(filepath.Join(bin, "systemctl"), "stop", "shoelace-server")
		cmd.Env = r.env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Logf("stop server: %v: %s", err, out)
		}
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(state, "server.log"))
			t.Logf("server log:\n%s", tail(string(b), 3000))
		}
	})
	r.admin = newClient(r.vars["SHOELACE_ADDR"], r.vars["SHOELACE_TOKEN_FILE"])
	return r
}

// run runs the procedure name as the runbook spells it out and fails the test if it fails.
func (r *runbookEnv) run(name string, extra map[string]string) string {
	r.t.Helper()
	out, err := r.tryRun(name, extra)
	if err != nil {
		r.t.Fatalf("runbook procedure %q: %v\n%s", name, err, out)
	}
	return out
}

func (r *runbookEnv) tryRun(name string, extra map[string]string) (string, error) {
	r.t.Helper()
	b, ok := r.blocks[name]
	if !ok {
		r.t.Fatalf("docs/RUNBOOK.md has no procedure marked <!-- runbook-test: %s -->", name)
	}
	env := append([]string(nil), r.env...)
	for k, v := range extra {
		env = append(env, k+"="+v)
	}
	return runBlock(r.t, b, r.dir, env)
}

// runBlock runs one procedure with bash -euo pipefail in dir with env, and logs its output.
func runBlock(t *testing.T, b runbookBlock, dir string, env []string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", b.script)
	cmd.Dir = dir
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	t.Logf("runbook %q (RUNBOOK.md line %d):\n%s", b.name, b.line, indent(string(out)))
	return string(out), err
}

// runbookProcedure returns the procedure name of docs/RUNBOOK.md.
func runbookProcedure(t *testing.T, name string) runbookBlock {
	t.Helper()
	md, err := os.ReadFile(filepath.Join(repoRoot, "docs", "RUNBOOK.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks, err := parseRunbook(string(md))
	if err != nil {
		t.Fatalf("docs/RUNBOOK.md: %v", err)
	}
	for _, b := range blocks {
		if b.name == name {
			return b
		}
	}
	t.Fatalf("docs/RUNBOOK.md has no procedure marked <!-- runbook-test: %s -->", name)
	return runbookBlock{}
}

// runbookShellEnv is the environment of a procedure run outside runbookEnv: the binaries on
// PATH, no SHOELACE_* from the test's own environment, and vars.
func runbookShellEnv(t *testing.T, vars map[string]string) []string {
	t.Helper()
	bin := t.TempDir()
	for _, b := range []string{shoelaceBin, agentBin} {
		if err := os.Symlink(b, filepath.Join(bin, filepath.Base(b))); err != nil {
			t.Fatal(err)
		}
	}
	env := append(cleanEnv(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	for k, v := range vars {
		env = append(env, k+"="+v)
	}
	return env
}

func indent(s string) string {
	var b strings.Builder
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		b.WriteString("    | " + sc.Text() + "\n")
	}
	return b.String()
}

func (r *runbookEnv) put(key, value string) int64 {
	r.t.Helper()
	status, rev, err := r.admin.put(context.Background(), key, value)
	if err != nil || status != http.StatusOK {
		r.t.Fatalf("put %s: status %d, err %v", key, status, err)
	}
	return rev
}

// agentToken creates an agent token of web-frontend named name, as the runbook's operator
// does, and writes its secret to dst (mode 0600), as a token_file.
func (r *runbookEnv) agentToken(t *testing.T, name, dst string) {
	t.Helper()
	cmd := exec.Command(shoelaceBin, "token", "create", "--name", name, "--appliance", "web-frontend")
	cmd.Env = r.env
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("token create: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if err := os.WriteFile(dst, []byte(lines[len(lines)-1]+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// agentConfig writes dir/agent.yaml: an agent of web-frontend named instance on r's server,
// with token_file tokFile and the config lines extra, rendering the key port into
// dir/port.conf. It returns the config's path and the rendered file's.
func (r *runbookEnv) agentConfig(t *testing.T, dir, tokFile, instance, extra string) (config, dst string) {
	t.Helper()
	dst, config = filepath.Join(dir, "port.conf"), filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(config, []byte(fmt.Sprintf(`server: %s
token_file: %s
appliance: web-frontend
instance: %s
cache_dir: %s
%stemplates:
  - destination: %s
    contents: "port={{ key \"port\" }}\n"
`, r.vars["SHOELACE_ADDR"], tokFile, instance, filepath.Join(dir, "cache"), extra, dst)), 0o600); err != nil {
		t.Fatal(err)
	}
	return config, dst
}

// value reads key; "" with false when it is absent.
func (r *runbookEnv) value(key string) (string, bool) {
	r.t.Helper()
	status, e, err := r.admin.get(context.Background(), key)
	if err != nil || (status != http.StatusOK && status != http.StatusNotFound) {
		r.t.Fatalf("get %s: status %d, err %v", key, status, err)
	}
	return e.Value, status == http.StatusOK
}

func (r *runbookEnv) wantValue(key, want string) {
	r.t.Helper()
	if got, ok := r.value(key); !ok || got != want {
		r.t.Errorf("%s = %q (present %v), want %q", key, got, ok, want)
	}
}

func (r *runbookEnv) storeID() string {
	r.t.Helper()
	// Every answer carries the store id, /health's (which needs no token) included.
	resp, err := http.Get(r.vars["SHOELACE_ADDR"] + "/health")
	if err != nil {
		r.t.Fatal(err)
	}
	resp.Body.Close()
	id := resp.Header.Get("X-Shoelace-Store")
	if id == "" {
		r.t.Fatal("/health answered without X-Shoelace-Store")
	}
	return id
}

// newestFile is the newest file in dir whose name ends in suffix.
func newestFile(t *testing.T, dir, suffix string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var best string
	var bestTime time.Time
	for _, e := range entries {
		fi, err := e.Info()
		if err == nil && strings.HasSuffix(e.Name(), suffix) && fi.ModTime().After(bestTime) {
			best, bestTime = filepath.Join(dir, e.Name()), fi.ModTime()
		}
	}
	if best == "" {
		t.Fatalf("no *%s file in %s", suffix, dir)
	}
	return best
}

func wantMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != want {
		t.Errorf("%s: mode %v, want %v", path, fi.Mode().Perm(), want)
	}
}

// TestRunbook_Procedures runs the runbook's procedures as written, in the order an operator
// meets them, and checks what each one did (and did not do) to the store.
func TestRunbook_Procedures(t *testing.T) {
	skipShort(t)
	r := newRunbookEnv(t)
	wantMode(t, r.vars["SHOELACE_TOKEN_FILE"], 0o600)

	r.put("shared/system/ntp", "pool.ntp.org")
	r.put("appliances/web-frontend/port", "8080")
	r.put("appliances/web-frontend/secrets/db-password", "s3cret")
	r.put("appliances/web-frontend/motd", "hello\n  world\n")

	t.Run("sanity", func(t *testing.T) {
		out := r.run("sanity", nil)
		for _, want := range []string{"status: ok", "etcd.reachable: true", "off"} {
			if !strings.Contains(out, want) {
				t.Errorf("sanity output lacks %q", want)
			}
		}
	})

	t.Run("export backup and import restore", func(t *testing.T) {
		r.run("backup-export", nil)
		backup := newestFile(t, r.vars["BACKUP_DIR"], ".json")
		wantMode(t, backup, 0o600)
		b, err := os.ReadFile(backup)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"pool.ntp.org", "appliances/web-frontend/port", "s3cret"} {
			if !strings.Contains(string(b), want) {
				t.Errorf("backup %s lacks %q", backup, want)
			}
		}
		// One key put back from the export, byte for byte.
		r.put("appliances/web-frontend/motd", "broken")
		r.run("restore-key", map[string]string{"KEY": "appliances/web-frontend/motd", "BACKUP_FILE": backup})
		r.wantValue("appliances/web-frontend/motd", "hello\n  world\n")
		if out, err := r.tryRun("restore-key", map[string]string{"KEY": "appliances/web-frontend/not-in-backup", "BACKUP_FILE": backup}); err == nil {
			t.Errorf("restore-key of a key the backup lacks succeeded: %s", out)
		}
		if _, ok := r.value("appliances/web-frontend/not-in-backup"); ok {
			t.Error("restore-key wrote a key the backup lacks")
		}
		// Damage: a changed value, a deleted key, and a key the backup does not know.
		r.put("appliances/web-frontend/port", "9999")
		if status, _, _, err := r.admin.do(context.Background(), http.MethodDelete, "/v1/kv/shared/system/ntp", nil); err != nil || status != http.StatusOK {
			t.Fatalf("delete: %d %v", status, err)
		}
		r.put("appliances/web-frontend/added-later", "x")
		out := r.run("restore-import", map[string]string{"BACKUP_FILE": backup})
		r.wantValue("appliances/web-frontend/port", "8080")
		r.wantValue("shared/system/ntp", "pool.ntp.org")
		r.wantValue("appliances/web-frontend/secrets/db-password", "s3cret")
		if !strings.Contains(out, "appliances/web-frontend/added-later") {
			t.Errorf("restore-import does not list the key created after the backup")
		}
		if _, ok := r.value("appliances/web-frontend/added-later"); ok {
			t.Errorf("added-later still there after the runbook's restore removed the keys the backup does not hold")
		}
	})

	t.Run("config rollback", func(t *testing.T) {
		good := r.put("appliances/web-frontend/port", "8080")
		r.put("appliances/web-frontend/port", "9999")
		r.put("appliances/web-frontend/debug", "true")
		out := r.run("config-rollback", map[string]string{"APPLIANCE": "web-frontend", "GOOD_REVISION": fmt.Sprint(good)})
		r.wantValue("appliances/web-frontend/port", "8080")
		if _, ok := r.value("appliances/web-frontend/debug"); ok {
			t.Error("a key added after the good revision survived the rollback")
		}
		r.wantValue("appliances/web-frontend/secrets/db-password", "s3cret")
		if strings.Contains(out, "s3cret") {
			t.Error("the rollback procedure printed a secret")
		}
	})

	t.Run("maintenance", func(t *testing.T) {
		r.run("maintenance-on", nil)
		status, _, err := r.admin.put(context.Background(), "shared/during-maintenance", "x")
		if err != nil || status != http.StatusServiceUnavailable {
			t.Errorf("write during maintenance: status %d, err %v; want 503", status, err)
		}
		r.wantValue("appliances/web-frontend/port", "8080") // reads go on
		r.run("maintenance-off", nil)
		r.put("shared/after-maintenance", "x")
		if _, ok := r.value("shared/during-maintenance"); ok {
			t.Error("a write refused during maintenance was stored")
		}
	})

	t.Run("token rotation", func(t *testing.T) {
		oldFile := filepath.Join(r.dir, "root", "deploy-1.token")
		newFile := filepath.Join(r.dir, "root", "deploy-2.token")
		cmd := exec.Command(shoelaceBin, "token", "create", "--name", "deploy-1", "--write", "appliances/web-frontend")
		cmd.Env = r.env
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("token create: %v", err)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if err := os.WriteFile(oldFile, []byte(lines[len(lines)-1]+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		r.run("token-rotate", map[string]string{"OLD_NAME": "deploy-1", "NEW_NAME": "deploy-2", "NEW_TOKEN_FILE": newFile, "PREFIX": "appliances/web-frontend"})
		wantMode(t, newFile, 0o600)
		ctx := context.Background()
		if status, _, err := newClient(r.vars["SHOELACE_ADDR"], oldFile).get(ctx, "appliances/web-frontend/port"); err != nil || status != http.StatusUnauthorized {
			t.Errorf("revoked token: status %d, err %v; want 401", status, err)
		}
		nc := newClient(r.vars["SHOELACE_ADDR"], newFile)
		if status, _, err := nc.get(ctx, "appliances/web-frontend/port"); err != nil || status != http.StatusOK {
			t.Errorf("new token reads its prefix: status %d, err %v; want 200", status, err)
		}
		if status, _, err := nc.put(ctx, "shared/system/ntp", "evil"); err != nil || status != http.StatusForbidden {
			t.Errorf("new token writes outside its prefix: status %d, err %v; want 403", status, err)
		}
	})

	// An agent that `run` enrolled sends its instance token, which outlives the appliance token:
	// the procedure must stop it too, and leave its file as it was.
	t.Run("stop an appliance's agents", func(t *testing.T) {
		dir := t.TempDir()
		tokFile := filepath.Join(dir, "agent.token")
		r.agentToken(t, "web-frontend-agents", tokFile)
		config, dst := r.agentConfig(t, dir, tokFile, "vm-1", "")
		a := startAgent(t, config)
		r.put("appliances/web-frontend/port", "8081")
		a.waitRendered(t, dst, "port=8081\n", 30*time.Second)
		if _, err := os.Stat(filepath.Join(dir, "cache", "web-frontend.instance-token")); err != nil {
			t.Fatalf("the agent did not enroll: %v", err)
		}

		out2 := r.run("appliance-agents-stop", map[string]string{"APPLIANCE": "web-frontend", "AGENT_TOKEN": "web-frontend-agents"})
		if strings.Contains(out2, "instance:web-frontend:vm-1") || strings.Contains(out2, "web-frontend-agents") {
			t.Errorf("a token of the appliance's agents is still listed:\n%s", out2)
		}
		r.put("appliances/web-frontend/port", "8082")
		deadline := time.Now().Add(30 * time.Second)
		for !strings.Contains(a.stderr.String(), "server refused the token; keeping files") {
			if time.Now().After(deadline) {
				t.Fatalf("the agent was not refused after the procedure:\n%s", tail(a.stderr.String(), 3000))
			}
			time.Sleep(50 * time.Millisecond)
		}
		time.Sleep(2 * time.Second) // a change that got through would be rendered by now
		if b, _ := os.ReadFile(dst); string(b) != "port=8081\n" {
			t.Errorf("after the procedure the agent still rendered a change: %q", b)
		}
		r.put("appliances/web-frontend/port", "8080")
	})

	// An appliance token rotated as the runbook says: the agent, reloaded with the new token before
	// the old one is revoked, enrolls again with it when its instance token is refused later.
	t.Run("appliance token rotation", func(t *testing.T) {
		dir := t.TempDir()
		agentTok := filepath.Join(dir, "token")
		r.agentToken(t, "web-frontend-fleet-1", agentTok)
		config, dst := r.agentConfig(t, dir, agentTok, "vm-2", "")
		a := startAgent(t, config)
		if err := os.WriteFile(filepath.Join(r.vars["RUNBOOK_STATE"], "agent.pid"), []byte(fmt.Sprint(a.cmd.Process.Pid)), 0o600); err != nil {
			t.Fatal(err)
		}
		r.put("appliances/web-frontend/port", "8083")
		a.waitRendered(t, dst, "port=8083\n", 30*time.Second)

		copied := filepath.Join(dir, "fleet-2.token") // the new token as copied to the VM
		r.agentToken(t, "web-frontend-fleet-2", copied)
		r.run("agent-token-deploy", map[string]string{"NEW_TOKEN_FILE": copied, "AGENT_TOKEN_FILE": agentTok})
		deadline := time.Now().Add(30 * time.Second)
		for !strings.Contains(a.stderr.String(), "config reloaded") {
			if time.Now().After(deadline) {
				t.Fatalf("the agent did not reload:\n%s", tail(a.stderr.String(), 3000))
			}
			time.Sleep(50 * time.Millisecond)
		}
		wantMode(t, agentTok, 0o600)
		for _, args := range [][]string{{"token", "revoke", "web-frontend-fleet-1"}, {"appliance", "forget", "web-frontend", "vm-2"}} {
			cmd := exec.Command(shoelaceBin, args...)
			cmd.Env = r.env
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("shoelace %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		}
		// The instance token is gone: the agent enrolls again, with the new appliance token.
		r.put("appliances/web-frontend/port", "8084")
		a.waitRendered(t, dst, "port=8084\n", 90*time.Second)
		r.put("appliances/web-frontend/port", "8080")
	})

	t.Run("snapshot backup and restore", func(t *testing.T) {
		r.put("appliances/web-frontend/release", "before-snapshot")
		r.run("backup-snapshot", nil)
		snap := newestFile(t, r.vars["BACKUP_DIR"], ".db")
		wantMode(t, snap, 0o600)
		idBefore := r.storeID()
		r.put("appliances/web-frontend/release", "after-snapshot")
		r.put("appliances/web-frontend/lost-by-restore", "x")
		r.run("restore-snapshot", map[string]string{"SNAPSHOT": snap})
		if id := r.storeID(); id == idBefore || id == "" {
			t.Errorf("store id %q after restore, was %q: agents must see a new store", id, idBefore)
		}
		r.wantValue("appliances/web-frontend/release", "before-snapshot")
		r.wantValue("appliances/web-frontend/port", "8080")
		if _, ok := r.value("appliances/web-frontend/lost-by-restore"); ok {
			t.Error("a key written after the snapshot survived its restore")
		}
		matches, _ := filepath.Glob(r.vars["DATA_DIR"] + ".before-restore.*")
		if len(matches) != 1 {
			t.Errorf("the replaced data dir is not kept aside: %v", matches)
		}
		r.run("sanity", nil)
	})

	t.Run("secret write", func(t *testing.T) {
		secret := "s3cret with spaces\nand a second line\n"
		valueFile := filepath.Join(r.dir, "root", "db-password")
		if err := os.WriteFile(valueFile, []byte(secret), 0o600); err != nil {
			t.Fatal(err)
		}
		r.run("secret-write", map[string]string{"KEY": "appliances/web-frontend/secrets/db-password", "VALUE_FILE": valueFile})
		r.wantValue("appliances/web-frontend/secrets/db-password", secret)
		logs, err := os.ReadFile(filepath.Join(r.vars["RUNBOOK_STATE"], "server.log"))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(logs), "s3cret") {
			t.Error("the server log holds the secret value")
		}
	})

	t.Run("admin token rotation", func(t *testing.T) {
		tokenFile := r.vars["SHOELACE_TOKEN_FILE"]
		old, err := os.ReadFile(tokenFile)
		if err != nil {
			t.Fatal(err)
		}
		r.run("admin-token-rotate", map[string]string{"NEW_ADMIN_NAME": "admin-2", "OLD_ADMIN_NAME": "admin"})
		wantMode(t, tokenFile, 0o600)
		if _, err := os.Stat(tokenFile + ".new"); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s.new left behind (err %v)", tokenFile, err)
		}
		oldFile := filepath.Join(r.dir, "root", "old-admin.token")
		if err := os.WriteFile(oldFile, old, 0o600); err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		if status, _, err := newClient(r.vars["SHOELACE_ADDR"], oldFile).get(ctx, "appliances/web-frontend/port"); err != nil || status != http.StatusUnauthorized {
			t.Errorf("revoked admin token: status %d, err %v; want 401", status, err)
		}
		r.put("appliances/web-frontend/rotated", "yes") // the new admin token writes
		r.run("sanity", nil)
	})

	t.Run("maintenance window: compaction and defragmentation", func(t *testing.T) {
		for i := range 50 {
			r.put("appliances/web-frontend/churn", fmt.Sprint(i))
		}
		id := r.storeID()
		r.run("defrag-embedded-etcdutl", nil)
		if got := r.storeID(); got != id {
			t.Errorf("store id %q after the offline defragmentation, was %q", got, id)
		}
		r.wantValue("appliances/web-frontend/churn", "49")
		r.put("appliances/web-frontend/churn", "50")
		r.run("defrag-embedded", nil)
		r.wantValue("appliances/web-frontend/churn", "50")
		r.wantValue("appliances/web-frontend/release", "before-snapshot")
		r.run("sanity", nil)
	})
}
