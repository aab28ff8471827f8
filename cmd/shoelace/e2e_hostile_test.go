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
