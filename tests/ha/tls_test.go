package ha

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// tcpProxy is a TLS-passthrough load balancer like docs/production/haproxy.cfg (mode tcp):
// it copies bytes to the first backend whose /health/deps answered 200 over HTTPS at the last
// check, and closes the sessions of a backend marked down (on-marked-down shutdown-sessions).
type tcpProxy struct {
	ln       net.Listener
	backends []string // host:port
	healthy  []atomic.Bool
	hc       *http.Client
	mu       sync.Mutex
	sessions map[int]map[net.Conn]bool // backend index → client conns
	stop     chan struct{}
	wg       sync.WaitGroup
}

func startTCPProxy(t *testing.T, hc *http.Client, backends ...string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{ln: ln, backends: backends, healthy: make([]atomic.Bool, len(backends)), hc: hc,
		sessions: map[int]map[net.Conn]bool{}, stop: make(chan struct{})}
	for i := range backends {
		p.healthy[i].Store(true)
		p.sessions[i] = map[net.Conn]bool{}
	}
	p.wg.Add(2)
	go p.accept()
	go p.check()
	t.Cleanup(func() {
		close(p.stop)
		ln.Close()
		p.mu.Lock()
		for _, ss := range p.sessions {
			for c := range ss {
				c.Close()
			}
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *tcpProxy) url() string { return "https://" + p.ln.Addr().String() }

func (p *tcpProxy) pick() int {
	for i := range p.backends {
		if p.healthy[i].Load() {
			return i
		}
	}
	return 0
}

func (p *tcpProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		i := p.pick()
		b, err := net.DialTimeout("tcp", p.backends[i], 2*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.sessions[i][c] = true
		p.mu.Unlock()
		go func() {
			done := make(chan struct{}, 2)
			go func() { io.Copy(b, c); done <- struct{}{} }()
			go func() { io.Copy(c, b); done <- struct{}{} }()
			<-done
			c.Close()
			b.Close()
			<-done
			p.mu.Lock()
			delete(p.sessions[i], c)
			p.mu.Unlock()
		}()
	}
}

func (p *tcpProxy) check() {
	defer p.wg.Done()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-tick.C:
		}
		for i, b := range p.backends {
			ok := false
			if resp, err := p.hc.Get("https://" + b + "/health/deps"); err == nil {
				resp.Body.Close()
				ok = resp.StatusCode == http.StatusOK
			}
			if p.healthy[i].Swap(ok) && !ok {
				p.mu.Lock()
				for c := range p.sessions[i] {
					c.Close()
				}
				p.mu.Unlock()
			}
		}
	}
}

// cli runs the shoelace CLI and returns its stdout, stderr and exit code.
func cli(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(shoelaceBin, args...)
	cmd.Env = cleanEnv()
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}

// TestHA_TLSEverywhere runs the production topology with TLS on every hop: etcd members with
// client and peer certificates required, replicas serving HTTPS and presenting a client
// certificate to etcd, a TLS-passthrough load balancer, the CLI and an agent verifying the
// replicas' certificate. A replica without an etcd client certificate is refused by etcd, and
// a CLI that does not trust the CA writes nothing. Then replica A dies with SIGKILL and the
// agent converges through B.
func TestHA_TLSEverywhere(t *testing.T) {
	skipShort(t)
	dir := t.TempDir()
	p := newPKI(t, dir)
	c := startClusterTLS(t, filepath.Join(dir, "etcd"), p)

	// etcd refuses a replica that has the CA but no client certificate: /health stays 200
	// (the process is fine), /health/deps never reports etcd reachable.
	nocert := launchReplica(t, "nocert", dir, c.endpoints(), filepath.Join(dir, "nocert.token"), p, false)
	t.Cleanup(nocert.terminate)
	if err := waitHealthy(nocert.hc, nocert.url(), nocert.done, 60*time.Second); err != nil {
		t.Fatalf("replica without client certificate: %v\n%s", err, tail(nocert.stderr.String(), 2000))
	}
	t0 := time.Now()
	resp, err := p.httpClient(30 * time.Second).Get(nocert.url() + "/health/deps")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("/health/deps of the replica without client certificate answered in %s", time.Since(t0).Round(time.Millisecond))
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || strings.Contains(string(body), `"reachable":true`) {
		t.Errorf("replica without etcd client certificate: /health/deps %d %s; want 503, etcd not reachable", resp.StatusCode, body)
	}
	if _, err := os.Stat(filepath.Join(dir, "nocert.token")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("replica without etcd client certificate wrote an admin token (err %v)", err)
	}
	nocert.terminate()
	t.Logf("negative checks done after %s", time.Since(t0).Round(time.Millisecond))

	tokenFiles := map[string]string{"a": filepath.Join(dir, "admin-a.token"), "b": filepath.Join(dir, "admin-b.token")}
	reps := startReplicasTLS(t, dir, c.endpoints(), tokenFiles, p)
	ra, rb := reps["a"], reps["b"]
	adminToken := waitAdminToken(t, tokenFiles)
	ta, tb := newClient(ra.url(), adminToken), newClient(rb.url(), adminToken)
	ta.hc, tb.hc = p.httpClient(5*time.Second), p.httpClient(5*time.Second)
	waitTokenAccepted(t, ta, tb)
	// Plain HTTP to a replica gets no API answer.
	if resp, err := (&http.Client{Timeout: 2 * time.Second}).Get("http://" + ra.addr + "/health"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Errorf("replica answers 200 over plain HTTP while serving TLS")
		}
	}

	lb := startTCPProxy(t, p.httpClient(time.Second), ra.addr, rb.addr)
	put := func(key, value string) {
		t.Helper()
		var out, errOut string
		var code int
		for try := 0; try < 50; try++ { // while the LB has not marked a dead replica down yet
			if out, errOut, code = cli(t, "kv", "put", key, value, "--addr", lb.url(), "--ca-file", p.caFile, "--token-file", adminToken); code != 6 {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if code != 0 || !strings.HasPrefix(out, "revision ") {
			t.Fatalf("shoelace kv put %s through the LB: exit %d, %q %q", key, code, out, errOut)
		}
	}
	put("appliances/web/seq/0000", "v0")
	if _, errOut, code := cli(t, "kv", "put", "appliances/web/untrusted", "x", "--addr", lb.url(), "--token-file", adminToken); code == 0 {
		t.Errorf("CLI without --ca-file wrote through an unknown CA (stderr %q)", errOut)
	}

	agentToken := filepath.Join(dir, "agent.token")
	createAgentToken(t, lb.url(), adminToken, agentToken, "--ca-file", p.caFile)
	out := filepath.Join(dir, "out", "web.conf")
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf("server: %s\nca_file: %s\ntoken_file: %s\nappliance: web\ninstance: tls-vm-1\ncache_dir: %s\ntemplates:\n  - contents: %q\n    destination: %s\n",
		lb.url(), p.caFile, agentToken, filepath.Join(dir, "agent-cache"), agentTemplate, out)
	cfgPath := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	agent := startAgent(t, cfgPath)
	for i := 1; i <= 5; i++ {
		put(fmt.Sprintf("appliances/web/seq/%04d", i), fmt.Sprintf("v%d", i))
	}
	cb := newClient(rb.url(), adminToken)
	cb.hc = p.httpClient(30 * time.Second)
	current := func() view {
		t.Helper()
		status, v, err := cb.poll(context.Background(), "web", 0, time.Second)
		if err != nil || status != http.StatusOK {
			t.Fatalf("view through b: status %d, err %v", status, err)
		}
		return v
	}
	agent.waitRendered(t, out, expectedRender(current()), 45*time.Second)
	t.Logf("agent rendered through the LB after %s", time.Since(t0).Round(time.Millisecond))
	if _, ok := current().Keys["untrusted"]; ok {
		t.Error("the write of the CLI that did not trust the CA is in the store")
	}

	t.Log("killing replica a with SIGKILL")
	ra.kill()
	for i := 6; i <= 10; i++ {
		put(fmt.Sprintf("appliances/web/seq/%04d", i), fmt.Sprintf("v%d", i))
	}
	put("appliances/web/final", "after-replica-kill")
	t.Logf("writes through the LB after the kill done after %s", time.Since(t0).Round(time.Millisecond))
	v := current()
	if v.Keys["seq/0010"] != "v10" || v.Keys["final"] != "after-replica-kill" {
		t.Fatalf("view through b after the failover: %v", v.Keys)
	}
	agent.waitRendered(t, out, expectedRender(v), 45*time.Second)
	t.Logf("agent converged through b after %s", time.Since(t0).Round(time.Millisecond))
}
