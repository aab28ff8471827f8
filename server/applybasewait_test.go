package server

import (
	"fmt"
	"io"
	"net/http"
	"runtime"
	rmetrics "runtime/metrics"
	"strings"
	"sync"
	"testing"
	"time"
)

// A write with canary, a dry run or a schema's check reads the live tree within the body
// budget as it comes (applyBase): a share it could not have at once was waited for with the
// pages read so far in memory, uncounted, and no slot bounds how many such requests wait at
// once (a rollback's tree at its revision is read in one of historyReadsAtOnce). Dry runs at
// once of a small body, with the budget taken, held a page of the tree each while they
// waited (8 of them, a tree of a small key and nine values of 950 KB, the page after the
// small key holding them all: 60-70 MiB of heap through the wait).
// The read is now dropped before the wait, and made again once the share is had: waiting,
// they hold none of the tree.
func TestApply_WaitersForALiveTreesShareHoldNoneOfIt(t *testing.T) {
	f := newFixture(t)
	f.put("appliances/big/app", "big") // a small key first: the page after it holds the rest
	for i := range 9 {
		f.put(fmt.Sprintf("appliances/big/conf/part%d", i), strings.Repeat(fmt.Sprint(i), 950_000))
	}
	b := f.s.bodyBudget
	b.wait = 3 * time.Second
	if !b.sem.TryAcquire(b.size()) {
		t.Fatal("the body budget is not whole")
	}
	const dryRuns = 8
	statuses := make(chan int, dryRuns)
	for range 3 {
		runtime.GC()
	}
	base := liveHeap()
	var wg sync.WaitGroup
	for range dryRuns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodPut, f.srv.URL+"/v1/appliances/big?dry_run=true", strings.NewReader(`{"keys":{"small":"3"}}`))
			req.Header.Set("Authorization", "Bearer "+f.token)
			res, err := testClient.Do(req)
			if err != nil {
				statuses <- 0
				return
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			statuses <- res.StatusCode
		}()
	}
	// Their reads made (each reads a page, then finds the budget taken), they wait.
	time.Sleep(1500 * time.Millisecond)
	for range 3 { // sync.Pools (gRPC's buffers) are let go at the second
		runtime.GC()
	}
	waiting := int64(liveHeap()) - int64(base)
	wg.Wait()
	b.sem.Release(b.size())
	close(statuses)
	for st := range statuses {
		if st != http.StatusServiceUnavailable {
			t.Errorf("a dry run with the budget taken: %d, want 503", st)
		}
	}
	t.Logf("%d dry runs waiting for a tree of 8.5 MB: heap up by %d MiB while they wait (from %d MiB)", dryRuns, waiting>>20, base>>20)
	// Under the race detector (as CI runs the package) the heap is not this test's to bound:
	// 124 MiB there once, with other packages' tests beside it. The 503s and the budget are.
	if waiting > 24<<20 && !raceOn {
		t.Errorf("%d dry runs waiting for their tree's share held %d MiB of heap, want at most 24 MiB", dryRuns, waiting>>20)
	}
	budgetWhole(t, f, "dry runs refused 503")
}

// liveHeap is the heap's live bytes as of the last GC.
func liveHeap() uint64 {
	sample := []rmetrics.Sample{{Name: "/gc/heap/live:bytes"}}
	rmetrics.Read(sample)
	return sample[0].Value.Uint64()
}
