package server

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// A promote may name the rollout and the step it promotes (as the status showed them): once
// the rollout has moved on, or when that step's promote was taken already, it is refused with
// 409 and changes nothing. Before, a promote had no
// such precondition: one sent as a cohort's bake ended (by the console's form, checked against
// the rollout before it asked, or the CLI) promoted the next step at once, skipping its bake.
func TestRollout_PromoteOfAStepRefusedOnceItMovedOn(t *testing.T) {
	f := newFixture(t)
	f.put("appliances/web/port", "80")
	enrollFleet(t, f, 4)
	var st api.RolloutStatus
	f.must(f.do("PUT", "/v1/kv/appliances/web/port?canary=25%25&step=25%25&manual", "8080"), http.StatusAccepted, &st)
	c := st.Cohort[0]
	act := func(body string) resp {
		return f.do("POST", "/v1/appliances/web/rollout", body, "Content-Type", "application/json")
	}
	f.mustErr(act(`{"action":"promote","step":-1}`), http.StatusBadRequest, api.CodeInvalidRequest, "step")
	f.mustErr(act(`{"action":"abort","step":0}`), http.StatusBadRequest, api.CodeInvalidRequest, "step")
	f.mustErr(act(`{"action":"promote","rollout":"X y"}`), http.StatusBadRequest, api.CodeInvalidRequest, "rollout")
	f.mustErr(act(`{"action":"promote","step":1}`), http.StatusConflict, api.CodeConflict, "now rollout "+st.ID+" at step 1 of 4, not rollout "+st.ID+" at step 2")
	f.mustErr(act(`{"action":"promote","rollout":"0123-ab"}`), http.StatusConflict, api.CodeConflict, "not rollout 0123-ab")
	// The largest step is named as it was sent, plus one, not wrapped to a negative number.
	f.mustErr(act(`{"action":"promote","step":9223372036854775807}`), http.StatusConflict, api.CodeConflict, "at step 9223372036854775808")
	f.mustErr(act(`{"action":"abort","rollout":"0123-ab"}`), http.StatusConflict, api.CodeConflict, "not rollout 0123-ab")
	if got := rolloutStatus(t, f); got.Step != 0 || got.State != api.RolloutRunning {
		t.Fatalf("a refused action changed the rollout: step %d, %s", got.Step, got.State)
	}

	// Taken, the step waits for the canary to apply the candidate; the same promote again (a
	// second form of the step, a button pressed twice) is refused, not taken twice. Without a
	// step, a promote asked again is taken as before.
	f.must(act(`{"action":"promote","rollout":"`+st.ID+`","step":0}`), 200, nil)
	f.mustErr(act(`{"action":"promote","rollout":"`+st.ID+`","step":0}`), http.StatusConflict, api.CodeConflict, "was taken already")
	f.must(act(`{"action":"promote"}`), 200, nil)
	if got := rolloutStatus(t, f); got.Step != 0 {
		t.Fatalf("promoted without its cohort: step %d", got.Step)
	}
	report(t, f, c, viewOf(t, f, c), "")
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

// The console's promote sends the rollout and step its page showed: a second confirmation of
// the same step's promote (two tabs, a form sent twice), sent while the step still waits for its
// cohort, is refused, not taken twice.
func TestUI_SecondPromoteOfAStepRefused(t *testing.T) {
	f := newFixture(t)
	f.put("appliances/web/port", "80")
	enrollFleet(t, f, 4)
	var st api.RolloutStatus
	f.must(f.do("PUT", "/v1/kv/appliances/web/port?canary=25%25&step=25%25&manual", "8080"), http.StatusAccepted, &st)
	b := newUIBrowser(t, f.srv.URL, nil)
	b.signIn(f.token)
	promote := hiddenFields(b.get("/ui/appliances/web").body)
	promote.Set("action", "promote")
	var confirms [2]url.Values
	for i := range confirms {
		c := b.post("/ui/appliances/web/rollout", promote)
		mustStatus(t, c, 200)
		confirms[i] = hiddenFields(c.body)
	}
	mustStatus(t, b.post("/ui/appliances/web/rollout", confirms[0]), http.StatusSeeOther)
	again := b.post("/ui/appliances/web/rollout", confirms[1])
	mustStatus(t, again, http.StatusConflict)
	if !strings.Contains(string(again.body), "was taken already") {
		t.Fatalf("the second promote's refusal does not say the first was taken: %s", again.body)
	}
	if got := rolloutStatus(t, f); got.Step != 0 || got.State != api.RolloutRunning {
		t.Fatalf("the rollout moved without its cohort: step %d, %s", got.Step, got.State)
	}
}
