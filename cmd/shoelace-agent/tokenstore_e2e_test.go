//go:build !windows

package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
)

// An enrolled agent whose server: was changed to a server of another store (a new store, a
// staging one, anyone's at that address) sent it the instance token of its own store before
// anything said which store it was: the other server's owner held a token of the first store.
// Refused there (401), the token was dropped from the file, and pointed back at its store the
// agent asked to enroll again, refused as a clone (its name held by this same enrollment key)
// until --instance-stale. The token goes to another address only once its answer (to the
// appliance token) names the store the token was enrolled in, and is kept otherwise.
func TestE2E_RunSendsItsInstanceTokenOnlyToItsStore(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/port", "80")
	vm := startFleet(t, srv, 1)[0]
	waitEnrolled(t, srv, []*fleetAgent{vm})
	vm.run.stop(t)

	// A file saved without the store id (by an earlier version) gets it from the first answer.
	tokenFile := vm.env.path("cache/web.instance-token")
	b, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	var saved map[string]any
	if err := json.Unmarshal(b, &saved); err != nil || saved["token"] == nil || saved["store"] == nil {
		t.Fatalf("instance token file %q: %v", b, err)
	}
	store := saved["store"]
	delete(saved, "store")
	if b, err = json.Marshal(saved); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tokenFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	vm.run = vm.env.startAgent()
	waitFor(t, "the store id written to the file", func() bool {
		b, _ := os.ReadFile(tokenFile)
		var got map[string]any
		return json.Unmarshal(b, &got) == nil && got["store"] == store && got["token"] == saved["token"]
	})
	vm.run.stop(t)
	token := saved["token"].(string)
	applianceToken, err := os.ReadFile(vm.env.path("token"))
	if err != nil {
		t.Fatal(err)
	}

	// The other store, behind a proxy that keeps every Authorization it is sent.
	other := startServer(t, "", t.TempDir())
	rev := other.put("appliances/web/port", "82")
	target, _ := url.Parse("http://" + other.addr)
	var mu sync.Mutex
	var seen []string
	rp := httputil.NewSingleHostReverseProxy(target)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("Authorization"))
		mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	defer proxy.Close()
	if err := os.WriteFile(vm.env.path("token"), []byte(other.agentTokenFor(t, "web")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	vm.setServer(t, proxy.URL)
	vm.run = vm.env.startAgent()
	waitFor(t, "the agent renders from the other store", fileIs(vm.conf(), "port=82\n"))
	waitFor(t, "it enrolled there", vm.appliedAt(other, rev))
	vm.run.stop(t)
	mu.Lock()
	for _, a := range seen {
		if strings.Contains(a, token) {
			t.Errorf("the other store's server was sent the instance token of the first store")
			break
		}
	}
	mu.Unlock()

	// Back at its store, its token is used there again, without enrolling.
	if err := os.WriteFile(vm.env.path("token"), applianceToken, 0o600); err != nil {
		t.Fatal(err)
	}
	vm.setServer(t, "http://"+srv.addr)
	vm.run = vm.env.startAgent()
	rev = srv.put("appliances/web/port", "83")
	waitFor(t, "the agent renders from its store again", fileIs(vm.conf(), "port=83\n"))
	waitFor(t, "its report of the change taken (its instance token kept)", vm.appliedAt(srv, rev))
	if l := vm.run.logs.String(); strings.Contains(l, "not enrolled") || strings.Contains(l, `"msg":"enrolled"`) {
		t.Fatalf("the agent enrolled again:\n%s", l)
	}
}
