package server

import (
	"context"
	"encoding/json"
	"errors"
	goflag "flag"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/testutil"
	"github.com/shoelace-dev/shoelace/server/store"
)

// testParallel is how many of the package's parallel tests run at once unless -parallel says:
// they mostly wait (on etcds stopped and restarted, proxies frozen, replicas' retries and
// rollouts' ticks), and two at a time (GOMAXPROCS on CI's two cores) left the cores half idle;
// four at a time, beside the other packages' tests, kept the shared etcd from answering a
// listing within the store's 10 s (TestTokens_ListPagesWhileTokensChange, now serial).
const testParallel = 3

func TestMain(m *testing.M) {
	goflag.Parse()
	given := false
	goflag.Visit(func(f *goflag.Flag) { given = given || f.Name == "test.parallel" })
	if !given {
		_ = goflag.Set("test.parallel", strconv.Itoa(max(testParallel, runtime.GOMAXPROCS(0))))
	}
	testutil.Main(m)
}

// testClient is the tests' HTTP client: a long-poll that the server does not answer fails the
// test after its timeout instead of hanging it (the longest wait a test expects is 60 s).
var testClient = &http.Client{Timeout: 90 * time.Second}

// fixture is a server on the shared etcd under a root of the test's own, behind a real HTTP
// server, with an admin token.
type fixture struct {
	t     testing.TB
	st    *store.Store
	s     *Server
	srv   *httptest.Server
	token string
}

func testConfig() Config {
	cfg := DefaultConfig()
	cfg.RateLimit = 0
	return cfg
}

// serveConfig is testConfig for Serve on the package's shared etcd, under a root of the test's
// own, without an embedded etcd, its admin token at tokenFile.
func serveConfig(t testing.TB, tokenFile string) Config {
	cfg := testConfig()
	cfg.EtcdEndpoints = testutil.Etcd(t)
	cfg.Root = testutil.Root(t)
	cfg.DataDir = ""
	cfg.AdminTokenFile = tokenFile
	return cfg
}

func newFixture(t testing.TB, opts ...func(*Config)) *fixture {
	t.Helper()
	return newFixtureOn(t, testutil.Store(t), opts...)
}

// newOwnEtcdFixture is newFixture on an etcd of the test's own, for tests that read a snapshot
// or compact: one holds the whole etcd, and the shared one holds the keys and history of every
// test before (hundreds of MiB after the paged listings' tests), which took over 10 s to stream
// and seconds to compact; and a compaction of the shared etcd takes the history that the other
// tests read (their releases), so only a serial test may compact it.
func newOwnEtcdFixture(t *testing.T, opts ...func(*Config)) *fixture {
	t.Helper()
	eps, _ := testutil.StartEtcd(t, t.TempDir())
	cfg := testutil.StoreConfig(t)
	cfg.Endpoints = eps
	return newFixtureOn(t, testutil.OpenStore(t, cfg), opts...)
}

func newFixtureOn(t testing.TB, st *store.Store, opts ...func(*Config)) *fixture {
	t.Helper()
	return newFixtureLog(t, st, testutil.Logger(), opts...)
}

func newFixtureLog(t testing.TB, st *store.Store, log *slog.Logger, opts ...func(*Config)) *fixture {
	t.Helper()
	cfg := testConfig()
	cfg.AdminTokenFile = filepath.Join(t.TempDir(), "admin.token")
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	s := New(st, cfg, log)
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Errorf("close server: %v", err)
		}
	})
	f := &fixture{t: t, st: st, s: s, srv: srv}
	f.token = f.adminToken()
	if st.Answered() {
		// New loads tokens and settings within 5 s, and tries again in the background when it
		// could not: on a host loaded enough to take longer, a test's first request was 503
		// "tokens are not loaded yet". Given their time here; a store away from the start
		// (a test of that) is not waited for.
		within(30*time.Second, s.auth.loaded.Load)
	}
	return f
}

// resp is a response with its body read.
type resp struct {
	*http.Response
	body []byte
}

func (r resp) index() int64 {
	n, _ := strconv.ParseInt(r.Header.Get(api.HeaderIndex), 10, 64)
	return n
}

// errCode returns the code of an error body ("" when the body is not one).
func (r resp) errCode() string {
	var e api.ErrorBody
	if json.Unmarshal(r.body, &e) != nil || e.Error == nil {
		return ""
	}
	return e.Error.Code
}

func (r resp) errMessage() string {
	var e api.ErrorBody
	if json.Unmarshal(r.body, &e) != nil || e.Error == nil {
		return ""
	}
	return e.Error.Message
}

// do sends a request with the fixture's admin token; hdr holds header name, value pairs.
func (f *fixture) do(method, path, body string, hdr ...string) resp {
	f.t.Helper()
	return f.doToken(f.token, method, path, body, hdr...)
}

func (f *fixture) doToken(token, method, path, body string, hdr ...string) resp {
	f.t.Helper()
	return f.doCtx(context.Background(), token, method, path, body, hdr...)
}

func (f *fixture) doCtx(ctx context.Context, token, method, path, body string, hdr ...string) resp {
	f.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, f.srv.URL+path, rd)
	if err != nil {
		f.t.Fatalf("request %s %s: %v", method, path, err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return f.send(req)
}

// send sends req as it is (headers given twice, say) and reads its answer whole.
func (f *fixture) send(req *http.Request) resp {
	f.t.Helper()
	res, err := testClient.Do(req)
	if err != nil {
		f.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		f.t.Fatalf("%s %s: read body: %v", req.Method, req.URL.Path, err)
	}
	return resp{Response: res, body: b}
}

// must checks the status and the protocol headers and decodes the body into v (if not nil).
func (f *fixture) must(r resp, status int, v any) {
	f.t.Helper()
	if r.StatusCode != status {
		f.t.Fatalf("%s %s: status %d, want %d; body %s", r.Request.Method, r.Request.URL.Path, r.StatusCode, status, r.body)
	}
	if r.Header.Get(api.HeaderStore) == "" || r.Header.Get(api.HeaderStore) != f.st.ID() {
		f.t.Fatalf("%s %s: X-Shoelace-Store %q, want %q", r.Request.Method, r.Request.URL.Path, r.Header.Get(api.HeaderStore), f.st.ID())
	}
	if r.index() <= 0 {
		f.t.Fatalf("%s %s: X-Shoelace-Index %q, want a revision", r.Request.Method, r.Request.URL.Path, r.Header.Get(api.HeaderIndex))
	}
	if v != nil {
		if err := json.Unmarshal(r.body, v); err != nil {
			f.t.Fatalf("%s %s: decode %s: %v", r.Request.Method, r.Request.URL.Path, r.body, err)
		}
	}
}

// mustErr checks an error answer: status, code, and that the message holds each of words.
func (f *fixture) mustErr(r resp, status int, code string, words ...string) {
	f.t.Helper()
	f.must(r, status, nil)
	if got := r.errCode(); got != code {
		f.t.Fatalf("%s %s: error code %q, want %q; body %s", r.Request.Method, r.Request.URL.Path, got, code, r.body)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		f.t.Fatalf("error content type %q", ct)
	}
	for _, w := range words {
		if !strings.Contains(r.errMessage(), w) {
			f.t.Fatalf("%s %s: message %q does not mention %q", r.Request.Method, r.Request.URL.Path, r.errMessage(), w)
		}
	}
}

// put writes key through the API and returns the revision.
func (f *fixture) put(key, value string) int64 {
	f.t.Helper()
	var w api.WriteResult
	f.must(f.do("PUT", "/v1/kv/"+key, value), 200, &w)
	if w.Revision <= 0 {
		f.t.Fatalf("put %s: revision %d", key, w.Revision)
	}
	return w.Revision
}

// keys lists every key of the store (names only) straight from the store.
func (f *fixture) keys() []string {
	f.t.Helper()
	kvs, _, err := f.st.List(context.Background(), "", true)
	if err != nil {
		f.t.Fatalf("list: %v", err)
	}
	var out []string
	for _, kv := range kvs {
		out = append(out, kv.Key)
	}
	return out
}

// waitFor polls cond until it holds or the generous timeout expires.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// adminToken creates the admin token as a first start does and returns it, read from the
// admin token file; "" when the store had tokens already.
func (f *fixture) adminToken() string {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.s.bootstrap(ctx); err != nil {
		f.t.Fatalf("bootstrap: %v", err)
	}
	data, err := os.ReadFile(f.s.cfg.adminTokenFile())
	if errors.Is(err, fs.ErrNotExist) {
		return ""
	}
	if err != nil {
		f.t.Fatalf("admin token: %v", err)
	}
	return strings.TrimSpace(string(data))
}

// longerOpTimeout sets opTimeout to d for the test, and back at its end: call it before the
// test's server starts, so that the server has stopped when it is set back. It is for tests that
// load the store with many heavy reads at once, which a loaded machine answers more slowly
// than a request waits in production; never in a parallel test.
func longerOpTimeout(t *testing.T, d time.Duration) {
	old := opTimeout
	opTimeout = d
	t.Cleanup(func() { opTimeout = old })
}

// parallelOwnEtcd runs the test in parallel with the others that call it, after the package's
// other tests: each spends most of its time waiting out an etcd of its own that is away
// (stopped, restarted, brought back from a copy) or compacts one of its own (which the shared
// etcd's tests must not see), and shares nothing else (no package variable, hook, environment
// variable or fixed port). Such tests took over 2 minutes in a row.
func parallelOwnEtcd(t *testing.T) { t.Parallel() }

// parallelShared runs the test in parallel with the others that call it or parallelOwnEtcd,
// after the package's other tests: each spends most of its time waiting (on a replica's retry or
// watch, a proxy it froze, a rollout's ticks, a shutdown's grace) under a root of its own on
// the shared etcd. Such a test must not set a package variable or hook, the environment or a
// process-wide setting (umask, rlimits, signals, the GC), listen on a fixed port, compact or
// alarm the shared etcd (other tests read its history), read its revision or counters (the
// other tests move them), write or read tens of MiB through it (beside each other such tests
// starved it), measure the process's heap, goroutines or open files, or assert that something
// takes less than seconds: those stay serial. Run one after another, the package's tests took
// over 10 minutes under -race.
func parallelShared(t *testing.T) { t.Parallel() }

// ownEtcdStore opens a store, with a 2 s request timeout, on an etcd of the test's own whose
// data is in dir: stop stops it, and testutil.StartEtcd(t, dir) brings it back.
func ownEtcdStore(t *testing.T, dir string) (st *store.Store, eps []string, stop func()) {
	t.Helper()
	eps, stop = testutil.StartEtcd(t, dir)
	cfg := testutil.StoreConfig(t)
	cfg.Endpoints = eps
	cfg.RequestTimeout = 2 * time.Second
	return testutil.OpenStore(t, cfg), eps, stop
}
