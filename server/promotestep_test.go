package server

import (
	"net/http"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// A promote may name the rollout and the step it promotes (as the status showed them): once
// the rollout has moved on, it is refused with 409 and changes nothing. Before, a promote had no
// such precondition: one sent as a cohort's bake ended (by the console's form, checked against
// the rollout before it asked, or the CLI) promoted the next step at once, skipping its bake.
func TestRollout_PromoteOfAStepRefusedOnceItMovedOn(t *testing.T) {
	f := newFixture(t)
	f.put("appliances/web/port", "80")
	enrollFleet(t, f, 4)
	var st api.RolloutStatus
	f.must(f.do("PUT", "/v1/kv/appliances/web/port?canary=25%25&step=25%25&manual", "8080"), http.StatusAccepted, &st)
	c := st.Cohort[0]
	report(t, f, c, viewOf(t, f, c), "")
	act := func(body string) resp {
		return f.do("POST", "/v1/appliances/web/rollout", body, "Content-Type", "application/json")
	}
	f.mustErr(act(`{"action":"promote","step":-1}`), http.StatusBadRequest, api.CodeInvalidRequest, "step")
	f.mustErr(act(`{"action":"abort","step":0}`), http.StatusBadRequest, api.CodeInvalidRequest, "step")
	f.mustErr(act(`{"action":"promote","rollout":"X y"}`), http.StatusBadRequest, api.CodeInvalidRequest, "rollout")
	f.mustErr(act(`{"action":"promote","step":1}`), http.StatusConflict, api.CodeConflict, "now rollout "+st.ID+" at step 1 of 4, not rollout "+st.ID+" at step 2")
	f.mustErr(act(`{"action":"promote","rollout":"0123-ab"}`), http.StatusConflict, api.CodeConflict, "not rollout 0123-ab")
	f.mustErr(act(`{"action":"abort","rollout":"0123-ab"}`), http.StatusConflict, api.CodeConflict, "not rollout 0123-ab")
	if got := rolloutStatus(t, f); got.Step != 0 || got.State != api.RolloutRunning {
		t.Fatalf("a refused action changed the rollout: step %d, %s", got.Step, got.State)
	}

	f.must(act(`{"action":"promote","rollout":"`+st.ID+`","step":0}`), 200, nil)
	waitFor(t, "the second step", func() bool { return rolloutStatus(t, f).Step == 1 })
	// The same promote again, sent after the step it promoted ended: refused, where it promoted
	// the second step at once.
	f.mustErr(act(`{"action":"promote","rollout":"`+st.ID+`","step":0}`), http.StatusConflict, api.CodeConflict, "at step 2 of 4")
	rec, _, err := f.s.readRollout(t.Context(), "web")
	if err != nil {
		t.Fatal(err)
	}
	if got := rolloutStatus(t, f); got.Step != 1 || rec.Promote {
		t.Fatalf("a promote of the step that ended promoted the next one: step %d, promote %v", got.Step, rec.Promote)
	}
	f.must(act(`{"action":"abort","rollout":"`+st.ID+`"}`), 200, nil)
}
