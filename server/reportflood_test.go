package server

import (
	"fmt"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// Reports wait to be written as one per instance, the latest winning: a flood of reports from
// one token (100 instances, each reporting 50 times while the writer waits out its window) and
// a fleet reporting together (a shared/ change) are all recorded, none dropped for want of room.
func TestReports_FloodOfOneTokenCrowdsOutNone(t *testing.T) {
	f := newFixture(t)
	f.s.reports.window = 2 * time.Second // every report below is queued before the first write
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	start := f.view("web").Revision
	now := time.Now().UTC()
	const flood, rounds, fleet = 100, 50, 1500
	for round := range rounds {
		for i := range flood {
			f.s.reports.note(&api.Instance{Appliance: "web", Instance: fmt.Sprintf("flood-%d", i), Applied: int64(1 + round%2), LastSeen: now, Token: "flooder"}, nil, "")
		}
	}
	for i := range fleet {
		f.s.reports.note(&api.Instance{Appliance: "web", Instance: fmt.Sprintf("vm-%04d", i), Applied: start, LastSeen: now, Token: "web-agent"}, nil, "")
	}
	if n := f.s.reports.queued(); n > flood+fleet {
		t.Errorf("%d reports queued for %d instances", n, flood+fleet)
	}
	var got api.Instances
	waitFor(t, "every instance's report recorded", func() bool {
		got = api.Instances{}
		f.must(f.do("GET", "/v1/appliances/web/instances", ""), 200, &got)
		return len(got.Instances) == flood+fleet
	})
	for _, in := range got.Instances {
		if in.Token == "web-agent" && in.Applied != start || in.Token == "flooder" && in.Applied != int64(1+(rounds-1)%2) {
			t.Fatalf("recorded %+v: not the instance's latest report", in)
		}
	}
}
