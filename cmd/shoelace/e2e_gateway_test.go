package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
)

// A load balancer that passes a write on to the server and then answers 504 (its upstream
// timeout) leaves the write applied: the CLI exits 7, outcome unknown, never 6 ("not applied:
// retry it"), which it did. A read answered 504 is still 6: nothing was changed.
func TestE2E_GatewayTimeoutOnWriteIsOutcomeUnknown(t *testing.T) {
	s := sharedServer(t)
	upstream, err := url.Parse(s.url())
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(upstream)
	lb := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Pass the request on, drop the server's answer, answer as a timed-out gateway.
		rec := httptest.NewRecorder()
		proxy.ServeHTTP(rec, r)
		w.WriteHeader(http.StatusGatewayTimeout)
		io.WriteString(w, "<html><body>504 Gateway Time-out</body></html>\n")
	}))
	defer lb.Close()

	direct := newCLI(t, s)
	viaLB := direct.with("SHOELACE_ADDR=" + lb.URL)
	r := viaLB.fails(exitUnknown, "a proxy in front of the server answered 504 (<html><body>504 Gateway Time-out</body></html>): it may have passed the write on, so its outcome is unknown; read the key or the appliance to check",
		"kv", "put", "shared/gateway/a", "applied")
	if strings.Contains(r.stderr, "retry it") {
		t.Errorf("stderr %q tells to retry a write that was applied", r.stderr)
	}
	if got := direct.ok("kv", "get", "shared/gateway/a"); got != "applied" {
		t.Fatalf("the write behind the 504 = %q; the test's proxy should have passed it on", got)
	}
	viaLB.fails(exitUnavailable, "server answered 504", "kv", "get", "shared/gateway/a")
}
