package main

import (
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A server certificate that does not verify, or https:// to a plain HTTP server, cannot go
// away by retrying: exit 1 with what to change (--ca-file, the host, http://). They exited 6,
// "unavailable: retry it", which a pipeline's retry loop retried for good.
func TestE2E_TLSMisconfigurationIsNotUnavailable(t *testing.T) {
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Shoelace-Index", "1") // as every answer of a Shoelace server
		w.Header().Set("X-Shoelace-Store", "store-1")
		w.Write([]byte(`{"key":"shared/a","value":"v","mod_revision":1,"create_revision":1,"version":1}`))
	}))
	defer tlsSrv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tlsSrv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	c := &runner{t: t, env: []string{"SHOELACE_ADDR=" + tlsSrv.URL, "SHOELACE_TOKEN=x"}}
	c.fails(exitError, "the server's certificate does not verify: give --ca-file (SHOELACE_CA_FILE) the CA that signed it", "kv", "get", "shared/a")
	c.fails(exitError, "the server's certificate does not verify", "kv", "put", "shared/a", "v")
	if got := c.ok("kv", "get", "shared/a", "--ca-file", ca); got != "v" {
		t.Errorf("with --ca-file: %q", got)
	}
	// httptest's certificate names 127.0.0.1 and example.com, not localhost.
	byName := &runner{t: t, env: []string{"SHOELACE_ADDR=" + strings.Replace(tlsSrv.URL, "127.0.0.1", "localhost", 1), "SHOELACE_TOKEN=x", "SHOELACE_CA_FILE=" + ca}}
	byName.fails(exitError, "the server's certificate does not name the host in --addr (SHOELACE_ADDR)", "kv", "get", "shared/a")

	s := sharedServer(t)
	plain := newCLI(t, s).with("SHOELACE_ADDR=https://" + s.addr)
	plain.fails(exitError, "the server speaks plain HTTP: use http:// in --addr (SHOELACE_ADDR)", "kv", "get", "shared/a")
}

// shoelace health with --addr or --ca-file wrong exits 1 with what to change, as every other
// command does: it exited 6 ("unavailable"), so a container's health check or a script that
// retries on 6 waited for an outage to end where the address had to change. A server that is
// down stays exit 6 (TestE2E_HealthStatusVersion).
func TestE2E_HealthTLSMisconfigurationIsNotUnavailable(t *testing.T) {
	s := sharedServer(t)
	plain := newCLI(t, s).with("SHOELACE_ADDR=https://" + s.addr)
	want := plain.fails(exitError, "the server speaks plain HTTP: use http:// in --addr (SHOELACE_ADDR)", "kv", "get", "shared/a")
	if got := plain.fails(exitError, "the server speaks plain HTTP: use http:// in --addr (SHOELACE_ADDR)", "health"); got.stderr != want.stderr {
		t.Errorf("health says %q; kv get says %q", got.stderr, want.stderr)
	}

	tlsSrv := httptest.NewTLSServer(http.NotFoundHandler())
	defer tlsSrv.Close()
	untrusted := &runner{t: t, env: []string{"SHOELACE_ADDR=" + tlsSrv.URL}}
	untrusted.fails(exitError, "the server's certificate does not verify: give --ca-file (SHOELACE_CA_FILE) the CA that signed it", "health")
	scheme := &runner{t: t, env: []string{"SHOELACE_ADDR=http://" + strings.TrimPrefix(tlsSrv.URL, "https://")}}
	scheme.fails(exitError, "the server speaks HTTPS: use "+tlsSrv.URL+" in --addr (SHOELACE_ADDR)", "health")
}
