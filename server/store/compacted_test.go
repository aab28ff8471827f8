package store_test

import (
	"context"
	"runtime/metrics"
	"sync"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/testutil"
	"github.com/shoelace-dev/shoelace/internal/testutil/faultproxy"
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

// While etcd is frozen, every question ends with an error by its own time: those asked while a
// probe that ends before them is under way wait for that probe (without a timer of their own),
// one with less time than the probe has left ends at its own time, before the probe.
func TestCompactedWithin_FrozenEtcdEndsEachQuestionInItsTime(t *testing.T) {
	direct := openStore(t)
	p := faultproxy.Start(t, etcd(t).Endpoints()[0])
	s := proxied(t, direct, func(c *store.Config) { c.RequestTimeout = 30 * time.Second }, p)
	ctx := ctxT(t)
	rev, err := s.Put(ctx, "shared/a", "1", -1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, "shared/a", "2", -1); err != nil {
		t.Fatal(err)
	}
	time.Sleep(150 * time.Millisecond) // no answer is reused: each question waits for a probe
	p.Freeze()
	defer p.Thaw()
	type result struct {
		err error
		at  time.Duration
	}
	start := time.Now()
	ask := func(d time.Duration, out chan<- result) {
		_, err := s.CompactedWithin(ctx, rev, d)
		out <- result{err, time.Since(start)}
	}
	first := make(chan result, 1)
	go ask(3*time.Second, first) // starts the probe, which ends in 3 s
	time.Sleep(100 * time.Millisecond)
	later := make(chan result, 50)
	for range 50 {
		go ask(3*time.Second, later) // the probe ends before them
	}
	short := make(chan result, 1)
	go ask(300*time.Millisecond, short) // it ends before the probe
	s1 := <-short
	if s1.err == nil {
		t.Fatal("a question of a frozen etcd answered")
	}
	f := <-first
	if f.err == nil {
		t.Fatal("the first question of a frozen etcd answered")
	}
	if s1.at >= f.at {
		t.Errorf("a question of 300 ms ended at %v, after the probe of 3 s (%v)", s1.at, f.at)
	}
	for range 50 {
		select {
		case r := <-later:
			if r.err == nil {
				t.Fatal("a question of a frozen etcd answered")
			}
		case <-time.After(20 * time.Second):
			t.Fatal("questions asked during a probe never ended")
		}
	}
	t.Logf("short question ended at %v, the probe at %v", s1.at, f.at)
}
