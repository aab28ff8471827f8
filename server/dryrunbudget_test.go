package server

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// An apply's dry run compares its body with the appliance's live tree, which it read whole in
// no budget: a writer's small dry runs at once to an appliance of large values, which write
// nothing and may be sent again at will, held the tree each. A live tree of largeBody and
// more is read within the replica's body budget, as a write with canary reads it: with the
// budget taken, the dry run waits, then is refused 503 to retry; a small tree passes, and the
// share is given back once the plan is answered.
func TestApply_DryRunReadsALargeLiveTreeWithinTheBodyBudget(t *testing.T) {
	f := newFixture(t)
	f.s.bodyBudget.wait = 200 * time.Millisecond
	f.put("appliances/web/port", "80")
	f.put("appliances/web/blob", strings.Repeat("b", largeBody))
	full := func() {
		t.Helper()
		if !f.s.bodyBudget.sem.TryAcquire(f.s.bodyBudget.size()) {
			t.Fatal("the body budget is not whole: a request kept its share")
		}
	}
	full()
	f.mustErr(f.do("PUT", "/v1/appliances/web?dry_run=true", `{"keys":{"port":"81"}}`, "Content-Type", "application/json"),
		http.StatusServiceUnavailable, api.CodeUnavailable, "large bodies or trees")
	f.s.bodyBudget.sem.Release(f.s.bodyBudget.size())

	var plan api.ApplyPlan
	f.must(f.do("PUT", "/v1/appliances/web?dry_run=true", `{"keys":{"port":"81","new":"x"}}`, "Content-Type", "application/json"), http.StatusOK, &plan)
	if strings.Join(plan.Changed, ",") != "appliances/web/port" || strings.Join(plan.Put, ",") != "appliances/web/new" ||
		strings.Join(plan.Deleted, ",") != "appliances/web/blob" || plan.Old["appliances/web/blob"] != strings.Repeat("b", largeBody) {
		t.Errorf("the dry run of a large tree: put %v changed %v deleted %v, want new, port, blob (its old value shown)", plan.Put, plan.Changed, plan.Deleted)
	}
	// The plan, larger than the server's buffer, may reach the client before the handler's
	// deferred release: wait for it.
	budgetWhole(t, f, "a dry run of a large tree")

	f.must(f.do("DELETE", "/v1/kv/appliances/web/blob", ""), http.StatusOK, nil)
	full()
	plan = api.ApplyPlan{}
	f.must(f.do("PUT", "/v1/appliances/web?dry_run=true", `{"keys":{"port":"80"}}`, "Content-Type", "application/json"), http.StatusOK, &plan)
	if plan.Unchanged != 1 || len(plan.Changed)+len(plan.Put)+len(plan.Deleted) != 0 {
		t.Errorf("the dry run of a small tree with the budget taken: %+v, want one key unchanged", plan)
	}
	f.s.bodyBudget.sem.Release(f.s.bodyBudget.size())
	full()
	f.s.bodyBudget.sem.Release(f.s.bodyBudget.size())
}

// A dry run's answer shows the old values of the keys it changes or deletes: as large as the
// live tree. Its share of the body budget, the tree's, was held while that answer was written,
// so that a client that does not read it (the server has no write timeout) kept the share as
// long as it kept the connection: two such dry runs of a tree of half the budget each held
// the whole budget, and every large kv, txn and apply body waited, then was 503. The share
// is given back before the answer is written, which the budget of answers bounds.
func TestApply_DryRunGivesItsShareBackBeforeItsAnswer(t *testing.T) {
	f := newFixture(t)
	b := f.s.bodyBudget
	tree := int(min(b.size()/2, 24<<20)) // more than the socket buffers hold, not read
	for i := 0; i*1_000_000 < tree; i++ {
		f.put(fmt.Sprintf("appliances/web/part%02d", i), strings.Repeat("v", 1_000_000))
	}
	conn, err := net.Dial("tcp", f.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := `{"keys":{"port":"1"}}`
	fmt.Fprintf(conn, "PUT /v1/appliances/web?dry_run=true HTTP/1.1\r\nHost: shoelace\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", f.token, len(body), body)
	// The answer is on its way (its first bytes read), the rest not read: the budget is whole
	// all the same.
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	first := make([]byte, 12)
	if _, err := io.ReadFull(conn, first); err != nil || string(first) != "HTTP/1.1 200" {
		t.Fatalf("the dry run's answer begins %q (%v)", first, err)
	}
	time.Sleep(100 * time.Millisecond) // the buffers fill
	budgetWhole(t, f, "a dry run whose answer is not read")
}
