package store_test

import (
	"context"
	"maps"
	"strconv"
	"testing"

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
