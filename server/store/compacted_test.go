package store_test

import (
	"context"
	"runtime/metrics"
	"sync"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/testutil"
	"github.com/shoelace-dev/shoelace/server/store"
)

// Compacted answers from etcd's compaction, and long-polls arriving together (10,000 after a
// change) ask etcd once between them, not once each: each ask grew a waiting long-poll's stack.
func TestCompacted(t *testing.T) {
	ctx := context.Background()
	s := testutil.Store(t)
	old, err := s.Put(ctx, "shared/a", "1", -1)
	if err != nil {
		t.Fatal(err)
	}
	kept, _ := s.Put(ctx, "shared/a", "2", -1)
	last, _ := s.Put(ctx, "shared/a", "3", -1)
	if c, err := s.Compacted(ctx, old); err != nil || c {
		t.Fatalf("before a compaction: compacted %v, %v", c, err)
	}
	time.Sleep(150 * time.Millisecond) // the answer above is no longer reused: the 500 ask
	before, created := store.CompactedProbes(s), goroutinesCreated()
	var wg sync.WaitGroup
	for range 500 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if c, err := s.Compacted(ctx, kept); err != nil || c {
				t.Errorf("kept: compacted %v, %v", c, err)
			}
		}()
	}
	wg.Wait()
	if n := store.CompactedProbes(s) - before; n > 3 {
		t.Errorf("500 questions together asked etcd %d times", n)
	}
	// Each question waits where it is asked: only the probes start goroutines (before, each
	// question did, and the runtime keeps every goroutine's descriptor and stack for reuse).
	if n := goroutinesCreated() - created - 500; n > 20 {
		t.Errorf("500 questions together started %d goroutines besides their own", n)
	}
	if err := s.Compact(ctx, last); err != nil {
		t.Fatal(err)
	}
	for _, rev := range []int64{old, kept} {
		// Answered at once or after compactedProbeFresh: a kept answer is reused that long.
		deadline := time.Now().Add(5 * time.Second)
		for {
			c, err := s.Compacted(ctx, rev)
			if err == nil && c {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("revision %d after a compaction at %d: compacted %v, %v", rev, last, c, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if c, err := s.Compacted(ctx, last); err != nil || c {
		t.Fatalf("the compaction's own revision: compacted %v, %v", c, err)
	}
}

// goroutinesCreated is how many goroutines the process has started.
func goroutinesCreated() int64 {
	m := []metrics.Sample{{Name: "/sched/goroutines-created:goroutines"}}
	metrics.Read(m)
	return int64(m[0].Value.Uint64())
}
