package server

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/testutil"
	"github.com/shoelace-dev/shoelace/internal/testutil/faultproxy"
)

// A token revoked while a replica could not watch, its revocation then compacted away, is not
// taken from the replica's cache while the reload that would learn of it fails: the replica
// knows its cache misses changes, so it asks the store (503 while the token records cannot be
// read), never answers 200 to the revoked token. Once the reload succeeds, the token is 401.
func TestAuth_RevokedInCompactedGapWhileReloadFails(t *testing.T) {
	parallelOwnEtcd(t)
	var logs syncBuffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	cfg := testutil.StoreConfig(t)
	cfg.Endpoints, _ = testutil.StartEtcd(t, t.TempDir()) // it compacts
	a := newFixtureOn(t, testutil.OpenStore(t, cfg))
	p := faultproxy.Start(t, cfg.Endpoints[0])
	b := newFixtureLog(t, throughProxy(t, cfg, p), log)
	b.token = a.token
	ctx := context.Background()
	victim := a.newToken(api.TokenRequest{Name: "victim", Read: []string{"shared"}})
	waitFor(t, "replica b knows the token", func() bool { return b.s.auth.lookup(victim) != nil })
	b.settled()

	p.Down() // b's watch breaks: it does not see the revocation
	a.must(a.do("DELETE", "/v1/tokens/victim", ""), 200, nil)
	if _, err := a.st.Put(ctx, "shared/after", "1", -1); err != nil {
		t.Fatal(err)
	}
	rev, err := a.st.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.st.Compact(ctx, rev); err != nil { // the revocation is gone from history
		t.Fatal(err)
	}

	// The watch's reset (its history compacted) as replica b's hub makes it, while b cannot
	// reach etcd: the reload that follows fails. (Made here, not by the watch: a proxy that
	// cuts the reload's transactions cut the connection of the reads before the watch too, and
	// the replica then never got as far as its reset, under load.)
	b.s.fresh.reach.miss(rev)
	b.s.onHubReset(ctx)
	if !strings.Contains(logs.String(), "after a watch reset") {
		t.Fatalf("the reload after the watch reset did not fail; logs:\n%s", logs.String())
	}
	for i := 0; i < 3; i++ {
		r := b.doToken(victim, "GET", "/v1/kv/shared/after", "")
		if r.StatusCode == 200 {
			t.Fatalf("replica b answered 200 to a token revoked while it could not watch (its reload failing): %s", r.body)
		}
		// 503 for the token (the store could not be asked of it, as the log says), not for the
		// key's read, which etcd away fails too: the cache's token was taken.
		if r.StatusCode != 401 && (r.StatusCode != 503 || !strings.Contains(logs.String(), "could not be asked")) {
			t.Fatalf("status %d, want 401 or 503 for the token; body %s; logs:\n%s", r.StatusCode, r.body, logs.String())
		}
	}
	p.Up()
	if !within(30*time.Second, func() bool { return b.s.auth.lookup(victim) == nil }) {
		t.Fatal("replica b still holds the revoked token 30s after its store came back")
	}
	b.mustErr(b.doToken(victim, "GET", "/v1/kv/shared/after", ""), 401, api.CodeUnauthorized)
	b.must(b.do("GET", "/v1/kv/shared/after", ""), 200, nil)
}

// Maintenance turned on while a replica could not watch, the event then compacted away, holds
// the replica's writes while the reload that would learn of it fails: writes are refused as
// unavailable (not applied), never taken as if maintenance were off; once the reload succeeds,
// they are refused for maintenance.
func TestSys_WritesHeldWhileReloadAfterCompactionFails(t *testing.T) {
	parallelOwnEtcd(t)
	var logs syncBuffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	cfg := testutil.StoreConfig(t)
	cfg.Endpoints, _ = testutil.StartEtcd(t, t.TempDir()) // it compacts
	a := newFixtureOn(t, testutil.OpenStore(t, cfg))
	p := faultproxy.Start(t, cfg.Endpoints[0])
	b := newFixtureLog(t, throughProxy(t, cfg, p), log)
	b.token = a.token
	ctx := context.Background()
	b.settled()
	if err := b.s.writable(); err != nil {
		t.Fatalf("writable before the fault: %v", err)
	}

	p.Down()
	a.must(a.do("PUT", "/v1/maintenance", `{"on":true}`), 200, nil)
	if _, err := a.st.Put(ctx, "shared/after", "1", -1); err != nil {
		t.Fatal(err)
	}
	rev, err := a.st.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.st.Compact(ctx, rev); err != nil {
		t.Fatal(err)
	}
	// The watch's reset, made as b's hub makes it (see above), while b cannot reach etcd: the
	// hub knows the store's revision by then.
	b.s.fresh.reach.miss(rev)
	b.s.onHubReset(ctx)
	if !strings.Contains(logs.String(), "after a watch reset") {
		t.Fatalf("the reload after the watch reset did not fail; logs:\n%s", logs.String())
	}
	if b.s.maintenance.Load() {
		t.Fatal("maintenance is on although the reload failed: the test proves nothing")
	}
	err = b.s.writable()
	if err == nil {
		t.Fatal("replica b takes writes while maintenance, turned on in the history it lost, is unknown to it")
	}
	if code := api.AsError(err).Code; code != api.CodeUnavailable {
		t.Fatalf("writable: %v (code %s), want unavailable", err, code)
	}
	p.Up()
	if !within(30*time.Second, b.s.maintenance.Load) {
		t.Fatal("replica b did not turn maintenance on within 30s of its store coming back")
	}
	b.mustErr(b.do("PUT", "/v1/kv/shared/x", "1"), 503, api.CodeMaintenance)
}

// While a replica's cache of the store's records may lack changes its watch lost (a rollout
// aborted among them), an instance of a rollout's cohort is not given the candidate from that
// cache: its view is 503 (retry) until the records are read again, never a candidate the rollout
// may no longer have. (The gap is made here as the watch's reset makes it.)
func TestRollout_CandidateNotGivenFromAStaleCache(t *testing.T) {
	f := newFixture(t)
	f.put("appliances/web/port", "80")
	agent := f.newToken(api.TokenRequest{Name: "web-fleet", Appliance: "web"})
	e := f.enroll(agent, "web", "vm-0")
	time.Sleep(10 * time.Millisecond) // enrolled before the rollout started, by the server's clock
	f.must(f.do("PUT", "/v1/kv/appliances/web/port?canary=100%25&manual", "8080"), http.StatusAccepted, nil)
	var v api.View
	f.must(f.doToken(e.Token, "GET", "/v1/appliances/web", ""), 200, &v)
	if v.Keys["port"] != "8080" || v.Rollout == "" {
		t.Fatalf("the instance's view: %+v", v)
	}
	f.s.fresh.reach.miss(1 << 40) // the watch missed changes up to there: not read again yet
	for _, path := range []string{"/v1/appliances/web", "/v1/appliances/web?index=1&wait=5s"} {
		r := f.doToken(e.Token, "GET", path, "")
		if r.StatusCode == 200 {
			t.Fatalf("GET %s: 200 from a cache that may lack the rollout's end: %s", path, r.body)
		}
		f.mustErr(r, 503, api.CodeUnavailable)
		if r.Header.Get("Retry-After") == "" {
			t.Fatalf("GET %s: 503 without Retry-After", path)
		}
	}
	f.s.fresh.reach.raise(1 << 40) // read again
	f.must(f.doToken(e.Token, "GET", "/v1/appliances/web", ""), 200, &v)
	if v.Keys["port"] != "8080" || v.Rollout == "" {
		t.Fatalf("the instance's view once the records were read again: %+v", v)
	}
}
