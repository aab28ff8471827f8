package server

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// Small applies at once to an appliance of large values (nine of 950 KB, 8.5 MB), from a
// writer whose cas is stale: each read the appliance's whole live tree, in no budget, before
// its cas refused it (409), and sixteen of them took the heap up by 259-273 MiB for bodies of
// a few bytes. An apply now reads the names of the live keys, and the values only of the keys
// it gives (a page at a time): these read no value.
func TestApply_SmallAppliesToALargeTreeAtOnce(t *testing.T) {
	f := newFixture(t)
	for i := range 9 {
		f.put(fmt.Sprintf("appliances/big/conf/part%d", i), strings.Repeat(fmt.Sprint(i), 950_000))
	}
	stale := f.put("appliances/big/small", "1")
	f.put("appliances/big/small", "2")
	const applies = 16
	statuses := make(chan string, applies)
	stop := peakHeap()
	var wg sync.WaitGroup
	for range applies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodPut, fmt.Sprintf("%s/v1/appliances/big?cas=%d", f.srv.URL, stale), strings.NewReader(`{"keys":{"small":"3"}}`))
			req.Header.Set("Authorization", "Bearer "+f.token)
			res, err := testClient.Do(req)
			if err != nil {
				statuses <- err.Error()
				return
			}
			body, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
			res.Body.Close()
			if res.StatusCode == http.StatusConflict && strings.Contains(string(body), "small") {
				statuses <- "conflict"
				return
			}
			statuses <- fmt.Sprintf("%d %.300s", res.StatusCode, body)
		}()
	}
	wg.Wait()
	peak, base := stop()
	close(statuses)
	for st := range statuses {
		if st != "conflict" {
			t.Errorf("apply with a stale cas: %s, want 409 naming the key changed", st)
		}
	}
	t.Logf("%d small applies to a tree of 8.5 MB: heap up by %d MiB at most (from %d MiB)", applies, peak>>20, base>>20)
	// Reading the names: a few MiB. Each whole tree held as etcd's answer and gRPC's buffer,
	// sixteen at once, is over 250 MiB.
	if peak > 96<<20 {
		t.Errorf("%d small applies to a tree of 8.5 MB took the heap up by %d MiB, want at most 96 MiB", applies, peak>>20)
	}
}

// A write with canary starts its rollout from the appliance's live tree, read whole (the
// rollout's record holds it): that read was counted in no budget, so that canary writes at
// once to an appliance of large values held its tree each. A live tree of largeBody and more
// is now read within the replica's body budget, as a rollback's tree at its revision is: with
// the budget taken, such a write waits, then is refused 503 to retry, nothing written; a small
// tree passes, and the share is given back once the rollout started.
func TestApply_CanaryReadsALargeLiveTreeWithinTheBodyBudget(t *testing.T) {
	f := newFixture(t)
	f.s.bodyBudget.wait = 200 * time.Millisecond
	f.put("appliances/web/port", "80")
	f.put("appliances/web/blob", strings.Repeat("b", largeBody))
	enrollFleet(t, f, 1)
	full := func() {
		t.Helper()
		if !f.s.bodyBudget.sem.TryAcquire(f.s.bodyBudget.size()) {
			t.Fatal("the body budget is not whole: a request kept its share")
		}
	}
	full()
	f.mustErr(f.do("PUT", "/v1/appliances/web?canary=100%25", `{"keys":{"port":"81"}}`, "Content-Type", "application/json"),
		http.StatusServiceUnavailable, api.CodeUnavailable, "large bodies or trees")
	f.mustErr(f.do("POST", "/v1/txn?canary=100%25", `{"ops":[{"op":"put","key":"appliances/web/port","value":"82"}]}`, "Content-Type", "application/json"),
		http.StatusServiceUnavailable, api.CodeUnavailable, "large bodies or trees")
	f.mustErr(f.do("GET", "/v1/appliances/web/rollout", ""), http.StatusNotFound, api.CodeNotFound)
	f.s.bodyBudget.sem.Release(f.s.bodyBudget.size())

	f.must(f.do("DELETE", "/v1/kv/appliances/web/blob", ""), http.StatusOK, nil)
	full()
	var st api.RolloutStatus
	f.must(f.do("PUT", "/v1/appliances/web?canary=100%25", `{"keys":{"port":"81"}}`, "Content-Type", "application/json"), http.StatusAccepted, &st)
	if st.State != api.RolloutRunning {
		t.Errorf("the rollout of a small tree with the budget taken: %+v, want running", st)
	}
	f.s.bodyBudget.sem.Release(f.s.bodyBudget.size())
	full()
	f.s.bodyBudget.sem.Release(f.s.bodyBudget.size())
}
