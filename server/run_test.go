package server

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/testutil"
)

// served is a server started with Serve on an embedded etcd.
type served struct {
	url    string
	cancel context.CancelFunc
	errc   chan error
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
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			polled <- 0
			return
		}
		res.Body.Close()
		polled <- res.StatusCode
	}()
	waitFor(t, "long-poll open", func() bool {
		res, err := http.Get(s1.url + "/health")
		if err != nil {
			return false
		}
		defer res.Body.Close()
		var h Health
		json.NewDecoder(res.Body).Decode(&h)
		return h.LongPolls == 1
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
		{func(c *Config) { c.MaxWaiters = 0 }, "waiters"},
		{func(c *Config) { c.DefaultWait = time.Hour }, "default"},
		{func(c *Config) { c.LogLevel = "loud" }, "--log-level"},
	} {
		cfg := DefaultConfig()
		c.mod(&cfg)
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), c.word) {
			t.Errorf("Validate() = %v, want an error naming %s", err, c.word)
		}
	}
	cfg := DefaultConfig()
	cfg.EtcdEndpoints = []string{"http://127.0.0.1:2379"}
	cfg.DataDir = ""
	if err := cfg.Validate(); err != nil {
		t.Fatalf("external etcd without data dir: %v", err)
	}
	if got := DefaultConfig().adminTokenFile(); got != filepath.Join("shoelace-data", "admin.token") {
		t.Fatalf("default admin token file %s", got)
	}
}
