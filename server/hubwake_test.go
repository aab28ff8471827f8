package server

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/server/store"
)

// checkHub fails the test when the hub's indexes disagree: every registered waiter in its
// appliance's set, its token's set, its instance's entry and the heap of deadlines (at its
// place, the heap ordered), and nothing else there; n their number.
func checkHub(t *testing.T, h *hub) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for app, aw := range h.waiters {
		if aw.app != app || len(aw.set) == 0 {
			t.Fatalf("appliance %q: entry for %q with %d waiters", app, aw.app, len(aw.set))
		}
		live := map[*generation]int{}
		for w := range aw.set {
			n++
			if w.gen.aw != aw {
				t.Fatalf("a waiter of %q names another appliance's entry", app)
			}
			if w.inGen() && !slices.Contains(aw.gens, w.gen) {
				t.Fatalf("a waiter of %q in a generation that is not the appliance's", app)
			}
			live[w.gen]++
			if _, ok := h.byToken[w.token][w]; !ok {
				t.Fatalf("a waiter of %q missing from its token's set", app)
			}
			if w.instance != "" && h.byInstance[instanceKey{w.token, app, w.instance}] != w {
				t.Fatalf("a waiter of %q missing from the instances", app)
			}
			if w.idx < 0 || int(w.idx) >= len(h.due) || h.due[w.idx] != w {
				t.Fatalf("a waiter of %q not at its place in the heap (idx %d of %d)", app, w.idx, len(h.due))
			}
		}
		for _, g := range append(slices.Clone(aw.gens), &aw.ahead) {
			if g.live != live[g] || g != &aw.ahead && (g.live == 0 || isClosed(g.done)) {
				t.Fatalf("a generation of %q counts %d waiters, has %d (closed %v)", app, g.live, live[g], g.done != nil && isClosed(g.done))
			}
		}
	}
	tokens := 0
	for _, ts := range h.byToken {
		tokens += len(ts)
	}
	if n != h.n || tokens != n || len(h.due) != n || len(h.byInstance) > n {
		t.Fatalf("n %d; registered %d, by token %d, deadlines %d, instances %d", h.n, n, tokens, len(h.due), len(h.byInstance))
	}
	for i := 1; i < len(h.due); i++ {
		if h.due[(i-1)/2].due > h.due[i].due {
			t.Fatalf("heap of deadlines out of order at %d", i)
		}
	}
}

// registered is a waiter registered by a test, and the generation it waits in.
type registered struct {
	*waiter
	gen *generation
}

func (r registered) woken() wake { return r.waiter.woken(r.gen) }

// registerN registers n waiters of app (tokens and instances as given by i) without waiting
// on them.
func registerN(t *testing.T, ctx context.Context, h *hub, app string, after int64, n int, token func(i int) string) []registered {
	t.Helper()
	var ws []registered
	for i := range n {
		w, gen, wk, err := h.register(ctx, app, after, token(i), fmt.Sprintf("%s-vm-%d", app, i), 0, jitter(time.Hour))
		if w == nil {
			t.Fatalf("register %s #%d: %+v %v", app, i, wk, err)
		}
		ws = append(ws, registered{w, gen})
	}
	return ws
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// One change wakes the long-polls that wait for it as a whole: those of an appliance share one
// generation, whose channel the change closes (their wait is not a loop over them, which the
// scheduler could cut halfway). A long-poll whose index is ahead of the hub is not part of it:
// a change at or below its index leaves it waiting.
func TestHub_GenerationWokenWhole(t *testing.T) {
	ctx, h, rev := bareHub(t, 1000)
	tok := func(i int) string { return fmt.Sprintf("tok-%d", i%3) }
	web := registerN(t, ctx, h, "web", rev, 40, tok)
	db := registerN(t, ctx, h, "db", rev, 30, tok)
	checkHub(t, h)
	for _, ws := range [][]registered{web, db} {
		for i, w := range ws {
			if w.gen == nil || w.gen != ws[i/genSize*genSize].gen || i >= genSize && w.gen == ws[i-genSize].gen {
				t.Fatalf("waiters of one appliance at the hub's revision are not in generations of %d in turn", genSize)
			}
		}
	}
	// Ahead of the hub: the store is at rev+2, the hub has not seen it.
	var ahead int64
	for range 2 {
		var err error
		if ahead, err = h.st.Put(ctx, "appliances/other/k", "1", -1); err != nil {
			t.Fatal(err)
		}
	}
	aw := registerN(t, ctx, h, "web", ahead, 1, func(int) string { return "tok-ahead" })[0]
	if aw.gen != nil {
		t.Fatal("a waiter ahead of the hub joined a generation")
	}
	checkHub(t, h)

	// A change of db only: db's generations, not web's.
	h.apply(ctx, store.Event{Revision: ahead - 1, Keys: []string{"appliances/db/k"}})
	for _, w := range db {
		if !isClosed(w.gen.done) {
			t.Fatal("a change of db did not close db's generations")
		}
	}
	for _, w := range web {
		if isClosed(w.gen.done) {
			t.Fatal("a change of db closed a generation of web")
		}
	}
	for _, w := range db {
		if wk := w.woken(); wk.kind != wakeChanged || !wk.known || wk.rev != ahead-1 {
			t.Fatalf("db waiter woken with %+v", wk)
		}
	}
	checkHub(t, h)
	if h.open() != 41 {
		t.Fatalf("%d open, want web's 40 and the one ahead", h.open())
	}

	// A shared/ change at the ahead waiter's index: web's generation; the ahead one stays.
	h.apply(ctx, store.Event{Revision: ahead, Keys: []string{"shared/x"}})
	for _, w := range web {
		if wk := w.woken(); wk.kind != wakeChanged || wk.rev != ahead {
			t.Fatalf("web waiter woken with %+v", wk)
		}
	}
	if isClosed(aw.ch) {
		t.Fatal("the waiter ahead of the hub was woken by a change below its index")
	}
	checkHub(t, h)
	if h.open() != 1 {
		t.Fatalf("%d open, want the one ahead", h.open())
	}
	h.apply(ctx, store.Event{Revision: ahead + 1, Keys: []string{"shared/x"}})
	if !isClosed(aw.ch) || aw.woken().kind != wakeChanged {
		t.Fatal("the waiter ahead of the hub not woken by a change above its index")
	}
	checkHub(t, h)
	if h.open() != 0 || len(h.waiters)+len(h.byToken)+len(h.byInstance)+len(h.due) != 0 {
		t.Fatalf("hub not empty: %d open", h.open())
	}
}

// A long-poll woken alone (revoked, replaced, expired, gone) just before its generation's
// change ends for its own reason, whichever of the two its goroutine sees first: a revoked
// token never gets the view.
func TestHub_WokenAloneBeforeItsGeneration(t *testing.T) {
	ctx, h, rev := bareHub(t, 1000)
	ws := registerN(t, ctx, h, "web", rev, 4, func(i int) string { return fmt.Sprintf("tok-%d", i) })
	h.revoke("tok-0")
	h.mu.Lock()
	h.wakeLocked(ws[1].waiter, wakeTimeout, false)
	h.mu.Unlock()
	// A newer long-poll of ws[2]'s agent replaces it.
	if w, _, _, err := h.register(ctx, "web", rev, "tok-2", "web-vm-2", 0, time.Hour); w == nil || err != nil {
		t.Fatalf("register the newer long-poll: %v", err)
	}
	checkHub(t, h)
	h.apply(ctx, store.Event{Revision: rev + 1, Keys: []string{"shared/x"}})
	if !isClosed(ws[0].gen.done) {
		t.Fatal("generation not closed")
	}
	for i, want := range []wakeKind{wakeRevoked, wakeTimeout, wakeReplaced, wakeChanged} {
		if wk := ws[i].woken(); wk.kind != want {
			t.Fatalf("waiter %d woken with %+v, want kind %d", i, wk, want)
		}
	}
	// The client of a revoked long-poll goes away at the same moment: still revoked.
	gone, cancel := context.WithCancel(ctx)
	cancel()
	if wk, err := h.leave(gone, ws[0].waiter, ws[0].gen); wk.kind != wakeRevoked || err != nil {
		t.Fatalf("leave of a revoked waiter: %+v %v", wk, err)
	}
	if wk, err := h.leave(gone, ws[3].waiter, ws[3].gen); wk.kind != wakeChanged || err == nil {
		t.Fatalf("leave of a waiter woken by its generation: %+v %v, want changed and the context's error", wk, err)
	}
	checkHub(t, h)
}

// The generations of one change are closed by the hub one after the other, and a long-poll
// woken by one closes the rest: when the hub's goroutine is preempted halfway, the others do
// not wait for it behind the long-polls it woke.
func TestHub_WokenLongPollClosesTheRest(t *testing.T) {
	ctx, h, rev := bareHub(t, 1000)
	woke := make(chan string, 3)
	for _, app := range []string{"a", "b", "c"} {
		go func() {
			if wk, err := h.wait(ctx, app, rev, "tok", app+"-vm", 0, time.Hour); err != nil || wk.kind != wakeChanged {
				t.Errorf("%s: %+v %v", app, wk, err)
			}
			woke <- app
		}()
	}
	for h.open() < 3 {
		time.Sleep(time.Millisecond)
	}
	// As wakeAppsLocked does, but the hub stops after the first close.
	h.mu.Lock()
	b := &wakeBatch{}
	for _, aw := range h.allApps() {
		for _, g := range aw.gens {
			g.wk = wake{kind: wakeChanged, rev: rev + 1, known: true}
			g.batch = b
			b.gens = append(b.gens, g)
		}
		aw.gens = nil
	}
	var ws []*waiter
	for _, aw := range h.allApps() {
		for w := range aw.set {
			ws = append(ws, w)
		}
	}
	h.forgetLocked(ws)
	b.next.Store(1)
	close(b.gens[0].done)
	h.mu.Unlock()
	for range 3 {
		select {
		case <-woke:
		case <-time.After(10 * time.Second):
			t.Fatal("the long-poll woken first did not close the other generations of its change")
		}
	}
}

// A change of one appliance among many forgets its waiters in bulk (the heap of deadlines
// rebuilt from those that stay), and the rest keep expiring in order.
func TestHub_ForgetInBulk(t *testing.T) {
	ctx, h, rev := bareHub(t, 5000)
	tok := func(i int) string { return fmt.Sprintf("tok-%d", i%7) }
	for i := range 20 {
		registerN(t, ctx, h, fmt.Sprintf("app-%d", i), rev, 50, tok)
	}
	big := registerN(t, ctx, h, "big", rev, 500, tok)
	checkHub(t, h)
	h.apply(ctx, store.Event{Revision: rev + 1, Keys: []string{"appliances/big/k", "appliances/app-3/k"}})
	checkHub(t, h)
	if h.open() != 19*50 {
		t.Fatalf("%d open, want %d", h.open(), 19*50)
	}
	gens := map[*generation]bool{}
	for _, w := range big {
		if wk := w.woken(); wk.kind != wakeChanged || !isClosed(w.gen.done) {
			t.Fatalf("big woken with %+v", wk)
		}
		gens[w.gen] = true
	}
	if len(gens) != (len(big)+genSize-1)/genSize {
		t.Fatalf("%d waiters in %d generations, want %d of at most %d", len(big), len(gens), (len(big)+genSize-1)/genSize, genSize)
	}
	// A small change removes its waiters one by one from the heap.
	h.apply(ctx, store.Event{Revision: rev + 2, Keys: []string{"appliances/app-5/k"}})
	checkHub(t, h)
	// The earliest deadline is the heap's top: expire it.
	h.mu.Lock()
	first := h.due[0]
	first.due = 0
	h.mu.Unlock()
	h.expire()
	if wk := first.woken(nil); wk.kind != wakeTimeout {
		t.Fatalf("expired waiter woken with %+v", wk)
	}
	checkHub(t, h)
}

// BenchmarkHub_WakeAll: one shared/ change wakes 10,000 long-polls (10 appliances, 10 tokens,
// an instance each): how long the hub's apply takes, and until the last one is woken.
func BenchmarkHub_WakeAll(b *testing.B) {
	ctx, h, rev := bareHub(b, 20000)
	const n = 10000
	var applyD, lastD time.Duration
	for i := 0; i < b.N; i++ {
		var wg sync.WaitGroup
		var mu sync.Mutex
		var last time.Time
		for k := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _ = h.wait(ctx, fmt.Sprintf("app%d", k%10), rev, fmt.Sprintf("tok%d", k%10), fmt.Sprintf("i%d", k), 0, jitter(time.Hour))
				now := time.Now()
				mu.Lock()
				if now.After(last) {
					last = now
				}
				mu.Unlock()
			}()
		}
		for h.open() < n {
			time.Sleep(time.Millisecond)
		}
		rev++
		t0 := time.Now()
		h.apply(ctx, store.Event{Revision: rev, Keys: []string{"shared/wake"}})
		applyD += time.Since(t0)
		wg.Wait()
		lastD += last.Sub(t0)
	}
	b.ReportMetric(float64(applyD.Microseconds())/float64(b.N)/1000, "apply-ms")
	b.ReportMetric(float64(lastD.Microseconds())/float64(b.N)/1000, "last-woken-ms")
}

// An appliance that always has a long-poll open and does not change keeps its generations to
// those of its open long-polls: long-polls that end alone (expired, gone, replaced, revoked)
// leave none behind, however many come and go (they grew by one per genSize registrations).
func TestHub_GenerationsOfLongPollsGoneAreForgotten(t *testing.T) {
	ctx, h, rev := bareHub(t, 1000)
	registerN(t, ctx, h, "web", rev, 1, func(int) string { return "tok-held" }) // stays open
	for round := range 50 {
		ws := registerN(t, ctx, h, "web", rev, genSize, func(i int) string { return fmt.Sprintf("tok-%d-%d", round, i) })
		h.mu.Lock()
		for _, w := range ws {
			h.wakeLocked(w.waiter, wakeTimeout, false)
		}
		h.mu.Unlock()
		checkHub(t, h)
	}
	h.mu.Lock()
	gens := len(h.waiters["web"].gens)
	h.mu.Unlock()
	if gens > 2 {
		t.Fatalf("1 long-poll open and %d generations kept", gens)
	}
	// Those that stay still wake with the next change.
	ws := registerN(t, ctx, h, "web", rev, 3, func(i int) string { return fmt.Sprintf("tok-last-%d", i) })
	h.apply(ctx, store.Event{Revision: rev + 1, Keys: []string{"appliances/web/k"}})
	for _, w := range ws {
		if !isClosed(w.gen.done) || w.woken().kind != wakeChanged {
			t.Fatal("a long-poll not woken by its change")
		}
	}
	if h.open() != 0 {
		t.Fatalf("%d open after the change", h.open())
	}
	// A rollout's move at the hub's revision wakes them one by one (not whole): their
	// generation goes with the last, and the one ahead of the hub stays.
	rev = h.current()
	ws = registerN(t, ctx, h, "web", rev, 3, func(i int) string { return fmt.Sprintf("tok-roll-%d", i) })
	var ahead int64 // the store's revision, ahead of the hub's
	for ahead <= rev {
		var err error
		if ahead, err = h.st.Put(ctx, "appliances/other/k", "1", -1); err != nil {
			t.Fatal(err)
		}
	}
	aw := registerN(t, ctx, h, "web", ahead, 1, func(int) string { return "tok-roll-ahead" })[0]
	h.apply(ctx, store.Event{Revision: ahead, Progress: true})
	h.touch("web", ahead)
	checkHub(t, h)
	for _, w := range ws {
		if !isClosed(w.ch) || w.woken().kind != wakeChanged {
			t.Fatal("a long-poll not woken by its rollout's move")
		}
	}
	h.mu.Lock()
	gens = len(h.waiters["web"].gens)
	h.mu.Unlock()
	if gens != 0 || isClosed(aw.ch) {
		t.Fatalf("%d generations kept with only a long-poll ahead of the hub open (woken: %v)", gens, isClosed(aw.ch))
	}
}

// A change that wakes several appliances' long-polls wakes their generations in the order the
// generations were made, which is the order their long-polls came, whatever their appliance:
// the agents that asked first are answered first. Every long-poll is woken, once, with the
// change, as before.
func TestHub_SharedChangeWakesInArrivalOrder(t *testing.T) {
	ctx, h, rev := bareHub(t, 1000)
	apps := []string{"web", "db", "cache", "queue", "mail"}
	first := map[*generation]int{} // a generation's first long-poll, by arrival
	var all []registered
	for i := range 5 * 3 * genSize { // agents of the appliances asking in turn
		app := apps[i%len(apps)]
		wt, gen, wk, err := h.register(ctx, app, rev, "tok-"+app, fmt.Sprintf("vm-%d", i), 0, time.Hour)
		if wt == nil || gen == nil {
			t.Fatalf("register #%d of %s: in no generation (%+v, %v)", i, app, wk, err)
		}
		w := registered{wt, gen}
		if _, ok := first[w.gen]; !ok {
			first[w.gen] = i
		}
		all = append(all, w)
	}
	checkHub(t, h)
	if len(first) != len(apps)*3 {
		t.Fatalf("%d generations, want %d of %d waiters", len(first), len(apps)*3, genSize)
	}
	h.apply(ctx, store.Event{Revision: rev + 1, Keys: []string{"shared/x"}})
	b := all[0].gen.batch
	if b == nil || len(b.gens) != len(first) {
		t.Fatalf("the change's batch holds %v generations, want %d", b, len(first))
	}
	for i, g := range b.gens {
		if !isClosed(g.done) {
			t.Fatalf("generation %d of the batch not closed", i)
		}
		if i > 0 && first[g] < first[b.gens[i-1]] {
			t.Fatalf("generation %d of the batch (first long-poll #%d, %s) woken after #%d's (%s)",
				i, first[g], g.aw.app, first[b.gens[i-1]], b.gens[i-1].aw.app)
		}
	}
	for i, w := range all {
		if wk := w.woken(); wk.kind != wakeChanged || !wk.known || wk.rev != rev+1 {
			t.Fatalf("long-poll #%d woken with %+v", i, wk)
		}
	}
	checkHub(t, h)
	if h.open() != 0 {
		t.Fatalf("%d long-polls open after the change", h.open())
	}
}
