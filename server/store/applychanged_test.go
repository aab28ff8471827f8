package store_test

import (
	"context"
	"maps"
	"reflect"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/server/store"
)

// An apply puts the keys whose value changes, and leaves the others as they are: before, every
// key got a new version for one changed (etcd's history grew by the whole appliance, and each
// key's history showed a version that no release names).
func TestStore_ApplyPutsOnlyWhatChanges(t *testing.T) {
	s := openStore(t)
	ctx := ctxT(t)
	first, err := s.Apply(ctx, "web", map[string]string{"a": "1", "b": "2", "c": "3"}, -1)
	if err != nil {
		t.Fatal(err)
	}
	rev, err := s.Apply(ctx, "web", map[string]string{"a": "1", "b": "9", "d": "4"}, -1)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		value string
		mod   int64
	}{"a": {"1", first}, "b": {"9", rev}, "d": {"4", rev}}
	kvs, _, err := s.List(ctx, "appliances/web", false)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]struct {
		value string
		mod   int64
	}{}
	for _, kv := range kvs {
		got[kv.Key[len("appliances/web/"):]] = struct {
			value string
			mod   int64
		}{kv.Value, kv.ModRevision}
	}
	if !maps.Equal(got, want) {
		t.Fatalf("after the second apply (revision %d, first %d): %v, want %v", rev, first, got, want)
	}
}

// A key that the apply leaves as it is must still be there, as the apply read it, when the
// apply commits: another writer that deletes it (or changes it) in between makes the apply try
// again, and the appliance ends exactly as given.
func TestStore_ApplyOfOthersGuardsTheKeysItLeaves(t *testing.T) {
	cfg := testConfig(t)
	open := func() *store.Store {
		s, err := store.Open(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	s, other := open(), open()
	ctx := ctxT(t)
	for i, between := range []func() error{
		func() error { _, _, err := other.Delete(ctx, "appliances/web/a", false); return err },
		func() error { _, err := other.Put(ctx, "appliances/web/a", "other", -1); return err },
	} {
		if _, err := s.Apply(ctx, "web", map[string]string{"a": "1", "b": "2"}, -1); err != nil {
			t.Fatal(err)
		}
		held, release := store.HoldWrites(s)
		done := make(chan error, 1)
		go func() {
			_, err := s.Apply(ctx, "web", map[string]string{"a": "1", "b": strconv.Itoa(3 + i)}, -1)
			done <- err
		}()
		<-held
		if err := between(); err != nil {
			t.Fatal(err)
		}
		release()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		kvs, _, err := s.List(ctx, "appliances/web", false)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, kv := range kvs {
			got[kv.Key] = kv.Value
		}
		if want := map[string]string{"appliances/web/a": "1", "appliances/web/b": strconv.Itoa(3 + i)}; !maps.Equal(got, want) {
			t.Fatalf("case %d: the appliance after the apply is %v, want %v", i, got, want)
		}
	}
}

// An apply whose write another writer overtakes with the same change (here a put of the
// value the apply puts, and a delete of the key the apply deletes) finds the appliance holding
// its keys, and writes nothing: before, it wrote a revision of its own, with a release that
// named no change, and answered that revision instead of unchanged.
func TestStore_ApplyOvertakenBySameChangeWritesNothing(t *testing.T) {
	cfg := testConfig(t)
	open := func() *store.Store {
		s, err := store.Open(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	s, other := open(), open()
	ctx := withRel(ctxT(t))
	for i, c := range []struct {
		before, apply map[string]string
		between       func() (int64, error)
	}{
		{map[string]string{"a": "1"}, map[string]string{"a": "2"},
			func() (int64, error) { return other.Put(ctx, "appliances/web/a", "2", -1) }},
		{map[string]string{"a": "1", "x": "1"}, map[string]string{"a": "1"},
			func() (int64, error) { rev, _, err := other.Delete(ctx, "appliances/web/x", false); return rev, err }},
	} {
		first, err := s.Apply(ctx, "web", c.before, -1)
		if err != nil {
			t.Fatal(err)
		}
		held, release := store.HoldWrites(s)
		type result struct {
			res store.Applied
			err error
		}
		done := make(chan result, 1)
		go func() {
			res, err := s.ApplyTree(ctx, "web", c.apply, -1)
			done <- result{res, err}
		}()
		<-held
		rev, err := c.between()
		if err != nil {
			t.Fatal(err)
		}
		release()
		r := <-done
		if r.err != nil {
			t.Fatal(r.err)
		}
		// The view's newest mod_revision: the put's, or the first apply's (a deletion has none).
		want := store.Applied{Revision: rev, Unchanged: true}
		if i == 1 {
			want.Revision = first
		}
		if r.res.Checked < rev {
			t.Errorf("case %d: the apply was checked at revision %d, before the other writer's %d", i, r.res.Checked, rev)
		}
		got := r.res
		got.Checked = 0
		if !reflect.DeepEqual(got, want) {
			t.Errorf("case %d: the apply answered %+v, want %+v", i, got, want)
		}
		for _, rel := range releases(t, s) {
			if rel.Revision > rev {
				t.Errorf("case %d: a release at revision %d, after the other writer's %d: %+v", i, rel.Revision, rev, rel.Changes)
			}
		}
	}
}

// An apply that changes some keys leaves the prior cache (what the releases of later writes are
// guarded on) as the keys are: before, it noted the keys it left as put at its revision, and the
// next write of one of them failed its release's guard and was sent again.
func TestStore_ApplyLeavesPriorsOfKeysItLeaves(t *testing.T) {
	s := openStore(t)
	ctx := withRel(ctxT(t))
	if _, err := s.Apply(ctx, "web", map[string]string{"a": "1", "b": "1"}, -1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Apply(ctx, "web", map[string]string{"a": "1", "b": "2"}, -1); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var txns int
	s.SetObserver(func(method, code string, d time.Duration) {
		if method == "KV/Txn" {
			mu.Lock()
			txns++
			mu.Unlock()
		}
	})
	if _, err := s.Put(ctx, "appliances/web/a", "3", -1); err != nil {
		t.Fatal(err)
	}
	s.SetObserver(nil)
	if txns != 1 {
		t.Fatalf("the put of a key the apply left sent %d transactions, want 1", txns)
	}
}

// An apply of the keys the appliance holds, overtaken between its check and its write by a key
// created and deleted again, writes nothing: it reads again and finds the keys as they were.
// Before, the check failed on the key created, and the apply went on to put every key as it
// was (the key gone by then, its guards held): a revision and a release for nothing.
func TestStore_ApplyOfTheSameKeysOvertakenByAChangeUndone(t *testing.T) {
	cfg := testConfig(t)
	open := func() *store.Store {
		s, err := store.Open(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	s, other := open(), open()
	ctx := ctxT(t)
	keys := map[string]string{"a": "1", "b": "2"}
	first, err := s.Apply(ctx, "web", keys, -1)
	if err != nil {
		t.Fatal(err)
	}
	var reads, checks int
	store.SetApplyHook(s, func(stage string) {
		var err error
		switch {
		case stage == "read" && reads == 0:
			reads++
			_, err = other.Put(ctx, "appliances/web/x", "new", -1)
		case stage == "checked" && checks == 0:
			checks++
			_, _, err = other.Delete(ctx, "appliances/web/x", false)
		}
		if err != nil {
			t.Error(err)
		}
	})
	res, err := s.ApplyTree(ctx, "web", keys, -1)
	store.SetApplyHook(s, nil)
	if err != nil {
		t.Fatal(err)
	}
	if reads != 1 || checks != 1 {
		t.Fatalf("the hooks ran %d and %d times", reads, checks)
	}
	now, err := s.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The store moved by the put and the delete of x (and their releases), not by the apply.
	if !res.Unchanged || res.Revision != first {
		t.Fatalf("apply of the same keys after a change undone: %+v; want unchanged at %d (the store is at %d)", res, first, now)
	}
	kv, _, err := s.Get(ctx, "appliances/web/a")
	if err != nil {
		t.Fatal(err)
	}
	if kv.ModRevision != first {
		t.Fatalf("key a was written again at %d (first apply %d)", kv.ModRevision, first)
	}
}
