package store_test

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/server/store"
)

func relCtx(tb testing.TB, kind string) context.Context {
	return store.WithRelease(ctxT(tb), store.ReleaseInfo{Token: "ci", Remote: "10.0.0.1:5", Message: "m " + kind, Source: "pipe", Kind: kind})
}

// releases reads the store's releases, newest first.
func releases(tb testing.TB, s *store.Store) []api.Release {
	tb.Helper()
	rs, _, err := s.Releases(ctxT(tb))
	if err != nil {
		tb.Fatal(err)
	}
	return rs
}

func TestStore_ReleasePerWrite(t *testing.T) {
	s := openStore(t)
	ctx := ctxT(t)
	if _, err := s.Put(ctx, "shared/x", "1", -1); err != nil { // no release asked for
		t.Fatal(err)
	}
	if n := len(releases(t, s)); n != 0 {
		t.Fatalf("a write without release info recorded %d releases", n)
	}

	rev, err := s.Apply(store.WithRelease(ctx, store.ReleaseInfo{Token: "ci", Kind: api.KindApply, Appliance: "web"}), "web",
		map[string]string{"a": "1", "b": "2", "secrets/db": "hunter2"}, -1)
	if err != nil {
		t.Fatal(err)
	}
	rs := releases(t, s)
	if len(rs) != 1 || rs[0].Revision != rev || rs[0].Kind != api.KindApply || rs[0].Copy != "web" {
		t.Fatalf("after apply: %+v, want one apply release at %d with a copy", rs, rev)
	}
	want := []api.ReleaseChange{{Scope: api.ScopeAppliance, Appliance: "web",
		Created: []string{"appliances/web/a", "appliances/web/b", "appliances/web/secrets/db"}}}
	if !reflect.DeepEqual(rs[0].Changes, withCounts(want)) {
		t.Errorf("apply changes: got %+v, want %+v", rs[0].Changes, want)
	}
	cp, err := s.ReleaseCopy(ctx, rs[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cp.Keys, map[string]string{"a": "1", "b": "2"}) || !reflect.DeepEqual(cp.Omitted, []string{"secrets/db"}) {
		t.Errorf("copy without a sealer: %+v", cp)
	}

	// A second apply: a changed, b deleted, c created, shared untouched.
	rev, err = s.Apply(store.WithRelease(ctx, store.ReleaseInfo{Kind: api.KindApply, Appliance: "web"}), "web",
		map[string]string{"a": "9", "c": "3", "secrets/db": "hunter2"}, -1)
	if err != nil {
		t.Fatal(err)
	}
	rs = releases(t, s)
	want = []api.ReleaseChange{{Scope: api.ScopeAppliance, Appliance: "web",
		Created: []string{"appliances/web/c"}, Changed: []string{"appliances/web/a"}, Deleted: []string{"appliances/web/b"}}}
	if rs[0].Revision != rev || !reflect.DeepEqual(rs[0].Changes, withCounts(want)) {
		t.Errorf("second apply: got %+v at %d, want %+v at %d", rs[0].Changes, rs[0].Revision, want, rev)
	}

	// put, delete, recursive delete, txn.
	rev, err = s.Put(relCtx(t, api.KindPut), "shared/x", "2", -1)
	if err != nil {
		t.Fatal(err)
	}
	if rs := releases(t, s); rs[0].Revision != rev || rs[0].Kind != api.KindPut || rs[0].Message != "m put" ||
		!reflect.DeepEqual(rs[0].Changes, withCounts([]api.ReleaseChange{{Scope: api.ScopeShared, Changed: []string{"shared/x"}}})) {
		t.Errorf("put release: %+v", rs[0])
	}
	rev, err = s.Txn(relCtx(t, api.KindTxn), api.Txn{Ops: []api.Op{
		{Op: api.OpPut, Key: "other/k", Value: "v"},
		{Op: api.OpDelete, Key: "shared/x"},
		{Op: api.OpDelete, Key: "shared/absent"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if rs := releases(t, s); rs[0].Revision != rev || !reflect.DeepEqual(rs[0].Changes, withCounts([]api.ReleaseChange{
		{Scope: api.ScopeOther, Created: []string{"other/k"}},
		{Scope: api.ScopeShared, Deleted: []string{"shared/x"}},
	})) {
		t.Errorf("txn release: %+v", rs[0])
	}
	rev, _, err = s.Delete(relCtx(t, api.KindDelete), "appliances/web", true)
	if err != nil {
		t.Fatal(err)
	}
	if rs := releases(t, s); rs[0].Revision != rev || !reflect.DeepEqual(rs[0].Changes, withCounts([]api.ReleaseChange{{Scope: api.ScopeAppliance, Appliance: "web",
		Deleted: []string{"appliances/web/a", "appliances/web/c", "appliances/web/secrets/db"}}})) {
		t.Errorf("recursive delete release: %+v", rs[0])
	}
	rev, _, err = s.Delete(relCtx(t, api.KindDelete), "other/k", false)
	if err != nil {
		t.Fatal(err)
	}
	if rs := releases(t, s); rs[0].Revision != rev || len(rs) != 6 {
		t.Errorf("delete release: %+v (%d in all, want 6)", rs[0], len(rs))
	}

	// Writes that fail leave no release.
	if _, err := s.Put(ctx, "appliances/web/a", "1", -1); err != nil {
		t.Fatal(err)
	}
	n := len(releases(t, s))
	if _, err := s.Put(relCtx(t, api.KindPut), "shared/y", "1", 12345); !isCode(err, api.CodeConflict) {
		t.Errorf("put with a wrong cas: %v", err)
	}
	if _, _, err := s.Delete(relCtx(t, api.KindDelete), "shared/none", false); !isCode(err, api.CodeNotFound) {
		t.Errorf("delete of nothing: %v", err)
	}
	if _, err := s.Txn(relCtx(t, api.KindTxn), api.Txn{Ops: []api.Op{{Op: api.OpPut, Key: "shared/z", Value: "1"}},
		Guards: []api.Guard{{Key: "shared/z", ModRevision: 99}}}); !isCode(err, api.CodeConflict) {
		t.Errorf("txn with a failing guard: %v", err)
	}
	if _, err := s.Apply(store.WithRelease(ctx, store.ReleaseInfo{Kind: api.KindApply, Appliance: "web"}), "web", map[string]string{"a": "1"}, 1); !isCode(err, api.CodeConflict) {
		t.Errorf("apply with a failing cas: %v", err)
	}
	if got := len(releases(t, s)); got != n {
		t.Errorf("failed writes recorded %d releases", got-n)
	}
	for _, r := range releases(t, s) {
		if strings.Contains(r.Message+r.Token, "hunter2") {
			t.Errorf("a release holds a secret value: %+v", r)
		}
	}
}

func TestStore_PruneReleases(t *testing.T) {
	s := openStore(t)
	ctx := store.WithRelease(ctxT(t), store.ReleaseInfo{Kind: api.KindApply, Appliance: "web"})
	var revs []int64
	for i := range 7 {
		rev, err := s.Apply(ctx, "web", map[string]string{"a": strings.Repeat("x", i+1)}, -1)
		if err != nil {
			t.Fatal(err)
		}
		revs = append(revs, rev)
	}
	n, err := s.PruneReleases(ctxT(t), store.Retention{Count: 3}, time.Now())
	if err != nil || n != 4 {
		t.Fatalf("prune to 3: %d pruned, %v; want 4", n, err)
	}
	rs := releases(t, s)
	if len(rs) != 3 || rs[0].Revision != revs[6] || rs[2].Revision != revs[4] {
		t.Fatalf("after prune: %+v", rs)
	}
	if _, err := s.ReleaseCopy(ctxT(t), releasesIDs(rs)[2]); err != nil {
		t.Errorf("a kept release lost its copy: %v", err)
	}
	if copies, _, err := s.SysList(ctxT(t), "release-copies/"); err != nil || len(copies) != 3 {
		t.Errorf("%d copies after the prune (%v), want 3: the pruned releases' went with them", len(copies), err)
	}
	// By bytes: room for the two newest, records and copies.
	recs, _, err := s.SysList(ctxT(t), "releases/")
	if err != nil {
		t.Fatal(err)
	}
	room := rs[0].CopyBytes + rs[1].CopyBytes + int64(len(recs["releases/"+rs[0].ID])+len(recs["releases/"+rs[1].ID]))
	if n, err := s.PruneReleases(ctxT(t), store.Retention{Count: 100, MaxBytes: room}, time.Now()); err != nil || n != 1 {
		t.Fatalf("prune to %d bytes: %d pruned, %v; want 1", room, n, err)
	}
	if n, err := s.PruneReleases(ctxT(t), store.Retention{Count: 100, MaxBytes: room - 1}, time.Now()); err != nil || n != 1 {
		t.Fatalf("prune to %d bytes: %d pruned, %v; want 1", room-1, n, err)
	}
	// By age: an hour from now, every release is older than 30 minutes (the newest is kept).
	if _, err := s.Apply(ctx, "web", map[string]string{"a": "again"}, -1); err != nil {
		t.Fatal(err)
	}
	if n, err := s.PruneReleases(ctxT(t), store.Retention{Count: 100, MaxAge: 30 * time.Minute}, time.Now().Add(time.Hour)); err != nil || n != 1 {
		t.Fatalf("prune by age: %d, %v", n, err)
	}
}

func releasesIDs(rs []api.Release) []string {
	var ids []string
	for _, r := range rs {
		ids = append(ids, r.ID)
	}
	return ids
}

func isCode(err error, code string) bool {
	if err == nil {
		return false
	}
	e := api.AsError(err)
	return e != nil && e.Code == code
}

// Writers racing on one key: each write's record says created or changed as it really was
// (the pre-read is guarded; a stale one is read again), and every write has one record.
func TestStore_ReleaseConcurrentWriters(t *testing.T) {
	s := openStore(t)
	const writers, each = 4, 15
	errs := make(chan error, writers)
	for g := range writers {
		go func() {
			for i := range each {
				if _, err := s.Put(relCtx(t, api.KindPut), "shared/k", fmt.Sprintf("%d-%d", g, i), -1); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range writers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	rs := releases(t, s)
	if len(rs) != writers*each {
		t.Fatalf("%d releases for %d writes", len(rs), writers*each)
	}
	created := 0
	for _, r := range rs {
		c, ch, d := r.Counts()
		if c+ch != 1 || d != 0 {
			t.Errorf("release %d: %+v", r.Revision, r.Changes)
		}
		created += c
	}
	if created != 1 {
		t.Errorf("%d releases say they created shared/k, want 1 (the first write)", created)
	}
}

// A copy over the limit is not kept, and the record says why; the write still applies.
func TestStore_ReleaseCopyTooLarge(t *testing.T) {
	s := openStore(t)
	store.SetCopyLimit(s, 100)
	ctx := store.WithRelease(ctxT(t), store.ReleaseInfo{Kind: api.KindApply, Appliance: "web"})
	if _, err := s.Apply(ctx, "web", map[string]string{"a": strings.Repeat("x", 200)}, -1); err != nil {
		t.Fatal(err)
	}
	rs := releases(t, s)
	if len(rs) != 1 || rs[0].Copy != "" || !strings.Contains(rs[0].CopySkipped, "over the copy limit of 100") {
		t.Fatalf("release of a large apply: %+v", rs)
	}
	if _, err := s.ReleaseCopy(ctxT(t), rs[0].ID); !isCode(err, api.CodeNotFound) {
		t.Errorf("copy of a large apply: %v", err)
	}
}

func withCounts(cs []api.ReleaseChange) []api.ReleaseChange {
	for i := range cs {
		cs[i].CreatedCount, cs[i].ChangedCount, cs[i].DeletedCount = len(cs[i].Created), len(cs[i].Changed), len(cs[i].Deleted)
	}
	return cs
}

// A delete of a large subtree lists the first names and counts them all, within etcd's limits.
func TestStore_ReleaseLargeDelete(t *testing.T) {
	s := openStore(t)
	const n = api.MaxReleaseNames + 5
	for i := 0; i < n; i += 50 {
		var ops []api.Op
		for j := i; j < min(i+50, n); j++ {
			ops = append(ops, api.Op{Op: api.OpPut, Key: fmt.Sprintf("big/k%05d", j), Value: "v"})
		}
		if _, err := s.Txn(ctxT(t), api.Txn{Ops: ops}); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := s.Delete(relCtx(t, api.KindDelete), "big", true); err != nil {
		t.Fatal(err)
	}
	rs := releases(t, s)
	if len(rs) != 1 || len(rs[0].Changes) != 1 {
		t.Fatalf("releases: %+v", rs)
	}
	c := rs[0].Changes[0]
	if len(c.Deleted) != api.MaxReleaseNames || c.DeletedCount != n || c.Deleted[0] != "big/k00000" {
		t.Errorf("large delete: %d names, count %d, first %q", len(c.Deleted), c.DeletedCount, c.Deleted[0])
	}
	if _, _, d := rs[0].Counts(); d != n {
		t.Errorf("Counts deleted = %d, want %d", d, n)
	}
}

// An appliance named "secrets" holds only secrets (its keys' paths have a secrets segment):
// its copy seals or leaves out every value, though no key under it is itself named secrets.
func TestStore_ReleaseCopyOfApplianceNamedSecrets(t *testing.T) {
	s := openStore(t)
	ctx := ctxT(t)
	if _, err := s.Apply(store.WithRelease(ctx, store.ReleaseInfo{Kind: api.KindApply, Appliance: "secrets"}), "secrets",
		map[string]string{"db/password": "hunter2"}, -1); err != nil {
		t.Fatal(err)
	}
	rs := releases(t, s)
	if len(rs) != 1 || rs[0].Copy != "secrets" {
		t.Fatalf("releases: %+v, want one with a copy", rs)
	}
	cp, err := s.ReleaseCopy(ctx, rs[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(cp.Keys) != 0 || !reflect.DeepEqual(cp.Omitted, []string{"db/password"}) {
		t.Errorf("copy of appliance secrets without a sealer: %+v, want its value left out", cp)
	}
}

// The count is per scope: a stream of writes to one appliance does not push another
// appliance's releases out of the retention.
func TestStore_PruneReleasesPerScope(t *testing.T) {
	s := openStore(t)
	web := store.WithRelease(ctxT(t), store.ReleaseInfo{Kind: api.KindApply, Appliance: "web"})
	db := store.WithRelease(ctxT(t), store.ReleaseInfo{Kind: api.KindApply, Appliance: "db"})
	var dbRevs []int64
	for i := range 2 {
		rev, err := s.Apply(db, "db", map[string]string{"a": strings.Repeat("d", i+1)}, -1)
		if err != nil {
			t.Fatal(err)
		}
		dbRevs = append(dbRevs, rev)
	}
	for i := range 6 {
		if _, err := s.Apply(web, "web", map[string]string{"a": strings.Repeat("w", i+1)}, -1); err != nil {
			t.Fatal(err)
		}
	}
	n, err := s.PruneReleases(ctxT(t), store.Retention{Count: 3}, time.Now())
	if err != nil || n != 3 {
		t.Fatalf("prune to 3 a scope: %d pruned, %v; want web's 3 oldest", n, err)
	}
	kept := map[int64]bool{}
	for _, r := range releases(t, s) {
		kept[r.Revision] = true
	}
	for _, rev := range dbRevs {
		if !kept[rev] {
			t.Errorf("db's release at %d was pruned by web's writes", rev)
		}
	}
	if len(kept) != 5 {
		t.Errorf("%d releases kept, want 5 (web's 3 newest, db's 2)", len(kept))
	}
}

// Each store keeps what the keys it wrote held (its prior cache) instead of reading them before
// every write. Another replica's writes, and its own writes without a release, make that stale:
// the write's guard fails, and the record is made again from what the keys really held.
func TestStore_ReleaseStaleCache(t *testing.T) {
	cfg := testConfig(t)
	a, b := openStoreWith(t, cfg), openStoreWith(t, cfg)
	put := func(s *store.Store, v string) api.Release {
		t.Helper()
		rev, err := s.Put(relCtx(t, api.KindPut), "shared/k", v, -1)
		if err != nil {
			t.Fatal(err)
		}
		rs := releases(t, a)
		if rs[0].Revision != rev {
			t.Fatalf("newest release at %d, the put at %d", rs[0].Revision, rev)
		}
		return rs[0]
	}
	one := func(what string, r api.Release, want ...api.ReleaseChange) {
		t.Helper()
		if want == nil {
			want = []api.ReleaseChange{}
		}
		if !reflect.DeepEqual(r.Changes, withCounts(want)) {
			t.Errorf("%s: changes %+v, want %+v", what, r.Changes, want)
		}
	}
	shared := func(list string) api.ReleaseChange {
		c := api.ReleaseChange{Scope: api.ScopeShared}
		switch list {
		case "created":
			c.Created = []string{"shared/k"}
		case "changed":
			c.Changed = []string{"shared/k"}
		case "deleted":
			c.Deleted = []string{"shared/k"}
		}
		return c
	}
	one("a creates", put(a, "1"), shared("created"))
	bRev := put(b, "2")
	one("b changes", bRev, shared("changed"))
	// a's cache says 1: its guard fails, it reads the key again, finds its own value, and
	// writes nothing, answering b's revision.
	if res, err := a.PutResult(relCtx(t, api.KindPut), "shared/k", "2", -1); err != nil || !res.Unchanged || res.Revision != bRev.Revision {
		t.Fatalf("a writes what b wrote (a's cache says 1): %+v, %v; want unchanged at %d", res, err, bRev.Revision)
	}
	rev, _, err := b.Delete(relCtx(t, api.KindDelete), "shared/k", false)
	if err != nil {
		t.Fatal(err)
	}
	if rs := releases(t, a); rs[0].Revision != rev {
		t.Fatalf("newest release at %d, the delete at %d", rs[0].Revision, rev)
	} else {
		one("b deletes (b's cache is older than a's write)", rs[0], shared("deleted"))
	}
	one("a creates again (a's cache says it exists)", put(a, "3"), shared("created"))
	if _, err := a.Put(ctxT(t), "shared/k", "4", -1); err != nil { // no release: the cache is not told
		t.Fatal(err)
	}
	if res, err := a.PutResult(relCtx(t, api.KindPut), "shared/k", "4", -1); err != nil || !res.Unchanged {
		t.Fatalf("a writes 4 over its own unrecorded 4: %+v, %v; want unchanged", res, err)
	}
	one("a changes", put(a, "5"), shared("changed"))
	if n := len(releases(t, a)); n != 5 {
		t.Errorf("%d releases for 5 writes that changed the key", n)
	}
}

// openStoreWith opens a store with cfg (a second replica on the same root, say).
func openStoreWith(tb testing.TB, cfg store.Config) *store.Store {
	tb.Helper()
	s, err := store.Open(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("open store: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// putWeb writes appliance web's key n times, each with a release.
func putWeb(t *testing.T, s *store.Store, n int) {
	t.Helper()
	for i := range n {
		if _, err := s.Put(relCtx(t, api.KindPut), "appliances/web/k", fmt.Sprint(i), -1); err != nil {
			t.Fatal(err)
		}
	}
}

// threeReleases opens a store with three releases of appliance web, seen by a pruning pass.
func threeReleases(t *testing.T) *store.Store {
	t.Helper()
	s := openStore(t)
	putWeb(t, s, 3)
	if n, err := s.PruneReleases(ctxT(t), store.Retention{Count: 10}, time.Now()); err != nil || n != 0 {
		t.Fatalf("prune within the retention: %d pruned, %v", n, err)
	}
	return s
}

// Pruning decodes a record once, and again when it changed: a record rewritten under its key
// (same id, another scope) counts for its new scope.
func TestStore_PruneReleasesRereadsChangedRecords(t *testing.T) {
	s := threeReleases(t)
	rs := releases(t, s)
	oldest := rs[len(rs)-1]
	oldest.Changes = []api.ReleaseChange{{Scope: api.ScopeAppliance, Appliance: "db", Changed: []string{"appliances/db/k"}}}
	data, err := json.Marshal(oldest)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.SysPut(ctxT(t), "releases/"+oldest.ID, data, -1); err != nil {
		t.Fatal(err)
	}
	// web has 2 releases now, db 1: a count of 2 keeps them all, from the next full listing on.
	store.AgeReleaseListing(s, 10*time.Minute)
	if n, err := s.PruneReleases(ctxT(t), store.Retention{Count: 2}, time.Now()); err != nil || n != 0 {
		t.Fatalf("prune to 2 per scope after the rewrite: %d pruned, %v; want 0", n, err)
	}
	if n, err := s.PruneReleases(ctxT(t), store.Retention{Count: 1}, time.Now()); err != nil || n != 1 {
		t.Fatalf("prune to 1 per scope: %d pruned, %v; want web's older one", n, err)
	}
}

// Between full listings, a pass reads no record: it counts those it knew and those this
// replica's writes made since; a record another replica made is counted from the next full
// listing on (until then a pass keeps more, never less).
func TestStore_PruneReleasesCountsOwnRecordsWithoutListing(t *testing.T) {
	s := threeReleases(t)
	// Another replica's record of web, made now: not listed yet.
	other := api.Release{ID: store.NewReleaseID(time.Now()), Time: time.Now(), Kind: api.KindPut,
		Changes: []api.ReleaseChange{{Scope: api.ScopeAppliance, Appliance: "web", Changed: []string{"appliances/web/k"}}}}
	data, err := json.Marshal(other)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.SysPut(ctxT(t), "releases/"+other.ID, data, -1); err != nil {
		t.Fatal(err)
	}
	if n, err := s.PruneReleases(ctxT(t), store.Retention{Count: 3}, time.Now()); err != nil || n != 0 {
		t.Fatalf("a pass between listings: %d pruned, %v; want 0 (the other replica's record is not counted yet)", n, err)
	}
	// This replica's own write is counted at once: 4 known records of web, one too many.
	if _, err := s.Put(relCtx(t, api.KindPut), "appliances/web/k", "own", -1); err != nil {
		t.Fatal(err)
	}
	if n, err := s.PruneReleases(ctxT(t), store.Retention{Count: 3}, time.Now()); err != nil || n != 1 {
		t.Fatalf("a pass after one more write of its own: %d pruned, %v; want 1", n, err)
	}
	if got := len(releases(t, s)); got != 4 {
		t.Fatalf("%d releases left, want 4 (3 known, and the other replica's)", got)
	}
	store.AgeReleaseListing(s, 10*time.Minute)
	if n, err := s.PruneReleases(ctxT(t), store.Retention{Count: 3}, time.Now()); err != nil || n != 1 {
		t.Fatalf("a full pass: %d pruned, %v; want 1 (four records of web)", n, err)
	}
	rs := releases(t, s)
	if len(rs) != 3 || !slices.ContainsFunc(rs, func(r api.Release) bool { return r.ID == other.ID }) {
		t.Fatalf("releases left %v, want 3 with the other replica's", rs)
	}
}
