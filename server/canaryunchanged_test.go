package server

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// A kv put or txn sent with canary that changes nothing starts no rollout: it is answered as an
// unchanged apply, which waits up to viewChangedWait for the hub to see the revision it was
// checked at, and a change of shared/ that shared/ holds already waits alike. Each held its
// body's share of the body budget through that wait, as the apply did before ef69da5: for up to
// 2 s, rollbacks and applies that needed the budget waited for it, or were refused 503. The
// share is given back once the check is done, before the wait, and the body is no longer held
// (the wait comes after the handler has returned). The hub is kept from seeing the revision
// (its watch stalled before a token's creation), so each write waits the whole 2 s.
func TestRolloutWrite_UnchangedGivesTheBudgetBackBeforeItWaits(t *testing.T) {
	big := strings.Repeat("a", 300_000) // over largeBody: a share of the budget
	for _, tc := range []struct {
		name, method, path, body string
		hdr                      []string
	}{
		{"put", "PUT", "/v1/kv/appliances/web/conf?canary=100%25", big, nil},
		{"txn", "POST", "/v1/txn?canary=100%25", `{"ops":[{"op":"put","key":"appliances/web/conf","value":"` + big + `"}]}`,
			[]string{"Content-Type", "application/json"}},
		{"shared", "PUT", "/v1/kv/shared/conf?canary=100%25", big, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.s.bodyBudget = newBodyBudget(64 << 10) // before any request: a budget of 8 × 64 KiB
			f.s.bodyBudget.wait = 10 * time.Second
			b := f.s.bodyBudget
			f.put("appliances/web/conf", big)
			f.put("shared/conf", big)
			stalled, unstall := stallWatch(t, f, "stall")
			defer unstall()
			f.must(f.do("POST", "/v1/tokens", `{"name":"stall","read":["shared"]}`, "Content-Type", "application/json"), 201, nil)
			select {
			case <-stalled:
			case <-time.After(20 * time.Second):
				t.Fatal("the token's creation never reached the watch")
			}

			// The whole budget held here until the write waits for its share (a waiter makes
			// TryAcquire fail): given back then, the write has its share at once.
			if !b.sem.TryAcquire(b.size()) {
				t.Fatal("the budget is not free")
			}
			answer := make(chan resp, 1)
			go func() { answer <- f.do(tc.method, tc.path, tc.body, tc.hdr...) }()
			waitFor(t, "the write's wait for its share", func() bool {
				b.sem.Release(1)
				if b.sem.TryAcquire(1) {
					return false
				}
				return true
			})
			b.sem.Release(b.size() - 1)

			ctx, cancel := context.WithTimeout(t.Context(), viewChangedWait/2)
			defer cancel()
			if err := b.sem.Acquire(ctx, b.size()); err != nil {
				t.Fatalf("the unchanged write's share of the body budget was not given back within %s: held through its wait for the hub", viewChangedWait/2)
			}
			b.sem.Release(b.size())
			select {
			case r := <-answer:
				t.Fatalf("the write answered (%s) before its wait for the hub was up: the test saw nothing of it", r.Status)
			default:
			}
			unstall()
			var w api.WriteResult
			f.must(<-answer, http.StatusOK, &w)
			if !w.Unchanged {
				t.Fatalf("a write of the values in place: %+v, want unchanged", w)
			}
		})
	}
}
