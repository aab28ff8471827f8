package ha

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// replica is a "shoelace server" child process against an external etcd cluster.
type replica struct {
	name   string
	addr   string
	scheme string       // http, or https with tls
	hc     *http.Client // trusts the replica's certificate
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan error
	killed bool
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// cleanEnv is the test's environment without SHOELACE_* variables, so that an operator's
// settings do not leak into the children.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SHOELACE_") {
			env = append(env, kv)
		}
	}
	return env
}

// startReplica starts "shoelace server" on a free loopback port against endpoints and waits
// until /health answers 200.
func startReplica(t *testing.T, name, dir, endpoints, adminTokenFile string) *replica {
	t.Helper()
	return startReplicas(t, dir, endpoints, map[string]string{name: adminTokenFile})[name]
}

// startReplicas starts one replica per name (name → its --admin-token-file) at the same time,
// as replicas of a fresh deployment start, and waits until every one is healthy.
func startReplicas(t *testing.T, dir, endpoints string, names map[string]string) map[string]*replica {
	t.Helper()
	return startReplicasTLS(t, dir, endpoints, names, nil)
}

// startReplicasTLS is startReplicas with HTTPS and mutual TLS to etcd when p is not nil.
func startReplicasTLS(t *testing.T, dir, endpoints string, names map[string]string, p *pki) map[string]*replica {
	t.Helper()
	started := map[string]*replica{}
	for try := 0; try < 3 && len(started) < len(names); try++ { // a free port may be taken before the child binds it
		launched := map[string]*replica{}
		for name, tokenFile := range names {
			if started[name] == nil {
				launched[name] = launchReplica(t, name, dir, endpoints, tokenFile, p, true)
			}
		}
		for name, r := range launched {
			if err := waitHealthy(r.hc, r.url(), r.done, 60*time.Second); err != nil {
				t.Logf("replica %s: %v\n%s", name, err, tail(r.stderr.String(), 2000))
				r.kill()
				continue
			}
			started[name] = r
			t.Cleanup(func() {
				r.terminate()
				if t.Failed() {
					t.Logf("replica %s stderr:\n%s", r.name, tail(r.stderr.String(), 4000))
				}
			})
		}
	}
	if len(started) < len(names) {
		t.Fatalf("started %d of %d replicas", len(started), len(names))
	}
	return started
}

// launchReplica starts a replica process without waiting for it. With p, it serves HTTPS and
// reaches etcd with the CA, plus its client certificate when clientCert is true.
func launchReplica(t *testing.T, name, dir, endpoints, adminTokenFile string, p *pki, clientCert bool) *replica {
	t.Helper()
	addr, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return launchReplicaAt(t, addr, name, dir, endpoints, adminTokenFile, p, clientCert)
}

// launchReplicaAt is launchReplica on a given address (a restart behind a load balancer).
func launchReplicaAt(t *testing.T, addr, name, dir, endpoints, adminTokenFile string, p *pki, clientCert bool) *replica {
	t.Helper()
	r := &replica{name: name, addr: addr, scheme: "http", hc: &http.Client{Timeout: 2 * time.Second},
		stderr: &syncBuffer{}, done: make(chan error, 1)}
	args := []string{"server", "--listen", addr, "--etcd-endpoints", endpoints,
		"--data-dir", filepath.Join(dir, name), "--admin-token-file", adminTokenFile,
		"--rate-limit", "0", "--log-level", "warn"}
	if p != nil {
		r.scheme, r.hc = "https", p.httpClient(2*time.Second)
		args = append(args, "--tls-cert", p.serverCert, "--tls-key", p.serverKey, "--etcd-cacert", p.caFile)
		if clientCert {
			args = append(args, "--etcd-cert", p.etcdClientCert, "--etcd-key", p.etcdClientKey)
		}
	}
	r.cmd = exec.Command(shoelaceBin, args...)
	r.cmd.Env = cleanEnv()
	r.cmd.Stdout, r.cmd.Stderr = r.stderr, r.stderr
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.done <- r.cmd.Wait() }()
	return r
}

func (r *replica) url() string { return r.scheme + "://" + r.addr }

// waitHealthy polls base/health until it answers 200, or done reports the process's end.
func waitHealthy(hc *http.Client, base string, done chan error, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			done <- err
			return fmt.Errorf("exited before it was healthy: %v", err)
		default:
		}
		if resp, err := hc.Get(base + "/health"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("not healthy after %s", timeout)
}

// kill sends SIGKILL and reaps the process: no drain, no goodbye.
func (r *replica) kill() {
	if r.killed {
		return
	}
	r.killed = true
	r.cmd.Process.Signal(syscall.SIGKILL)
	err := <-r.done
	r.done <- err
}

// terminate sends SIGTERM and waits up to 15 s, then kills.
func (r *replica) terminate() {
	if r.killed {
		return
	}
	r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-r.done:
		r.done <- err
		r.killed = true
	case <-time.After(15 * time.Second):
		r.kill()
	}
}

// apiClient talks to one server base URL with the admin token when it exists.
type apiClient struct {
	base      string
	tokenFile string
	hc        *http.Client
}

func newClient(base, tokenFile string) *apiClient {
	return &apiClient{base: base, tokenFile: tokenFile, hc: &http.Client{Timeout: 30 * time.Second}}
}

// do sends one request and returns its status and body; a transport error is returned as err.
func (c *apiClient) do(ctx context.Context, method, path string, body []byte) (int, []byte, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	if c.tokenFile != "" {
		if tok, err := os.ReadFile(c.tokenFile); err == nil {
			req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
		}
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, resp.Header, err
}

// kvEntry is the answer of GET /v1/kv/{key}.
type kvEntry struct {
	Key         string `json:"key"`
	Value       string `json:"value"`
	ModRevision int64  `json:"mod_revision"`
}

// view is the answer of GET /v1/appliances/{name}.
type view struct {
	Appliance string            `json:"appliance"`
	Revision  int64             `json:"revision"`
	Keys      map[string]string `json:"keys"`
}

// put writes one key and returns the revision the server acknowledged.
func (c *apiClient) put(ctx context.Context, key, value string) (int, int64, error) {
	status, body, _, err := c.do(ctx, http.MethodPut, "/v1/kv/"+key, []byte(value))
	if err != nil || status != http.StatusOK {
		return status, 0, err
	}
	var ans struct {
		Revision int64 `json:"revision"`
	}
	if err := json.Unmarshal(body, &ans); err != nil {
		return status, 0, fmt.Errorf("decode put answer %q: %w", body, err)
	}
	return status, ans.Revision, nil
}

// get reads one key.
func (c *apiClient) get(ctx context.Context, key string) (int, kvEntry, error) {
	status, body, _, err := c.do(ctx, http.MethodGet, "/v1/kv/"+key, nil)
	var e kvEntry
	if err != nil || status != http.StatusOK {
		return status, e, err
	}
	if err := json.Unmarshal(body, &e); err != nil {
		return status, e, fmt.Errorf("decode get answer %q: %w", body, err)
	}
	return status, e, nil
}

// poll long-polls an appliance's view after index.
func (c *apiClient) poll(ctx context.Context, appliance string, index int64, wait time.Duration) (int, view, error) {
	path := fmt.Sprintf("/v1/appliances/%s?index=%d&wait=%s", appliance, index, wait)
	status, body, _, err := c.do(ctx, http.MethodGet, path, nil)
	var v view
	if err != nil || status != http.StatusOK {
		return status, v, err
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return status, v, fmt.Errorf("decode view %q: %w", body, err)
	}
	return status, v, nil
}

// failoverProxy is the load balancer of the tests: it sends every request to the first
// backend whose /health/deps answered 200 at the last check (every 100 ms), so it fails over
// when a replica dies, as a TCP or HTTP load balancer with active health checks does.
type failoverProxy struct {
	srv      *http.Server
	addr     string
	backends []*url.URL
	healthy  []atomic.Bool
	stop     chan struct{}
}

func startProxy(t *testing.T, backends ...string) *failoverProxy {
	t.Helper()
	p := &failoverProxy{healthy: make([]atomic.Bool, len(backends)), stop: make(chan struct{})}
	for i, b := range backends {
		u, err := url.Parse(b)
		if err != nil {
			t.Fatal(err)
		}
		p.backends = append(p.backends, u)
		p.healthy[i].Store(true)
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(p.pick())
			pr.Out.Host = pr.In.Host
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			w.WriteHeader(http.StatusBadGateway)
		},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	p.srv = &http.Server{Handler: rp}
	go p.srv.Serve(ln)
	go p.check()
	t.Cleanup(func() {
		close(p.stop)
		p.srv.Close()
	})
	return p
}

func (p *failoverProxy) url() string { return "http://" + p.addr }

func (p *failoverProxy) pick() *url.URL {
	for i, b := range p.backends {
		if p.healthy[i].Load() {
			return b
		}
	}
	return p.backends[0]
}

func (p *failoverProxy) check() {
	hc := &http.Client{Timeout: time.Second}
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
			if resp, err := hc.Get(b.String() + "/health/deps"); err == nil {
				resp.Body.Close()
				ok = resp.StatusCode == http.StatusOK
			}
			p.healthy[i].Store(ok)
		}
	}
}
