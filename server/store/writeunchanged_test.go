package store_test

import (
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/server/store"
)

// storeRev is the store's revision now.
func storeRev(t *testing.T, s *store.Store) int64 {
	t.Helper()
	rev, err := s.Revision(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

// A put of the value a key holds writes nothing: no revision, no release, the key's version
// as it was. It answers the key's mod_revision, and its cas refuses it as it would the write.
func TestStore_PutOfItsOwnValueWritesNothing(t *testing.T) {
	s := openStore(t)
	first, err := s.Put(relCtx(t, api.KindPut), "appliances/web/port", "80", -1)
	if err != nil {
		t.Fatal(err)
	}
	before, n := storeRev(t, s), len(releases(t, s))
	for _, cas := range []int64{-1, first} {
		res, err := s.PutResult(relCtx(t, api.KindPut), "appliances/web/port", "80", cas)
		if err != nil || !res.Unchanged || res.Revision != first {
			t.Fatalf("put of its own value (cas %d): %+v, %v; want unchanged at %d", cas, res, err, first)
		}
	}
	for _, cas := range []int64{0, first - 1} {
		if _, err := s.PutResult(relCtx(t, api.KindPut), "appliances/web/port", "80", cas); !isCode(err, api.CodeConflict) {
			t.Errorf("put of its own value with cas %d: %v, want a conflict", cas, err)
		}
	}
	if now := storeRev(t, s); now != before {
		t.Errorf("the store moved from revision %d to %d", before, now)
	}
	if got := len(releases(t, s)); got != n {
		t.Errorf("%d releases, want %d", got, n)
	}
	kv, _, err := s.Get(ctxT(t), "appliances/web/port")
	if err != nil || kv.Version != 1 || kv.ModRevision != first {
		t.Errorf("the key after: %+v, %v; want version 1 at %d", kv, err, first)
	}

	// Another value is a write, with its release.
	res, err := s.PutResult(relCtx(t, api.KindPut), "appliances/web/port", "81", first)
	if err != nil || res.Unchanged || res.Revision <= before {
		t.Fatalf("put of another value: %+v, %v", res, err)
	}
	if rs := releases(t, s); len(rs) != n+1 || rs[0].Revision != res.Revision {
		t.Errorf("after the change: %d releases, the newest at %d; want %d, at %d", len(rs), rs[0].Revision, n+1, res.Revision)
	}
}

// The store's memory of what a key holds (its prior cache) does not decide that a put changes
// nothing: a value written behind it (by a plain etcd client here) is written over.
func TestStore_PutOfAValueChangedBehindTheCacheWrites(t *testing.T) {
	s := openStore(t)
	cli, err := clientv3.New(clientv3.Config{Endpoints: s.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	if _, err := s.Put(relCtx(t, api.KindPut), "shared/ntp", "a", -1); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctxT(t), s.Root()+"kv/shared/ntp", "b"); err != nil {
		t.Fatal(err)
	}
	res, err := s.PutResult(relCtx(t, api.KindPut), "shared/ntp", "a", -1)
	if err != nil || res.Unchanged {
		t.Fatalf("put of the value the cache remembers: %+v, %v; want a write", res, err)
	}
	kv, _, err := s.Get(ctxT(t), "shared/ntp")
	if err != nil || kv.Value != "a" || kv.ModRevision != res.Revision {
		t.Errorf("the key: %+v, %v; want a at %d", kv, err, res.Revision)
	}
	if rs := releases(t, s); rs[0].Revision != res.Revision || len(rs[0].Changes) != 1 || rs[0].Changes[0].ChangedCount != 1 {
		t.Errorf("newest release: %+v, want one at %d that changed the key", rs[0], res.Revision)
	}
}

// A transaction that changes no key (its puts hold their values, its deletes find nothing)
// writes nothing; one that changes some keys leaves the others as they are, their versions
// too, and its release names only what changed.
func TestStore_TxnWritesOnlyWhatChanges(t *testing.T) {
	s := openStore(t)
	put := func(k, v string) api.Op { return api.Op{Op: api.OpPut, Key: k, Value: v} }
	first, err := s.Txn(relCtx(t, api.KindTxn), api.Txn{Ops: []api.Op{put("appliances/web/a", "1"), put("appliances/web/b", "2")}})
	if err != nil {
		t.Fatal(err)
	}
	before, n := storeRev(t, s), len(releases(t, s))
	same := api.Txn{
		Ops:    []api.Op{put("appliances/web/a", "1"), put("appliances/web/b", "2"), {Op: api.OpDelete, Key: "appliances/web/gone"}},
		Guards: []api.Guard{{Key: "appliances/web/a", ModRevision: first}},
	}
	res, err := s.TxnResult(relCtx(t, api.KindTxn), same)
	if err != nil || !res.Unchanged || res.Revision != first {
		t.Fatalf("txn of the values held: %+v, %v; want unchanged at %d", res, err, first)
	}
	same.Guards[0].ModRevision = first - 1
	if _, err := s.TxnResult(relCtx(t, api.KindTxn), same); !isCode(err, api.CodeConflict) {
		t.Errorf("txn of the values held, with a guard that fails: %v, want a conflict", err)
	}
	if now := storeRev(t, s); now != before || len(releases(t, s)) != n {
		t.Fatalf("the store moved from revision %d to %d, or recorded a release", before, now)
	}

	res, err = s.TxnResult(relCtx(t, api.KindTxn), api.Txn{Ops: []api.Op{put("appliances/web/a", "1"), put("appliances/web/b", "3")}})
	if err != nil || res.Unchanged {
		t.Fatalf("txn changing b: %+v, %v", res, err)
	}
	for k, want := range map[string]struct {
		value    string
		mod, ver int64
	}{"appliances/web/a": {"1", first, 1}, "appliances/web/b": {"3", res.Revision, 2}} {
		kv, _, err := s.Get(ctxT(t), k)
		if err != nil || kv.Value != want.value || kv.ModRevision != want.mod || kv.Version != want.ver {
			t.Errorf("%s: %+v, %v; want %+v", k, kv, err, want)
		}
	}
	rs := releases(t, s)
	if len(rs) != n+1 || rs[0].Revision != res.Revision || len(rs[0].Changes) != 1 ||
		rs[0].Changes[0].ChangedCount != 1 || rs[0].Changes[0].Changed[0] != "appliances/web/b" {
		t.Errorf("releases after the change of b: %+v", rs)
	}
}

// A write without a release (the store's own callers, not the API's) writes as etcd does.
func TestStore_PutWithoutReleaseWritesItsOwnValue(t *testing.T) {
	s := openStore(t)
	first, err := s.Put(ctxT(t), "misc/k", "v", -1)
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.PutResult(ctxT(t), "misc/k", "v", -1)
	if err != nil || res.Unchanged || res.Revision <= first {
		t.Errorf("put without a release of the value held: %+v, %v; want a write after %d", res, err, first)
	}
}

// What the store's prior cache remembers of a key never makes a write of it "unchanged": a key
// at the mod_revision the cache knows but holding another value (another store's history, as
// after the endpoints moved to another cluster or a restore took the revisions back, until the
// replica learns it) is written, by a put and by a txn that changes another key beside it.
func TestStore_WriteOfWhatTheCacheWronglyRemembers(t *testing.T) {
	s := openStore(t)
	ntp := s.Root() + "kv/shared/ntp"
	rev, err := s.Put(relCtx(t, api.KindPut), "shared/ntp", "b", -1)
	if err != nil {
		t.Fatal(err)
	}
	store.PlantPrior(s, ntp, "a", rev, storeRev(t, s))
	res, err := s.PutResult(relCtx(t, api.KindPut), "shared/ntp", "a", -1)
	if err != nil || res.Unchanged {
		t.Fatalf("put of the value the cache wrongly remembers: %+v, %v; want a write", res, err)
	}
	store.PlantPrior(s, ntp, "c", res.Revision, storeRev(t, s))
	put := func(k, v string) api.Op { return api.Op{Op: api.OpPut, Key: k, Value: v} }
	if _, err := s.TxnResult(relCtx(t, api.KindTxn), api.Txn{Ops: []api.Op{put("shared/ntp", "c"), put("shared/dns", "1")}}); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"shared/ntp": "c", "shared/dns": "1"} {
		if kv, _, err := s.Get(ctxT(t), k); err != nil || kv.Value != want {
			t.Errorf("%s after the txn: %+v, %v; want %q", k, kv, err, want)
		}
	}
}

// Another store id (the endpoints lead to another store, or it was restored) makes the store
// forget what its prior cache held: revisions of one store's history say nothing of another's.
func TestStore_AnotherStoreIDForgetsThePriorCache(t *testing.T) {
	s := openStore(t)
	if _, err := s.Put(relCtx(t, api.KindPut), "shared/ntp", "a", -1); err != nil {
		t.Fatal(err)
	}
	ntp := s.Root() + "kv/shared/ntp"
	if !store.PriorKnown(s, ntp) {
		t.Fatal("the cache does not hold the key just written")
	}
	s.SawID(s.ID())
	if !store.PriorKnown(s, ntp) {
		t.Fatal("the same store id made the cache forget")
	}
	s.SawID("another-store")
	if store.PriorKnown(s, ntp) {
		t.Fatal("another store id left the cache as it was")
	}
}
