package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/testutil"
	"github.com/shoelace-dev/shoelace/internal/testutil/faultproxy"
	"github.com/shoelace-dev/shoelace/server/store"
)

// restoreCopy brings the etcd in dir back from the copy of its data in copyDir, as etcd brought
// back from a VM snapshot without a revision bump is: its clients, through p, are cut first (etcd
// stops at once rather than wait for their watches to end), and reach it again once it serves.
// It returns the new etcd's stop.
func restoreCopy(t *testing.T, p *faultproxy.Proxy, dir, copyDir string, stop func()) func() {
	t.Helper()
	p.Down()
	stop()
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(dir, os.DirFS(copyDir)); err != nil {
		t.Fatal(err)
	}
	_, stop = testutil.StartEtcd(t, dir)
	p.Up()
	return stop
}

// copyData copies the data of the etcd in dir, stopped meanwhile (its clients, through p, cut
// first), for restoreCopy to bring back later; it returns the copy and the stop of the etcd
// started again, once f's replica reaches it.
func copyData(t *testing.T, f *fixture, p *faultproxy.Proxy, dir string, stop func()) (string, func()) {
	t.Helper()
	copyDir := filepath.Join(t.TempDir(), "copy")
	p.Down()
	stop()
	if err := os.CopyFS(copyDir, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	_, stop = testutil.StartEtcd(t, dir)
	p.Up()
	waitFor(t, "etcd back", func() bool { return f.doToken("", "GET", "/health/deps", "").StatusCode == 200 })
	return copyDir, stop
}

// twoStores starts two etcds of the test's own, A and B, and a replica whose endpoint is a proxy
// to A (retarget it to B to move the replica); cfg is the replica's store config, its root the
// one to open either etcd at.
func twoStores(t *testing.T) (cfg store.Config, epsA, epsB []string, p *faultproxy.Proxy, f *fixture) {
	t.Helper()
	cfg = testutil.StoreConfig(t)
	epsA, _ = testutil.StartEtcd(t, t.TempDir())
	epsB, _ = testutil.StartEtcd(t, t.TempDir())
	p = faultproxy.Start(t, epsA[0])
	f = newFixtureOn(t, throughProxy(t, cfg, p))
	return cfg, epsA, epsB, p, f
}

// TestAuth_TokenCreatedAgainAfterStoreWentBack: a token revoked at a revision that the store's
// history lost (etcd brought back from a copy of its data without a revision bump) and created
// again under the same name, at a revision below that revocation, is a token like any other on
// this replica: cached, so that it is answered while etcd is away. The revocation's revision,
// kept from the lost history, made the cache ignore the new record, and every request with it
// had to ask the store (503 while etcd was away).
func TestAuth_TokenCreatedAgainAfterStoreWentBack(t *testing.T) {
	parallelShared(t)
	dir := t.TempDir()
	eps, stop := testutil.StartEtcd(t, dir)
	p := faultproxy.Start(t, eps[0])
	cfg := testutil.StoreConfig(t)
	f := newFixtureOn(t, throughProxy(t, cfg, p))
	f.put("shared/x", "0")

	copyDir, stop := copyData(t, f, p, dir, stop)
	f.newToken(api.TokenRequest{Name: "ci", Read: []string{"shared"}})
	for range 30 {
		f.put("shared/x", "1")
	}
	var del struct{ Revision int64 }
	f.must(f.do("DELETE", "/v1/tokens/ci", ""), 200, &del)
	waitFor(t, "the replica's watch at the revocation", func() bool { return f.s.hub.current() >= del.Revision })

	oldID := f.st.ID()
	restoreCopy(t, p, dir, copyDir, stop)
	waitFor(t, "the replica on the store's revision", func() bool { return f.s.hub.current() < del.Revision })
	// The replica gives the store a new id once it saw the rewind, after the hub did: an answer
	// in between carries the old one, which f.must would take for another store's.
	waitFor(t, "a new store id", func() bool { return f.st.ID() != oldID })

	var c api.TokenCreated
	f.must(f.do("POST", "/v1/tokens", `{"name":"ci","read":["shared"]}`), 201, &c)
	if c.Revision >= del.Revision {
		t.Fatalf("token created again at revision %d, want one below its revocation's, %d (the test needs it)", c.Revision, del.Revision)
	}
	// Once the watch delivered its creation, the reload after the rewind is done too.
	waitFor(t, "the watch at the token's creation", func() bool { return f.s.hub.current() >= c.Revision })
	if !within(20*time.Second, func() bool { return f.s.auth.lookup(c.Token) != nil }) {
		t.Fatalf("the token created again at revision %d is not cached 20s later (revoked at %d in the lost history)", c.Revision, del.Revision)
	}
	f.must(f.doToken(c.Token, "GET", "/v1/kv/shared/x", ""), 200, nil)
	p.Down()
	// Cached: answered without the store.
	f.must(f.doToken(c.Token, "GET", "/v1/maintenance", ""), 200, nil)
	p.Up()
}

// TestSys_AnotherStoreIsLoadedAfresh: a replica whose etcd endpoints come to lead to another
// store (another cluster, or this one restored from a snapshot: its store id is another) reloads
// tokens and settings from it and forgets what it cached of the store before, also when the
// other store's revision is above what its watch saw (no rewind to notice). It kept the old
// store's cache: after its endpoints led to an empty cluster and back, the admin token was 401
// while etcd was away (recorded as revoked by the empty store), a token only the empty store held
// was 200 on the store that does not hold it, and X-Shoelace-Store named the empty store's id.
func TestSys_AnotherStoreIsLoadedAfresh(t *testing.T) {
	parallelOwnEtcd(t)
	cfg, epsA, epsB, p, f := twoStores(t)
	idA := f.st.ID()
	reader := f.newToken(api.TokenRequest{Name: "reader", Read: []string{"shared"}})
	revoked := f.newToken(api.TokenRequest{Name: "revoked", Read: []string{"shared"}})
	f.must(f.do("DELETE", "/v1/tokens/revoked", ""), 200, nil)
	for range 40 { // store A's revision well above store B's
		f.put("shared/x", "a")
	}

	// Store B, under the same root, holds a token of its own.
	cfgB := cfg
	cfgB.Endpoints = epsB
	stB := testutil.OpenStore(t, cfgB)
	onlyB, err := newSecret()
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := json.Marshal(&tokenRecord{Name: "only-b", Hash: hashSecret(onlyB), Read: []string{"shared"}, Created: time.Now().UTC()})
	if _, err := stB.SysPut(context.Background(), tokenPrefix+"only-b", rec, -1); err != nil {
		t.Fatal(err)
	}

	p.Retarget(epsB[0])
	if !within(30*time.Second, func() bool { return f.s.auth.lookup(onlyB) != nil }) {
		t.Fatal("the replica did not load store B's token within 10s")
	}
	if r := f.do("GET", "/v1/maintenance", ""); r.StatusCode != 401 || r.Header.Get(api.HeaderStore) != stB.ID() {
		t.Fatalf("admin token of store A on store B: %d, store %q; want 401 and %q", r.StatusCode, r.Header.Get(api.HeaderStore), stB.ID())
	}

	p.Retarget(epsA[0])
	if !within(30*time.Second, func() bool { return f.s.auth.lookup(f.token) != nil }) {
		t.Fatalf("back on store A, the replica did not load its admin token within 10s (store id %q, A's %q)", f.st.ID(), idA)
	}
	r := f.doToken(onlyB, "GET", "/v1/maintenance", "")
	f.mustErr(r, 401, api.CodeUnauthorized)
	if got := r.Header.Get(api.HeaderStore); got != idA {
		t.Fatalf("X-Shoelace-Store back on store A: %q, want %q", got, idA)
	}
	f.must(f.doToken(reader, "GET", "/v1/kv/shared/x", ""), 200, nil)
	f.mustErr(f.doToken(revoked, "GET", "/v1/maintenance", ""), 401, api.CodeUnauthorized)

	// Etcd away: the tokens of the store the replica is on are answered from its cache, and
	// store B's, which store A was read not to hold, are refused. What the replica knew of
	// store A's revocations before it left went with the rest: such a token is asked of the
	// store, as one not known yet is (503 while it is away), never answered 200.
	p.Down()
	f.must(f.do("GET", "/v1/maintenance", ""), 200, nil)
	f.must(f.doToken(reader, "GET", "/v1/maintenance", ""), 200, nil)
	f.mustErr(f.doToken(onlyB, "GET", "/v1/maintenance", ""), 401, api.CodeUnauthorized)
	f.mustErr(f.doToken(revoked, "GET", "/v1/maintenance", ""), 503, api.CodeUnavailable)
	p.Up()
	// The etcd client reconnects after a backoff of its own, which a busy machine may stretch
	// past a request's timeout.
	back := func() bool { return f.do("GET", "/v1/kv/shared/x", "").StatusCode == 200 }
	waitFor(t, "etcd reached again", back)

	// A broken watch on the same store forgets nothing: its revocations stand while it is away.
	f.must(f.do("DELETE", "/v1/tokens/reader", ""), 200, nil)
	waitFor(t, "the revocation applied", func() bool { return f.s.auth.lookup(reader) == nil })
	p.Down()
	time.Sleep(300 * time.Millisecond) // the watch breaks
	p.Up()
	waitFor(t, "etcd reached again", back)
	p.Down()
	f.mustErr(f.doToken(reader, "GET", "/v1/maintenance", ""), 401, api.CodeUnauthorized)
	p.Up()
}

// TestSys_AnotherStoreAsTheWatchOpens: the endpoints come to lead to another store just after
// the replica looked at the store (its id, its revision) following a broken watch, before it
// watched again. The watch opened on the other store from the revision after the one it had
// seen of the first, and followed that store's history as if it were the first's: its token
// writes were cached beside the first store's tokens, the first's admin token stayed 200 on a
// store that does not hold it, and X-Shoelace-Store named the first store, until another
// connection happened to end (seen once in CI, with the endpoints switched back).
func TestSys_AnotherStoreAsTheWatchOpens(t *testing.T) {
	cfg, epsA, epsB, p, f := twoStores(t)
	f.put("shared/x", "a")

	// Store B, under the same root, is well past store A's revision, and its latest write is
	// a token of its own: a watch from A's revision delivers it.
	cfgB := cfg
	cfgB.Endpoints = epsB
	stB := testutil.OpenStore(t, cfgB)
	for range 40 {
		if _, err := stB.Put(context.Background(), "shared/x", "b", -1); err != nil {
			t.Fatal(err)
		}
	}
	onlyB, err := newSecret()
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := json.Marshal(&tokenRecord{Name: "only-b", Hash: hashSecret(onlyB), Read: []string{"shared"}, Created: time.Now().UTC()})
	if _, err := stB.SysPut(context.Background(), tokenPrefix+"only-b", rec, -1); err != nil {
		t.Fatal(err)
	}

	var once sync.Once
	switched := make(chan struct{})
	f.s.hub.mu.Lock()
	f.s.hub.beforeWatch = func() {
		once.Do(func() {
			ended := f.st.ConnEnds()
			p.Retarget(epsB[0])
			<-ended // the client saw its connection end before the watch opens
			close(switched)
		})
	}
	f.s.hub.mu.Unlock()
	p.Retarget(epsA[0]) // the watch breaks; the replica looks at store A, then watches again

	select {
	case <-switched:
	case <-time.After(10 * time.Second):
		t.Fatal("the replica did not watch again within 10s of its connection's end")
	}
	if !within(30*time.Second, func() bool { return f.s.auth.lookup(onlyB) != nil }) {
		t.Fatal("the replica did not load store B's token within 10s")
	}
	if r := f.do("GET", "/v1/maintenance", ""); r.StatusCode != 401 || r.Header.Get(api.HeaderStore) != stB.ID() {
		t.Fatalf("admin token of store A on store B: %d, store %q; want 401 and %q", r.StatusCode, r.Header.Get(api.HeaderStore), stB.ID())
	}
}

// TestLongPoll_AgentAwayWhileStoreWentBack: an agent that was not waiting when etcd came back
// from a copy of its data without a revision bump (between two long-polls, or in its backoff
// while etcd was away) comes back with the index of a view of the history that is gone. Once
// writes elsewhere took the store past that index, its long-poll waited for a change of its
// view (304 after 304) and its files stayed those of the lost history until its appliance's
// keys changed again. The replica that finds the store went back gives it a new store id, so
// that such an agent's long-poll is answered at once with the view as it is.
func TestLongPoll_AgentAwayWhileStoreWentBack(t *testing.T) {
	parallelOwnEtcd(t)
	dir := t.TempDir()
	eps, stop := testutil.StartEtcd(t, dir)
	p := faultproxy.Start(t, eps[0])
	cfg := testutil.StoreConfig(t)
	cfg.Endpoints, cfg.RequestTimeout = []string{p.URL()}, 2*time.Second
	cfg.WatchProgressInterval = 300 * time.Millisecond
	f := newFixtureOn(t, testutil.OpenStore(t, cfg))
	f.put("appliances/web/a", "old")

	copyDir, stop := copyData(t, f, p, dir, stop)
	f.put("appliances/web/a", "lost")
	lost := f.view("web") // the agent's view, of the history about to be lost
	store := f.st.ID()

	restoreCopy(t, p, dir, copyDir, stop)
	waitFor(t, "the replica on the store's revision", func() bool { return f.s.hub.current() < lost.Revision })
	if !within(30*time.Second, func() bool { return f.st.ID() != store }) {
		t.Fatalf("the store went back under store id %s, which is still its id 10s later", store)
	}
	for i := 0; f.put("appliances/other/x", strconv.Itoa(i)) <= lost.Revision+2; i++ { // a put of the value held writes nothing
	}
	waitFor(t, "the replica's watch past the agent's index", func() bool { return f.s.hub.current() > lost.Revision })

	var got api.View
	r := f.do("GET", lp("web", lost.Revision, "2s"), "", api.HeaderStore, store)
	if r.StatusCode != http.StatusOK {
		t.Fatalf("the long-poll of an agent holding a=lost (revision %d, store %s) after the store went back and passed that revision: %d, want the view at once", lost.Revision, store, r.StatusCode)
	}
	f.must(r, 200, &got)
	if got.Keys["a"] != "old" {
		t.Fatalf("the long-poll of an agent holding a=lost after the store went back answered a=%q, want old", got.Keys["a"])
	}
	// From the view it got, the agent waits as any other.
	r = f.do("GET", lp("web", got.Revision, "1s"), "", api.HeaderStore, r.Header.Get(api.HeaderStore))
	if r.StatusCode != http.StatusNotModified {
		t.Fatalf("the next long-poll from the view after the store went back: %d, want 304", r.StatusCode)
	}
}

// TestSys_AdminTokenMadeOnAnEmptyStore: a replica whose etcd endpoints come to lead to a store
// with no token at all (etcd wiped and started afresh) makes the admin token there, as a first
// start does, and keeps the token its file held beside it; until then every request was 401
// until the replica restarted. A store that holds tokens gets none (TestSys_AnotherStoreIsLoadedAfresh).
func TestSys_AdminTokenMadeOnAnEmptyStore(t *testing.T) {
	parallelOwnEtcd(t)
	_, _, epsB, p, f := twoStores(t)
	idA, old := f.st.ID(), f.token
	file := f.s.cfg.adminTokenFile()

	p.Retarget(epsB[0])
	waitFor(t, "the replica on the empty store", func() bool { return f.st.ID() != idA })
	var now string
	if !within(30*time.Second, func() bool {
		data, err := os.ReadFile(file)
		now = strings.TrimSpace(string(data))
		return err == nil && now != "" && now != old
	}) {
		t.Fatalf("%s still holds the old store's admin token 30s after the replica found the empty store", file)
	}
	f.must(f.doToken(now, "GET", "/v1/tokens", ""), 200, nil)
	if r := f.doToken(old, "GET", "/v1/tokens", ""); r.StatusCode != 401 {
		t.Errorf("the old store's admin token on the empty one: %d %s, want 401", r.StatusCode, r.body)
	}
	kept, err := filepath.Glob(file + ".replaced-*")
	if err != nil || len(kept) != 1 {
		t.Fatalf("the old token kept beside the file: %v %v, want one file", kept, err)
	}
	if data, err := os.ReadFile(kept[0]); err != nil || strings.TrimSpace(string(data)) != old {
		t.Errorf("%s holds %q (%v), want the old admin token", kept[0], data, err)
	}
	// Made once, by compare-and-swap: one admin token on the store.
	var list api.TokenList
	f.must(f.doToken(now, "GET", "/v1/tokens", ""), 200, &list)
	if len(list.Tokens) != 1 || list.Tokens[0].Name != adminTokenName {
		t.Errorf("tokens on the empty store: %+v, want the admin token alone", list.Tokens)
	}
}

// TestSys_AdminTokenNotMadeOnAStoreWithTokens: a replica that found a store with no token, and
// whose endpoints lead back to one that holds tokens before it writes the admin token, makes
// none there: the store whose tokens it read is not the one it would write to. Operators who
// made their own admin token and revoked the first one would otherwise see "admin" come back,
// its secret in the file, after etcd's endpoints flapped between two clusters.
func TestSys_AdminTokenNotMadeOnAStoreWithTokens(t *testing.T) {
	cfg, epsA, epsB, p, f := twoStores(t)
	cfg.Endpoints = epsA
	directA := testutil.OpenStore(t, cfg)
	idA := f.st.ID()
	// The operators' own admin token, and the first one revoked.
	var made api.TokenCreated
	f.must(f.do("POST", "/v1/tokens", `{"name":"ops","admin":true}`), 201, &made)
	f.must(f.doToken(made.Token, "DELETE", "/v1/tokens/"+adminTokenName, ""), 200, nil)
	ctx := context.Background()

	// Once the replica has read B's (no) tokens, its endpoints lead back to A.
	var once sync.Once
	listed := make(chan struct{})
	afterAdminTokenList = func() {
		once.Do(func() { p.Retarget(epsA[0]); close(listed) })
	}
	defer func() { afterAdminTokenList = nil }()
	p.Retarget(epsB[0])
	select {
	case <-listed:
	case <-time.After(30 * time.Second):
		t.Fatal("the replica did not look for tokens on the empty store within 30s")
	}
	waitFor(t, "the replica back on A", func() bool { return f.st.ID() == idA })
	// createAdminToken's tries are one at a time: this one waits for the one on its way.
	if err := f.s.createAdminToken(ctx); err != nil {
		t.Fatal(err)
	}
	if data, _, err := directA.SysGet(ctx, tokenPrefix+adminTokenName); err == nil {
		t.Fatalf("an admin token was made on A, which holds tokens: %s", data)
	}
}

// TestSys_AdminTokenOfAnEmptyStoreLearntBackThere: the admin token written to a store with no
// token, whose answer was lost (the write applied), is not thrown away when the next try reads
// the tokens of another store (the endpoints flapped back to A): once they lead to that store
// again, the replica finds its record there and puts the secret in the file. Thrown away, the
// store would hold an admin token whose secret nobody has, and no replica would make another.
func TestSys_AdminTokenOfAnEmptyStoreLearntBackThere(t *testing.T) {
	parallelOwnEtcd(t)
	cfg, _, epsB, p, f := twoStores(t)
	cfg.Endpoints = epsB
	directB := testutil.OpenStore(t, cfg)
	idA, file := f.st.ID(), f.s.cfg.adminTokenFile()
	ctx := context.Background()
	idB, err := directB.EnsureID(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// A try on B whose write was applied and its answer lost (as TestBootstrap_AdminTokenOutcomeUnknown
	// makes one, here without the other requests a cut may hit instead).
	secret, err := newSecret()
	if err != nil {
		t.Fatal(err)
	}
	rec := &tokenRecord{Name: adminTokenName, Hash: hashSecret(secret), Admin: true, Created: time.Now().UTC().Truncate(time.Second)}
	data, _ := json.Marshal(rec)
	if _, err := directB.SysPut(ctx, tokenPrefix+adminTokenName, data, 0); err != nil {
		t.Fatal(err)
	}
	tmp, err := writeSecretFile(file, secret, []byte(idB))
	if err != nil {
		t.Fatal(err)
	}
	f.s.adminMu.Lock()
	f.s.adminPending = &pendingAdmin{rec: rec, tmp: tmp, storeID: []byte(idB)}
	f.s.adminMu.Unlock()

	// The next try reads A's tokens; then the endpoints lead to B.
	if err := f.s.createAdminToken(ctx); err != nil {
		t.Fatal(err)
	}
	p.Retarget(epsB[0])
	waitFor(t, "the replica on B", func() bool { return f.st.ID() != idA })
	if !within(30*time.Second, func() bool {
		data, err := os.ReadFile(file)
		return err == nil && hashSecret(strings.TrimSpace(string(data))) == rec.Hash
	}) {
		t.Fatalf("%s does not hold the secret of B's admin token 30s after the replica was on B", file)
	}
}

// TestSys_AdminTokenMadeOnceByReplicasTogether: three replicas that find themselves together on
// a store with no token make one admin token there; the winner's file holds it (the token it
// held kept beside it), the others' files are left as they were, with nothing kept beside them.
func TestSys_AdminTokenMadeOnceByReplicasTogether(t *testing.T) {
	parallelOwnEtcd(t)
	cfg := testutil.StoreConfig(t)
	epsA, _ := testutil.StartEtcd(t, t.TempDir())
	epsB, _ := testutil.StartEtcd(t, t.TempDir())
	var fs []*fixture
	var ps []*faultproxy.Proxy
	for range 3 {
		p := faultproxy.Start(t, epsA[0])
		ps, fs = append(ps, p), append(fs, newFixtureOn(t, throughProxy(t, cfg, p)))
	}
	old := fs[0].token
	for _, f := range fs[1:] {
		if err := os.WriteFile(f.s.cfg.adminTokenFile(), []byte(old+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	idA := fs[0].st.ID()
	cfg.Endpoints = epsB
	directB := testutil.OpenStore(t, cfg)
	ctx := context.Background()

	for _, p := range ps {
		p.Retarget(epsB[0])
	}
	for _, f := range fs {
		waitFor(t, "the replica on B", func() bool { id := f.st.ID(); return id != "" && id != idA })
		// Its tries are one at a time: this one ends after the one its move to B began.
		if err := f.s.createAdminToken(ctx); err != nil {
			t.Fatal(err)
		}
	}
	tokens, _, err := directB.SysList(ctx, tokenPrefix)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := decodeToken(tokenPrefix+adminTokenName, tokens[tokenPrefix+adminTokenName])
	if len(tokens) != 1 || err != nil {
		t.Fatalf("tokens on B: %d (%v), want the admin token alone", len(tokens), err)
	}
	winners := 0
	for i, f := range fs {
		file := f.s.cfg.adminTokenFile()
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		kept, _ := filepath.Glob(file + ".replaced-*")
		switch got := strings.TrimSpace(string(data)); {
		case hashSecret(got) == rec.Hash:
			winners++
			if len(kept) != 1 {
				t.Errorf("replica %d made the admin token and kept %v, want the old token's file", i, kept)
			}
		case got == old:
			if len(kept) != 0 {
				t.Errorf("replica %d left its file as it was and kept %v beside it, want nothing", i, kept)
			}
		default:
			t.Errorf("replica %d's file holds neither the new admin token nor the old", i)
		}
	}
	if winners != 1 {
		t.Errorf("%d replicas' files hold the new admin token, want 1", winners)
	}
}

// TestSys_StoreLookedAtAgainBeforeTheWatch: a replica whose look at the store after a broken
// watch fails (the store unreadable for a moment as its endpoints move) looks again before it
// watches. It watched at once, and followed the other store silently, with the tokens of the
// one before, until the watch broke again.
func TestSys_StoreLookedAtAgainBeforeTheWatch(t *testing.T) {
	parallelOwnEtcd(t)
	cfg := testutil.StoreConfig(t)
	epsA, _ := testutil.StartEtcd(t, t.TempDir())
	epsB, _ := testutil.StartEtcd(t, t.TempDir())
	p := faultproxy.Start(t, epsA[0])
	f := newFixtureOn(t, throughProxy(t, cfg, p))
	idA := f.st.ID()
	// B ahead of A: the watch from A's next revision finds B's history there, and only the
	// store id tells the stores apart (one behind is found by its revision, see wentBack).
	ctx := context.Background()
	revA, err := f.st.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Endpoints = epsB
	directB := testutil.OpenStore(t, cfg)
	for rev := int64(0); rev <= revA+5; {
		if rev, err = directB.SysPut(ctx, "filler", []byte("x"), -1); err != nil {
			t.Fatal(err)
		}
	}
	var looks atomic.Int32
	fail := func() error {
		if looks.Add(1) == 1 {
			return errors.New("the store cannot be read (test)")
		}
		return nil
	}
	f.s.storeCheckHook.Store(&fail)
	p.Retarget(epsB[0])
	waitFor(t, "the replica to find itself on B", func() bool { id, _ := f.s.storeID.Load().(string); return id != "" && id != idA })
	if looks.Load() < 2 {
		t.Errorf("the store was looked at %d times, want again after the look that failed", looks.Load())
	}
}
