package server

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/testutil"
)

func TestHealth_EtcdStoppedAndRestarted(t *testing.T) {
	parallelOwnEtcd(t)
	dir := t.TempDir()
	st, _, stop := ownEtcdStore(t, dir)
	f := newFixtureOn(t, st, func(c *Config) { c.Version = "1.2.3" })
	f.must(f.do("PUT", "/v1/maintenance", `{"on":true}`), 200, nil)
	waitFor(t, "maintenance on", func() bool { return f.s.maintenance.Load() })

	var d DepsHealth
	f.must(f.doToken("", "GET", "/health/deps", ""), 200, &d)
	if !d.Reachable || !d.Leader || d.LatencyMS <= 0 || d.Error != "" || len(d.Endpoints) != 0 {
		t.Fatalf("/health/deps with etcd up: %+v (no endpoints without a token)", d)
	}
	var up Status
	f.must(f.do("GET", "/v1/status", ""), 200, &up)
	if !up.Etcd.Reachable || !up.Etcd.Leader || len(up.Etcd.Endpoints) == 0 {
		t.Fatalf("/v1/status's etcd with etcd up: %+v", up.Etcd)
	}
	d = DepsHealth{}
	f.must(f.do("GET", "/health/deps", ""), 200, &d) // an operator's token: endpoints too
	if !d.Reachable || !d.Leader || d.LatencyMS <= 0 || d.Error != "" || len(d.Endpoints) == 0 {
		t.Fatalf("/health/deps with an admin token, etcd up: %+v", d)
	}

	stop()
	// The process is healthy while etcd is away; /health and /v1/status say what they know.
	var h Health
	f.must(f.doToken("", "GET", "/health", ""), 200, &h)
	if h.Status != "ok" || !h.Maintenance {
		t.Fatalf("/health with etcd away: %+v", h)
	}
	var status Status
	f.must(f.do("GET", "/v1/status", ""), 200, &status)
	if status.Status != "ok" || status.Version != "1.2.3" || status.StoreID != f.st.ID() || status.StoreID == "" || !status.Maintenance {
		t.Fatalf("/v1/status with etcd away: %+v", status)
	}
	d = DepsHealth{}
	r := f.doToken("", "GET", "/health/deps", "")
	f.must(r, http.StatusServiceUnavailable, &d)
	if d.Reachable || d.Leader || d.Error != "etcd is unreachable" || strings.Contains(string(r.body), "127.0.0.1") {
		t.Fatalf("/health/deps with etcd away: %+v (a fixed reason, no address)", d)
	}
	status = Status{}
	f.must(f.do("GET", "/v1/status", ""), 200, &status)
	if status.Etcd.Reachable || status.Etcd.Error == "" || status.Etcd.Error == "etcd is unreachable" {
		t.Fatalf("/v1/status's etcd with etcd away: %+v, want the whole error", status.Etcd)
	}
	d = DepsHealth{}
	f.must(f.do("GET", "/health/deps", ""), http.StatusServiceUnavailable, &d)
	if d.Reachable || d.Leader || d.Error == "" || d.Error == "etcd is unreachable" || len(d.Endpoints) == 0 {
		t.Fatalf("/health/deps with an admin token, etcd away: %+v; want the whole error and the endpoints", d)
	}

	testutil.StartEtcd(t, dir)
	waitFor(t, "/health/deps back to 200", func() bool {
		return f.doToken("", "GET", "/health/deps", "").StatusCode == 200
	})
	d = DepsHealth{}
	f.must(f.doToken("", "GET", "/health/deps", ""), 200, &d)
	if !d.Reachable || !d.Leader || d.LatencyMS <= 0 {
		t.Fatalf("/health/deps after etcd restart: %+v", d)
	}
	closeBeforeEtcd(t, f)
}

// closeBeforeEtcd stops the fixture's server and store before the test's own etcd stops (the
// cleanups would stop that etcd first, and it waits for open watches).
func closeBeforeEtcd(t *testing.T, f *fixture) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.s.Close(ctx); err != nil {
		t.Errorf("close server: %v", err)
	}
	f.st.Close()
}

func TestServe_EtcdTLSFilesAreUsed(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig()
	cfg.EtcdEndpoints = testutil.Etcd(t)
	cfg.DataDir = ""
	cfg.AdminTokenFile = filepath.Join(dir, "admin.token")
	cfg.EtcdCACert = filepath.Join(dir, "missing-ca.pem")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	err = Serve(context.Background(), ln, cfg, testutil.Logger())
	if err == nil || !strings.Contains(err.Error(), "missing-ca.pem") {
		t.Fatalf("Serve with a missing --etcd-cacert: %v", err)
	}
}

// TestHealth_NoTokenShowsOnlyStatusAndMaintenance: /health tells an anonymous client whether
// the process is fine and in maintenance, nothing about the deployment (host names, replica
// addresses, version, store id); that is /v1/status, for operators' tokens only.
func TestHealth_NoTokenShowsOnlyStatusAndMaintenance(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.Version = "1.2.3" })
	f.s.replicaBeat(context.Background())
	r := f.doToken("", "GET", "/health", "")
	var body map[string]any
	f.must(r, 200, &body)
	if len(body) != 2 || body["status"] != "ok" || body["maintenance"] != false {
		t.Errorf("/health without a token answered %s; want only status and maintenance", r.body)
	}
	for _, secret := range []string{"1.2.3", f.s.self.ID, f.s.self.Host, "store_id", "replicas"} {
		if strings.Contains(string(r.body), secret) {
			t.Errorf("/health without a token shows %q: %s", secret, r.body)
		}
	}

	f.mustErr(f.doToken("", "GET", "/v1/status", ""), 401, api.CodeUnauthorized)
	agent := f.newToken(api.TokenRequest{Name: "agent-web", Appliance: "web"})
	f.mustErr(f.doToken(agent, "GET", "/v1/status", ""), 403, api.CodeForbidden, "agent-web", "read, write or admin")
	reader := f.newToken(api.TokenRequest{Name: "ops", Read: []string{"shared"}})
	writer := f.newToken(api.TokenRequest{Name: "ci", Write: []string{"appliances/web"}})
	for _, tok := range []string{reader, writer, f.token} {
		var st Status
		f.must(f.doToken(tok, "GET", "/v1/status", ""), 200, &st)
		if st.Status != "ok" || st.Version != "1.2.3" || st.StoreID != f.st.ID() || st.Replica != f.s.self.ID ||
			len(st.Replicas) != 1 || st.Replicas[0].Host != f.s.self.Host || st.Replicas[0].Listen == "" {
			t.Errorf("/v1/status: %+v", st)
		}
	}
}

// TestHealth_DepsWithoutTokenIsSharedAndQuiet: /health/deps costs a read through etcd's leader
// and its details name etcd's addresses. Without an operator's token it says only reachable,
// leader and latency, from a probe of etcd that all such clients share for a second, and it is
// never refused for the client's address: it was held to the rate limit of the address, the
// bucket that requests with a bad token fill, so that behind the shipped TCP load balancer
// (every client at the balancer's address) one client sending bad tokens made the balancer's
// own checks 429, and the balancer took every replica out.
func TestHealth_DepsWithoutTokenIsSharedAndQuiet(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.RateLimit = 3 })
	agent := f.newToken(api.TokenRequest{Name: "agent-web", Appliance: "web"})
	reader := f.newToken(api.TokenRequest{Name: "ops", Read: []string{"shared"}})
	for _, tok := range []string{"", agent, "sl_unknown"} {
		r := f.doToken(tok, "GET", "/health/deps", "")
		var body map[string]any
		f.must(r, 200, &body)
		if _, ok := body["endpoints"]; ok || body["reachable"] != true || body["leader"] != true {
			t.Errorf("/health/deps with token %.12q answered %s; want reachable and leader, no endpoints", tok, r.body)
		}
	}
	// A client at the balancer's address sends bad tokens past the address's 3 requests/s:
	// it is refused, and the balancer's checks, from the same address, are not.
	limited := false
	for i := 0; i < 50 && !limited; i++ {
		limited = f.doToken("sl_forged", "GET", "/v1/kv/shared/x", "").StatusCode == 429
	}
	if !limited {
		t.Fatal("50 requests with a bad token in a row were all answered; want 429 over --rate-limit")
	}
	reads := etcdReads(t, f)
	for i := range 50 {
		if r := f.doToken("", "GET", "/health/deps", ""); r.StatusCode != 200 {
			t.Fatalf("/health/deps without a token, %d-th in a row from an address over its rate limit: %d %s", i+1, r.StatusCode, r.body)
		}
	}
	// They shared probes of etcd: one a second at most (the test's 50 take well under 3 s).
	if n := etcdReads(t, f) - reads; n > 3 {
		t.Errorf("50 answers of /health/deps without a token made %d reads of etcd, want at most 3", n)
	}
	for _, tok := range []string{reader, f.token} {
		var d DepsHealth
		f.must(f.doToken(tok, "GET", "/health/deps", ""), 200, &d)
		if len(d.Endpoints) == 0 {
			t.Errorf("/health/deps with an operator's token: %+v; want etcd's endpoints", d)
		}
	}
}

// etcdReads is how many KV/Range requests the server has sent etcd, by its metrics.
func etcdReads(t *testing.T, f *fixture) int {
	t.Helper()
	fams, err := f.s.m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, fam := range fams {
		if fam.GetName() != "shoelace_etcd_request_duration_seconds" {
			continue
		}
		for _, m := range fam.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "method" && strings.HasSuffix(l.GetValue(), "Range") {
					n += int(m.GetHistogram().GetSampleCount())
				}
			}
		}
	}
	return n
}

// TestAuth_IPv6RateLimitPerSlash64: requests without a valid token are limited per client
// address, an IPv6 address's /64 as a whole: a new address of the same /64 for each request
// does not multiply the limit.
func TestAuth_IPv6RateLimitPerSlash64(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.RateLimit = 3 })
	get := func(remote string) int {
		req := httptest.NewRequest("GET", "/v1/kv/shared/x", nil)
		req.RemoteAddr = remote
		w := httptest.NewRecorder()
		f.s.Handler().ServeHTTP(w, req)
		return w.Code
	}
	limited := false
	for i := 1; i <= 50 && !limited; i++ {
		limited = get(fmt.Sprintf("[2001:db8::%x]:40000", i)) == http.StatusTooManyRequests
	}
	if !limited {
		t.Fatal("50 requests without a token from 50 addresses of 2001:db8::/64 were never refused; want 429 over --rate-limit")
	}
	if code := get("[2001:db8:0:1::1]:40000"); code != http.StatusUnauthorized {
		t.Errorf("a request from another /64 answered %d, want 401", code)
	}
}

// TestHealth_DepsReportsNOSPACE: etcd out of space (the NOSPACE alarm) refuses every write while
// it stays reachable with a leader. /health/deps said 200, reachable, leader, and nothing else;
// it now says degraded, names the alarm and what it does (a fixed text without a token, which
// names no address), and stays 200 (reads go on: a load balancer must not take every replica
// out); /v1/status's etcd says the same. Disarmed, the report is clean again.
func TestHealth_DepsReportsNOSPACE(t *testing.T) {
	st, eps, _ := ownEtcdStore(t, t.TempDir())
	f := newFixtureOn(t, st)
	disarm := raiseNOSPACE(t, eps)
	f.mustErr(f.do("PUT", "/v1/kv/shared/x", "1"), 503, api.CodeUnavailable, "NOSPACE")

	degraded := func(d DepsHealth) bool {
		return d.Reachable && d.Leader && d.Degraded && slices.Equal(d.Alarms, []string{"NOSPACE"}) &&
			strings.Contains(d.Error, "out of space") && strings.Contains(d.Error, "refuses every write")
	}
	var d DepsHealth
	r := f.doToken("", "GET", "/health/deps", "")
	f.must(r, 200, &d)
	if !degraded(d) || len(d.Endpoints) != 0 || strings.Contains(string(r.body), "127.0.0.1") {
		t.Fatalf("/health/deps without a token, etcd out of space: %s", r.body)
	}
	d = DepsHealth{}
	r = f.do("GET", "/health/deps", "")
	f.must(r, 200, &d)
	if !degraded(d) || len(d.Endpoints) == 0 {
		t.Fatalf("/health/deps with an admin token, etcd out of space: %s", r.body)
	}
	var status Status
	f.must(f.do("GET", "/v1/status", ""), 200, &status)
	if !degraded(status.Etcd) {
		t.Fatalf("/v1/status's etcd, etcd out of space: %+v", status.Etcd)
	}

	disarm()
	d = DepsHealth{}
	f.must(f.do("GET", "/health/deps", ""), 200, &d)
	if !d.Reachable || !d.Leader || d.Degraded || len(d.Alarms) != 0 || d.Error != "" {
		t.Fatalf("/health/deps with an admin token once the alarm is disarmed: %+v", d)
	}
	// Without a token, the probe of up to a second ago may still be the answer.
	time.Sleep(depsShareFor)
	d = DepsHealth{}
	f.must(f.doToken("", "GET", "/health/deps", ""), 200, &d)
	if !d.Reachable || !d.Leader || d.Degraded || len(d.Alarms) != 0 || d.Error != "" {
		t.Fatalf("/health/deps once the alarm is disarmed: %+v", d)
	}
	f.put("shared/x", "2")
}

// An operator's token gets a probe of etcd of its own for each /health/deps (a read through the
// leader), under the token's --rate-limit as its other requests are; without a token the
// answer is a shared probe, held to no rate limit. Before, a reader's token made as many reads
// of etcd as it sent requests, with no limit.
func TestHealth_DepsWithATokenIsUnderItsRateLimit(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.RateLimit = 0.001 }) // a burst of 1, then one per 1000 s
	reader := f.s.testToken(t, api.TokenRequest{Name: "reader", Read: []string{"shared/ntp"}})
	var d DepsHealth
	f.must(f.doToken(reader, "GET", "/health/deps", ""), 200, &d)
	if len(d.Endpoints) == 0 {
		t.Fatalf("/health/deps with a reader's token: %+v, want the endpoints", d)
	}
	r := f.doToken(reader, "GET", "/health/deps", "")
	f.mustErr(r, 429, api.CodeRateLimited, "--rate-limit")
	if r.Header.Get("Retry-After") == "" {
		t.Fatal("429 without Retry-After")
	}
	f.mustErr(f.doToken(reader, "GET", "/v1/kv/shared/ntp", ""), 429, api.CodeRateLimited)
	for range 3 {
		f.must(f.doToken("", "GET", "/health/deps", ""), 200, nil)
	}
}
