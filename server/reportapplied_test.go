package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// A report after a failed pass pairs the revision the agent applied last with the rollout that
// revision was of (X-Shoelace-Applied and X-Shoelace-Rollout, as a long-poll carries them), not
// with the rollout of the view that failed: a VM that applied a candidate, whose live view then
// failed after the rollout's abort, is recorded as running the candidate. Before, the record
// said it applied that revision of the live view, which it never did (the console counted it
// current) until its next long-poll's headers said otherwise. A report without the headers (an
// older agent) is taken as before.
func TestReport_FailedPassRecordsTheRolloutOfWhatIsApplied(t *testing.T) {
	f := newFixture(t)
	f.put("appliances/web/port", "80")
	fleet := enrollFleet(t, f, 2)
	var st api.RolloutStatus
	f.must(f.do("PUT", "/v1/kv/appliances/web/port?canary=100%25&manual", "8080"), http.StatusAccepted, &st)
	vm, old := fleet[0], fleet[1]
	post := func(instance string, rep api.Report, hdr ...string) {
		t.Helper()
		b, _ := json.Marshal(rep)
		hdr = append([]string{"Content-Type", "application/json", api.HeaderInstance, instance}, hdr...)
		f.must(f.doToken(instanceToken(t, f, instance), "POST", "/v1/appliances/web/report", string(b), hdr...), 200, nil)
	}
	var cand api.View
	waitFor(t, "the candidate", func() bool { cand = viewOf(t, f, vm); return cand.Rollout == st.ID })
	for _, n := range fleet {
		post(n, api.Report{Instance: n, Revision: cand.Revision, Applied: cand.Revision, Rollout: st.ID},
			api.HeaderApplied, fmt.Sprint(cand.Revision), api.HeaderRollout, st.ID)
	}
	records := func() map[string]api.Instance {
		var ins api.Instances
		f.must(f.do("GET", "/v1/appliances/web/instances", ""), 200, &ins)
		got := map[string]api.Instance{}
		for _, in := range ins.Instances {
			got[in.Instance] = in
		}
		return got
	}
	waitFor(t, "the candidate's reports recorded", func() bool {
		got := records()
		return got[vm].Applied == cand.Revision && got[old].Applied == cand.Revision
	})
	f.must(f.do("POST", "/v1/appliances/web/rollout", `{"action":"abort"}`, "Content-Type", "application/json"), 200, nil)
	var live api.View
	waitFor(t, "the live view after the abort", func() bool { live = viewOf(t, f, vm); return live.Rollout == "" })

	// The live view's reload fails on both: vm's agent says what it applied was the candidate;
	// old's, an older agent, says nothing of it.
	failed := api.Report{Instance: vm, Revision: live.Revision, Applied: cand.Revision, Error: "reload: exit status 1", Stage: api.StageCommand}
	post(vm, failed, api.HeaderApplied, fmt.Sprint(cand.Revision), api.HeaderRollout, st.ID)
	failed.Instance = old
	post(old, failed)

	var got map[string]api.Instance
	waitFor(t, "the failed passes recorded", func() bool {
		got = records()
		// old's record changes (its rollout goes), after vm's: reports are written in order.
		return got[vm].Error != "" && got[old].Error != "" && got[old].Rollout == ""
	})
	if in := got[vm]; in.Applied != cand.Revision || in.Rollout != st.ID || in.ErrorRollout != "" {
		t.Errorf("%s recorded as applied %d of rollout %q (failure of rollout %q), want %d of %q (failure of the live view)",
			vm, in.Applied, in.Rollout, in.ErrorRollout, cand.Revision, st.ID)
	}
	if in := got[old]; in.Applied != cand.Revision || in.Rollout != "" {
		t.Errorf("older agent's report recorded as applied %d of rollout %q, want %d of the view's rollout (none)", in.Applied, in.Rollout, cand.Revision)
	}

	// The headers must say the body's applied revision, and a rollout id.
	b, _ := json.Marshal(failed)
	f.mustErr(f.doToken(instanceToken(t, f, old), "POST", "/v1/appliances/web/report", string(b), "Content-Type", "application/json",
		api.HeaderApplied, fmt.Sprint(cand.Revision+1)), http.StatusBadRequest, api.CodeInvalidRequest, api.HeaderApplied)
	f.mustErr(f.doToken(instanceToken(t, f, old), "POST", "/v1/appliances/web/report", string(b), "Content-Type", "application/json",
		api.HeaderApplied, fmt.Sprint(cand.Revision), api.HeaderRollout, "X;y"), http.StatusBadRequest, api.CodeInvalidRequest, api.HeaderRollout)
}

// A report of another instance than the instance token's is refused naming the token's
// instance as what it must be: the request may have sent no X-Shoelace-Instance (the server
// takes the token's then), and the refusal said the request's header named it.
func TestReport_OfAnotherInstanceNamesTheTokensInstance(t *testing.T) {
	f := newFixture(t)
	f.put("appliances/web/port", "80")
	fleet := enrollFleet(t, f, 1)
	body := `{"instance":"vm-9","revision":1,"applied":1}`
	f.mustErr(f.doToken(instanceToken(t, f, fleet[0]), "POST", "/v1/appliances/web/report", body, "Content-Type", "application/json"),
		http.StatusBadRequest, api.CodeInvalidRequest, `the report's instance "vm-9" is not "vm-0", the instance token "instance:web:vm-0" is bound to`)
	// With the appliance's agent token, the header is the request's own.
	var tok api.TokenCreated
	f.must(f.do("POST", "/v1/tokens", `{"name":"web-agent-2","appliance":"web"}`, "Content-Type", "application/json"), 201, &tok)
	f.mustErr(f.doToken(tok.Token, "POST", "/v1/appliances/web/report", body, "Content-Type", "application/json", api.HeaderInstance, "vm-8"),
		http.StatusBadRequest, api.CodeInvalidRequest, `the report's instance "vm-9" is not the request's X-Shoelace-Instance "vm-8"`)
}
