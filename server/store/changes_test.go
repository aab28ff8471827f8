package store_test

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/server/store"
)

func nextChange(tb testing.TB, ch <-chan store.ChangeEvent) store.ChangeEvent {
	tb.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				tb.Fatal("watch closed")
			}
			if ev.Progress {
				continue
			}
			return ev
		case <-timeout:
			tb.Fatal("no watch event in 20s")
		}
	}
}

func TestStore_WatchChangesAndLoadViewKeys(t *testing.T) {
	s := openStore(t)
	other := openStore(t) // another root on the same etcd: never seen
	ctx := ctxT(t)
	mustPut(t, s, "shared/a", "1")
	mustPut(t, s, "appliances/web/x", "old")
	mustPut(t, s, "elsewhere/k", "not a view key")
	keys, start, err := s.LoadViewKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"shared/a": "1", "appliances/web/x": "old"}; !reflect.DeepEqual(keys, want) {
		t.Fatalf("loaded %v, want %v", keys, want)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, werr := s.WatchChanges(wctx, start+1)

	r1 := mustPut(t, s, "appliances/web/x", "new")
	mustPut(t, other, "shared/a", "x")
	r2, err := s.Txn(ctx, api.Txn{Ops: []api.Op{
		{Op: api.OpPut, Key: "appliances/web/y", Value: "y"},
		{Op: api.OpPut, Key: "elsewhere/k", Value: "2"},
		{Op: api.OpDelete, Key: "shared", Recurse: true},
	}})
	if err != nil {
		t.Fatal(err)
	}
	r3, err := s.SysPut(ctx, "tokens/t", []byte("secret hash"), -1)
	if err != nil {
		t.Fatal(err)
	}

	ev := nextChange(t, ch)
	if want := []store.Change{{Key: "appliances/web/x", Value: "new"}}; ev.Revision != r1 || !reflect.DeepEqual(ev.Changes, want) {
		t.Fatalf("first event %+v, want %v at %d", ev, want, r1)
	}
	ev = nextChange(t, ch)
	want := map[string]store.Change{
		"appliances/web/y": {Key: "appliances/web/y", Value: "y"},
		"shared/a":         {Key: "shared/a", Deleted: true},
	}
	got := map[string]store.Change{}
	for _, c := range ev.Changes {
		got[c.Key] = c
	}
	if ev.Revision != r2 || !reflect.DeepEqual(got, want) || len(ev.Keys) != 3 {
		t.Fatalf("txn event %+v, want changes %v (and 3 user keys, elsewhere/k without a value) at %d", ev, want, r2)
	}
	ev = nextChange(t, ch)
	if ev.Revision != r3 || len(ev.Changes) != 0 || !reflect.DeepEqual(ev.SysKeys, []string{"tokens/t"}) {
		t.Fatalf("sys event %+v, want tokens/t at %d and no view change", ev, r3)
	}
	cancel()
	for range ch {
	}
	if err := werr(); err != nil {
		t.Fatalf("watch ended by its context reports %v", err)
	}

	// From a compacted revision: ErrCompacted.
	if err := s.Compact(ctx, r3); err != nil {
		t.Fatal(err)
	}
	ch, werr = s.WatchChanges(ctx, start)
	for range ch {
	}
	if err := werr(); !errors.Is(err, store.ErrCompacted) {
		t.Fatalf("watch from a compacted revision: %v, want ErrCompacted", err)
	}
}
