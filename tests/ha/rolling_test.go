package ha

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestHA_RollingRestart is the runbook's rolling deployment: each replica in turn is stopped
// with SIGTERM (it drains: open long-polls are answered and it exits, cleanly, within the 10 s
// of the contract — 20 s allowed here for a busy machine), changes are written through the load
// balancer while it is away, and it comes back on the same address. The agent behind the load
// balancer never restarts and ends with every change; no request is refused with a 4xx.
func TestHA_RollingRestart(t *testing.T) {
	skipShort(t)
	dir := t.TempDir()
	c := startCluster(t, filepath.Join(dir, "etcd"))
	tokenFiles := map[string]string{"a": filepath.Join(dir, "admin-a.token"), "b": filepath.Join(dir, "admin-b.token")}
	reps := startReplicas(t, dir, c.endpoints(), tokenFiles)
	admin := waitAdminToken(t, tokenFiles)
	waitTokenAccepted(t, newClient(reps["a"].url(), admin), newClient(reps["b"].url(), admin))
	proxy := startProxy(t, reps["a"].url(), reps["b"].url())
	lb := newClient(proxy.url(), admin)

	seq := 0
	write := func() {
		t.Helper()
		key, value := fmt.Sprintf("appliances/web/seq/%04d", seq), fmt.Sprintf("v%d", seq)
		seq++
		for try := 0; ; try++ {
			status, _, err := lb.put(context.Background(), key, value)
			if err == nil && status == http.StatusOK {
				return
			}
			if err == nil && status < 500 {
				t.Fatalf("put %s through the LB during the rolling restart: status %d (want 200 or a 5xx to retry)", key, status)
			}
			if try == 100 {
				t.Fatalf("put %s through the LB: status %d, err %v after 100 tries", key, status, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	write()

	agentToken := filepath.Join(dir, "agent.token")
	createAgentToken(t, proxy.url(), admin, agentToken)
	out := filepath.Join(dir, "out", "web.conf")
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf("server: %s\ntoken_file: %s\nappliance: web\ninstance: rolling-vm-1\ncache_dir: %s\ntemplates:\n  - contents: %q\n    destination: %s\n",
		proxy.url(), agentToken, filepath.Join(dir, "agent-cache"), agentTemplate, out)
	cfgPath := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	agent := startAgent(t, cfgPath)
	converge := func() {
		t.Helper()
		status, v, err := newClient(reps["b"].url(), admin).poll(context.Background(), "web", 0, time.Second)
		if err != nil || status != http.StatusOK {
			status, v, err = newClient(reps["a"].url(), admin).poll(context.Background(), "web", 0, time.Second)
		}
		if err != nil || status != http.StatusOK {
			t.Fatalf("view of web: status %d, err %v", status, err)
		}
		agent.waitRendered(t, out, expectedRender(v), 45*time.Second)
	}
	converge()

	for _, name := range []string{"a", "b"} {
		r := reps[name]
		start := time.Now()
		if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		var exitErr error
		select {
		case exitErr = <-r.done:
			r.done <- exitErr
			r.killed = true
		case <-time.After(20 * time.Second):
			t.Fatalf("replica %s still running 20 s after SIGTERM (the contract: drained and gone within 10 s)", name)
		}
		var ee *exec.ExitError
		if errors.As(exitErr, &ee) {
			t.Errorf("replica %s after SIGTERM: %v, want a clean exit\n%s", name, exitErr, tail(r.stderr.String(), 2000))
		}
		t.Logf("replica %s drained and stopped in %s", name, time.Since(start).Round(time.Millisecond))
		for range 3 {
			write()
		}
		converge()

		back := launchReplicaAt(t, r.addr, name, dir, c.endpoints(), filepath.Join(dir, "admin-"+name+"-2.token"), nil, true)
		if err := waitHealthy(back.hc, back.url(), back.done, 60*time.Second); err != nil {
			t.Fatalf("replica %s back on %s: %v\n%s", name, r.addr, err, tail(back.stderr.String(), 2000))
		}
		t.Cleanup(back.terminate)
		reps[name] = back
		write()
		converge()
	}
	select {
	case err := <-agent.done:
		t.Fatalf("the agent exited during the rolling restart: %v", err)
	default:
	}
}
