package store_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/server/store"
)

// putRecord writes a release record under id as another replica (or a restore) would.
func putRecord(t *testing.T, s *store.Store, id, msg string) {
	t.Helper()
	rec := api.Release{ID: id, Time: time.Now(), Token: "ci", Message: msg, Kind: api.KindPut,
		Changes: []api.ReleaseChange{{Scope: api.ScopeAppliance, Appliance: "web", Changed: []string{"appliances/web/k"}}}}
	data, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.SysPut(ctxT(t), "releases/"+id, data, -1); err != nil {
		t.Fatal(err)
	}
}

// sameReleases fails unless got is what a store that never read the records before reads.
func sameReleases(t *testing.T, got []api.Release, fresh *store.Store) {
	t.Helper()
	want := releases(t, fresh)
	g, _ := json.Marshal(got)
	w, _ := json.Marshal(want)
	if string(g) != string(w) {
		t.Fatalf("releases read again:\n%s\nwant (read afresh):\n%s", g, w)
	}
}

// A read of every release record (the console's pages, every history) decodes only the records
// that are new or changed since the last read: each read decoded every record, ~0.3 s for
// 50,000. What it answers is what a read afresh answers: records added (with ids older than
// the newest, as a replica whose clock lags makes them), rewritten, deleted, unreadable.
func TestStore_ReleasesReadDecodesOnlyWhatChanged(t *testing.T) {
	s := openStore(t)
	putWeb(t, s, 20)
	fresh := func() *store.Store { return openStore(t, func(c *store.Config) { c.Root = s.Root() }) }
	rs := releases(t, s)
	if len(rs) != 20 || store.ReleasesDecoded(s) != 20 {
		t.Fatalf("first read: %d releases, %d decoded; want 20 and 20", len(rs), store.ReleasesDecoded(s))
	}
	if rs = releases(t, s); store.ReleasesDecoded(s) != 20 {
		t.Fatalf("a read with nothing changed decoded %d more records, want 0", store.ReleasesDecoded(s)-20)
	}
	sameReleases(t, rs, fresh())

	putWeb(t, s, 2)                                                                    // 2 new
	putRecord(t, s, rs[5].ID, "rewritten")                                             // 1 changed under its key
	putRecord(t, s, store.NewReleaseID(time.Now().Add(-time.Hour)), "a lagging clock") // 1 new, sorting among the old
	if _, err := s.SysDelete(ctxT(t), "releases/"+rs[7].ID); err != nil {              // 1 gone
		t.Fatal(err)
	}
	if _, err := s.SysPut(ctxT(t), "releases/"+store.NewReleaseID(time.Now()), []byte("{not json"), -1); err != nil {
		t.Fatal(err)
	}
	before := store.ReleasesDecoded(s)
	rs = releases(t, s)
	if d := store.ReleasesDecoded(s) - before; d != 5 {
		t.Fatalf("a read after 3 records came, 1 changed and 1 went decoded %d records, want 5 (with the unreadable one)", d)
	}
	if len(rs) != 22 || !slices.ContainsFunc(rs, func(r api.Release) bool { return r.Message == "rewritten" }) {
		t.Fatalf("%d releases, rewritten one there: %v; want 22 with it", len(rs), slices.ContainsFunc(rs, func(r api.Release) bool { return r.Message == "rewritten" }))
	}
	sameReleases(t, rs, fresh())
	before = store.ReleasesDecoded(s)
	releases(t, s)
	if d := store.ReleasesDecoded(s) - before; d != 0 {
		t.Fatalf("the unreadable record was decoded again (%d records decoded), want it skipped once", d)
	}
}

// Reads between random changes answer what a read afresh answers, and decode only those.
func TestStore_ReleasesReadRandomChanges(t *testing.T) {
	s := openStore(t)
	r := rand.New(rand.NewPCG(7, 7))
	var ids []string
	for i := range 30 {
		before := store.ReleasesDecoded(s)
		changed := 0
		for range r.IntN(4) {
			switch op := r.IntN(3); {
			case op == 0 || len(ids) == 0:
				id := store.NewReleaseID(time.Now().Add(-time.Duration(r.IntN(3600)) * time.Second))
				putRecord(t, s, id, fmt.Sprint("new ", i))
				ids = append(ids, id)
				changed++
			case op == 1:
				putRecord(t, s, ids[r.IntN(len(ids))], fmt.Sprint("rewritten ", i))
				changed++
			default:
				k := r.IntN(len(ids))
				if _, err := s.SysDelete(ctxT(t), "releases/"+ids[k]); err != nil {
					t.Fatal(err)
				}
				ids = slices.Delete(ids, k, k+1)
			}
		}
		got := releases(t, s)
		if i > 0 {
			// A record rewritten twice, or made and rewritten, between two reads is decoded once.
			if d := store.ReleasesDecoded(s) - before; d > int64(changed) {
				t.Fatalf("round %d: %d records decoded after %d records came or changed", i, d, changed)
			}
		}
		if len(got) != len(ids) {
			t.Fatalf("round %d: %d releases, want %d", i, len(got), len(ids))
		}
		sameReleases(t, got, openStore(t, func(c *store.Config) { c.Root = s.Root() }))
	}
}

// The decoded records are let go once nobody read them for a while: a server nobody browses
// does not hold them.
func TestStore_ReleasesHeldWhileRead(t *testing.T) {
	s := openStore(t)
	store.SetReleasesHeldIdle(s, 100*time.Millisecond)
	putWeb(t, s, 3)
	releases(t, s)
	if n := store.ReleasesHeld(s); n != 3 {
		t.Fatalf("%d records held after a read, want 3", n)
	}
	deadline := time.Now().Add(10 * time.Second)
	for store.ReleasesHeld(s) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d records still held 10 s after the last read", store.ReleasesHeld(s))
		}
		time.Sleep(20 * time.Millisecond)
	}
	before := store.ReleasesDecoded(s)
	if rs := releases(t, s); len(rs) != 3 || store.ReleasesDecoded(s)-before != 3 {
		t.Fatalf("a read after they were let go: %d releases, %d decoded; want 3 and 3", len(rs), store.ReleasesDecoded(s)-before)
	}
}
