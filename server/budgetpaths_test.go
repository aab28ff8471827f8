package server

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// budgetWhole fails t unless f's body budget is whole (every request gave its share back),
// waiting a little for a handler that answered before its deferred release ran.
func budgetWhole(t *testing.T, f *fixture, after string) {
	t.Helper()
	b := f.s.bodyBudget
	deadline := time.Now().Add(5 * time.Second)
	for !b.sem.TryAcquire(b.size()) {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: the body budget is not whole: a request kept its share", after)
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.sem.Release(b.size())
}

// A request's share of the body budget (its body's, the trees it reads) is given back on every
// way out, refusals too, and never more than it holds (a semaphore given back more than it
// lent panics): after each of a writer's refused requests holding a share (a stale cas, a
// schema, a rollout running, trees over the budget, a client gone while it waits), the budget
// is whole again.
func TestBodyBudget_WholeAfterEveryRefusal(t *testing.T) {
	f := newFixture(t)
	f.s.bodyBudget = newBodyBudget(64 << 10) // before any request: a budget of 8 × 64 KiB
	f.s.bodyBudget.wait = 300 * time.Millisecond
	big := strings.Repeat("a", 300_000) // over largeBody: a share of the budget
	body := func(port string) string { return `{"keys":{"port":"` + port + `","blob":"` + big + `"}}` }
	json := []string{"Content-Type", "application/json"}
	first := f.put("appliances/web/port", "80")
	f.put("appliances/web/blob", big)
	enrollFleet(t, f, 1)
	budgetWhole(t, f, "the setup")

	f.mustErr(f.do("PUT", fmt.Sprintf("/v1/appliances/web?cas=%d", first), body("81"), json...), http.StatusConflict, api.CodeConflict)
	budgetWhole(t, f, "a large apply refused by its cas")
	f.mustErr(f.do("PUT", fmt.Sprintf("/v1/appliances/web?cas=%d&canary=100%%25", first), body("81"), json...), http.StatusConflict, api.CodeConflict)
	budgetWhole(t, f, "a large apply with canary refused by its cas")

	f.must(f.do("PUT", "/v1/appliances/web/schema", `{"type":"object","properties":{"port":{"type":"string","pattern":"^[0-9]{2}$"}}}`), 200, nil)
	f.mustErr(f.do("PUT", "/v1/appliances/web", body("8080"), json...), http.StatusUnprocessableEntity, api.CodeSchemaViolation)
	budgetWhole(t, f, "a large apply refused by the schema")
	f.mustErr(f.do("PUT", "/v1/appliances/web?dry_run=true", body("8080"), json...), http.StatusUnprocessableEntity, api.CodeSchemaViolation)
	budgetWhole(t, f, "a large dry run refused by the schema")
	f.must(f.do("DELETE", "/v1/appliances/web/schema", ""), 200, nil)

	// A rollout running: plain writes are refused, a write with canary too.
	f.must(f.do("PUT", "/v1/appliances/web?canary=1", `{"keys":{"port":"82","blob":"`+big+`"}}`, json...), http.StatusAccepted, nil)
	budgetWhole(t, f, "a rollout started from a large tree")
	f.mustErr(f.do("PUT", "/v1/appliances/web", body("83"), json...), http.StatusConflict, api.CodeRolloutInProgress)
	budgetWhole(t, f, "a large apply refused by a rollout running")
	r := f.do("PUT", "/v1/appliances/web?canary=100%25", body("84"), json...)
	if r.StatusCode < 400 {
		t.Fatalf("a write with canary while a rollout runs: %d %s", r.StatusCode, r.body)
	}
	budgetWhole(t, f, "a large write with canary refused by a rollout running")
	f.mustErr(f.do("PUT", "/v1/kv/appliances/web/blob", big), http.StatusConflict, api.CodeRolloutInProgress)
	budgetWhole(t, f, "a large kv put refused by a rollout running")
	f.must(f.do("POST", "/v1/appliances/web/rollout", `{"action":"abort"}`, json...), http.StatusOK, nil)

	// Trees over the whole budget: the live tree read for a canary or a dry run, a rollback's.
	for i := range 2 {
		f.put(fmt.Sprintf("appliances/web/more%d", i), big)
	}
	wide := f.put("appliances/web/port", "85")
	f.mustErr(f.do("PUT", "/v1/appliances/web?canary=100%25", body("86"), json...), http.StatusRequestEntityTooLarge, api.CodeTooLarge)
	budgetWhole(t, f, "a write with canary whose live tree is over the budget")
	f.mustErr(f.do("PUT", "/v1/appliances/web?dry_run=true", `{"keys":{"port":"86"}}`, json...), http.StatusRequestEntityTooLarge, api.CodeTooLarge)
	budgetWhole(t, f, "a dry run whose live tree is over the budget")
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"port":"87"}}`, json...), http.StatusOK, nil)
	budgetWhole(t, f, "a small apply over a large tree")
	f.mustErr(f.do("PUT", "/v1/appliances/web?dry_run=true", "", api.HeaderRollback, fmt.Sprint(wide)), http.StatusRequestEntityTooLarge, api.CodeTooLarge)
	budgetWhole(t, f, "a rollback's dry run whose tree is over the budget")
	f.mustErr(f.do("PUT", "/v1/appliances/web", "", api.HeaderRollback, fmt.Sprint(wide)), http.StatusRequestEntityTooLarge, api.CodeTooLarge)
	budgetWhole(t, f, "a rollback whose tree is over the budget")

	// A client gone while its request waits for its share: nothing kept.
	b := f.s.bodyBudget
	b.wait = 10 * time.Second
	if !b.sem.TryAcquire(b.size()) {
		t.Fatal("the budget is not free")
	}
	for _, rq := range [][3]string{
		{"PUT", "/v1/appliances/web", body("88")},
		{"PUT", "/v1/appliances/web", ""},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		req, _ := http.NewRequestWithContext(ctx, rq[0], f.srv.URL+rq[1], strings.NewReader(rq[2]))
		req.Header.Set("Authorization", "Bearer "+f.token)
		req.Header.Set("Content-Type", "application/json")
		if rq[2] == "" {
			req.Header.Set(api.HeaderRollback, fmt.Sprint(first))
		}
		if res, err := testClient.Do(req); err == nil {
			res.Body.Close()
			t.Errorf("%s %s with the budget taken: %d, want the client gone first", rq[0], rq[1], res.StatusCode)
		}
		cancel()
	}
	time.Sleep(200 * time.Millisecond) // the handlers see their clients gone
	b.sem.Release(b.size())
	budgetWhole(t, f, "clients gone while their requests waited")
}

// Writes with canary, dry runs, rollbacks and large applies at once, with a budget of a few
// bodies: each gives its share back, whatever it was answered.
func TestBodyBudget_WholeAfterWritesAtOnce(t *testing.T) {
	f := newFixture(t)
	f.s.bodyBudget = newBodyBudget(64 << 10)
	f.s.bodyBudget.wait = 10 * time.Second
	big := strings.Repeat("a", 300_000)
	json := []string{"Content-Type", "application/json"}
	first := f.put("appliances/web/blob", big)
	f.put("appliances/web/port", "80")
	enrollFleet(t, f, 1)
	var wg sync.WaitGroup
	statuses := make(chan int, 64)
	for i := range 8 {
		wg.Add(4)
		go func() {
			defer wg.Done()
			statuses <- f.do("PUT", "/v1/appliances/web", fmt.Sprintf(`{"keys":{"port":"%d","blob":"%s"}}`, 90+i, big), json...).StatusCode
		}()
		go func() {
			defer wg.Done()
			statuses <- f.do("PUT", "/v1/appliances/web?dry_run=true", `{"keys":{"port":"1"}}`, json...).StatusCode
		}()
		go func() {
			defer wg.Done()
			statuses <- f.do("PUT", "/v1/appliances/web?canary=100%25", fmt.Sprintf(`{"keys":{"port":"%d","blob":"%s"}}`, 100+i, big), json...).StatusCode
		}()
		go func() {
			defer wg.Done()
			statuses <- f.do("PUT", "/v1/appliances/web?force=true", "", api.HeaderRollback, fmt.Sprint(first)).StatusCode
		}()
	}
	wg.Wait()
	close(statuses)
	seen := map[int]int{}
	for st := range statuses {
		seen[st]++
		if st >= 500 && st != http.StatusServiceUnavailable || st == http.StatusBadRequest {
			t.Errorf("a write at once answered %d", st)
		}
	}
	t.Logf("answers: %v", seen)
	budgetWhole(t, f, "writes at once")
}
