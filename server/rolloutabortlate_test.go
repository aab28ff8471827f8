package server

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// pollAsAgent is instance's long-poll of web's view after index (-1: a plain read), made as its agent makes it:
// with its instance token, saying in X-Shoelace-Applied and X-Shoelace-Rollout what it applied
// last (applied, of rollout id; "" for the live view). It answers the view the instance gets.
func pollAsAgent(t *testing.T, f *fixture, instance string, index, applied int64, id string) api.View {
	t.Helper()
	hdr := []string{api.HeaderInstance, instance, api.HeaderApplied, fmt.Sprint(applied)}
	if id != "" {
		hdr = append(hdr, api.HeaderRollout, id)
	}
	path := "/v1/appliances/web"
	if index >= 0 {
		path += fmt.Sprintf("?index=%d&wait=20s", index)
	}
	var v api.View
	began := time.Now()
	f.must(f.doToken(instanceToken(t, f, instance), "GET", path, "", hdr...), 200, &v)
	if d := time.Since(began); d > 10*time.Second {
		t.Fatalf("%s's long-poll after %d was answered after %s: its view changed before it asked", instance, index, d)
	}
	return v
}

// instanceRecord is web's record of instance.
func instanceRecord(t *testing.T, f *fixture, instance string) api.Instance {
	t.Helper()
	var ins api.Instances
	f.must(f.do("GET", "/v1/appliances/web/instances", ""), 200, &ins)
	for _, in := range ins.Instances {
		if in.Instance == instance {
			return in
		}
	}
	t.Fatalf("no record of %s: %+v", instance, ins.Instances)
	return api.Instance{}
}

// stateOf is instance's state in st.
func stateOf(st api.RolloutStatus, instance string) string {
	for _, in := range st.Instances {
		if in.Instance == instance {
			return in.State
		}
	}
	return ""
}

// A canary whose reload of the candidate was still running when the rollout was aborted, and
// which reports the candidate applied only after the abort, did not apply it for the rollout:
// the aborted rollout shows it not applied (pending), before and after it reports the live view
// again, and the view it gets with that late report is the live one. Before, the reporter
// counted such a report as one that the end had missed (countLate), the status showed the
// instance applied from its record alone, and the record kept the aborted candidate's id until
// the instance reported the live view.
func TestRollout_ReportAfterTheAbortDoesNotCount(t *testing.T) {
	f, st := canaryOfTwo(t)
	canary := st.Cohort[0]
	candidate := viewOf(t, f, canary)

	// The canary has the candidate and runs its reload: the abort comes meanwhile.
	f.must(f.do("POST", "/v1/appliances/web/rollout", `{"action":"abort"}`, "Content-Type", "application/json"), 200, nil)
	if got := rolloutStatus(t, f); got.State != api.RolloutAborted || stateOf(got, canary) != "pending" {
		t.Fatalf("aborted rollout: %+v, want %s pending (it reported nothing of the candidate)", got, canary)
	}

	// The reload ends: the agent's next long-poll says it applied the candidate. It is told
	// to go back to the live view at once.
	back := pollAsAgent(t, f, canary, candidate.Revision, candidate.Revision, st.ID)
	if back.Rollout != "" || back.Keys["port"] != "80" {
		t.Fatalf("%s's view after its late report of the aborted candidate: %+v, want the live view", canary, back)
	}
	// The late report is written (the record says what the agent said), and given every
	// chance to be counted.
	waitFor(t, "the late report recorded", func() bool { return instanceRecord(t, f, canary).Applied == candidate.Revision })
	time.Sleep(500 * time.Millisecond)
	if got := rolloutStatus(t, f); stateOf(got, canary) != "pending" {
		t.Fatalf("aborted rollout after a report of its candidate applied after the abort: %s is %s, want pending: %+v", canary, stateOf(got, canary), got)
	}

	// The agent applies the live view and reports it: its record says so, and the rollout
	// still shows it pending.
	pollAsAgent(t, f, canary, -1, back.Revision, "")
	waitFor(t, "the live view's report recorded", func() bool {
		in := instanceRecord(t, f, canary)
		return in.Applied == back.Revision && in.Rollout == ""
	})
	time.Sleep(500 * time.Millisecond)
	if got := rolloutStatus(t, f); stateOf(got, canary) != "pending" {
		t.Fatalf("aborted rollout after the canary went back to the live view: %s is %s, want pending: %+v", canary, stateOf(got, canary), got)
	}
}

// A late report of an aborted rollout's candidate, arriving once the next rollout runs, counts
// for neither: the new rollout waits for its own candidate, which the late report's long-poll
// gives the canary at once, and the record of the new rollout's end keeps nothing of the old.
func TestRollout_ReportAfterTheAbortCountsForNoLaterRollout(t *testing.T) {
	f, first := canaryOfTwo(t)
	var second api.RolloutStatus
	canary := first.Cohort[0]
	candidate := viewOf(t, f, canary)
	f.must(f.do("POST", "/v1/appliances/web/rollout", `{"action":"abort"}`, "Content-Type", "application/json"), 200, nil)
	f.must(f.do("PUT", "/v1/kv/appliances/web/port?canary=50%25&manual", "82"), http.StatusAccepted, &second)
	if len(second.Cohort) != 1 || second.Cohort[0] != canary {
		t.Fatalf("second rollout's cohort %v, want [%s] (instances keep their place)", second.Cohort, canary)
	}

	// The canary's reload of the first candidate ends: it reports it, and gets the second.
	next := pollAsAgent(t, f, canary, candidate.Revision, candidate.Revision, first.ID)
	if next.Rollout != second.ID || next.Keys["port"] != "82" {
		t.Fatalf("%s's view after its late report of the aborted candidate: %+v, want the second rollout's candidate", canary, next)
	}
	waitFor(t, "the late report recorded", func() bool { return instanceRecord(t, f, canary).Rollout == first.ID })
	time.Sleep(500 * time.Millisecond)
	if got := rolloutStatus(t, f); got.ID != second.ID || got.State != api.RolloutRunning || stateOf(got, canary) != "pending" {
		t.Fatalf("second rollout after a late report of the first's candidate: %+v, want %s pending", got, canary)
	}
	// Aborted in turn before the canary applies its candidate, it counts it nowhere.
	f.must(f.do("POST", "/v1/appliances/web/rollout", `{"action":"abort"}`, "Content-Type", "application/json"), 200, nil)
	pollAsAgent(t, f, canary, -1, candidate.Revision, first.ID)
	time.Sleep(500 * time.Millisecond)
	if got := rolloutStatus(t, f); got.ID != second.ID || stateOf(got, canary) != "pending" {
		t.Fatalf("second rollout aborted: %+v, want %s pending", got, canary)
	}
}

// canaryOfTwo starts a fleet of two instances of appliance web, both reporting its live view
// (port 80), and a manual rollout of port 81 to half of it; it returns once the canary has the
// candidate.
func canaryOfTwo(t *testing.T) (f *fixture, st api.RolloutStatus) {
	t.Helper()
	f = newFixture(t)
	f.put("appliances/web/port", "80")
	fleet := enrollFleet(t, f, 2)
	live := viewOf(t, f, fleet[0])
	for _, n := range fleet {
		report(t, f, n, live, "")
	}
	f.must(f.do("PUT", "/v1/kv/appliances/web/port?canary=50%25&manual", "81"), http.StatusAccepted, &st)
	if len(st.Cohort) != 1 {
		t.Fatalf("cohort: %v", st.Cohort)
	}
	waitFor(t, "the candidate", func() bool { return viewOf(t, f, st.Cohort[0]).Rollout == st.ID })
	return f, st
}
