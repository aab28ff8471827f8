package server

import (
	"net/http"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// Maintenance mode makes the store read-only: a promote by hand is refused (503), and so the
// rollouts' leader takes no step and no promotion meanwhile either. Before, a cohort that
// reported the candidate applied during maintenance had it written to the live keys (an
// appliance's, or shared/ for a group), a release recorded, in a window the operator had
// frozen. Once maintenance is off the rollouts go on.
func TestRollout_MaintenanceHoldsStepsAndPromotions(t *testing.T) {
	parallelShared(t)
	f := newFixture(t)
	f.put("appliances/web/port", "80")
	f.put("shared/ntp", "pool")
	fleet := enrollFleet(t, f, 2)
	maintenance := func(on bool) {
		t.Helper()
		body := `{"on":false}`
		if on {
			body = `{"on":true}`
		}
		f.must(f.do("PUT", "/v1/maintenance", body), 200, nil)
		waitFor(t, "maintenance mode", func() bool { return f.s.maintenance.Load() == on })
	}
	liveOf := func(key string) string {
		t.Helper()
		var kv api.KV
		f.must(f.do("GET", "/v1/kv/"+key, ""), 200, &kv)
		return kv.Value
	}
	// applyCohort has the rollout's cohort report the candidate applied.
	applyCohort := func(st api.RolloutStatus) {
		t.Helper()
		for _, n := range st.Cohort {
			var v api.View
			waitFor(t, n+" to get the candidate", func() bool { v = viewOf(t, f, n); return v.Rollout == st.ID })
			report(t, f, n, v, "")
		}
	}
	held := func(what string, step int) api.RolloutStatus {
		t.Helper()
		time.Sleep(1500 * time.Millisecond) // six of the leader's ticks
		st := rolloutStatus(t, f)
		if st.State != api.RolloutRunning || st.Step != step {
			t.Fatalf("%s during maintenance: the rollout is %s at step %d, want running at step %d", what, st.State, st.Step, step)
		}
		return st
	}

	// An appliance's rollout: neither its next step nor its promotion while maintenance is on.
	var st api.RolloutStatus
	f.must(f.do("PUT", "/v1/appliances/web?canary=50%25", `{"keys":{"port":"8080"}}`), http.StatusAccepted, &st)
	maintenance(true)
	applyCohort(st)
	st = held("the canary's step", 0)
	maintenance(false)
	waitFor(t, "the next step once maintenance is off", func() bool { st = rolloutStatus(t, f); return st.Step == 1 })
	maintenance(true)
	applyCohort(st)
	held("the promotion", 1)
	if got := liveOf("appliances/web/port"); got != "80" {
		t.Fatalf("the live key became %q during maintenance", got)
	}
	maintenance(false)
	waitFor(t, "the promotion once maintenance is off", func() bool { return rolloutStatus(t, f).State == api.RolloutPromoted })
	if got := liveOf("appliances/web/port"); got != "8080" {
		t.Fatalf("the live key after the promotion: %q", got)
	}

	// A shared rollout group: shared/ is not written while maintenance is on.
	var g api.SharedRolloutStatus
	f.must(f.do("PUT", "/v1/kv/shared/ntp?canary=100%25", "new"), http.StatusAccepted, &g)
	maintenance(true)
	applyCohort(g.Rollouts[0])
	held("the group's promotion", 0)
	if got := liveOf("shared/ntp"); got != "pool" {
		t.Fatalf("shared/ntp became %q during maintenance", got)
	}
	maintenance(false)
	waitFor(t, "the group's promotion once maintenance is off", func() bool { return rolloutStatus(t, f).State == api.RolloutPromoted })
	if got := liveOf("shared/ntp"); got != "new" {
		t.Fatalf("shared/ntp after the promotion: %q", got)
	}
	_ = fleet
}
