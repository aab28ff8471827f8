package server

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/testutil"
	"github.com/shoelace-dev/shoelace/server/store"
)

// served is a server started with Serve on an embedded etcd.
type served struct {
	url    string
	cancel context.CancelFunc
	errc   chan error
}

// firstWrite waits for the admin token the server makes in tokenFile, then until it writes
// key (value 1) with it, and returns the token; when says when, in what the test waits for.
func (s *served) firstWrite(t *testing.T, tokenFile, key, when string) string {
	t.Helper()
	var token string
	waitFor(t, "the admin token made"+when, func() bool {
		b, err := os.ReadFile(tokenFile)
		token = strings.TrimSpace(string(b))
		return err == nil && token != ""
	})
	waitFor(t, "a write"+when, func() bool {
		res, _ := s.req(t, token, "PUT", "/v1/kv/"+key, "1")
		return res.StatusCode == 200
	})
	return token
}

func serve(t *testing.T, cfg Config) *served {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &served{url: "http://" + ln.Addr().String(), cancel: cancel, errc: make(chan error, 1)}
	go func() { s.errc <- Serve(ctx, ln, cfg, testutil.Logger()) }()
	t.Cleanup(func() { s.stop(t) })
	waitFor(t, "server up", func() bool {
		res, err := http.Get(s.url + "/health")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == 200
	})
	return s
}

func (s *served) stop(t *testing.T) {
	t.Helper()
	if s.cancel == nil {
		return
	}
	s.cancel()
	s.cancel = nil
	select {
	case err := <-s.errc:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("server did not stop after its context ended")
	}
}

func (s *served) req(t *testing.T, token, method, path, body string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, s.url+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, b
}

func TestServe_RestartKeepsDataAndDrains(t *testing.T) {
	parallelShared(t)
	dir := t.TempDir()
	cfg := testConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.DataDir = dir
	s1 := serve(t, cfg)
	tokenFile := filepath.Join(dir, "admin.token")
	fi, err := os.Stat(tokenFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin token file: %v %v", fi, err)
	}
	data, _ := os.ReadFile(tokenFile)
	token := strings.TrimSpace(string(data))

	res, body := s1.req(t, token, "PUT", "/v1/appliances/web", `{"keys":{"port":"8080"}}`)
	if res.StatusCode != 200 {
		t.Fatalf("apply: %d %s", res.StatusCode, body)
	}
	storeID := res.Header.Get(api.HeaderStore)
	var v api.View
	_, body = s1.req(t, token, "GET", "/v1/appliances/web", "")
	json.Unmarshal(body, &v)

	// An open long-poll is answered 304 when the server drains.
	polled := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("GET", s1.url+lp("web", v.Revision, "10m"), nil)
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := testClient.Do(req)
		if err != nil {
			polled <- 0
			return
		}
		res.Body.Close()
		polled <- res.StatusCode
	}()
	waitFor(t, "long-poll open", func() bool {
		_, body := s1.req(t, token, "GET", "/v1/status", "")
		var st Status
		json.Unmarshal(body, &st)
		return st.LongPolls == 1
	})
	s1.stop(t)
	if got := <-polled; got != http.StatusNotModified {
		t.Fatalf("long-poll at shutdown: %d, want 304", got)
	}

	s2 := serve(t, cfg)
	data2, _ := os.ReadFile(tokenFile)
	if string(data2) != string(data) {
		t.Fatal("restart replaced the admin token")
	}
	res, body = s2.req(t, token, "GET", "/v1/kv/appliances/web/port", "")
	var kv api.KV
	if res.StatusCode != 200 || json.Unmarshal(body, &kv) != nil || kv.Value != "8080" {
		t.Fatalf("after restart: %d %s", res.StatusCode, body)
	}
	if res.Header.Get(api.HeaderStore) != storeID {
		t.Fatalf("store id changed across restart: %s -> %s", storeID, res.Header.Get(api.HeaderStore))
	}
	s2.stop(t)
}

// --etcd-listen serves the embedded etcd's client API on the loopback address given, where
// etcdctl and tools that read etcd (confd) reach it; the store's keys are there, under --root.
// "localhost" is taken for 127.0.0.1 (before, it was refused as not a loopback address).
func TestServe_EtcdListen(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "localhost"} {
		t.Run(host, func(t *testing.T) {
			dir := t.TempDir()
			cfg := testConfig()
			cfg.Listen = "127.0.0.1:0"
			cfg.DataDir = dir
			_, port, _ := net.SplitHostPort(freeLoopback(t))
			cfg.EtcdListen = net.JoinHostPort(host, port)
			s := serve(t, cfg)
			defer s.stop(t)
			data, _ := os.ReadFile(filepath.Join(dir, "admin.token"))
			if res, body := s.req(t, strings.TrimSpace(string(data)), "PUT", "/v1/kv/shared/dns", "10.0.0.53"); res.StatusCode != 200 {
				t.Fatalf("put: %d %s", res.StatusCode, body)
			}
			cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"http://127.0.0.1:" + port}, DialTimeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer cli.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resp, err := cli.Get(ctx, cfg.Root+"kv/shared/dns")
			if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "10.0.0.53" {
				t.Fatalf("the embedded etcd on --etcd-listen %s: %v %v", cfg.EtcdListen, resp, err)
			}
		})
	}
}

// freeLoopback returns a loopback host:port nothing listens on now.
func freeLoopback(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func TestConfig_Validate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	for _, c := range []struct {
		mod  func(*Config)
		word string
	}{
		{func(c *Config) { c.Listen = "nope" }, "--listen"},
		{func(c *Config) { c.DataDir = "" }, "--data-dir"},
		{func(c *Config) { c.Root = "shoelace" }, "root"},
		{func(c *Config) { c.TLSCert = "x" }, "--tls-key"},
		{func(c *Config) { c.EtcdCert = "x" }, "--etcd-key"},
		{func(c *Config) { c.EtcdCACert = "x" }, "--etcd-endpoints"},
		{func(c *Config) { c.RateLimit = -1 }, "--rate-limit"},
		{func(c *Config) { c.MaxValueBytes = 0 }, "--max-value-bytes"},
		{func(c *Config) { c.MaxWaiters = 0 }, "--max-long-polls"},
		{func(c *Config) { c.DefaultWait = time.Hour }, "default"},
		{func(c *Config) { c.LogLevel = "loud" }, "--log-level"},
		{func(c *Config) { c.EtcdListen = "0.0.0.0:2379" }, "loopback"},
		{func(c *Config) { c.EtcdListen = "10.0.0.5:2379" }, "loopback"},
		{func(c *Config) { c.EtcdListen = "localhost" }, "host:port"},
		{func(c *Config) { c.EtcdListen = "127.0.0.1:http" }, "port"},
		{func(c *Config) { c.EtcdListen = "127.0.0.1:2379"; c.EtcdEndpoints = []string{"http://127.0.0.1:2379"} }, "--etcd-endpoints"},
		// Endpoints etcd's client can never dial: the server served 503 for ever, the typo seen
		// only in its logs.
		{func(c *Config) { c.EtcdEndpoints = []string{"not a url"} }, `--etcd-endpoints entry "not a url" has white space`},
		{func(c *Config) { c.EtcdEndpoints = []string{"ftp://etcd-1:2379"} }, `the scheme "ftp", not http or https`},
		{func(c *Config) { c.EtcdEndpoints = []string{"http://:2379"} }, "names no host"},
		// Ports etcd's client dials for ever, and a password it never sends but the server logged.
		{func(c *Config) { c.EtcdEndpoints = []string{"https://etcd-1:99999"} }, `has the port "99999", not a number from 1 to 65535`},
		{func(c *Config) { c.EtcdEndpoints = []string{"etcd-1:abc"} }, `has the port "abc"`},
		{func(c *Config) { c.EtcdEndpoints = []string{"etcd-1:0"} }, `has the port "0"`},
		{func(c *Config) { c.EtcdEndpoints = []string{"http://etcd-1:"} }, `has the port ""`},
		{func(c *Config) { c.EtcdEndpoints = []string{"https://root:hunter2@etcd-1:2379"} }, `"https://root:xxxxx@etcd-1:2379" has a user or password`},
		// Past what etcd stores, and where the body and request limits derived from it wrapped
		// around: the server panicked at start (semaphore: size < 0).
		{func(c *Config) { c.MaxValueBytes = math.MaxInt }, "at most 1073741824"},
		{func(c *Config) { c.MaxValueBytes = MaxMaxValueBytes + 1 }, "at most 1073741824"},
		{func(c *Config) { c.EtcdEndpoints = []string{"https://etcd-1:2379", "etcd-2"} }, `"etcd-2" is neither a URL nor host:port`},
		// A port no dial reaches: 503 for ever, as above.
		{func(c *Config) { c.EtcdEndpoints = []string{"etcd-1:abc"} }, `"etcd-1:abc" has the port "abc", not a number from 1 to 65535`},
		{func(c *Config) { c.EtcdEndpoints = []string{"etcd-1:0"} }, `has the port "0"`},
		{func(c *Config) { c.EtcdEndpoints = []string{"http://etcd-1:99999"} }, `has the port "99999"`},
		{func(c *Config) { c.EtcdEndpoints = []string{"https://etcd-1:"} }, `has the port ""`},
	} {
		cfg := DefaultConfig()
		c.mod(&cfg)
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), c.word) {
			t.Errorf("Validate() = %v, want an error naming %s", err, c.word)
		}
	}
	// Empty entries (--etcd-endpoints , or a trailing comma) are one problem, said once.
	cfg := DefaultConfig()
	cfg.EtcdEndpoints = []string{"", " ", "http://etcd-1:2379"}
	if err := cfg.Validate(); err == nil || strings.Count(err.Error(), "has an empty entry") != 1 {
		t.Errorf("Validate() of two empty endpoints = %v, want the empty entry named once", err)
	}
	cfg = DefaultConfig()
	cfg.EtcdEndpoints = []string{"http://127.0.0.1:2379"}
	cfg.DataDir = ""
	if err := cfg.Validate(); err != nil {
		t.Fatalf("external etcd without data dir: %v", err)
	}
	cfg.EtcdEndpoints = []string{"https://etcd-1.internal:2379", "127.0.0.1:2379", "[::1]:2379", "unix:///run/etcd.sock", "http://etcd-2"}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("endpoints etcd's client takes: %v", err)
	}
	if got := DefaultConfig().adminTokenFile(); got != filepath.Join("shoelace-data", "admin.token") {
		t.Fatalf("default admin token file %s", got)
	}
}

// selfSigned writes a certificate and key for 127.0.0.1 into dir.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "shoelace test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

func TestServe_TLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := selfSigned(t, dir)
	cfg := serveConfig(t, filepath.Join(dir, "admin.token"))
	cfg.TLSCert, cfg.TLSKey = certFile, keyFile
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- Serve(ctx, ln, cfg, testutil.Logger()) }()
	defer func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	url := "https://" + ln.Addr().String()
	waitFor(t, "TLS server up", func() bool {
		res, err := client.Get(url + "/health")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == 200
	})
	token, _ := os.ReadFile(cfg.AdminTokenFile)
	req, _ := http.NewRequest("PUT", url+"/v1/kv/shared/a", strings.NewReader("1"))
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	req.Header.Set(api.HeaderRequestID, "req-42")
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 || res.Header.Get(api.HeaderRequestID) != "req-42" {
		t.Fatalf("PUT over TLS: %d, request id %q", res.StatusCode, res.Header.Get(api.HeaderRequestID))
	}
	// Plain HTTP to the TLS port is refused.
	if res, err := http.Get("http://" + ln.Addr().String() + "/health"); err == nil {
		res.Body.Close()
		if res.StatusCode == 200 {
			t.Fatal("plain HTTP answered on the TLS port")
		}
	}
}

func TestServer_StartsWhileEtcdIsAway(t *testing.T) {
	parallelOwnEtcd(t)
	dir := t.TempDir()
	st, _, stop := ownEtcdStore(t, dir)
	// Make the admin token while etcd is up, through a first replica.
	first := newFixtureOn(t, st)
	first.must(first.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	stop()

	f := newFixtureOn(t, st) // its revision and token reads fail
	f.token = first.token
	// Nothing is known yet: the index is 0, the error says why (the token could not be checked:
	// the caller is told as any caller is, the log has the whole error).
	if r := f.do("GET", "/v1/appliances/web", ""); r.StatusCode != 503 || r.errCode() != api.CodeUnavailable ||
		!strings.Contains(r.errMessage(), "the store is unavailable") || r.Header.Get(api.HeaderIndex) != "0" {
		t.Fatalf("with etcd away: %d %s %v", r.StatusCode, r.body, r.Header)
	}
	if r := f.doToken("", "GET", "/health", ""); r.StatusCode != 200 {
		t.Fatalf("/health with etcd away: %d", r.StatusCode)
	}

	testutil.StartEtcd(t, dir)
	waitFor(t, "replica serves once etcd is back", func() bool {
		return f.do("GET", "/v1/appliances/web", "").StatusCode == 200
	})
	v := f.view("web")
	waitFor(t, "hub ready", func() bool { return f.s.hub.current() >= v.Revision })
	p := f.startPoll(lp("web", v.Revision, "60s"))
	f.waitOpen(1)
	rev := f.put("appliances/web/a", "2")
	var got api.View
	f.must(p.wait(t), 200, &got)
	if got.Revision < rev {
		t.Fatalf("woke with %+v", got)
	}
}

func TestSnapshot(t *testing.T) {
	f := newOwnEtcdFixture(t)
	f.put("shared/a", "1")
	reader := f.newToken(api.TokenRequest{Name: "reader", Read: []string{"/"}})
	f.mustErr(f.doToken(reader, "GET", "/v1/snapshot", ""), 403, api.CodeForbidden)
	r := f.do("GET", "/v1/snapshot", "")
	if r.StatusCode != 200 || r.Header.Get("Content-Type") != "application/octet-stream" || r.index() <= 0 {
		t.Fatalf("snapshot: %d %v", r.StatusCode, r.Header)
	}
	// An etcd snapshot is a bbolt file holding the keys.
	if len(r.body) < 4096 || !bytes.Contains(r.body, []byte(f.st.Root()+"kv/shared/a")) {
		t.Fatalf("snapshot of %d bytes does not hold the key", len(r.body))
	}
}

// A server whose external etcd is away at start serves within a second and a half (it started
// after 20 s: a 5 s wait for the store id, 5 s for its revision, 10 s for the admin token):
// /health is 200, /health/deps 503 saying etcd is unreachable, the API 503 with Retry-After.
// Once etcd comes (an embedded etcd started after the server, on the address it was given),
// the server makes the admin token and serves, without a restart.
func TestServe_StartsPromptlyWhileExternalEtcdIsAway(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	etcdAddr := l.Addr().String()
	l.Close()
	cfg := testConfig()
	cfg.EtcdEndpoints = []string{"http://" + etcdAddr}
	cfg.DataDir = t.TempDir()
	cfg.AdminTokenFile = filepath.Join(t.TempDir(), "admin.token")

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &served{url: "http://" + ln.Addr().String(), cancel: cancel, errc: make(chan error, 1)}
	began := time.Now()
	go func() { s.errc <- Serve(ctx, ln, cfg, testutil.Logger()) }()
	t.Cleanup(func() { s.stop(t) })
	hc := &http.Client{Timeout: 5 * time.Second}
	res, err := hc.Get(s.url + "/health")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if took := time.Since(began); res.StatusCode != 200 || took > 8*time.Second { // 20 s before; ~1 s now, more under -race and load
		t.Fatalf("/health with etcd away at start: %d after %v, want 200 within 8s", res.StatusCode, took.Round(time.Millisecond))
	}
	res, err = hc.Get(s.url + "/health/deps")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 503 || !strings.Contains(string(body), `"reachable":false`) || !strings.Contains(string(body), "unreachable") {
		t.Fatalf("/health/deps with etcd away: %d %s", res.StatusCode, body)
	}
	res, body = s.req(t, "sl_whatever", "PUT", "/v1/kv/shared/a", "1")
	if res.StatusCode != 503 || res.Header.Get("Retry-After") == "" || !strings.Contains(string(body), `"unavailable"`) {
		t.Fatalf("a write with etcd away: %d %s %v", res.StatusCode, body, res.Header)
	}
	if _, err := os.Stat(cfg.AdminTokenFile); !os.IsNotExist(err) {
		t.Fatalf("admin token file with etcd away: %v", err)
	}

	ectx, ecancel := context.WithTimeout(context.Background(), time.Minute)
	defer ecancel()
	e, err := store.StartEmbedded(ectx, store.EmbedConfig{Dir: filepath.Join(t.TempDir(), "etcd"), ClientAddr: etcdAddr,
		Logger: testutil.Logger(), LogLevel: "error", UnsafeFast: true})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	came := time.Now()
	token := s.firstWrite(t, cfg.AdminTokenFile, "shared/a", " once etcd came")
	t.Logf("etcd came %v after the server's start; the server wrote %v after it", came.Sub(began).Round(time.Millisecond), time.Since(came).Round(time.Millisecond))
	res, body = s.req(t, token, "GET", "/v1/kv/shared/a", "")
	if res.StatusCode != 200 || !strings.Contains(string(body), `"value":"1"`) || res.Header.Get(api.HeaderStore) == "" {
		t.Fatalf("read once etcd came: %d %s %v", res.StatusCode, body, res.Header)
	}
	waitFor(t, "/health/deps 200 once etcd came", func() bool { // its probe stands a second
		res, _ := s.req(t, "", "GET", "/health/deps", "")
		return res.StatusCode == 200
	})
}
