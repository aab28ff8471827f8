package server

import (
	"testing"

	"github.com/shoelace-dev/shoelace/server/rollout"
)

// A record that a write of this replica sets once the write returns does not take the place of
// a later one the watch (or another write) set meanwhile; a load replaces all it held.
func TestRolloutSet_KeepsTheLatestRecord(t *testing.T) {
	var rs rolloutSet
	step := func(n int) *rollout.Record { return &rollout.Record{ID: "r1", State: "running", Step: n} }
	rs.set("web", step(1), 10)
	rs.set("web", step(2), 12) // the watch: the step after
	rs.set("web", step(1), 10) // the first write's own set, late
	if got := rs.get("web"); got == nil || got.Step != 2 {
		t.Fatalf("after a late set of an older record: %+v", got)
	}
	rs.set("web", step(2), 12) // the same record again (its write and its watch event)
	rs.set("web", nil, 15)     // deleted
	rs.set("web", step(2), 12)
	if got := rs.get("web"); got != nil {
		t.Fatalf("a late set brought back a deleted record: %+v", got)
	}
	rs.set("web", step(0), 16)
	if got := rs.get("web"); got == nil || got.Step != 0 {
		t.Fatalf("a later record was not set: %+v", got)
	}

	rs.set("db", step(3), 30)
	rs.replace(map[string]*rollout.Record{"api": step(0)}, 20)
	if rs.get("db") != nil || rs.get("api") == nil {
		t.Fatalf("a load did not replace what was held: db %+v, api %+v", rs.get("db"), rs.get("api"))
	}
	rs.set("api", nil, 19) // written before the load read
	if rs.get("api") == nil {
		t.Fatal("a set older than the load took its place")
	}
}
