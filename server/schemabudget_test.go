package server

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// Setting a schema checks the appliance's keys as they are against it, to warn of those that
// break it: that read of the live tree was whole and in no budget, so that a writer's schema
// puts at once (which may be sent again at will) to an appliance of large values held its tree
// each. A live tree of largeBody and more is read within the replica's body budget: with the
// budget taken, the schema is set all the same, and its warning says its keys were not checked.
func TestSchema_SetReadsALargeLiveTreeWithinTheBodyBudget(t *testing.T) {
	f := newFixture(t)
	f.s.bodyBudget.wait = 200 * time.Millisecond
	f.put("appliances/web/port", "eighty")
	f.put("appliances/web/blob", strings.Repeat("b", largeBody))
	schema := `{"type":"object","properties":{"port":{"type":"string","pattern":"^[0-9]+$"}}}`
	b := f.s.bodyBudget
	if !b.sem.TryAcquire(b.size()) {
		t.Fatal("the body budget is not whole")
	}
	var res api.SchemaResult
	f.must(f.do("PUT", "/v1/appliances/web/schema", schema), http.StatusOK, &res)
	if !strings.Contains(res.Warning, "not checked") {
		t.Errorf("the schema set with the budget taken: warning %q, want one saying the keys were not checked", res.Warning)
	}
	b.sem.Release(b.size())
	res = api.SchemaResult{}
	f.must(f.do("PUT", "/v1/appliances/web/schema", schema), http.StatusOK, &res)
	if !strings.Contains(res.Warning, "break it") || !strings.Contains(res.Warning, "port") {
		t.Errorf("the schema set with the budget free: warning %q, want the port breaking it", res.Warning)
	}
	budgetWhole(t, f, "a schema set over a large tree")
}
