package server

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// The console's rollback of a tree within api.RollbackBodyBytes sends it to the API's handler as
// an apply body, which the handler reads within the form's share of the replica's body budget
// (bodyShareKey): the rollback's form is small, its share none, so the body (up to 1 MiB) and its
// parse were read uncounted, however many console rollbacks ran at once, where the same body sent
// to the API takes its share. It is counted as the API counts it: with the whole budget held
// elsewhere, the rollback waits for its share and is 503 when the budget's wait passes, nothing
// written; once the budget is free it goes through. The same rollback again, which changes
// nothing, gives its share back before it waits for the hub (its watch stalled here), as an
// apply does.
func TestUI_RollbackBodyWithinTheBodyBudget(t *testing.T) {
	f := newFixture(t)
	f.s.bodyBudget = newBodyBudget(64 << 10) // before any request: a budget of 8 × 64 KiB
	f.s.bodyBudget.wait = 300 * time.Millisecond
	b := f.s.bodyBudget
	good := f.put("appliances/web/conf", strings.Repeat("a", 400_000)) // its body: over largeBody
	cur := f.put("appliances/web/conf", "b")
	br := newUIBrowser(t, f.srv.URL, nil)
	c := br.signIn(f.token)
	form := url.Values{"csrf": {c}, "to": {jsonNum(good)}, "cas": {jsonNum(cur)}, "step": {"apply"}}

	if !b.sem.TryAcquire(b.size()) {
		t.Fatal("the budget is not free")
	}
	r := br.post("/ui/appliances/web/rollback", form)
	b.sem.Release(b.size())
	mustStatus(t, r, http.StatusServiceUnavailable)
	var kv api.KV
	f.must(f.do("GET", "/v1/kv/appliances/web/conf", ""), 200, &kv)
	if kv.Value != "b" {
		t.Fatalf("the rollback refused 503 wrote: conf is %d bytes", len(kv.Value))
	}

	mustStatus(t, br.post("/ui/appliances/web/rollback", form), http.StatusSeeOther)
	f.must(f.do("GET", "/v1/kv/appliances/web/conf", ""), 200, &kv)
	if len(kv.Value) != 400_000 {
		t.Fatalf("after the rollback: conf is %d bytes", len(kv.Value))
	}

	stalled, unstall := stallWatch(t, f, "stall")
	defer unstall()
	f.must(f.do("POST", "/v1/tokens", `{"name":"stall","read":["shared"]}`, "Content-Type", "application/json"), 201, nil)
	select {
	case <-stalled:
	case <-time.After(20 * time.Second):
		t.Fatal("the token's creation never reached the watch")
	}
	b.wait = 10 * time.Second
	if !b.sem.TryAcquire(b.size()) {
		t.Fatal("the budget is not free")
	}
	form.Set("cas", jsonNum(kv.ModRevision))
	answer := make(chan resp, 1)
	go func() { answer <- br.post("/ui/appliances/web/rollback", form) }()
	waitFor(t, "the rollback's wait for its share", func() bool {
		b.sem.Release(1)
		return !b.sem.TryAcquire(1) // a waiter: the rollback
	})
	b.sem.Release(b.size() - 1)
	ctx, cancel := context.WithTimeout(t.Context(), viewChangedWait/2)
	defer cancel()
	if err := b.sem.Acquire(ctx, b.size()); err != nil {
		t.Fatalf("the unchanged rollback's share of the body budget was not given back within %s: held through its wait for the hub", viewChangedWait/2)
	}
	b.sem.Release(b.size())
	select {
	case r := <-answer:
		t.Fatalf("the rollback answered (%d) before its wait for the hub was up: the test saw nothing of it", r.StatusCode)
	default:
	}
	unstall()
	r = <-answer
	mustStatus(t, r, http.StatusSeeOther)
	if loc := r.Header.Get("Location"); !strings.Contains(loc, "?unchanged=") {
		t.Fatalf("the rollback to the state held: Location %q, want ?unchanged=", loc)
	}
}
