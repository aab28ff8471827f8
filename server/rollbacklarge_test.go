package server

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/client"
)

// An appliance's tree made of single puts may be larger than one apply body (--max-value-bytes
// plus 4 MiB): nine values of 950 KB are 8.5 MB. A rollback sent the tree at R as an apply body,
// and the server refused it (413 body_too_large, "apply body is over the limit of 5242880
// bytes"), though its transaction, which puts only the keys that differ, fits etcd's limits.
// Now a rollback sent without a body has the server read the tree at R itself (as GET …/at/R
// does) and apply it in one transaction, guarded by cas as before: the tree is restored whole,
// recorded as a rollback to R.
func TestRollback_TreeLargerThanAnApplyBody(t *testing.T) {
	f := newFixture(t)
	tree, rev := bigTreeChanged(f)

	c, err := client.New(f.srv.URL, client.Options{Token: f.token, MaxAnswerBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	res, n, err := c.Rollback(context.Background(), "big", rev, "")
	if err != nil {
		t.Fatalf("rollback of a tree of 8.5 MB: %v", err)
	}
	if n != len(tree) || res.Unchanged || res.Revision <= rev {
		t.Fatalf("rollback: %+v, %d keys", res, n)
	}
	var v api.View
	f.must(f.do("GET", "/v1/appliances/big", ""), 200, &v)
	if !maps.Equal(v.Keys, tree) {
		t.Fatalf("after the rollback the appliance has %d keys, not the %d of revision %d", len(v.Keys), len(tree), rev)
	}
	h := f.history("/v1/appliances/big/releases")
	if r := h.Releases[0]; r.Revision != res.Revision || r.Kind != api.KindRollback || r.RollbackTo != rev {
		t.Fatalf("the rollback's release: %+v", r)
	}
}

// A rollback whose changes are more than one etcd transaction may carry (here twelve values of
// 950 KB that all differ, over the etcd's 10 MiB) cannot be atomic: it is refused whole (413
// too_large), saying why and what to do, and nothing is written.
func TestRollback_ChangesOverEtcdsLimitRefusedWhole(t *testing.T) {
	f := newFixture(t)
	c, err := client.New(f.srv.URL, client.Options{Token: f.token, MaxAnswerBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	const parts = 12
	for i := range parts {
		f.put(fmt.Sprintf("appliances/huge/conf/part%d", i), strings.Repeat("a", 950_000))
	}
	rev := f.put("appliances/huge/small", "1")
	for i := range parts {
		f.put(fmt.Sprintf("appliances/huge/conf/part%d", i), strings.Repeat("b", 950_000))
	}
	var before api.View
	f.must(f.do("GET", "/v1/appliances/huge", ""), 200, &before)
	n := len(f.history("/v1/appliances/huge/releases").Releases)

	_, _, err = c.Rollback(context.Background(), "huge", rev, "")
	if e := api.AsError(err); err == nil || e.Code != api.CodeTooLarge || !strings.Contains(e.Message, "a rollback is one transaction") ||
		!strings.Contains(e.Message, "nothing was written") || !strings.Contains(e.Message, "--max-request-bytes") {
		t.Fatalf("rollback of changes over etcd's limit: %v", err)
	}
	t.Logf("refused: %v", err)
	var after api.View
	f.must(f.do("GET", "/v1/appliances/huge", ""), 200, &after)
	if !maps.Equal(after.Keys, before.Keys) {
		t.Fatalf("the refused rollback changed the appliance")
	}
	if m := len(f.history("/v1/appliances/huge/releases").Releases); m != n {
		t.Fatalf("%d releases after the refused rollback, %d before", m, n)
	}
}

// The console's rollback of a tree larger than one apply body (nine values of 950 KB, 8.5 MB)
// was refused, 413 body_too_large, where the CLI's restores it: the console sent the tree as an
// apply body. It now sends a tree over 1 MiB as the CLI does, without a body, the server reading
// the tree at R itself: the tree is restored whole, as a release of kind rollback with source
// console, guarded by the cas of its confirmation. On a replica with a single slot of reads of
// a past revision, too: the console gives its slot back before the apply takes one.
func TestUI_RollbackOfATreeLargerThanAnApplyBody(t *testing.T) {
	f := newFixture(t)
	f.s.historyReads = make(chan struct{}, 1) // before any request: none has taken a slot
	tree, rev := bigTreeChanged(f)

	b := newUIBrowser(t, f.srv.URL, nil)
	tok := b.signIn(f.token)
	confirm := b.post("/ui/appliances/big/rollback", url.Values{"csrf": {tok}, "to": {strconv.FormatInt(rev, 10)}})
	mustStatus(t, confirm, http.StatusOK)
	for _, want := range []string{"conf/part3", "changed", "new", "Roll back"} {
		if !strings.Contains(string(confirm.body), want) {
			t.Fatalf("the confirmation does not show %q: %.2000s", want, confirm.body)
		}
	}
	form := hiddenFields(confirm.body)
	form.Set("message", "back to the big tree")
	mustStatus(t, b.post("/ui/appliances/big/rollback", form), http.StatusSeeOther)
	var v api.View
	f.must(f.do("GET", "/v1/appliances/big", ""), 200, &v)
	if !maps.Equal(v.Keys, tree) {
		t.Fatalf("after the rollback the appliance has %d keys, not the %d of revision %d", len(v.Keys), len(tree), rev)
	}
	rels := f.history("/v1/appliances/big/releases")
	if r := rels.Releases[0]; r.Kind != api.KindRollback || r.Source != "console" || r.RollbackTo != rev || !strings.Contains(r.Message, "back to the big tree") {
		t.Fatalf("the rollback's release: %+v", r)
	}
	// The same confirmation again: the appliance changed since (the rollback), so its cas is
	// refused and nothing is written.
	r := b.post("/ui/appliances/big/rollback", form)
	mustStatus(t, r, http.StatusConflict)
	if n := len(f.history("/v1/appliances/big/releases").Releases); n != len(rels.Releases) {
		t.Fatalf("%d releases after the refused rollback, %d before", n, len(rels.Releases))
	}
	if len(f.s.historyReads) != 0 {
		t.Fatalf("%d slots of reads of a past revision still held", len(f.s.historyReads))
	}
}

// A rollback without a body holds the tree at R until its apply is done: read whole (up to ten
// thousand values of a MiB), a tree, or several at once, took the replica's memory, where
// GET …/at/R reads it a page at a time. Its bytes now count against the replica's budget of
// large bodies, as an apply body's do, and are given back after the apply; a tree over the
// whole budget is refused whole (413 too_large), nothing written.
func TestRollback_TreeHeldWithinTheBodyBudget(t *testing.T) {
	f := newFixture(t)
	f.s.bodyBudget = newBodyBudget(2 << 20) // before any request: a budget of 8 × 2 MiB
	for i := range 3 {
		f.put(fmt.Sprintf("appliances/held/part%d", i), strings.Repeat("a", 900_000))
	}
	small := f.put("appliances/held/small", "1")
	for i := range 17 {
		f.put(fmt.Sprintf("appliances/held/more%d", i), strings.Repeat("b", 900_000))
	}
	large := f.put("appliances/held/small", "2")
	f.put("appliances/held/small", "3")
	before := len(f.history("/v1/appliances/held/releases").Releases)

	rollback := func(to int64) *http.Response {
		t.Helper()
		req, err := http.NewRequest("PUT", f.srv.URL+"/v1/appliances/held", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+f.token)
		req.Header.Set(api.HeaderRollback, strconv.FormatInt(to, 10))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	// 20 values of 900 KB (18 MB) are over the budget's 16 MiB: refused, nothing written.
	if resp := rollback(large); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("rollback of an 18 MB tree within a 16 MiB budget: %s, want 413", resp.Status)
	}
	var v api.View
	f.must(f.do("GET", "/v1/appliances/held", ""), 200, &v)
	if v.Keys["small"] != "3" || len(f.history("/v1/appliances/held/releases").Releases) != before {
		t.Fatalf("the refused rollback wrote: small=%q", v.Keys["small"])
	}
	// 3 values (2.7 MB) fit: restored (read by key: the view follows a write of 15 MB of
	// deletes a moment later), and its share given back.
	if resp := rollback(small); resp.StatusCode != http.StatusOK {
		t.Fatalf("rollback of a 2.7 MB tree: %s", resp.Status)
	}
	var kv api.KV
	f.must(f.do("GET", "/v1/kv/appliances/held/small", ""), 200, &kv)
	if kv.Value != "1" || f.do("GET", "/v1/kv/appliances/held/more0", "").StatusCode != http.StatusNotFound {
		t.Fatalf("after the rollback: small=%q, more0 still there or not 404", kv.Value)
	}
	if !f.s.bodyBudget.sem.TryAcquire(f.s.bodyBudget.size()) {
		t.Fatal("the rollbacks' shares of the body budget were not given back")
	}
	f.s.bodyBudget.sem.Release(f.s.bodyBudget.size())
}

// bigTreeChanged makes appliance big a tree of nine values of 950 KB and a small key (8.5 MB,
// over an apply body's limit), then changes it (a value, the small key, a new key); it returns
// the tree and the revision it had.
func bigTreeChanged(f *fixture) (map[string]string, int64) {
	tree := map[string]string{}
	for i := range 9 {
		k, v := fmt.Sprintf("conf/part%d", i), strings.Repeat(fmt.Sprint(i), 950_000)
		f.put("appliances/big/"+k, v)
		tree[k] = v
	}
	rev := f.put("appliances/big/small", "1")
	tree["small"] = "1"
	f.put("appliances/big/conf/part3", "changed")
	f.put("appliances/big/small", "2")
	f.put("appliances/big/new", "x")
	return tree, rev
}

// A rollback with canary starts a rollout, whose record holds the whole candidate tree in one
// value of one transaction, where the live rollback writes only the keys that differ: a tree
// over etcd's request limit (twelve values of 950 KB, 11.4 MB, over the 10 MiB), of which one
// small key differs, was refused with etcd's generic 413 ("start the rollout of web: the request
// is larger than …"), which said neither what rule it broke nor that nothing was written. It is
// refused as the live rollback's changes over the limit are: why, what to do, nothing written
// (no rollout, no release, the live tree as it was).
func TestRollback_CanaryOfATreeOverEtcdsLimitRefusedWhole(t *testing.T) {
	f := newFixture(t)
	for i := range 12 {
		f.put(fmt.Sprintf("appliances/web/conf/part%d", i), strings.Repeat("a", 950_000))
	}
	rev := f.put("appliances/web/small", "1")
	f.put("appliances/web/small", "2")
	enrollFleet(t, f, 1)
	var before api.View
	f.must(f.do("GET", "/v1/appliances/web", ""), 200, &before)
	n := len(f.history("/v1/appliances/web/releases").Releases)

	r := f.do("PUT", "/v1/appliances/web?canary=100%25", "", api.HeaderRollback, fmt.Sprint(rev))
	f.mustErr(r, http.StatusRequestEntityTooLarge, api.CodeTooLarge, fmt.Sprintf("rollback of appliance \"web\" to revision %d", rev),
		"canary", "one transaction", "nothing was written", "without canary")
	t.Logf("refused: %s", r.errMessage())
	var after api.View
	f.must(f.do("GET", "/v1/appliances/web", ""), 200, &after)
	if !maps.Equal(after.Keys, before.Keys) {
		t.Fatal("the refused rollback changed the appliance")
	}
	if m := len(f.history("/v1/appliances/web/releases").Releases); m != n {
		t.Fatalf("%d releases after the refused rollback, %d before", m, n)
	}
	f.mustErr(f.do("GET", "/v1/appliances/web/rollout", ""), http.StatusNotFound, api.CodeNotFound)
}

// A rollback without a body that changes nothing waits up to viewChangedWait for the hub to see
// the revision it was checked at (its answer's revision). It held its tree's share of the body
// budget through that wait: for up to 2 s, rollbacks and applies that needed the budget waited
// for it, or were refused 503. The share is now given back once the write (here the check that
// nothing changes) is done. The hub is kept from seeing the revision (its watch stalled before a
// token's creation), so the first rollback waits the whole 2 s; the replica's only slot of reads
// of a past revision tells when it has read its tree and holds its share.
func TestRollback_UnchangedGivesTheBudgetBackBeforeItWaits(t *testing.T) {
	f := newFixture(t)
	f.s.bodyBudget = newBodyBudget(64 << 10) // before any request: a budget of 8 × 64 KiB
	f.s.bodyBudget.wait = 10 * time.Second
	f.s.historyReads = make(chan struct{}, 1)
	b := f.s.bodyBudget
	rev := f.put("appliances/held/conf", strings.Repeat("a", 480_000)) // one page: one share
	stalled, unstall := stallWatch(t, f, "stall")
	f.must(f.do("POST", "/v1/tokens", `{"name":"stall","read":["shared"]}`, "Content-Type", "application/json"), 201, nil)
	select {
	case <-stalled:
	case <-time.After(20 * time.Second):
		t.Fatal("the token's creation never reached the watch")
	}

	// The whole budget held here: the rollback reads its tree in the slot, then waits for its
	// share, which it gets once the budget is given back.
	if !b.sem.TryAcquire(b.size()) {
		t.Fatal("the budget is not free")
	}
	answer := make(chan resp, 1)
	start := time.Now()
	go func() {
		answer <- f.do("PUT", "/v1/appliances/held", "", api.HeaderRollback, strconv.FormatInt(rev, 10))
	}()
	waitFor(t, "the rollback's read of its tree", func() bool { return len(f.s.historyReads) == 1 })
	b.sem.Release(b.size())
	f.s.historyReads <- struct{}{} // once the rollback gave its slot back: its tree read, its share held
	<-f.s.historyReads

	ctx, cancel := context.WithTimeout(t.Context(), viewChangedWait/2)
	defer cancel()
	if err := b.sem.Acquire(ctx, b.size()); err != nil {
		t.Fatalf("the unchanged rollback's share of the body budget was not given back within %s of its write: held through its wait for the hub", viewChangedWait/2)
	}
	b.sem.Release(b.size())
	// An apply that needs the budget (64 KiB, over what the tree's 480 KB leave) is served
	// while the rollback waits.
	big := `{"keys":{"a":"` + strings.Repeat("b", 300_000) + `"}}`
	sent := time.Now()
	f.must(f.do("PUT", "/v1/appliances/other", big, "Content-Type", "application/json"), 200, nil)
	if d := time.Since(sent); d > viewChangedWait/2 {
		t.Fatalf("an apply that needs the budget took %s while an unchanged rollback waited", d)
	}
	select {
	case r := <-answer:
		t.Fatalf("the rollback answered (%s) before its wait for the hub was up: the test saw nothing of it", r.Status)
	default:
	}
	unstall()
	var w api.WriteResult
	f.must(<-answer, 200, &w)
	if !w.Unchanged {
		t.Fatalf("the rollback to the live tree: %+v, want unchanged", w)
	}
	t.Logf("the rollback answered after %s", time.Since(start))
}
