package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/testutil"
	"github.com/shoelace-dev/shoelace/internal/testutil/faultproxy"
	"github.com/shoelace-dev/shoelace/server/store"
)

// throughProxy opens a store like cfg whose etcd client goes through p, with short timeouts.
func throughProxy(t *testing.T, cfg store.Config, p *faultproxy.Proxy) *store.Store {
	t.Helper()
	cfg.Endpoints = []string{p.URL()}
	cfg.RequestTimeout = time.Second
	cfg.AttemptTimeout = 200 * time.Millisecond
	cfg.WatchProgressInterval = 200 * time.Millisecond
	return testutil.OpenStore(t, cfg)
}

// replicaBehindProxy returns two replicas of one store with the same admin token: a, with the
// store as it is, and b, whose store reaches etcd through p with the store's default timeouts,
// those that a frozen etcd makes a replica wait for.
func replicaBehindProxy(t *testing.T) (a, b *fixture, p *faultproxy.Proxy) {
	t.Helper()
	cfg := testutil.StoreConfig(t)
	a = newFixtureOn(t, testutil.OpenStore(t, cfg))
	p = faultproxy.Start(t, cfg.Endpoints[0])
	cfg.Endpoints = []string{p.URL()}
	cfg.RequestTimeout = store.DefaultRequestTimeout
	cfg.AttemptTimeout = store.DefaultAttemptTimeout
	b = newFixtureOn(t, testutil.OpenStore(t, cfg))
	b.token = a.token
	return a, b, p
}

// agentTokenKnownTo makes an agent token of appliance app on a, and waits until b knows it.
func agentTokenKnownTo(t *testing.T, a, b *fixture, app string) string {
	t.Helper()
	agent := a.newToken(api.TokenRequest{Name: "agent", Appliance: app})
	waitFor(t, "replica b knows the token", func() bool { return b.s.auth.lookup(agent) != nil })
	return agent
}

// settled waits until the replica's own first requests are done: its first replica beat (a
// write and a read; the next is replicaBeat away) and its mirror's first load (a transaction
// of reads, which a fault would make it try again). A fault armed after this meets only the
// requests the test makes the replica send, not a start-up request still in flight or retried.
func (f *fixture) settled() {
	f.t.Helper()
	waitFor(f.t, "the replica's first beat", func() bool { return f.s.replicas.Load() != nil })
	f.mirrorAt(0)
}

// within polls cond until it holds or d has passed, and says whether it held.
func within(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// A revocation and maintenance mode reach a replica whose store fails every request from the
// moment their watch events arrive: the events themselves carry what the replica needs, so it
// reads nothing back (a failed re-read used to leave the token valid until a restart).
func TestSys_EventsApplyWhileReadsFail(t *testing.T) {
	parallelShared(t)
	cfg := testutil.StoreConfig(t)
	a := newFixtureOn(t, testutil.OpenStore(t, cfg))
	p := faultproxy.Start(t, cfg.Endpoints[0])
	// b beats once at its start and not again within the test: a beat (every 15 s by default)
	// landing between the fault's arming and the events took the cut, which broke b's watch.
	b := newFixtureOn(t, throughProxy(t, cfg, p), func(c *Config) { c.beatEvery = time.Hour })
	b.token = a.token
	agent := a.newToken(api.TokenRequest{Name: "agent", Read: []string{"shared"}})
	waitFor(t, "replica b knows the token", func() bool { return b.s.auth.lookup(agent) != nil })
	// The fault below meets nothing but what the events make b do.
	b.settled()

	// From now on the first request b's store sends cuts its connection, and etcd stays away.
	p.CutBeforeRequest(func(string) bool { return true }, true)
	a.must(a.do("PUT", "/v1/maintenance", `{"on":true}`), 200, nil)
	a.must(a.do("DELETE", "/v1/tokens/agent", ""), 200, nil)
	if !within(20*time.Second, b.s.maintenance.Load) {
		t.Fatal("replica b did not turn maintenance on within 20s")
	}
	if !within(20*time.Second, func() bool { return b.s.auth.lookup(agent) == nil }) {
		t.Fatal("replica b still accepts the revoked token after 20s")
	}
	b.mustErr(b.doToken(agent, "GET", "/v1/kv/shared/x", ""), 401, api.CodeUnauthorized)
	b.mustErr(b.do("PUT", "/v1/kv/shared/x", "1"), 503, api.CodeMaintenance)
	p.Up()
}

// A reload that fails (here the one after a watch reset, which is how a replica learns what a
// compacted history hid from it) is tried again until it succeeds: maintenance turned on while
// the replica could not watch reaches it once its store answers again.
func TestSys_FailedReloadIsTriedAgain(t *testing.T) {
	var logs syncBuffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	cfg := testutil.StoreConfig(t)
	a := newFixtureOn(t, testutil.OpenStore(t, cfg))
	p := faultproxy.Start(t, cfg.Endpoints[0])
	b := newFixtureLog(t, throughProxy(t, cfg, p), log)
	b.token = a.token
	ctx := context.Background()
	// No start-up request of b's own trips the fault below (a mirror load still being tried
	// when etcd came back took the cut, and etcd stayed away before b could watch again).
	b.settled()

	p.Down() // b's watch breaks
	a.must(a.do("PUT", "/v1/maintenance", `{"on":true}`), 200, nil)
	// A later revision to compact up to, so that the maintenance event is gone from history.
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
	// b watches again from a compacted revision, resets, and reloads tokens and settings and its
	// mirror (a transaction of reads each): the first of the two cuts its connection and etcd
	// stays away, so the reload of tokens and settings fails whichever went first.
	p.CutBeforeRequest(faultproxy.Methods("/etcdserverpb.KV/Txn"), true)
	p.Up()
	if !within(20*time.Second, func() bool { return strings.Contains(logs.String(), "after a watch reset") }) {
		t.Fatalf("the reload after the watch reset did not fail; cuts %d; logs:\n%s", p.Cuts(), logs.String())
	}
	if b.s.maintenance.Load() {
		t.Fatal("maintenance is on although the reload failed: the test proves nothing")
	}
	p.Up()
	if !within(30*time.Second, b.s.maintenance.Load) {
		t.Fatal("replica b did not turn maintenance on within 30s of its store coming back")
	}
	b.mustErr(b.do("PUT", "/v1/kv/shared/x", "1"), 503, api.CodeMaintenance)
}

// A write that etcd applied but whose answer the replica never got (the connection broke after
// etcd answered) is answered as the success it was, with its revision, and audited; when etcd
// stays away after the answer was lost, the answer is 503 outcome_unknown, never "not applied".
func TestKV_WriteAnswerLost(t *testing.T) {
	parallelShared(t)
	var logs syncBuffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cfg := testutil.StoreConfig(t)
	p := faultproxy.Start(t, cfg.Endpoints[0])
	f := newFixtureLog(t, throughProxy(t, cfg, p), log)
	_, off := auditLines(t, &logs, 0)

	p.CutAfterReply(faultproxy.Writes, false)
	r := f.do("PUT", "/v1/kv/shared/k", "v")
	if p.Cuts() != 1 {
		t.Fatalf("the proxy cut %d connections, want 1", p.Cuts())
	}
	var wr api.WriteResult
	f.must(r, 200, &wr)
	kv, _, err := f.st.Get(context.Background(), "shared/k")
	if err != nil || kv.Value != "v" || kv.ModRevision != wr.Revision {
		t.Fatalf("stored %+v, %v; want v at revision %d", kv, err, wr.Revision)
	}
	lines, _ := auditLines(t, &logs, off)
	if len(lines) != 1 || lines[0]["op"] != "put" || lines[0]["revision"] != float64(wr.Revision) {
		t.Fatalf("audit lines %v, want one put at revision %d", lines, wr.Revision)
	}

	p.CutAfterReply(faultproxy.Writes, true)
	f.mustErr(f.do("PUT", "/v1/kv/shared/k2", "v"), 503, api.CodeOutcomeUnknown, "outcome is unknown", "check, then retry")
	p.Up()
}

// tokenlessReplica is a replica whose etcd is reached through p, on a store whose admin token
// (its only token) was deleted again through direct, as a store is at a first start.
func tokenlessReplica(t *testing.T) (b *fixture, direct *store.Store, p *faultproxy.Proxy) {
	t.Helper()
	cfg := testutil.StoreConfig(t)
	direct = testutil.OpenStore(t, cfg)
	p = faultproxy.Start(t, cfg.Endpoints[0])
	b = newFixtureOn(t, throughProxy(t, cfg, p))
	if _, err := direct.SysDelete(context.Background(), tokenPrefix+adminTokenName); err != nil {
		t.Fatal(err)
	}
	return b, direct, p
}

// The first admin token's write, when its outcome cannot be learnt (the answer lost, then etcd
// away), keeps its secret until the store can tell: the server keeps trying, and installs the
// admin token file once it sees its own record — it neither exits nor loses the secret of a
// token that was created.
func TestBootstrap_AdminTokenOutcomeUnknown(t *testing.T) {
	b, direct, p := tokenlessReplica(t)
	ctx := context.Background()
	path := b.s.cfg.adminTokenFile()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	b.settled()

	// Once bootstrap has found no token, its write of one is applied, the answer lost, and etcd
	// stays away.
	afterAdminTokenList = func() { p.CutAfterReply(faultproxy.Writes, true) }
	defer func() { afterAdminTokenList = nil }()
	if err := b.s.bootstrap(ctx); err != nil {
		t.Fatalf("bootstrap with the write's outcome unknown: %v (the server would exit)", err)
	}
	if p.Cuts() != 1 {
		t.Fatalf("the proxy cut %d connections, want 1", p.Cuts())
	}
	p.Up()
	waitFor(t, "the admin token file", func() bool { _, err := os.Stat(path); return err == nil })
	secret, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data, _, err := direct.SysGet(ctx, tokenPrefix+adminTokenName)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := decodeToken(tokenPrefix+adminTokenName, data)
	if err != nil || rec.Hash != hashSecret(strings.TrimSpace(string(secret))) {
		t.Fatalf("the admin token file does not hold the stored admin token's secret (%v)", err)
	}
}

// TestBootstrap_AdminTokenLeftByAnEarlierRun: a server that stopped while its first admin
// token's write had an unknown outcome (TestBootstrap_AdminTokenOutcomeUnknown's case, stopped
// before etcd came back) left the secret in a temp file beside the admin token file. The write
// had applied: the next run found a token in the store, made none, and nobody had the secret
// of the only admin token (a lockout the RUNBOOK can only mend with etcd client certificates).
// The next run installs it; the temp files of secrets no store holds are removed once they are
// old enough not to be another replica's on its way.
func TestBootstrap_AdminTokenLeftByAnEarlierRun(t *testing.T) {
	first := newFixture(t)
	file := filepath.Join(t.TempDir(), "admin.token")
	other := "sl_a-token-of-another-store"
	if err := os.WriteFile(file, []byte(other+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	id := []byte(first.st.ID())
	left := leftSecret(t, file, first.token, id, false) // the stored admin token's secret
	stale, young := leftSecret(t, file, "", id, true), leftSecret(t, file, "", id, false)

	next := newFixtureOn(t, first.st, func(c *Config) { c.AdminTokenFile = file })
	if next.token != first.token {
		t.Fatalf("%s holds %q after the next start, want the stored admin token's secret", file, next.token)
	}
	next.must(next.do("GET", "/v1/tokens", ""), 200, nil)
	for name, want := range map[string]bool{left: false, stale: false, young: true} {
		if _, err := os.Lstat(name); (err == nil) != want {
			t.Errorf("%s there: %v, want %v", filepath.Base(name), err == nil, want)
		}
	}
	kept, _ := filepath.Glob(file + ".replaced-*")
	if len(kept) != 1 {
		t.Fatalf("kept beside the file: %v, want the other store's token once", kept)
	}
	if data, err := os.ReadFile(kept[0]); err != nil || strings.TrimSpace(string(data)) != other {
		t.Errorf("%s holds %q (%v), want the token the file held", kept[0], data, err)
	}

	// Another replica given the same file, which installed the secret first, leaves this one's
	// rename nothing to move: done all the same, as long as the file holds it.
	rec := next.s.auth.lookup(first.token)
	if rec == nil {
		t.Fatal("the admin token is not known")
	}
	if err := next.s.installAdminToken(rec, left, ""); err != nil {
		t.Errorf("install of a secret already installed: %v", err)
	}
	if err := os.WriteFile(file, []byte(other+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := next.s.installAdminToken(rec, left, ""); err == nil {
		t.Error("install of a secret gone, with the file not holding it, did not fail")
	}
}

// TestBootstrap_AdminTokenLeftForAnotherStore: a temp file of the admin token's secret that an
// earlier run against one store left beside the file (its write applied, the answer lost) stays
// there when a server of another store given the same file (another --root, etcd cluster or data
// dir) starts, however old: that server does not hold the secret, and was removing it as one no
// store holds, so that the next start against the first store found nothing to install (the
// lockout TestBootstrap_AdminTokenLeftByAnEarlierRun mends).
func TestBootstrap_AdminTokenLeftForAnotherStore(t *testing.T) {
	first := newFixture(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "admin.token")
	id := []byte(first.st.ID())
	left := leftSecret(t, file, first.token, id, true)
	// And the temp file of another admin token file of the first store, whose name begins as
	// this file's temp files do.
	beside := leftSecret(t, filepath.Join(dir, "admin.token.tmp2"), "", id, true)

	other := newFixture(t, func(c *Config) { c.AdminTokenFile = file }) // a store of its own
	if _, err := os.Lstat(left); err != nil {
		t.Fatalf("the secret of another store's admin token, left beside the file, is gone after a start on a store of its own: %v", err)
	}
	next := newFixtureOn(t, first.st, func(c *Config) { c.AdminTokenFile = file })
	if next.token != first.token {
		t.Fatalf("%s holds %q after the next start on the first store, want its admin token's secret", file, next.token)
	}
	if kept, _ := filepath.Glob(file + ".replaced-*"); len(kept) != 1 {
		t.Errorf("kept beside the file: %v, want the other store's token once", kept)
	}
	if _, err := os.Lstat(beside); err != nil {
		t.Errorf("the temp file of another admin token file is gone: %v", err)
	}
	other.must(other.doToken(other.token, "GET", "/v1/tokens", ""), 200, nil)
}

// TestBootstrap_AdminTokenLeftWhereTheFileHoldsIt: a temp file of the admin token's secret found
// where the admin token file holds that secret already (another replica given the same file
// installed it a moment before: both found it at their start) is a copy of it. It was installed
// again, the file first kept beside it as a token of another store, with a warning saying so: a
// live admin token's secret in a file the operator is told holds a token this store does not know.
func TestBootstrap_AdminTokenLeftWhereTheFileHoldsIt(t *testing.T) {
	first := newFixture(t)
	file := first.s.cfg.adminTokenFile()
	left := leftSecret(t, file, first.token, []byte(first.st.ID()), false)
	next := newFixtureOn(t, first.st, func(c *Config) { c.AdminTokenFile = file })
	if next.token != first.token {
		t.Fatalf("%s holds %q after the next start, want the stored admin token's secret", file, next.token)
	}
	if kept, _ := filepath.Glob(file + ".replaced-*"); len(kept) != 0 {
		t.Errorf("kept beside the file, which held the admin token's secret: %v", kept)
	}
	if _, err := os.Lstat(left); err == nil {
		t.Errorf("the copy of the admin token's secret is still there")
	}

	// The other replica installed it between this one's read of the temp file and its rename:
	// what this one kept of the file (the secret itself) is dropped.
	rec := next.s.auth.lookup(first.token)
	if rec == nil {
		t.Fatal("the admin token is not known")
	}
	kept, err := keepOldAdminToken(file)
	if err != nil || kept == "" {
		t.Fatalf("keep %s: %q, %v", file, kept, err)
	}
	if err := next.s.installAdminToken(rec, left, kept); err != nil {
		t.Fatalf("install of a secret already installed: %v", err)
	}
	if _, err := os.Lstat(kept); err == nil {
		t.Errorf("%s, the admin token's secret kept as another store's token, is still there", filepath.Base(kept))
	}
}

// leftSecret writes secret (a new one, which no store holds, when "") to a temp file beside
// file, as a run against the store storeID left it; aged, it is older than leftSecretAge.
func leftSecret(t *testing.T, file, secret string, storeID []byte, aged bool) string {
	t.Helper()
	if secret == "" {
		var err error
		if secret, err = newSecret(); err != nil {
			t.Fatal(err)
		}
	}
	name, err := writeSecretFile(file, secret, storeID)
	if err != nil {
		t.Fatal(err)
	}
	if aged {
		old := time.Now().Add(-2 * leftSecretAge)
		if err := os.Chtimes(name, old, old); err != nil {
			t.Fatal(err)
		}
	}
	return name
}

// A token this replica does not know, asked while the store cannot be reached, is 503 with
// Retry-After, not 401: it may have been created through another replica a moment ago (an
// agent drops an instance token answered 401). Requests that arrived together share one
// failed read instead of each waiting for its own in turn.
func TestAuth_UnknownTokenWhileStoreAway(t *testing.T) {
	cfg := testutil.StoreConfig(t)
	p := faultproxy.Start(t, cfg.Endpoints[0])
	b := newFixtureOn(t, throughProxy(t, cfg, p))
	b.settled()
	p.CutBeforeRequest(func(string) bool { return true }, true)
	start := time.Now()
	done := make(chan resp, 4)
	for range 4 {
		go func() { done <- b.doToken("sl_not-known-here", "GET", "/v1/kv/shared/x", "") }()
	}
	for range 4 {
		r := <-done
		b.mustErr(r, 503, api.CodeUnavailable)
		mustRetryAfter(t, r)
	}
	if took := time.Since(start); took > 12*time.Second {
		t.Errorf("4 requests took %s: each waited for a read of its own", took)
	}
	p.Up()
}

// A store failure answered to an agent token names neither etcd's endpoints nor its error (an
// operator's token gets them, as on /health/deps), and says when to retry.
func TestStoreFailure_AgentNotToldEtcdEndpoints(t *testing.T) {
	parallelShared(t)
	cfg := testutil.StoreConfig(t)
	p := faultproxy.Start(t, cfg.Endpoints[0])
	b := newFixtureOn(t, throughProxy(t, cfg, p))
	b.put("appliances/web/a", "1")
	agent := b.s.testToken(t, api.TokenRequest{Name: "agent", Appliance: "web"})
	b.settled()
	p.CutBeforeRequest(func(string) bool { return true }, true)
	r := b.doToken(agent, "GET", "/v1/appliances/web", "")
	b.mustErr(r, 503, api.CodeUnavailable)
	mustRetryAfter(t, r)
	if b := string(r.body); strings.Contains(b, p.URL()) || strings.Contains(b, "etcd") {
		t.Errorf("an agent token was told the store's endpoints or error: %s", r.body)
	}
	r = b.do("GET", "/v1/appliances/web", "")
	b.mustErr(r, 503, api.CodeUnavailable, "etcd")
	p.Up()
}

// etcd out of space (the NOSPACE alarm: its database reached --quota-backend-bytes) refuses
// every write before proposing it. A write then is 503 unavailable, not applied, saying why,
// with Retry-After (the CLI exits 6); it was 500 internal (exit 1), which says nothing of
// whether it applied. Reads go on, and writes apply again once the alarm is disarmed.
func TestStoreOutOfSpace_WritesSayNotApplied(t *testing.T) {
	st, eps, _ := ownEtcdStore(t, t.TempDir())
	f := newFixtureOn(t, st)
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)

	disarm := raiseNOSPACE(t, eps)

	for _, w := range []struct{ method, path, body string }{
		{"PUT", "/v1/kv/appliances/web/a", "2"},
		{"PUT", "/v1/appliances/web", `{"keys":{"a":"3"}}`},
		{"POST", "/v1/txn", `{"ops":[{"op":"put","key":"shared/x","value":"1"}]}`},
		{"DELETE", "/v1/kv/appliances/web/a", ""},
	} {
		r := f.do(w.method, w.path, w.body)
		f.mustErr(r, 503, api.CodeUnavailable, "out of space", "NOSPACE", "not applied")
		if r.Header.Get("Retry-After") == "" {
			t.Errorf("%s %s: 503 without Retry-After", w.method, w.path)
		}
	}
	var v api.View
	f.must(f.do("GET", "/v1/appliances/web", ""), 200, &v)
	if v.Keys["a"] != "1" {
		t.Fatalf("view while etcd is out of space: %+v", v)
	}

	disarm()
	f.put("appliances/web/a", "4")
}

// raiseNOSPACE raises etcd's NOSPACE alarm on the etcd at eps (as its database reaching
// --quota-backend-bytes does) and returns what disarms it.
func raiseNOSPACE(t *testing.T, eps []string) (disarm func()) {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ms, err := cli.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	member := ms.Members[0].ID
	alarm := &etcdserverpb.AlarmRequest{Action: etcdserverpb.AlarmRequest_ACTIVATE, MemberID: member, Alarm: etcdserverpb.AlarmType_NOSPACE}
	if _, err := etcdserverpb.NewMaintenanceClient(cli.ActiveConnection()).Alarm(ctx, alarm); err != nil {
		t.Fatal(err)
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := cli.AlarmDisarm(ctx, &clientv3.AlarmMember{MemberID: member, Alarm: etcdserverpb.AlarmType_NOSPACE}); err != nil {
			t.Fatal(err)
		}
	}
}

// Long-polls that arrive while etcd is frozen are answered when their wait expires (304), and a
// stream's first line comes within seconds. Their index is below what the replica saw, so each
// asks etcd whether it was compacted, which a frozen etcd never answers: each long-poll waited
// for the store's whole request timeout (10 s) before its wait began, one after another (those
// that had waited for a failed probe probed again, each alone), so that twenty long-polls took
// 200 s, the agents' 75 s request timed out, and a stream's first line came too late for the
// agent (5 s), which gave up streams for 10 minutes.
func TestLongPoll_FrozenStoreAnswersWithinWait(t *testing.T) {
	a, b, p := replicaBehindProxy(t)
	index := a.put("appliances/web/x", "1")
	last := a.put("appliances/other/x", "1") // above the index, not in web's view
	waitFor(t, "replica b's watch reaches the last write", func() bool { return b.s.hub.current() >= last })
	time.Sleep(200 * time.Millisecond) // past what b's store last learnt of the compaction

	p.Freeze()
	defer p.Thaw()
	const polls = 20
	type result struct {
		status int
		body   string
		took   time.Duration
		err    error
	}
	results := make(chan result, polls+1)
	get := func(path, instance string) {
		ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", b.srv.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+b.token)
		req.Header.Set(api.HeaderInstance, instance)
		start := time.Now()
		res, err := testClient.Do(req)
		if err != nil {
			results <- result{err: err, took: time.Since(start)}
			return
		}
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		results <- result{status: res.StatusCode, body: string(body), took: time.Since(start), err: err}
	}
	for i := range polls {
		go get(fmt.Sprintf("/v1/appliances/web?index=%d&wait=1s", index), fmt.Sprintf("vm-%d", i))
	}
	go get(fmt.Sprintf("/v1/appliances/web?index=%d&wait=1s&stream", index), "vm-stream")
	for range polls + 1 {
		r := <-results
		switch {
		case r.err != nil:
			t.Errorf("a long-poll with wait=1s while etcd is frozen: %v after %s", r.err, r.took.Round(time.Millisecond))
		case r.status == http.StatusNotModified:
		case r.status == http.StatusOK && strings.Contains(r.body, `"heartbeat":true`):
		default:
			t.Errorf("a long-poll with wait=1s while etcd is frozen: %d %s after %s", r.status, r.body, r.took.Round(time.Millisecond))
		}
	}
}

// Views asked for without index by many clients at once (agents starting together, or asking
// again as etcd comes back from a freeze) are read from the store once between them, not once
// each: fifty agents of an appliance with a 9 MiB view each held a read of it, its JSON and its
// gzip form, 2 GB of a replica's memory between them (before the bound on answers held, which
// counts them only once read). Each still gets the view as it is after its request arrived: a
// write acknowledged before gets in.
func TestView_ReadOnceForClientsAskingTogether(t *testing.T) {
	a, b, p := replicaBehindProxy(t)
	a.put("appliances/web/x", "1")
	agent := agentTokenKnownTo(t, a, b, "web")

	type result struct {
		status int
		view   api.View
		err    error
	}
	get := func(out chan<- result) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", b.srv.URL+"/v1/appliances/web", nil)
		req.Header.Set("Authorization", "Bearer "+agent)
		res, err := testClient.Do(req)
		if err != nil {
			out <- result{err: err}
			return
		}
		defer res.Body.Close()
		var r result
		r.status = res.StatusCode
		r.err = json.NewDecoder(res.Body).Decode(&r.view)
		out <- r
	}
	before := b.s.hub.viewReads.Load()
	// The first read reaches the store and waits there (frozen), as the write below is made.
	p.Freeze()
	first := make(chan result, 1)
	go get(first)
	waitFor(t, "the first read to start", func() bool { return b.s.hub.viewReads.Load() > before })
	a.put("appliances/web/x", "2")
	const n = 30
	rest := make(chan result, n)
	for range n {
		go get(rest)
	}
	time.Sleep(300 * time.Millisecond) // every request has arrived
	p.Thaw()
	if r := <-first; r.err != nil || r.status != http.StatusOK {
		t.Fatalf("the first view: %d %v", r.status, r.err)
	}
	for range n {
		r := <-rest
		if r.err != nil || r.status != http.StatusOK {
			t.Fatalf("a view asked for together: %d %v", r.status, r.err)
		}
		if got := r.view.Keys["x"]; got != "2" {
			t.Fatalf("a view asked for after the write of x=2 was acknowledged has x=%q", got)
		}
	}
	if reads := b.s.hub.viewReads.Load() - before; reads > 2 {
		t.Fatalf("%d views asked for together were read from the store %d times, want at most 2 (the read under way when they came, and one after it)", n+1, reads)
	}
}

// Views asked for together while etcd does not answer are all answered 503 when the read under
// way fails: those that came after it started do not wait for a read of their own to fail too.
func TestView_ReadFailureAnswersClientsAskingTogether(t *testing.T) {
	parallelShared(t)
	cfg := testutil.StoreConfig(t)
	a := newFixtureOn(t, testutil.OpenStore(t, cfg))
	p := faultproxy.Start(t, cfg.Endpoints[0])
	b := newFixtureOn(t, throughProxy(t, cfg, p))
	b.token = a.token
	a.put("appliances/web/x", "1")
	b.settled()

	before := b.s.hub.viewReads.Load()
	p.Freeze()
	defer p.Thaw()
	const n = 10
	codes := make(chan string, n+1)
	get := func() {
		req, _ := http.NewRequest("GET", b.srv.URL+"/v1/appliances/web", nil)
		req.Header.Set("Authorization", "Bearer "+b.token)
		res, err := testClient.Do(req)
		if err != nil {
			codes <- err.Error()
			return
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		codes <- resp{Response: res, body: body}.errCode()
	}
	go get()
	waitFor(t, "the first read to start", func() bool { return b.s.hub.viewReads.Load() > before })
	for range n {
		go get()
	}
	for range n + 1 {
		if code := <-codes; code != api.CodeUnavailable {
			t.Fatalf("a view asked for while etcd is frozen: error code %q, want %s", code, api.CodeUnavailable)
		}
	}
	if reads := b.s.hub.viewReads.Load() - before; reads != 1 {
		t.Fatalf("%d views asked for while etcd is frozen were read %d times, want once (the read that failed answers all)", n+1, reads)
	}
}

// A request whose client gives up while etcd does not answer is counted and logged as 499 (the
// client closed the request), never as 200: during an etcd freeze every read a client timed out
// on showed as a success in shoelace_http_requests_total and the access log.
func TestMetrics_ClientGoneWhileStoreFrozen(t *testing.T) {
	a, b, p := replicaBehindProxy(t)
	a.put("shared/x", "1")
	const ok, gone = `shoelace_http_requests_total{code="200",route="GET /v1/kv/{key...}"}`, `shoelace_http_requests_total{code="499",route="GET /v1/kv/{key...}"}`
	before := b.scrape()

	p.Freeze()
	defer p.Thaw()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", b.srv.URL+"/v1/kv/shared/x", nil)
	req.Header.Set("Authorization", "Bearer "+b.token)
	if res, err := testClient.Do(req); err == nil {
		res.Body.Close()
		t.Fatalf("a read while etcd is frozen was answered %d within 300ms", res.StatusCode)
	}
	waitFor(t, "the request gone to be counted", func() bool {
		after := b.scrape()
		if after[ok] > before[ok] {
			t.Fatalf("a read whose client went away while etcd was frozen was counted as 200")
		}
		return after[gone] > before[gone]
	})
}

// Agents whose applied revision is above what this replica has seen (served by a replica
// ahead of it) keep their long-polls within their wait while etcd is frozen: the check of
// their report against the store's revision held a lock across a read of the store that a
// frozen etcd answers only at the request timeout, and did not remember its failure, so that
// each long-poll asked in turn, 10 s each: five agents' long-polls with wait=2s were answered
// after 12, 22, 32, 42 and 52 s.
func TestReport_AboveReplicaWhileStoreFrozen(t *testing.T) {
	parallelShared(t)
	a, b, p := replicaBehindProxy(t)
	a.put("appliances/web/x", "1")
	agent := agentTokenKnownTo(t, a, b, "web")
	time.Sleep(2 * storeRevCheckEvery) // past what b last learnt of the store's revision
	index := b.s.hub.current()

	p.Freeze()
	defer p.Thaw()
	const polls = 5
	errs := make(chan error, polls)
	for i := range polls {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("%s/v1/appliances/web?index=%d&wait=1s", b.srv.URL, index), nil)
			req.Header.Set("Authorization", "Bearer "+agent)
			req.Header.Set(api.HeaderInstance, fmt.Sprintf("vm-%d", i))
			req.Header.Set(api.HeaderApplied, strconv.FormatInt(index+5, 10))
			res, err := testClient.Do(req)
			if err == nil {
				res.Body.Close()
				if res.StatusCode != http.StatusNotModified {
					err = fmt.Errorf("status %d", res.StatusCode)
				}
			}
			errs <- err
		}()
	}
	for range polls {
		if err := <-errs; err != nil {
			t.Errorf("a long-poll with wait=1s reporting a revision above the replica's while etcd is frozen: %v", err)
		}
	}
}

// Long-polls whose index is above what this replica has seen (an agent served before by a
// replica ahead of it) keep within their wait while etcd is frozen: the hub asked the store
// whether the index was ahead of it with the request's whole timeout, which a frozen etcd
// takes (10 s), and answered 503 then; five long-polls with wait=1s each took 10 s.
func TestLongPoll_IndexAheadWhileStoreFrozen(t *testing.T) {
	a, b, p := replicaBehindProxy(t)
	a.put("appliances/web/x", "1")
	agent := agentTokenKnownTo(t, a, b, "web")
	index := b.s.hub.current() + 5 // as if a replica ahead of b had answered at it

	p.Freeze()
	defer p.Thaw()
	const polls = 5
	type result struct {
		status int
		took   time.Duration
		err    error
	}
	results := make(chan result, polls)
	for i := range polls {
		go func() {
			began := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("%s/v1/appliances/web?index=%d&wait=1s", b.srv.URL, index), nil)
			req.Header.Set("Authorization", "Bearer "+agent)
			req.Header.Set(api.HeaderInstance, fmt.Sprintf("vm-%d", i))
			res, err := testClient.Do(req)
			r := result{took: time.Since(began), err: err}
			if err == nil {
				r.status = res.StatusCode
				res.Body.Close()
			}
			results <- r
		}()
	}
	for range polls {
		r := <-results
		if r.err != nil || r.status != http.StatusNotModified || r.took > 7*time.Second {
			t.Errorf("a long-poll with wait=1s and an index ahead of the replica while etcd is frozen: status %d after %v (%v), want 304 within 7s (10 s and 503 before)", r.status, r.took.Round(time.Millisecond), r.err)
		}
	}
}

// Writes to appliances with a schema, through a replica that has not read the schemas yet
// (just started, or after a schema changed) while etcd does not answer, are each answered 503
// within the store's request timeout. Before, the schemas were read once per write, one write
// after the other, and twice for each (for its lock, then for its check): with the default
// 10 s timeout a single write took 20 s and the writes behind it reached the server's 30 s
// bound; here, with 1 s, four writes at once took 2, 6, 7 and 8 s.
func TestKV_WritesWhileStoreFrozenShareOneSchemaRead(t *testing.T) {
	cfg := testutil.StoreConfig(t)
	a := newFixtureOn(t, testutil.OpenStore(t, cfg))
	a.must(a.do("PUT", "/v1/appliances/web/schema", `{"type":"object"}`), 200, nil)
	p := faultproxy.Start(t, cfg.Endpoints[0])
	b := newFixtureOn(t, throughProxy(t, cfg, p)) // its request timeout is 1 s
	b.token = a.token
	b.settled()

	p.Freeze()
	const writes = 4
	type result struct {
		r    resp
		took time.Duration
	}
	results := make(chan result, writes)
	for i := range writes {
		go func() {
			start := time.Now()
			var r resp
			if i%2 == 0 {
				r = b.do("PUT", fmt.Sprintf("/v1/kv/appliances/web/k%d", i), "1")
			} else {
				r = b.do("PUT", "/v1/appliances/web", fmt.Sprintf(`{"keys":{"k%d":"1"}}`, i))
			}
			results <- result{r, time.Since(start)}
		}()
	}
	for range writes {
		res := <-results
		b.mustErr(res.r, 503, api.CodeUnavailable, "etcd did not answer in time")
		if res.took > 1800*time.Millisecond {
			t.Errorf("a write while etcd is frozen answered after %s, want within the request timeout of 1s", res.took.Round(10*time.Millisecond))
		}
	}
	p.Thaw()
	b.must(b.do("PUT", "/v1/kv/appliances/web/k0", "1"), 200, nil)
	// The schemas read once etcd is back still follow a change made through another replica.
	a.must(a.do("PUT", "/v1/appliances/web/schema", `{"type":"object","properties":{"k0":{"enum":["1"]}}}`), 200, nil)
	b.mustErr(b.do("PUT", "/v1/kv/appliances/web/k0", "2"), 422, api.CodeSchemaViolation, "k0")
}

// Release listings asked for while etcd does not answer are each answered 503 within the
// store's request timeout. Before, those that came while a read was under way waited for it,
// then for a read of their own to fail too: twice the timeout (20 s by default).
func TestReleases_ReadFailureAnswersClientsAskingTogether(t *testing.T) {
	cfg := testutil.StoreConfig(t)
	a := newFixtureOn(t, testutil.OpenStore(t, cfg))
	a.put("appliances/web/x", "1")
	p := faultproxy.Start(t, cfg.Endpoints[0])
	b := newFixtureOn(t, throughProxy(t, cfg, p)) // its request timeout is 1 s
	b.token = a.token
	b.settled()

	p.Freeze()
	defer p.Thaw()
	const n = 4
	start := time.Now()
	done := make(chan resp, n+1)
	go func() { done <- b.do("GET", "/v1/releases", "") }()
	time.Sleep(300 * time.Millisecond) // the first read is under way
	for i := range n {
		go func() {
			path := "/v1/releases"
			if i%2 == 1 {
				path = "/v1/appliances/web/releases"
			}
			done <- b.do("GET", path, "")
		}()
	}
	for range n + 1 {
		b.mustErr(<-done, 503, api.CodeUnavailable, "read releases")
	}
	if took := time.Since(start); took > 1800*time.Millisecond {
		t.Errorf("release listings asked for while etcd is frozen were answered after %s, want within the request timeout of 1s", took.Round(10*time.Millisecond))
	}
	p.Thaw()
	b.must(b.do("GET", "/v1/releases", ""), 200, nil)
}

// TestBootstrap_OldAdminTokenKeptOnce: the token a file held, kept beside it before each try to
// make the admin token on a store with no token, is kept once at most however many tries fail
// after that step (etcd going away after each read of the tokens, a store that refuses writes),
// and the file is left as it was: every try made another copy, one every 10 s for as long as
// the writes failed.
func TestBootstrap_OldAdminTokenKeptOnce(t *testing.T) {
	b, _, p := tokenlessReplica(t)
	ctx := context.Background()
	b.settled()
	path := b.s.cfg.adminTokenFile()

	afterAdminTokenList = p.Down
	defer func() { afterAdminTokenList = nil }()
	for range 3 {
		p.Up()
		if err := b.s.createAdminToken(ctx); err == nil {
			t.Fatal("the admin token was made with etcd away")
		}
	}
	p.Up()
	kept, err := filepath.Glob(path + ".replaced-*")
	if err != nil || len(kept) > 1 {
		t.Errorf("the old admin token kept as %v (%v), want one file at most", kept, err)
	}
	if data, err := os.ReadFile(path); err != nil || strings.TrimSpace(string(data)) != b.token {
		t.Errorf("%s after the failed tries: %q (%v), want the old admin token", path, data, err)
	}
}

// A write to an appliance with a schema that waited for the writes ahead of it on the replica
// (stuck on an etcd that answers nothing) until the request timed out is answered 503 with
// Retry-After, nothing written, as a write etcd did not answer is: it was 409 "conflict",
// which a pipeline, and the CLI's exit 4, take for a failed --cas guard.
func TestFault_SchemaLockWaitIs503(t *testing.T) {
	parallelShared(t)
	cfg := testutil.StoreConfig(t)
	a := newFixtureOn(t, testutil.OpenStore(t, cfg))
	p := faultproxy.Start(t, cfg.Endpoints[0])
	b := newFixtureOn(t, throughProxy(t, cfg, p))
	b.token = a.token
	a.must(a.do("PUT", "/v1/appliances/lw/schema", `{"type":"object","properties":{"bad":{"type":"string","pattern":"^x$"}}}`), 200, nil)
	waitFor(t, "b checks lw's writes against its schema", func() bool {
		return b.do("PUT", "/v1/kv/appliances/lw/bad", "1").StatusCode == http.StatusUnprocessableEntity
	})
	b.settled()
	p.Freeze()
	// Writers to lw go one at a time on a replica: each holds lw's lock while it waits for
	// etcd, and those behind wait for it until their request times out.
	const writers = 10
	answers := make(chan resp, writers)
	for i := range writers {
		go func() { answers <- b.do("PUT", fmt.Sprintf("/v1/kv/appliances/lw/k%d", i), "1") }()
	}
	waited := 0
	for range writers {
		r := <-answers
		if r.StatusCode != http.StatusServiceUnavailable || r.Header.Get("Retry-After") == "" {
			t.Fatalf("a write while etcd answers nothing: %d %s (Retry-After %q), want 503 with Retry-After", r.StatusCode, r.body, r.Header.Get("Retry-After"))
		}
		if strings.Contains(string(r.body), "waited for the other writes") {
			waited++
		}
	}
	p.Thaw()
	if waited == 0 {
		t.Fatalf("no write waited for the others until it timed out: the test does not tell")
	}
}
