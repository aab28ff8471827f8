package server

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/testutil"
	"github.com/shoelace-dev/shoelace/server/store"
)

// stallWatch makes f's watch stop before it applies the next event that changes token name, until
// the returned func is called (also at the test's end): the event is on the way, as it is on a
// replica whose watch lags behind the store.
func stallWatch(t *testing.T, f *fixture, name string) (stalled <-chan struct{}, release func()) {
	t.Helper()
	at, free := make(chan struct{}), make(chan struct{})
	var once, freeOnce sync.Once
	before := func(ev store.Event) {
		for _, k := range ev.SysKeys {
			if k == tokenPrefix+name {
				once.Do(func() {
					close(at)
					<-free
				})
				return
			}
		}
	}
	f.s.hub.beforeSys.Store(&before)
	release = func() { freeOnce.Do(func() { close(free) }) }
	t.Cleanup(release)
	return at, release
}

// A token created through one replica works on another at once: before that replica's watch has
// delivered it (the request waits for the watch to reach the store's revision), and while its
// watch is stuck before it (the store's records are read). The store's answer does not fill the
// cache; a token revoked in the store meanwhile stays refused.
func TestAuth_NewTokenWorksOnAnotherReplicaAtOnce(t *testing.T) {
	parallelShared(t)
	cfg := testutil.StoreConfig(t)
	a := newFixtureOn(t, testutil.OpenStore(t, cfg))
	b := newFixtureOn(t, testutil.OpenStore(t, cfg))
	a.put("shared/ntp", "pool")

	var created struct {
		Token string `json:"token"`
	}
	create := func(name string) string {
		a.must(a.do("POST", "/v1/tokens", `{"name":"`+name+`","read":["shared"]}`, "Content-Type", "application/json"), 201, &created)
		return created.Token
	}
	// Used on b the moment a answered.
	for i := range 10 {
		b.must(b.doToken(create(fmt.Sprintf("at-once-%d", i)), "GET", "/v1/kv/shared/ntp", ""), 200, nil)
	}

	// b's watch stuck before the token's creation.
	stalled, release := stallWatch(t, b, "ci")
	tok := create("ci")
	select {
	case <-stalled:
	case <-time.After(20 * time.Second):
		t.Fatal("the token's creation never reached b's watch")
	}
	b.must(b.doToken(tok, "GET", "/v1/kv/shared/ntp", ""), 200, nil)
	if b.s.auth.lookup(tok) != nil {
		t.Error("the store lookup filled the cache: only the watch may")
	}
	// Revoked in the store while b's watch is still stuck: refused on b.
	a.must(a.do("DELETE", "/v1/tokens/ci", ""), 200, nil)
	b.mustErr(b.doToken(tok, "GET", "/v1/kv/shared/ntp", ""), 401, api.CodeUnauthorized, "unknown or revoked")
	rev, err := a.st.Revision(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	release()
	waitFor(t, "b's watch to apply the revocation", func() bool { return b.s.hub.current() >= rev })
	if b.s.auth.lookup(tok) != nil {
		t.Fatal("b caches the revoked token")
	}
	b.mustErr(b.doToken(tok, "GET", "/v1/kv/shared/ntp", ""), 401, api.CodeUnauthorized, "unknown or revoked")

	// Revoked once b's cache held it: refused.
	tok = create("ci2")
	waitFor(t, "b to learn the token", func() bool { return b.s.auth.lookup(tok) != nil })
	a.must(a.do("DELETE", "/v1/tokens/ci2", ""), 200, nil)
	waitFor(t, "b to drop the token", func() bool { return b.s.auth.lookup(tok) == nil })
	b.mustErr(b.doToken(tok, "GET", "/v1/kv/shared/ntp", ""), 401, api.CodeUnauthorized, "unknown or revoked")
}

// Requests with tokens the replica does not know — the same one again and again, a new one each
// time, many at once — are answered 401 from the token cache once its watch has reached the
// store's revision (also when the store's last write was not under the replica's root): they do not read and decode every token record each (they did, ~18 ms of CPU
// a request with 2,300 tokens, and one client kept a core busy with them).
func TestAuth_UnknownTokensDoNotReadEveryToken(t *testing.T) {
	f := newFixture(t)
	for i := range 50 {
		f.newToken(api.TokenRequest{Name: fmt.Sprintf("t%03d", i), Read: []string{"shared"}})
	}
	before := f.s.fresh.reads.Load()
	n := 0
	for i := range 40 {
		tok := "sl_unknown-same"
		if i%2 == 1 {
			tok = fmt.Sprintf("sl_unknown-%d", i)
		}
		f.mustErr(f.doToken(tok, "GET", "/v1/kv/shared/x", ""), 401, api.CodeUnauthorized, "unknown or revoked")
		n++
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var bad []string
	for i := range 40 {
		wg.Go(func() {
			r := f.doToken(fmt.Sprintf("sl_burst-%d", i%4), "GET", "/v1/kv/shared/x", "")
			if r.StatusCode != 401 || !strings.Contains(r.errMessage(), "unknown or revoked") {
				mu.Lock()
				bad = append(bad, fmt.Sprintf("%d %s", r.StatusCode, r.body))
				mu.Unlock()
			}
		})
		n++
	}
	wg.Wait()
	// The store's last write is not under the replica's root (another root on the same etcd): no
	// event of its watch comes, and a progress notification brings it to the store's revision.
	other := testutil.Store(t)
	mid := f.s.fresh.reads.Load()
	for i := range 10 {
		if _, err := other.Put(t.Context(), "shared/x", strconv.Itoa(i), -1); err != nil {
			t.Fatal(err)
		}
		f.mustErr(f.doToken("sl_unknown-same", "GET", "/v1/kv/shared/x", ""), 401, api.CodeUnauthorized, "unknown or revoked")
		n++
	}
	if reads := f.s.fresh.reads.Load() - mid; reads > 2 {
		t.Errorf("10 requests with an unknown token after writes under another root read every token record %d times; want (almost) none", reads)
	}
	if len(bad) > 0 {
		t.Errorf("requests with unknown tokens answered %q; want 401 unknown or revoked", bad)
	}
	// A read is made only while the watch lags the store by more than freshWait.
	if reads := f.s.fresh.reads.Load() - before; reads > int64(n/10) {
		t.Errorf("%d requests with unknown tokens read every token record %d times; want (almost) none", n, reads)
	}
}

// A watch that starts past the revision the tokens were loaded at (its start was read first, and
// the store moved on before the load) would leave the changes between out of the cache, and the
// cache's reach behind the store for good: the tokens are loaded again.
func TestAuth_WatchPastTheLoadedTokensLoadsThemAgain(t *testing.T) {
	f := newFixture(t)
	tok := f.newToken(api.TokenRequest{Name: "in-the-gap", Read: []string{"shared"}})
	waitFor(t, "the cache to hold the token", func() bool { return f.s.auth.lookup(tok) != nil })
	// The token's creation as if it fell between the load and the watch's start.
	f.s.sys.mu.Lock()
	f.s.fresh.reach.reset()
	f.s.auth.remove("in-the-gap", 0)
	f.s.sys.mu.Unlock()
	f.put("shared/x", "1") // an event of the watch, which started past the cache's reach
	waitFor(t, "the tokens to be loaded again", func() bool { return f.s.auth.lookup(tok) != nil })
	before := f.s.fresh.reads.Load()
	for range 10 {
		f.mustErr(f.doToken("sl_unknown", "GET", "/v1/kv/shared/x", ""), 401, api.CodeUnauthorized, "unknown or revoked")
	}
	if reads := f.s.fresh.reads.Load() - before; reads > 1 {
		t.Errorf("10 requests with an unknown token read every token record %d times after the reload", reads)
	}
	f.must(f.doToken(tok, "GET", "/v1/kv/shared/x", ""), 200, nil)
}

// A store whose revision is below what the replica's token cache reached (etcd brought back from
// older data, before the replica's watch notices) holds a history the cache has not seen: a token
// created there through another replica is read from the store, not refused by the cache.
func TestAuth_NewTokenWorksWhileTheStoreIsBelowTheCache(t *testing.T) {
	cfg := testutil.StoreConfig(t)
	a := newFixtureOn(t, testutil.OpenStore(t, cfg))
	b := newFixtureOn(t, testutil.OpenStore(t, cfg))
	rev, err := b.st.Revision(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	b.s.fresh.reach.raise(rev + 1_000_000) // the revisions of a history the store lost
	stalled, release := stallWatch(t, b, "ci")
	tok := a.newToken(api.TokenRequest{Name: "ci", Read: []string{"shared"}})
	select {
	case <-stalled:
	case <-time.After(20 * time.Second):
		t.Fatal("the token's creation never reached b's watch")
	}
	b.mustErr(b.doToken(tok, "GET", "/v1/kv/shared/x", ""), 404, api.CodeNotFound)
	release()
}

// On the embedded etcd (its watch in process, as a replica runs by default) whose last writes are
// under another root — no event comes to the replica's watch — requests with unknown tokens are
// answered from the cache once a progress notification, which the replica asks for, says the
// watch has reached the store's revision: they neither wait for etcd's next periodic one nor
// read every token record.
func TestAuth_UnknownTokensOnEmbeddedEtcdWrittenUnderAnotherRoot(t *testing.T) {
	cfg := testutil.StoreConfig(t)
	cfg.Endpoints, cfg.DataDir = nil, t.TempDir()
	// The embedded etcd's client address is the one the store picked (trying another when it
	// was taken meanwhile): the other store reaches it there.
	st := testutil.OpenStore(t, cfg)
	f := newFixtureOn(t, st)
	ocfg := testutil.StoreConfig(t)
	ocfg.Endpoints = st.Endpoints()
	other := testutil.OpenStore(t, ocfg)
	before := f.s.fresh.reads.Load()
	for i := range 20 {
		if _, err := other.Put(t.Context(), "shared/x", strconv.Itoa(i), -1); err != nil {
			t.Fatal(err)
		}
		f.mustErr(f.doToken(fmt.Sprintf("sl_unknown-%d", i), "GET", "/v1/kv/shared/x", ""), 401, api.CodeUnauthorized, "unknown or revoked")
	}
	if reads := f.s.fresh.reads.Load() - before; reads > 2 {
		t.Errorf("20 requests with unknown tokens read every token record %d times; want (almost) none", reads)
	}
}
