package server

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// reportedAfter waits until a report of vm-2 made with token, queued after whatever was queued
// before, is written: the reports queued before it are written by then (or guarded out).
func (f *fixture) reportedAfter(token string, applied int64) {
	f.t.Helper()
	f.must(f.doToken(token, "GET", "/v1/appliances/web", "", api.HeaderInstance, "vm-2", api.HeaderApplied, fmt.Sprint(applied)), 200, nil)
	waitFor(f.t, "vm-2's report recorded", func() bool {
		in, ok := f.record("web", "vm-2")
		return ok && in.Applied == applied
	})
}

// A report that an instance token made before its instance was enrolled again (forgotten and
// enrolled by another agent), and that the reporter wrote after, overwrote the new holder's
// record: its applied revision and enrollment became the old holder's, and a rollout counted
// the new holder by what the old one said. The write is now guarded in etcd on the token
// record the report was made with, and the old token is told that its instance was enrolled
// again.
func TestEnroll_StaleTokenReportKeepsTheNewHoldersRecord(t *testing.T) {
	parallelShared(t)
	f := newFixture(t)
	f.s.reports.window = 2 * time.Second // the old report is still queued when the new holder enrolls
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	agent := f.newToken(api.TokenRequest{Name: "agent-web", Appliance: "web"})
	first := f.enroll(agent, "web", "vm-1")
	applied := f.put("appliances/web/a", "2")
	f.must(f.doToken(first.Token, "GET", "/v1/appliances/web", "", api.HeaderApplied, fmt.Sprint(applied)), 200, nil)
	f.must(f.do("DELETE", "/v1/appliances/web/instances/vm-1", ""), 200, nil)
	second := f.enroll(agent, "web", "vm-1")
	f.reportedAfter(agent, applied)
	if in, _ := f.record("web", "vm-1"); in.Applied != 0 || !in.Enrolled || !in.EnrolledAt.Equal(second.Enrolled) {
		t.Fatalf("the new holder's record %+v after the old token's report, want it as enrolled at %s (applied 0)", in, second.Enrolled)
	}
	f.mustErr(f.doToken(first.Token, "POST", "/v1/appliances/web/report", `{"instance":"vm-1","applied":`+fmt.Sprint(applied)+`}`),
		401, api.CodeUnauthorized, `"vm-1"`, `"web"`, "enrolled again")
	f.mustErr(f.doToken(first.Token, "GET", "/v1/appliances/web", ""), 401, api.CodeUnauthorized, "replaced", "enrolled again")
	// The new holder's own reports are written.
	f.must(f.doToken(second.Token, "GET", "/v1/appliances/web", "", api.HeaderApplied, fmt.Sprint(applied)), 200, nil)
	waitFor(t, "the new holder's report recorded", func() bool {
		in, _ := f.record("web", "vm-1")
		return in.Applied == applied
	})
	// A token forgotten, its name free, is told so.
	f.must(f.do("DELETE", "/v1/appliances/web/instances/vm-1", ""), 200, nil)
	f.mustErr(f.doToken(second.Token, "GET", "/v1/appliances/web", ""), 401, api.CodeUnauthorized, "revoked", "forgotten")
}

// A replica that has not yet learned that an instance was enrolled again (its token watch
// behind) authenticates the old token: neither the report it queues nor the failure it
// records is written, and the old token is answered 401; a report taken before the
// replacement but written after is guarded out by etcd, not by a check in front of it.
func TestEnroll_StaleTokenGuardedInTheStore(t *testing.T) {
	f := newFixture(t)
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	agent := f.newToken(api.TokenRequest{Name: "agent-web", Appliance: "web"})
	first := f.enroll(agent, "web", "vm-1")
	old := f.s.auth.lookup(first.Token).principal() // as a replica behind still holds it
	f.must(f.do("DELETE", "/v1/appliances/web/instances/vm-1", ""), 200, nil)
	second := f.enroll(agent, "web", "vm-1")
	ctx := context.Background()

	in := api.Instance{Appliance: "web", Instance: "vm-1", Applied: 1, LastSeen: time.Now().UTC(), Remote: "192.0.2.1"}
	old.reportAs(&in)
	f.s.takeReport(ctx, &in, old, "")
	rep := api.Report{Instance: "vm-1", Revision: 1, Error: "boom", Stage: api.StageCommand}
	err := f.s.recordFailure(ctx, "web", rep, in, old)
	var e *api.Error
	if !errors.As(err, &e) || e.Code != api.CodeUnauthorized || e.HTTPStatus() != 401 {
		t.Fatalf("the old token's failure: %v, want 401", err)
	}
	if _, _, err := f.st.SysGet(ctx, instanceErrorKey("web", "vm-1")); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("the old token's failure recorded for the new holder: %v", err)
	}
	// Nor does a report without a failure clear the new holder's.
	now := f.s.auth.lookup(second.Token).principal()
	cur := in
	now.reportAs(&cur)
	if err := f.s.recordFailure(ctx, "web", rep, cur, now); err != nil {
		t.Fatal(err)
	}
	rep.Error = ""
	if err := f.s.recordFailure(ctx, "web", rep, in, old); err == nil {
		t.Fatal("the old token cleared the new holder's failure")
	}
	if _, _, err := f.st.SysGet(ctx, instanceErrorKey("web", "vm-1")); err != nil {
		t.Fatalf("the new holder's failure: %v", err)
	}
	f.reportedAfter(agent, 1)
	if got, _ := f.record("web", "vm-1"); got.Applied != 0 || got.Remote == "192.0.2.1" || !got.EnrolledAt.Equal(second.Enrolled) {
		t.Fatalf("the new holder's record %+v after the old token's report", got)
	}
}

// A failure of a running rollout's candidate, reported with the token of an instance drawn into
// its cohort, halts it at once. The instance's old token, replaced since (forgotten and enrolled
// by another agent) but still held by a replica that has not learned it, named the instance and
// an enrollment before the start: its failure halted the rollout for a machine that no longer
// holds the name. It is refused (401) and the rollout runs on.
func TestEnroll_StaleTokenFailureHaltsNoRollout(t *testing.T) {
	f := newFixture(t)
	f.put("appliances/web/port", "80")
	enrollFleet(t, f, 5)
	var st api.RolloutStatus
	f.must(f.do("PUT", "/v1/kv/appliances/web/port?canary=10%25&bake=1h", "bad"), 202, &st)
	canary := st.Cohort[0]
	v := viewOf(t, f, canary)
	old := f.s.auth.lookup(instanceToken(t, f, canary)).principal()
	f.must(f.do("DELETE", "/v1/appliances/web/instances/"+canary, ""), 200, nil)
	f.enroll(f.token, "web", canary)

	in := api.Instance{Appliance: "web", Instance: canary, LastSeen: time.Now().UTC(), Remote: "192.0.2.1", Rollout: v.Rollout}
	old.reportAs(&in)
	rep := api.Report{Instance: canary, Revision: v.Revision, Rollout: v.Rollout, Error: "exit status 1", Stage: api.StageCommand}
	err := f.s.recordFailure(context.Background(), "web", rep, in, old)
	var e *api.Error
	if !errors.As(err, &e) || e.HTTPStatus() != 401 || !strings.Contains(e.Message, "enrolled again") {
		t.Fatalf("the old token's failure: %v, want 401 saying the instance was enrolled again", err)
	}
	if st := rolloutStatus(t, f); st.State != api.RolloutRunning {
		t.Fatalf("the old token's failure ended the rollout: %+v", st)
	}
}
