package server

import (
	"net/http"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// After the last promote by hand of a --manual rollout, its status listed every instance
// pending, though each had applied the candidate (the gates took no step without it) and the
// promotion made that candidate the live tree: the promoted rollout counted as applied only
// reports of the candidate at or after the promotion's revision, which no candidate has, and
// reports of the live view at or after it, which come only with each agent's next pass (never,
// for an agent stopped since). An instance that applied the candidate shows applied; so does
// one that reported the live view at the promotion's revision or later.
func TestRollout_PromotedByHandShowsWhoAppliedIt(t *testing.T) {
	parallelShared(t)
	f := newFixture(t)
	f.put("appliances/web/port", "80")
	fleet := enrollFleet(t, f, 3)
	var st api.RolloutStatus
	f.must(f.do("PUT", "/v1/kv/appliances/web/port?canary=30%25&step=30%25&manual", "81"), http.StatusAccepted, &st)
	if len(st.Steps) != 3 {
		t.Fatalf("started: %+v, want 3 steps", st)
	}
	// Each of the cohort reads the candidate once and reports it applied (a view read is a
	// report too: without X-Shoelace-Applied, of nothing applied).
	done := map[string]bool{}
	for step := range st.Steps {
		waitFor(t, "the cohort of the step to wait for its promote", func() bool {
			st = rolloutStatus(t, f)
			if st.Step != step || st.State != api.RolloutRunning {
				return false
			}
			for _, n := range st.Cohort {
				if done[n] {
					continue
				}
				if v := viewOf(t, f, n); v.Rollout == st.ID {
					report(t, f, n, v, "")
					done[n] = true
				}
			}
			return st.WaitsForPromote()
		})
		f.must(f.do("POST", "/v1/appliances/web/rollout", `{"action":"promote"}`, "Content-Type", "application/json"), 200, nil)
	}
	waitFor(t, "the rollout to be promoted", func() bool { st = rolloutStatus(t, f); return st.State == api.RolloutPromoted })
	for _, in := range st.Instances {
		if in.State != "applied" {
			t.Errorf("promoted rollout: %s is %s (applied %d), want applied: it applied the candidate, the promoted tree", in.Instance, in.State, in.Applied)
		}
	}
	// Its agent's next pass reports the live view, the promoted tree, at the promotion's
	// revision or later: applied still.
	v := viewOf(t, f, fleet[0])
	if v.Rollout != "" || v.Keys["port"] != "81" {
		t.Fatalf("%s's view after the promotion: %+v, want the live view with the promoted port", fleet[0], v)
	}
	report(t, f, fleet[0], v, "")
	// Reports are written in batches, a moment after they are answered.
	recorded := func() bool {
		var ins api.Instances
		f.must(f.do("GET", "/v1/appliances/web/instances", ""), 200, &ins)
		for _, in := range ins.Instances {
			if in.Instance == fleet[0] {
				return in.Applied == v.Revision
			}
		}
		return false
	}
	waitFor(t, "the live view's report recorded", recorded)
	if s := stateOf(rolloutStatus(t, f), fleet[0]); s != "applied" {
		t.Errorf("promoted rollout: %s reported the live view at %d and is %s, want applied", fleet[0], v.Revision, s)
	}
}
