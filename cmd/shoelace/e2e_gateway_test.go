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

// Another service at --addr that answers 200 with HTML to every path (a web UI on the port
// given by mistake): the CLI says the address is not a Shoelace server; it said
// "GET /v1/kv/k: decode answer: invalid character '<' looking for beginning of value".
func TestE2E_AddrOfAnotherServiceThatAnswers200(t *testing.T) {
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, "<!doctype html><title>Sign in</title>\n")
	}))
	defer other.Close()
	c := &runner{t: t, env: []string{"SHOELACE_ADDR=" + other.URL, "SHOELACE_TOKEN=x"}}
	for _, args := range [][]string{{"kv", "get", "shared/a"}, {"kv", "put", "shared/a", "v"}, {"appliance", "ls"}} {
		r := c.fails(exitError, other.URL+" is not answering as a Shoelace server (", args...)
		if !strings.Contains(r.stderr, "answered 200 with text/html; charset=utf-8: no X-Shoelace-Index and X-Shoelace-Store headers") || !strings.Contains(r.stderr, "check --addr (SHOELACE_ADDR)") {
			t.Errorf("shoelace %q: stderr %q", args, r.stderr)
		}
	}
}

// Another service at --addr that answers every request 200 with JSON of no fields ({} or null,
// a catch-all): kv put printed "revision 0" and exited 0, and kv get printed an empty value. A
// Shoelace server sends X-Shoelace-Index and X-Shoelace-Store with every answer, and a write's
// index is the revision it wrote at: an answer without them is refused, a write's saying that
// it may not have been applied (exit 1).
func TestE2E_AddrOfAnotherServiceThatAnswersEmptyJSON(t *testing.T) {
	for _, body := range []string{"{}", "null"} {
		other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, body)
		}))
		c := &runner{t: t, env: []string{"SHOELACE_ADDR=" + other.URL, "SHOELACE_TOKEN=x"}}
		for _, args := range [][]string{{"kv", "put", "x/y", "1"}, {"kv", "rm", "x/y"}, {"kv", "get", "x/y"}, {"appliance", "get", "web"}} {
			r := c.fails(exitError, other.URL+" is not answering as a Shoelace server (", args...)
			write := args[1] != "get"
			if r.stdout != "" || !strings.Contains(r.stderr, "answered 200 with application/json: no X-Shoelace-Index and X-Shoelace-Store headers") ||
				strings.Contains(r.stderr, "may not have been applied") != write {
				t.Errorf("%s: shoelace %q: stdout %q, stderr %q", body, args, r.stdout, r.stderr)
			}
		}
		other.Close()
	}
	// With the headers, but a write's index 0: no revision a Shoelace server writes at.
	zero := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Shoelace-Index", "0")
		w.Header().Set("X-Shoelace-Store", "")
		io.WriteString(w, `{"revision":0}`)
	}))
	defer zero.Close()
	c := &runner{t: t, env: []string{"SHOELACE_ADDR=" + zero.URL, "SHOELACE_TOKEN=x"}}
	if r := c.fails(exitError, "X-Shoelace-Index 0, where a Shoelace server answers a write with the revision it wrote at; the write may not have been applied", "kv", "put", "x/y", "1"); r.stdout != "" {
		t.Errorf("kv put answered index 0: stdout %q", r.stdout)
	}
}

// --addr as a file or a CI variable gives it: "$BASE/" where BASE ends in '/', a CR at the
// end. They named paths the server refuses ("//v1/kv/…": exit 1) or failed to parse (exit 2).
func TestE2E_AddrWithDoubledSlashOrCR(t *testing.T) {
	s := sharedServer(t)
	c := newCLI(t, s)
	for _, addr := range []string{s.url() + "//", s.url() + "/./", s.url() + "\r", " " + s.url() + "\n"} {
		cc := c.with("SHOELACE_ADDR=" + addr)
		cc.ok("kv", "put", "shared/addr/x", "v")
		if got := cc.ok("kv", "get", "shared/addr/x"); got != "v" {
			t.Errorf("--addr %q: kv get = %q", addr, got)
		}
	}
}

// --addr http:// of an HTTPS server (the scheme left out of a variable, or copied from a
// plain dev server): Go's HTTPS server answers 400 "Client sent an HTTP request to an HTTPS
// server.", and the CLI said only that the address "is not answering as a Shoelace server",
// with http://127.0.0.1:7400 as the example of a base URL. It now says to use https://.
func TestE2E_AddrHTTPOfAnHTTPSServer(t *testing.T) {
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	plain := "http://" + strings.TrimPrefix(srv.URL, "https://")
	c := &runner{t: t, env: []string{"SHOELACE_ADDR=" + plain, "SHOELACE_TOKEN=x"}}
	for _, args := range [][]string{{"kv", "get", "shared/a"}, {"kv", "put", "shared/a", "v"}, {"health"}} {
		r := c.run(args...)
		if want := "the server speaks HTTPS: use " + srv.URL + " in --addr (SHOELACE_ADDR)"; r.code == 0 || !strings.Contains(r.stderr, want) {
			t.Errorf("shoelace %q: exit %d, stderr %q; want it to say %q", args, r.code, r.stderr, want)
		}
	}
}
