//go:build !windows

package ha

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startServerAt starts "shoelace server" at addr on an embedded etcd in dataDir.
func startServerAt(t *testing.T, addr, dataDir, logPath string, args ...string) *replica {
	t.Helper()
	r := &replica{name: "embedded", addr: addr, scheme: "http", hc: &http.Client{Timeout: 2 * time.Second}, stderr: &syncBuffer{}, done: make(chan error, 1)}
	r.cmd = exec.Command(shoelaceBin, append([]string{"server", "--listen", addr, "--data-dir", dataDir}, args...)...)
	r.cmd.Env = cleanEnv()
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	r.cmd.Stdout, r.cmd.Stderr = logf, logf
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.done <- r.cmd.Wait(); logf.Close() }()
	if err := waitHealthy(r.hc, r.url(), r.done, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.terminate)
	return r
}

// After a snapshot restore, an agent that enrolled again since the snapshot (its instance was
// forgotten, or taken over once stale) holds a token the restored store never made; the store
// holds the token it had before, made for the same enrollment key. Asking again with its key,
// the agent is that token's holder, whose newer token the restore lost: it gets a new token, and
// its reports count. It was refused as a clone of itself (409) and stayed on the appliance token
// until --instance-stale (1h): its reports not taken, `appliance wait` naming it behind, and a
// rollout counting it silent (10 of a fleet of 30 after one restore).
func TestRestore_AgentEnrolledSinceSnapshotEnrollsAgain(t *testing.T) {
	skipShort(t)
	dir := t.TempDir()
	addr, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	admin := filepath.Join(dir, "admin.token")
	logPath := filepath.Join(dir, "server.log")
	srv := startServerAt(t, addr, filepath.Join(dir, "data"), logPath, "--admin-token-file", admin)
	cli := func(args ...string) (string, string, int) {
		cmd := exec.Command(shoelaceBin, append(args, "--addr", srv.url(), "--token-file", admin)...)
		cmd.Env = cleanEnv()
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return out.String(), errb.String(), code
	}
	if out, errs, code := cli("kv", "put", "appliances/web/x", "1"); code != 0 {
		t.Fatalf("kv put: %d %s %s", code, out, errs)
	}
	agentToken := filepath.Join(dir, "agent.token")
	createAgentTokenFor(t, srv.url(), admin, "web", agentToken)
	agents := map[string]*agentProc{}
	for _, vm := range []string{"vm-1", "vm-2"} {
		cfg := fmt.Sprintf("server: %s\ntoken_file: %s\nappliance: web\ninstance: %s\ncache_dir: %s\ntemplates:\n  - contents: \"x={{ key \\\"x\\\" }}\\n\"\n    destination: %s\n",
			srv.url(), agentToken, vm, filepath.Join(dir, vm, "cache"), filepath.Join(dir, vm, "out", "x.conf"))
		path := filepath.Join(dir, vm+".yaml")
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		agents[vm] = startAgent(t, path)
	}
	for vm, a := range agents {
		a.waitRendered(t, filepath.Join(dir, vm, "out", "x.conf"), "x=1\n", 30*time.Second)
	}
	enrollments := func(vm string) int { return strings.Count(agents[vm].stderr.String(), `"msg":"enrolled"`) }
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 30s", what)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitFor("both agents enrolled", func() bool { return enrollments("vm-1") == 1 && enrollments("vm-2") == 1 })

	snap := filepath.Join(dir, "snap.db")
	if out, errs, code := cli("snapshot", "save", snap); code != 0 {
		t.Fatalf("snapshot save: %d %s %s", code, out, errs)
	}
	// vm-1 enrolls again after the snapshot (with the same enrollment key).
	if out, errs, code := cli("appliance", "forget", "web", "vm-1"); code != 0 {
		t.Fatalf("appliance forget: %d %s %s", code, out, errs)
	}
	waitFor("vm-1 enrolled again", func() bool { return enrollments("vm-1") == 2 })

	srv.terminate()
	restore := exec.Command(shoelaceBin, "snapshot", "restore", snap, "--data-dir", filepath.Join(dir, "data2"))
	restore.Env = cleanEnv()
	if out, err := restore.CombinedOutput(); err != nil {
		t.Fatalf("snapshot restore: %v: %s", err, out)
	}
	srv = startServerAt(t, addr, filepath.Join(dir, "data2"), logPath, "--admin-token-file", admin)

	out, errs, code := cli("kv", "put", "appliances/web/x", "2")
	if code != 0 {
		t.Fatalf("kv put: %d %s %s", code, out, errs)
	}
	rev := strings.TrimPrefix(strings.TrimSpace(out), "revision ")
	for vm, a := range agents {
		a.waitRendered(t, filepath.Join(dir, vm, "out", "x.conf"), "x=2\n", 30*time.Second)
	}
	out, errs, code = cli("appliance", "wait", "web", "--revision", rev, "--min", "2", "--for", "20s", "--interval", "500ms")
	if code != 0 {
		t.Errorf("appliance wait after the restore: exit %d: %s%s", code, out, errs)
	}
	if s := agents["vm-1"].stderr.String(); strings.Contains(s, "clone") {
		t.Errorf("vm-1 was refused as a clone of itself after the restore:\n%s", tail(s, 3000))
	}
	if n := enrollments("vm-1"); n != 3 {
		t.Errorf("vm-1 enrolled %d times, want 3 (first start, after forget, after the restore)", n)
	}
	if n := enrollments("vm-2"); n != 1 {
		t.Errorf("vm-2 enrolled %d times, want 1: its token was in the snapshot", n)
	}
}

// An agent that enrolled after the snapshot holds an instance token the restored store does not
// know. While the server is down for the restore its requests fail and its backoff grows; the
// first answer of the restored server refuses its token, it enrolls again at once, and asks for
// its view with the new token a backoff step of refusals later, not one of the outage: it waited
// 7.5 to 15 s, keeping the files of the lost history, after the other agents had the restored
// view.
func TestRestore_RefusedAfterTheOutageAsksAtOnce(t *testing.T) {
	skipShort(t)
	dir := t.TempDir()
	addr, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	admin := filepath.Join(dir, "admin.token")
	logPath := filepath.Join(dir, "server.log")
	srv := startServerAt(t, addr, filepath.Join(dir, "data"), logPath, "--admin-token-file", admin)
	cli := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(shoelaceBin, append(args, "--addr", srv.url(), "--token-file", admin)...)
		cmd.Env = cleanEnv()
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("shoelace %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	cli("kv", "put", "appliances/web/x", "before-snapshot")
	agentToken := filepath.Join(dir, "agent.token")
	createAgentTokenFor(t, srv.url(), admin, "web", agentToken)
	snap := filepath.Join(dir, "snap.db")
	cli("snapshot", "save", snap)

	// vm-1 starts after the snapshot: its instance token is of the history the restore loses.
	out := filepath.Join(dir, "vm-1", "out", "x.conf")
	cfg := fmt.Sprintf("server: %s\ntoken_file: %s\nappliance: web\ninstance: vm-1\ncache_dir: %s\ntemplates:\n  - contents: \"x={{ key \\\"x\\\" }}\\n\"\n    destination: %s\n",
		srv.url(), agentToken, filepath.Join(dir, "vm-1", "cache"), out)
	path := filepath.Join(dir, "vm-1.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, path)
	cli("kv", "put", "appliances/web/x", "lost-by-restore")
	a.waitRendered(t, out, "x=lost-by-restore\n", 30*time.Second)
	if !strings.Contains(a.stderr.String(), `"msg":"enrolled"`) {
		t.Fatalf("vm-1 did not enroll:\n%s", tail(a.stderr.String(), 3000))
	}

	// The restore as the runbook makes it: the server down for a while (here 10 s: the agent's
	// backoff reaches 4 to 8 s, and 7.5 to 15 s at its next failure).
	srv.terminate()
	restore := exec.Command(shoelaceBin, "snapshot", "restore", snap, "--data-dir", filepath.Join(dir, "data2"))
	restore.Env = cleanEnv()
	if b, err := restore.CombinedOutput(); err != nil {
		t.Fatalf("snapshot restore: %v: %s", err, b)
	}
	time.Sleep(10 * time.Second)
	srv = startServerAt(t, addr, filepath.Join(dir, "data2"), logPath, "--admin-token-file", admin)

	// The refusal comes when the agent's backoff ends; from then on it is one quick step.
	const refused = "instance token refused: back to the appliance token"
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(a.stderr.String(), refused) {
		if time.Now().After(deadline) {
			t.Fatalf("vm-1's instance token was not refused by the restored store:\n%s", tail(a.stderr.String(), 3000))
		}
		time.Sleep(20 * time.Millisecond)
	}
	seen := time.Now()
	a.waitRendered(t, out, "x=before-snapshot\n", 30*time.Second)
	if took := time.Since(seen); took > 3*time.Second {
		t.Errorf("vm-1 rendered the restored view %s after its instance token was refused, want within 3s (its next request waited the outage's backoff):\n%s",
			took.Round(100*time.Millisecond), tail(a.stderr.String(), 2500))
	}
	if n := strings.Count(a.stderr.String(), `"msg":"enrolled"`); n != 2 {
		t.Errorf("vm-1 enrolled %d times, want 2 (at its start, after the restore)", n)
	}
}
