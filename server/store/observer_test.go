package store_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestStore_Observer(t *testing.T) {
	s := openStore(t)
	type call struct {
		method string
		failed bool
	}
	var mu sync.Mutex
	var calls []call
	s.SetObserver(func(method, code string, d time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		if d < 0 {
			t.Errorf("negative duration for %s", method)
		}
		calls = append(calls, call{method, code != "OK"})
		if code == "" {
			t.Errorf("empty code for %s", method)
		}
	})
	if _, err := s.Put(ctxT(t), "shared/a", "1", -1); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Get(ctxT(t), "shared/a"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s.Get(ctx, "shared/a")
	mu.Lock()
	got := slices.Clone(calls)
	mu.Unlock()
	if !slices.Contains(got, call{"KV/Txn", false}) && !slices.Contains(got, call{"KV/Put", false}) {
		t.Fatalf("no successful write observed: %v", got)
	}
	if !slices.Contains(got, call{"KV/Range", false}) {
		t.Fatalf("no successful read observed: %v", got)
	}
	if !slices.Contains(got, call{"KV/Range", true}) {
		t.Fatalf("the canceled read was not observed as failed: %v", got)
	}
	s.SetObserver(nil)
	n := len(got)
	s.Get(ctxT(t), "shared/a")
	mu.Lock()
	defer mu.Unlock()
	if len(calls) != n {
		t.Fatalf("observed after SetObserver(nil): %v", calls[n:])
	}
}
