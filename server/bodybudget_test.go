package server

import (
	"bufio"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// A token that may write nothing (an agent's, a reader's) is refused a txn before its body is
// read: its request line and headers, a Content-Length of 4 MB and no body, are answered 403 at
// once. Before, the replica read and parsed each such body first: 300 of them at once took GBs.
func TestTxn_TokenThatWritesNothingRefusedBeforeTheBody(t *testing.T) {
	f := newFixture(t)
	addr := strings.TrimPrefix(f.srv.URL, "http://")
	for _, body := range []string{`{"name":"agent-x","appliance":"web"}`, `{"name":"reader-x","read":["shared"]}`} {
		var tok api.TokenCreated
		f.must(f.do("POST", "/v1/tokens", body, "Content-Type", "application/json"), 201, &tok)
		c := rawConn(t, addr)
		fmt.Fprintf(c, "POST /v1/txn HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: 4000000\r\n\r\n", tok.Token)
		c.SetReadDeadline(time.Now().Add(5 * time.Second)) // the body would take the body timeout
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%s: no answer before the body: %v", body, err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusForbidden {
			t.Fatalf("%s: %d, want 403", body, res.StatusCode)
		}
	}
}

// Large kv, txn and apply bodies are read within the replica's budget: with bodiesAtOnce bodies at
// the limit on their way, the next large one waits, then is answered 503 with Retry-After,
// while small ones pass.
func TestTxn_LargeBodiesWithinTheBudget(t *testing.T) {
	f := newFixture(t)
	f.s.bodyBudget.wait = 200 * time.Millisecond
	addr := strings.TrimPrefix(f.srv.URL, "http://")
	limit := f.s.cfg.maxBodyBytes()
	for range bodiesAtOnce {
		// Headers and no body: each holds its share until the body timeout.
		c := rawConn(t, addr)
		fmt.Fprintf(c, "POST /v1/txn HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", f.token, limit)
	}
	waitFor(t, "the budget taken", func() bool {
		if f.s.bodyBudget.sem.TryAcquire(1) {
			f.s.bodyBudget.sem.Release(1)
			return false
		}
		return true
	})
	big := `{"ops":[{"op":"put","key":"shared/x","value":"` + strings.Repeat("a", largeBody) + `"}]}`
	f.mustErr(f.do("POST", "/v1/txn", big, "Content-Type", "application/json"), http.StatusServiceUnavailable, api.CodeUnavailable, "large bodies")
	f.mustErr(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"`+strings.Repeat("a", largeBody)+`"}}`, "Content-Type", "application/json"), http.StatusServiceUnavailable, api.CodeUnavailable, "large bodies")
	f.mustErr(f.do("PUT", "/v1/kv/shared/big", strings.Repeat("a", largeBody)), http.StatusServiceUnavailable, api.CodeUnavailable, "large bodies")
	f.must(f.do("PUT", "/v1/kv/shared/small", "1"), 200, nil)
	f.must(f.do("POST", "/v1/txn", `{"ops":[{"op":"put","key":"shared/y","value":"1"}]}`, "Content-Type", "application/json"), 200, nil)
}

// Two rollbacks without a body take the budget a page of their trees at a time: each held what
// it had read while it waited for its next page's share, and two trees that fit the budget one
// after the other but not together waited for each other until both were refused (503) though
// neither wrote. A share that must wait is now waited for whole, the part held given back
// meanwhile: one of them is served, and the other after it.
func TestBodyBudget_RollbacksThatWaitHoldNothingMeanwhile(t *testing.T) {
	b := newBodyBudget(2) // a budget of 16 bytes
	b.wait = 2 * time.Second
	tooLarge := func() string { return "too large" }
	var a, c int64
	if err := b.hold(t.Context(), &a, 10, tooLarge); err != nil {
		t.Fatal(err)
	}
	if err := b.hold(t.Context(), &c, 6, tooLarge); err != nil {
		t.Fatal(err)
	}
	// Each needs 4 more: 14 and 10 fit the budget in turn, not together.
	errs := make(chan error, 2)
	for _, held := range []*int64{&a, &c} {
		go func() {
			err := b.hold(t.Context(), held, 4, tooLarge)
			if err == nil {
				b.sem.Release(*held) // its apply done
				*held = 0
			}
			errs <- err
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatalf("a rollback whose tree fits the budget once the other's is done: %v", err)
		}
	}
	if !b.sem.TryAcquire(b.size()) {
		t.Fatal("shares still held")
	}
}
