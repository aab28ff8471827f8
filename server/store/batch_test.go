package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/server/store"
)

// openEmbedded opens a store on an embedded etcd of its own.
func openEmbedded(t *testing.T) *store.Store {
	t.Helper()
	s, err := store.Open(ctxT(t), embeddedConfig(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// holdAndQueue holds s's next transaction, sends first (which it holds), then runs each of rest
// in a goroutine of its own and waits until queued of them queue behind it (the others conflict
// with one queued, and go alone); it returns what lets them go and waits for them all.
func holdAndQueue(t *testing.T, s *store.Store, first func(), rest []func(), queued int) (wait func()) {
	t.Helper()
	held, release := store.HoldWrites(s)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); first() }()
	<-held
	for _, f := range rest {
		wg.Add(1)
		go func() { defer wg.Done(); f() }()
	}
	deadline := time.Now().Add(10 * time.Second)
	for store.QueuedWrites(s) != queued {
		if time.Now().After(deadline) {
			t.Fatalf("%d writes queued, want %d", store.QueuedWrites(s), queued)
		}
		time.Sleep(time.Millisecond)
	}
	release()
	return wg.Wait
}

// Writes that come while one is in flight go together, as one etcd transaction: each applies
// (or not) as it would alone, with its own release record, all at one revision.
func TestBatch_QueuedWritesShareOneTransaction(t *testing.T) {
	s := openEmbedded(t)
	const n = 20
	revs := make([]int64, n+1)
	errs := make([]error, n+1)
	put := func(i int) func() {
		return func() {
			revs[i], errs[i] = s.Put(withRel(ctxT(t)), fmt.Sprintf("appliances/app%d/k", i), fmt.Sprint(i), 0)
		}
	}
	var rest []func()
	for i := 1; i <= n; i++ {
		rest = append(rest, put(i))
	}
	holdAndQueue(t, s, put(0), rest, n)()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	for i := 2; i <= n; i++ {
		if revs[i] != revs[1] {
			t.Fatalf("queued writes at revisions %v, want one batch after the first's %d", revs[1:], revs[0])
		}
	}
	if revs[1] == revs[0] {
		t.Fatalf("the held write and the queued ones share revision %d", revs[0])
	}
	// One record per write, at its revision, naming its key; nothing more.
	named := map[string]int64{}
	rs := releases(t, s)
	for _, r := range rs {
		for _, c := range r.Changes {
			for _, k := range c.Created {
				named[k] = r.Revision
			}
		}
	}
	for i := 0; i <= n; i++ {
		k := fmt.Sprintf("appliances/app%d/k", i)
		keyAt(t, s, k, fmt.Sprint(i), revs[i])
		if named[k] != revs[i] {
			t.Fatalf("the release naming %s is at revision %d, want %d", k, named[k], revs[i])
		}
	}
	if len(rs) != n+1 {
		t.Fatalf("%d release records, want %d", len(rs), n+1)
	}
}

// Writes that touch one key do not share a batch (one queues, the others go alone): of
// concurrent creations of one key exactly one succeeds, and the others meet it as a conflict,
// as they would one after the other.
func TestBatch_ConflictingWritesGoApart(t *testing.T) {
	s := openEmbedded(t)
	const n = 8
	errs := make([]error, n)
	var mu sync.Mutex
	created := 0
	create := func(i int) func() {
		return func() {
			_, err := s.Put(withRel(ctxT(t)), "appliances/web/once", fmt.Sprint(i), 0)
			mu.Lock()
			defer mu.Unlock()
			errs[i] = err
			if err == nil {
				created++
			}
		}
	}
	var rest []func()
	for i := 1; i < n; i++ {
		rest = append(rest, create(i))
	}
	holdAndQueue(t, s, func() { mustPut(t, s, "appliances/other/k", "x") }, append(rest, create(0)), 1)()
	if created != 1 {
		t.Fatalf("%d creations of one key succeeded, want 1: %v", created, errs)
	}
	if n := store.BatchesRefused(s); n != 0 {
		t.Fatalf("etcd refused %d batches: writes of one key went together", n)
	}
	for _, err := range errs {
		if err != nil && !errors.Is(err, api.ErrConflict) {
			t.Fatalf("a losing creation: %v, want a conflict", err)
		}
	}
	kv, _, err := s.Get(ctxT(t), "appliances/web/once")
	if err != nil || kv.Version != 1 {
		t.Fatalf("key = %+v, %v; want version 1", kv, err)
	}
	if got := len(releases(t, s)); got != 1 {
		t.Fatalf("%d release records, want 1 (the creation)", got)
	}
}

// A write whose caller gives up while it waits in the queue is never sent.
func TestBatch_WriteGivenUpInTheQueueIsNotSent(t *testing.T) {
	s := openEmbedded(t)
	held, release := store.HoldWrites(s)
	done := make(chan struct{})
	go func() { defer close(done); mustPut(t, s, "appliances/a/k", "held") }()
	<-held
	ctx, cancel := context.WithCancel(ctxT(t))
	errc := make(chan error, 1)
	go func() {
		_, err := s.Put(ctx, "appliances/b/k", "given up", -1)
		errc <- err
	}()
	for store.QueuedWrites(s) != 1 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("given up: %v, want context canceled", err)
	}
	if n := store.QueuedWrites(s); n != 0 {
		t.Fatalf("%d writes still queued", n)
	}
	release()
	<-done
	mustPut(t, s, "appliances/c/k", "after")
	if _, _, err := s.Get(ctxT(t), "appliances/b/k"); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("the write given up in the queue: %v, want not found", err)
	}
}

// Two writes to one appliance, or a write to shared/ and one to an appliance, never share a
// revision: the difference of an appliance's view at a revision is one release's. A write that
// cannot join the queued ones goes alone at once, without waiting for a batch.
func TestBatch_OneReleasePerViewAtARevision(t *testing.T) {
	s := openEmbedded(t)
	held, release := store.HoldWrites(s)
	done := make(chan struct{})
	go func() { defer close(done); mustPut(t, s, "appliances/other/k", "x") }()
	<-held
	put := func(key string) (chan int64, func()) {
		rev := make(chan int64, 1)
		return rev, func() {
			r, err := s.Put(withRel(ctxT(t)), key, "v", -1)
			if err != nil {
				t.Error(err)
			}
			rev <- r
		}
	}
	queue := func(key string, n int) chan int64 {
		rev, f := put(key)
		go f()
		for store.QueuedWrites(s) != n {
			time.Sleep(time.Millisecond)
		}
		return rev
	}
	webA := queue("appliances/web/a", 1)
	dbD := queue("appliances/db/d", 2)
	// These meet web/a (and everything, for shared/): alone, done while the batch waits.
	webB, f := put("appliances/web/b")
	f()
	sharedC, f := put("shared/c")
	f()
	release()
	<-done
	revs := map[string]int64{"web/a": <-webA, "db/d": <-dbD, "web/b": <-webB, "shared/c": <-sharedC}
	if revs["web/a"] != revs["db/d"] {
		t.Fatalf("web/a and db/d, queued together, at revisions %v", revs)
	}
	if revs["web/b"] == revs["web/a"] || revs["shared/c"] == revs["web/a"] || revs["web/b"] == revs["shared/c"] {
		t.Fatalf("writes to one view share a revision: %v", revs)
	}
	if store.QueuedWrites(s) != 0 {
		t.Fatal("writes left in the queue")
	}
}
