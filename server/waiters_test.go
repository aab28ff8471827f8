package server

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/testutil"
	"github.com/shoelace-dev/shoelace/server/store"
)

// When the replica's long-polls are full, a token that holds more than its fair share is
// refused first: one token opening every long-poll does not lock the other appliances'
// agents out.
func TestLongPoll_FairShareWhenFull(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MaxWaiters = 4 })
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	f.must(f.do("PUT", "/v1/appliances/db", `{"keys":{"a":"1"}}`), 200, nil)
	web, db := f.view("web"), f.view("db")
	hog := f.as(f.newToken(api.TokenRequest{Name: "hog", Appliance: "web"}))
	fair := f.as(f.newToken(api.TokenRequest{Name: "fair", Appliance: "db"}))
	var hogs []*poll
	for i := range 4 {
		hogs = append(hogs, hog.startPoll(lp("web", web.Revision, "30s"), api.HeaderInstance, fmt.Sprintf("h%d", i)))
	}
	f.waitOpen(4)

	// The other token is under its fair share (4 ÷ 2 tokens): it takes the place of one of the
	// hog's long-polls, which answers 304.
	p1 := fair.startPoll(lp("db", db.Revision, "30s"), api.HeaderInstance, "d1")
	answered := makesRoom(t, p1, &hogs)
	if answered.StatusCode != http.StatusNotModified {
		t.Fatalf("the hog's long-poll that made room: %d %s, want 304", answered.StatusCode, answered.body)
	}
	f.waitOpen(4)
	p1.pending(t)
	// The hog holds 3, over its fair share of 2: refused.
	r := hog.doToken(hog.token, "GET", lp("web", web.Revision, "30s"), "", api.HeaderInstance, "h9")
	f.mustErr(r, 503, api.CodeTooManyWaiters, "fair share", "hog")
	mustRetryAfter(t, r)
	// The other token's second long-poll also makes room; its third is over its share.
	p2 := fair.startPoll(lp("db", db.Revision, "30s"), api.HeaderInstance, "d2")
	if r := makesRoom(t, p2, &hogs); r.StatusCode != http.StatusNotModified {
		t.Fatalf("second hog long-poll that made room: %d", r.StatusCode)
	}
	f.waitOpen(4)
	f.mustErr(fair.doToken(fair.token, "GET", lp("db", db.Revision, "30s"), "", api.HeaderInstance, "d3"), 503, api.CodeTooManyWaiters, "fair share")
	// Everyone still waiting is woken by a change as usual.
	f.put("shared/x", "1")
	for _, p := range []*poll{p1, p2} {
		f.must(p.wait(t), 200, nil)
	}
	for _, p := range hogs {
		f.must(p.wait(t), 200, nil)
	}
}

// makesRoom waits until one of *polls answers, and takes that poll off: the newcomer took its
// place. It fails at once if the newcomer answers instead (refused).
func makesRoom(t testing.TB, newcomer *poll, polls *[]*poll) resp {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case r := <-newcomer.done:
			t.Fatalf("the newcomer's long-poll answered %d %s instead of taking the place of another", r.StatusCode, r.body)
		default:
		}
		for i, p := range *polls {
			select {
			case r := <-p.done:
				*polls = slices.Delete(*polls, i, i+1)
				return r
			default:
			}
		}
		select {
		case <-deadline:
			t.Fatal("no long-poll answered")
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// A new long-poll of an instance answers the same instance's older one (304) instead of being
// refused: a connection left half-open behind a load balancer never locks the VM out, even
// when the replica is full.
func TestLongPoll_SameInstanceReplacesOlder(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MaxWaiters = 1 })
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	v := f.view("web")
	agent := f.as(f.newToken(api.TokenRequest{Name: "agent-web", Appliance: "web"}))
	old := agent.startPoll(lp("web", v.Revision, "30s"), api.HeaderInstance, "vm-1")
	f.waitOpen(1)
	next := agent.startPoll(lp("web", v.Revision, "30s"), api.HeaderInstance, "vm-1")
	if r := makesRoom(t, next, &[]*poll{old}); r.StatusCode != http.StatusNotModified {
		t.Fatalf("the older long-poll of vm-1: %d %s, want 304", r.StatusCode, r.body)
	}
	f.waitOpen(1)
	next.pending(t)
	// Another instance of the same (only) token finds the replica full.
	f.mustErr(agent.doToken(agent.token, "GET", lp("web", v.Revision, "30s"), "", api.HeaderInstance, "vm-2"), 503, api.CodeTooManyWaiters)
	f.put("appliances/web/a", "2")
	f.must(next.wait(t), 200, nil)
}

// --max-long-polls-per-token caps one token's long-polls whatever room the replica has.
func TestLongPoll_PerTokenCap(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MaxWaitersPerToken = 1 })
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	v := f.view("web")
	p := f.startPoll(lp("web", v.Revision, "30s"))
	f.waitOpen(1)
	r := f.do("GET", lp("web", v.Revision, "30s"), "")
	f.mustErr(r, 503, api.CodeTooManyWaiters, "--max-long-polls-per-token")
	mustRetryAfter(t, r)
	reader := f.as(f.newToken(api.TokenRequest{Name: "reader", Read: []string{"shared", "appliances/web"}}))
	q := reader.startPoll(lp("web", v.Revision, "30s"))
	f.waitOpen(2)
	f.put("appliances/web/a", "2")
	f.must(p.wait(t), 200, nil)
	f.must(q.wait(t), 200, nil)
}

// The long-poll's check for a change and its registration are one step: a change that arrives
// between them still wakes it. The hook runs in that gap and applies a change there if it can
// (the gap is unguarded), else as soon as the gap closes.
func TestHub_ChangeBetweenCheckAndRegister(t *testing.T) {
	ctx, h, rev := bareHub(t, 10)
	inGap := make(chan bool, 1)
	h.beforeRegister = func() {
		ev := store.Event{Revision: rev + 1, Keys: []string{"appliances/web/a"}}
		if h.mu.TryLock() {
			// Nobody holds the lock between the check and the registration: the change lands
			// in the gap.
			h.mu.Unlock()
			h.apply(ctx, ev)
			inGap <- true
			return
		}
		inGap <- false
		go h.apply(ctx, ev)
	}
	type result struct {
		wk  wake
		err error
	}
	woke := make(chan result, 1)
	go func() {
		wk, err := h.wait(ctx, "web", rev, "agent", "vm-1", 0, time.Minute)
		woke <- result{wk, err}
	}()
	gap := <-inGap
	select {
	case r := <-woke:
		if r.err != nil || r.wk.kind != wakeChanged || r.wk.rev < rev+1 {
			t.Fatalf("woke with %+v, %v; want changed at >= %d", r.wk, r.err, rev+1)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("a change that arrived between the check and the registration (applied in an unguarded gap: %v) did not wake the long-poll", gap)
	}
	if gap {
		t.Fatal("the hub's lock was free between the check and the registration")
	}
}

// The hub forgets what it no longer needs: appliances' last changes (after two sweeps), the
// views of appliances nobody long-polls, and the entries of long-polls that ended.
func TestHub_SweepDropsEntries(t *testing.T) {
	ctx, h, rev := bareHub(t, 100)
	const apps = 50
	for i := range apps {
		h.apply(ctx, store.Event{Revision: rev + 1 + int64(i), Keys: []string{fmt.Sprintf("appliances/app-%d/k", i)}})
	}
	last := rev + apps
	// Long-polls of several tokens and instances, which end.
	done := make(chan struct{})
	for i := range 6 {
		go func() {
			defer func() { done <- struct{}{} }()
			if _, err := h.wait(ctx, fmt.Sprintf("app-%d", i%3), last, fmt.Sprintf("tok-%d", i%2), fmt.Sprintf("vm-%d", i), 0, 50*time.Millisecond); err != nil {
				t.Errorf("wait: %v", err)
			}
		}()
	}
	for range 6 {
		<-done
	}
	h.fmu.Lock()
	h.flights["app-1"] = &flight{rev: last, started: time.Now().Add(-2 * flightIdle), done: make(chan struct{})}
	h.fmu.Unlock()

	h.sweep(time.Now()) // the changes are newer than the previous sweep: kept
	h.mu.Lock()
	kept := len(h.apps)
	h.mu.Unlock()
	if kept != apps {
		t.Fatalf("first sweep left %d of %d appliances' changes, want all (too recent)", kept, apps)
	}
	h.sweep(time.Now())
	h.mu.Lock()
	sizes := []int{len(h.apps), len(h.waiters), len(h.byToken), len(h.byInstance), h.n}
	forgotten := h.forgotten
	h.mu.Unlock()
	h.fmu.Lock()
	sizes = append(sizes, len(h.flights))
	h.fmu.Unlock()
	if slices.Max(sizes) != 0 {
		t.Fatalf("after two sweeps: apps, waiters, byToken, byInstance, n, flights = %v, want all 0", sizes)
	}
	if forgotten != last {
		t.Fatalf("forgotten %d, want %d", forgotten, last)
	}
	// A forgotten change still answers a long-poll from before it at once; a current index waits.
	if wk, err := h.wait(ctx, "app-7", rev, "", "", 0, time.Minute); err != nil || wk.kind != wakeChanged {
		t.Fatalf("long-poll from before a forgotten change: %+v %v, want answered at once", wk, err)
	}
	if wk, err := h.wait(ctx, "app-7", last, "", "", 0, 10*time.Millisecond); err != nil || wk.kind != wakeTimeout {
		t.Fatalf("long-poll at the current index: %+v %v, want it to wait", wk, err)
	}
}

// bareHub is a hub over a store of the test's own, without a server, told the store's revision
// (rev): the tests feed it events themselves. Its context ends with the test.
func bareHub(t testing.TB, maxWaiters int) (context.Context, *hub, int64) {
	t.Helper()
	st := testutil.Store(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	rev, err := st.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	h := newHub(ctx, st, testutil.Logger(), newMetrics("test"), maxWaiters)
	h.reset(rev)
	return ctx, h, rev
}

// A token revoked after a request looked it up, but before its long-poll registered, is not
// found by the revocation: the long-poll must not register (it would answer the next change
// with the view). The revocation count read before the lookup tells.
func TestHub_RevokedBeforeRegisterIsRefused(t *testing.T) {
	ctx, h, rev := bareHub(t, 10)
	since := h.revocation() // the request looks its token up now
	h.revoke("agent")       // and the token is revoked before the long-poll registers
	wk, err := h.wait(ctx, "web", rev, "agent", "vm-1", since, time.Minute)
	if err != nil || wk.kind != wakeRevoked {
		t.Fatalf("long-poll of a token revoked since its lookup: %+v, %v; want revoked", wk, err)
	}
	// Looked up after the revocation (created again since, with another secret): it waits.
	wk, err = h.wait(ctx, "web", rev, "agent", "vm-1", h.revocation(), 10*time.Millisecond)
	if err != nil || wk.kind != wakeTimeout {
		t.Fatalf("long-poll of a token looked up after its revocation: %+v, %v; want it to wait", wk, err)
	}
	// Another token's revocation does not touch it.
	since = h.revocation()
	h.revoke("other")
	if wk, err = h.wait(ctx, "web", rev, "agent", "vm-1", since, 10*time.Millisecond); err != nil || wk.kind != wakeTimeout {
		t.Fatalf("long-poll after another token's revocation: %+v, %v; want it to wait", wk, err)
	}
}

// A fleet of more instance tokens than places (each holds one long-poll) is refused with what
// to do about it, not with a fair share of 0: before, "token … holds 0, at least its fair share
// of 0". A refused agent's view is answered at once when it changed, as before the cap.
func TestLongPoll_MoreTokensThanPlaces(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MaxWaiters = 2 })
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	web := f.view("web")
	var polls []*poll
	for i := range 2 {
		a := f.as(f.newToken(api.TokenRequest{Name: fmt.Sprintf("vm-%d", i), Appliance: "web"}))
		polls = append(polls, a.startPoll(lp("web", web.Revision, "30s")))
	}
	f.waitOpen(2)
	third := f.as(f.newToken(api.TokenRequest{Name: "vm-2", Appliance: "web"}))
	r := third.doToken(third.token, "GET", lp("web", web.Revision, "30s"), "")
	f.mustErr(r, 503, api.CodeTooManyWaiters, "every place is held by a token of its own (2 tokens wait)", "add replicas or raise --max-long-polls")
	if strings.Contains(r.errMessage(), "fair share of 0") {
		t.Errorf("refusal: %s", r.errMessage())
	}
	mustRetryAfter(t, r)
	rev := f.put("appliances/web/a", "2")
	for _, p := range polls {
		f.must(p.wait(t), 200, nil)
	}
	if r := third.doToken(third.token, "GET", lp("web", web.Revision, "30s"), ""); r.StatusCode != 200 || r.index() < rev {
		t.Fatalf("the refused agent's next long-poll after a change: %d (index %d), want 200 at %d or later", r.StatusCode, r.index(), rev)
	}
}
