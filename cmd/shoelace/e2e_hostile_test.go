package main

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// A server, or a man in the middle on plain http, that redirects the CLI to another address
// gets no request there: net/http followed the redirect to another port of the same host with
// the token. exit 1 (retrying cannot help) with what to change; a write so answered was not
// applied (not exit 7).
func TestE2E_RedirectToAnotherAddressNotFollowed(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.Path+" "+r.Header.Get("Authorization"))
		mu.Unlock()
		w.Write([]byte(`{"key":"shared/a","value":"planted","mod_revision":1,"create_revision":1,"version":1}`))
	}))
	defer other.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+r.URL.RequestURI(), http.StatusTemporaryRedirect)
	}))
	defer srv.Close()
	c := &runner{t: t, env: []string{"SHOELACE_ADDR=" + srv.URL, "SHOELACE_TOKEN=secret"}}
	want := "shoelace: the server redirected to another address: not followed, so that the token goes to no one else: from " + srv.URL +
		" to " + other.URL + ": if the server moved, give its new address in --addr (SHOELACE_ADDR)"
	c.fails(exitError, want, "kv", "get", "shared/a")
	c.fails(exitError, "give its new address in --addr (SHOELACE_ADDR)", "kv", "put", "shared/a", "v")
	mu.Lock()
	defer mu.Unlock()
	if len(seen) > 0 {
		t.Fatalf("the other address saw %q", seen)
	}
}

// A write answered with a redirect within the server's address that net/http follows as a GET
// (301, 302, 303: a proxy in front that redirects) is not followed: the GET's answer, a key's
// JSON, passed for the write's, and kv put, kv rm and txn printed "revision 0" and exited 0
// with nothing written. They exit 1 (retrying cannot help), saying so; no GET is sent. A 307 or
// 308, which net/http follows with the write's body, is still followed.
func TestE2E_WriteRedirectedAsReadNotFollowed(t *testing.T) {
	var mu sync.Mutex
	var gets []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodGet:
			mu.Lock()
			gets = append(gets, r.URL.Path)
			mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"key":"shared/a","value":"old","mod_revision":5,"create_revision":5,"version":1}`))
		case r.URL.Query().Has("moved"):
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("X-Shoelace-Index", "9") // as every answer of a Shoelace server
			w.Header().Set("X-Shoelace-Store", "store-1")
			w.Write([]byte(`{"revision":9}`))
		default:
			code := map[string]int{"/v1/kv/shared/a": http.StatusFound, "/v1/kv/shared/b": http.StatusMovedPermanently,
				"/v1/txn": http.StatusSeeOther, "/v1/kv/shared/c": http.StatusTemporaryRedirect}[r.URL.Path]
			http.Redirect(w, r, r.URL.Path+"?moved", code)
		}
	}))
	defer srv.Close()
	c := &runner{t: t, env: []string{"SHOELACE_ADDR=" + srv.URL, "SHOELACE_TOKEN=secret"}}
	want := "the server answered the write with a redirect, which would be followed as a read: not followed, and the write was not applied"
	c.fails(exitError, want+": PUT /v1/kv/shared/a answered 302", "kv", "put", "shared/a", "v")
	c.fails(exitError, want+": DELETE /v1/kv/shared/b answered 301", "kv", "rm", "shared/b")
	checkFailure(t, c.runStdin([]byte(`{"ops":[{"op":"put","key":"shared/a","value":"1"}]}`), "txn", "-f", "-"), exitError, want+": POST /v1/txn answered 303", []string{"txn"})
	if got := c.ok("kv", "put", "shared/c", "v"); got != "revision 9\n" {
		t.Errorf("kv put answered 307 printed %q, want the revision of the write where the redirect sent it", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(gets) > 0 {
		t.Fatalf("the writes were followed as reads: %q", gets)
	}
}
