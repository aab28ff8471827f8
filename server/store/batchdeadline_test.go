package store_test

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// Writes that queue together while etcd cannot be reached (every connection refused, so that
// each request waits for one) each end by their own deadline: a write taken into a batch with a
// later one waited for the latest deadline of the batch, 15 s for a 10 s request timeout in a
// real server whose etcd was down while writes kept coming.
func TestStore_BatchedWritesToDownEtcdEndByTheirOwnDeadline(t *testing.T) {
	const request, try = 2 * time.Second, 700 * time.Millisecond
	s, _, p := warmProxied(t, request, try)
	p.Down()
	var (
		mu    sync.Mutex
		worst time.Duration
		wg    sync.WaitGroup
	)
	// A write starts every 150 ms for 4 s, each to a key of its own, so that batches form
	// behind the one in flight and take writes that started up to a request timeout apart.
	for i := range 27 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			_, err := s.SysPut(ctxT(t), fmt.Sprintf("test/down-%d", i), []byte("1"), -1)
			took := time.Since(start)
			if err == nil {
				t.Errorf("write %d to an etcd that is down succeeded", i)
			}
			mu.Lock()
			worst = max(worst, took)
			mu.Unlock()
		}()
		time.Sleep(150 * time.Millisecond)
	}
	wg.Wait()
	p.Up()
	// The bound is loose (a slow machine): what it catches is a write held by a later write's
	// deadline, up to a request timeout past its own.
	if worst > request+request/5 {
		t.Errorf("the slowest write to an etcd that is down took %s, want its request timeout, %s", worst, request)
	}
	mustPut(t, s, "shared/warm", "up")
}
