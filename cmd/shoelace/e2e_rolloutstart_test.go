package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// A write with --canary whose rollout ends before the CLI reads its status (a canary that fails
// at once, an abort) prints the write's revision, the rollout's start as appliance history shows
// it, and says that the rollout ended; it printed the revision of the end and "started: 1 of 1
// instances get the change first".
func TestE2E_CanaryEndedAtOncePrintsTheStart(t *testing.T) {
	s := sharedServer(t)
	direct := newCLI(t, s)
	name := fmt.Sprintf("canary-ended-%d", time.Now().UnixNano())
	direct.ok("kv", "put", "appliances/"+name+"/port", "80")
	enrollOne(t, s, direct, name)

	// In front of the server: the CLI's read of the rollout after its write comes once the
	// rollout was aborted.
	upstream, err := url.Parse(s.url())
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(upstream)
	admin := adminClient(t, s)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Path == "/v1/appliances/"+name+"/rollout" {
			if _, err := admin.RolloutAction(context.Background(), name, "abort"); err != nil {
				t.Errorf("abort: %v", err)
			}
		}
		proxy.ServeHTTP(w, r)
	}))
	defer front.Close()
	viaFront := direct.with("SHOELACE_ADDR=" + front.URL)

	check := func(r result, what string) {
		t.Helper()
		if r.code != 0 {
			t.Fatalf("%s: %s", what, r)
		}
		rev := revisionOf(t, r.stdout)
		hist := direct.ok("appliance", "history", name, "--limit", "1", "-o", "json")
		var h api.Releases
		if err := json.Unmarshal([]byte(hist), &h); err != nil || len(h.Releases) != 1 {
			t.Fatalf("appliance history: %v: %s", err, hist)
		}
		if start := h.Releases[0]; start.Kind != api.KindRollout || start.Revision != rev {
			t.Fatalf("%s printed revision %d; the rollout's start is the last release: %s", what, rev, hist)
		}
		if !strings.Contains(r.stderr, "has aborted already") || strings.Contains(r.stderr, "get the change first") {
			t.Fatalf("%s: stderr %q does not say the rollout ended", what, r.stderr)
		}
	}
	check(viaFront.run("kv", "put", "appliances/"+name+"/port", "81", "--canary", "100%", "--manual"), "kv put --canary")
	file := t.TempDir() + "/web.yaml"
	writeFile(t, file, "keys:\n  port: \"82\"\n")
	check(viaFront.run("appliance", "apply", name, "-f", file, "--canary", "100%", "--manual"), "appliance apply --canary")
}
