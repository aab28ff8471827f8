//go:build !windows

package main

import (
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
)

// An agent whose server's certificate does not verify (a private CA and no ca_file), or whose
// server: says https to a plain HTTP server (or http to an HTTPS one), can only fail until its
// config changes: once said "x509: certificate signed by unknown authority" (or "server answered
// 400: Client sent an HTTP request to an HTTPS server.") and run logged "server unreachable" (or
// "server refused the request") at every retry, neither naming what to change. Both now say
// it, as the CLI does for --ca-file.
func TestE2E_TLSMisconfigurationNamesTheSetting(t *testing.T) {
	needBinaries(t)
	for _, tc := range []struct {
		name   string
		server *httptest.Server
		want   string
	}{
		{"certificate does not verify", httptest.NewTLSServer(http.NotFoundHandler()),
			"the server's certificate does not verify: set ca_file in the agent's config to the CA that signed it"},
		{"https to a plain HTTP server", httptest.NewServer(http.NotFoundHandler()),
			"the server speaks plain HTTP: write server: http://"},
		{"http to an HTTPS server", httptest.NewTLSServer(http.NotFoundHandler()),
			"the server speaks HTTPS: write server: https://"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer tc.server.Close()
			addr := strings.TrimPrefix(strings.TrimPrefix(tc.server.URL, "https://"), "http://")
			e := newEnv(t, &server{addr: addr}, "", "  - contents: x\n    destination: $DIR/x\n")
			cfg := readFile(t, e.config)
			if !strings.Contains(tc.want, "https://") {
				if err := os.WriteFile(e.config, []byte(strings.Replace(cfg, "server: http://", "server: https://", 1)), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			code, _, stderr := e.agentCmd("once")
			if code == 0 || !strings.Contains(lastLine(stderr), tc.want) {
				t.Errorf("once: exit %d, want an error saying %q: %s", code, tc.want, stderr)
			}
			a := e.startAgent()
			waitFor(t, "run to log what to change", func() bool { return strings.Contains(a.logs.String(), tc.want) })
			a.stop(t)
		})
	}
}
