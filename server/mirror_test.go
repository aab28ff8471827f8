package server

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sync"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/server/store"
)

// mirrorAt waits until the hub's mirror is loaded and at rev or later, and returns its revision.
func (f *fixture) mirrorAt(rev int64) int64 {
	f.t.Helper()
	var at int64
	waitFor(f.t, fmt.Sprintf("mirror at revision %d", rev), func() bool {
		r, ok := f.s.hub.mir.at()
		at = r
		return ok && r >= rev
	})
	return at
}

// checkMirror compares the mirror's view of each appliance with a store read at the same
// revision (no write may run meanwhile).
func (f *fixture) checkMirror(apps ...string) {
	f.t.Helper()
	ctx := context.Background()
	for _, app := range apps {
		rev, _ := f.s.hub.mir.at()
		got, ok, gerr := f.s.hub.mir.view(app, rev)
		if !ok {
			f.t.Fatalf("%s: mirror not usable at its own revision %d", app, rev)
		}
		want, werr := f.st.ViewAt(ctx, app, rev)
		if (gerr == nil) != (werr == nil) {
			f.t.Fatalf("%s at %d: mirror error %v, store error %v", app, rev, gerr, werr)
		}
		if gerr != nil {
			if !errors.Is(gerr, api.ErrNotFound) || gerr.Error() != werr.Error() {
				f.t.Fatalf("%s: mirror says %q, store says %q", app, gerr, werr)
			}
			continue
		}
		if got.Revision != want.Revision || got.Appliance != want.Appliance || !reflect.DeepEqual(got.Keys, want.Keys) {
			f.t.Fatalf("%s at %d: mirror %+v, store %+v", app, rev, got, want)
		}
	}
}

func TestMirror_FollowsEveryKindOfWrite(t *testing.T) {
	f := newFixture(t)
	apps := []string{"web", "web-frontend", "db", "gone"}
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1","b":{"c":"2"}}}`), 200, nil)
	f.must(f.do("PUT", "/v1/appliances/web-frontend", `{"keys":{"a":"x"}}`), 200, nil)
	f.put("appliances/gone/k", "v")
	f.put("shared/dns", "1.1.1.1")
	f.put("sharedx/not-shared", "no")
	f.put("appliances/db", "not in any view")
	last := f.put("other/top", "ignored")
	f.mirrorAt(last)
	f.checkMirror(apps...)

	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 60 {
		app := apps[rng.IntN(3)]
		var rev int64
		switch rng.IntN(6) {
		case 0:
			rev = f.put(fmt.Sprintf("appliances/%s/k%d", app, rng.IntN(5)), fmt.Sprint(i))
		case 1:
			rev = f.put(fmt.Sprintf("shared/s%d", rng.IntN(4)), fmt.Sprint(i))
		case 2:
			var d api.DeleteResult
			r := f.do("DELETE", fmt.Sprintf("/v1/kv/appliances/%s?recurse", app), "")
			if r.StatusCode != 200 && r.StatusCode != 404 {
				t.Fatalf("recursive delete: %d %s", r.StatusCode, r.body)
			}
			f.must(r, r.StatusCode, &d)
			rev = max(d.Revision, f.s.hub.current())
		case 3:
			var w api.WriteResult
			f.must(f.do("PUT", "/v1/appliances/"+app, fmt.Sprintf(`{"keys":{"n":"%d","m/o":"p"}}`, i)), 200, &w)
			rev = w.Revision
		case 4:
			var w api.WriteResult
			body := fmt.Sprintf(`{"ops":[{"op":"put","key":"appliances/%s/t","value":"%d"},{"op":"delete","key":"shared/s1"},{"op":"put","key":"shared/s2","value":"t%d"}]}`, app, i, i)
			f.must(f.do("POST", "/v1/txn", body), 200, &w)
			rev = w.Revision
		case 5:
			var d api.DeleteResult
			r := f.do("DELETE", "/v1/kv/shared?recurse", "")
			if r.StatusCode != 200 && r.StatusCode != 404 {
				t.Fatalf("recursive delete of shared: %d %s", r.StatusCode, r.body)
			}
			f.must(r, r.StatusCode, &d)
			// The delete's own revision: the hub may not have seen it yet.
			rev = max(d.Revision, f.s.hub.current())
		}
		f.mirrorAt(rev)
		f.checkMirror(apps...)
	}
	// The store was replaced (as after a restore): the mirror is dropped, reloaded, still right.
	f.s.hub.reset(f.s.hub.current())
	f.mirrorAt(f.put("appliances/web/after-reset", "1"))
	f.checkMirror(apps...)
}

// A change under shared/ wakes every waiter of every appliance; their views come from the
// mirror: no store read at all, and one view made per appliance and revision.
func TestMirror_FanOutReadsNothingFromTheStore(t *testing.T) {
	const perApp = 100
	f := newFixture(t)
	apps := []string{"web", "db"}
	var base int64
	for _, a := range apps {
		var w api.WriteResult
		f.must(f.do("PUT", "/v1/appliances/"+a, `{"keys":{"a":"1"}}`), 200, &w)
		base = w.Revision
	}
	f.mirrorAt(base)
	var wg sync.WaitGroup
	results := make(chan resp, perApp*len(apps))
	for _, a := range apps {
		for range perApp {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results <- f.doQuiet(lp(a, base, "60s"))
			}()
		}
	}
	f.waitOpen(perApp * len(apps))
	storeBefore, mirrorBefore := f.s.hub.viewReads.Load(), f.s.hub.mirrorViews.Load()
	rev := f.put("shared/wake", "up")
	wg.Wait()
	close(results)
	for r := range results {
		var v api.View
		f.must(r, 200, &v)
		if v.Revision < rev || v.Keys["wake"] != "up" || v.Keys["a"] != "1" {
			t.Fatalf("woke with %+v, want the change at >= %d", v, rev)
		}
	}
	if n := f.s.hub.viewReads.Load() - storeBefore; n != 0 {
		t.Errorf("%d store reads for %d woken long-polls, want 0 (the mirror serves them)", n, perApp*len(apps))
	}
	if n := f.s.hub.mirrorViews.Load() - mirrorBefore; n != int64(len(apps)) {
		t.Errorf("%d views made from the mirror, want %d (one per appliance and revision)", n, len(apps))
	}
}

// Events seen while the mirror loads are replayed after the load when later than its revision;
// a load that an invalidation overtook is discarded.
func TestMirror_ReplaysEventsSeenWhileLoading(t *testing.T) {
	var m mirror
	ev := func(rev int64, cs ...store.Change) store.ChangeEvent {
		return store.ChangeEvent{Event: store.Event{Revision: rev}, Changes: cs}
	}
	gen := m.restart()
	m.apply(ev(5, store.Change{Key: "shared/a", Value: "seen by the load"}))
	m.apply(ev(7, store.Change{Key: "appliances/web/x", Value: "2"}))
	m.apply(ev(8, store.Change{Key: "shared/a", Deleted: true}, store.Change{Key: "appliances/web/y", Value: "3"}))
	if _, ok, _ := m.view("web", 1); ok {
		t.Fatal("a mirror that is not loaded served a view")
	}
	if !m.load(map[string]string{"shared/a": "1", "appliances/web/x": "1", "appliances/db/z": "9"}, 6, gen) {
		t.Fatal("load refused")
	}
	v, ok, err := m.view("web", 8)
	if want := map[string]string{"x": "2", "y": "3"}; !ok || err != nil || v.Revision != 8 || !reflect.DeepEqual(v.Keys, want) {
		t.Fatalf("view after replay: %+v ok=%v err=%v, want %v at 8", v, ok, err, want)
	}
	if _, ok, _ := m.view("web", 9); ok {
		t.Fatal("the mirror served a revision it has not reached")
	}
	if _, ok, err := m.view("nope", 8); !ok || !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("unknown appliance: ok=%v err=%v, want not found", ok, err)
	}

	gen = m.restart()
	m.invalidate() // the store was replaced while the load ran
	if m.load(map[string]string{"appliances/web/x": "stale"}, 10, gen) {
		t.Fatal("a load overtaken by an invalidation was kept")
	}
	if _, loaded := m.at(); loaded {
		t.Fatal("mirror loaded from a stale read")
	}
}
