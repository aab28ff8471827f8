package server

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// An instance whose report of the candidate reached the store after the abort read the
// reports, but before the end was written, and whose report of the live view (it went back to
// it) reached the store before the abort counted the late reports, is shown applied by the
// aborted rollout (before, pending: the reporter had found the rollout still running, and the
// abort counted the reports as they were by then, the live view's). The abort is held at both
// points (endHook), which a loaded machine reached now and then in
// TestRollout_ReportRacingTheEndCounts.
func TestRollout_ReportWrittenWhileTheEndIsWrittenCounts(t *testing.T) {
	f := newFixture(t)
	n, st, candidate := candidateOnOneVM(t, f)

	reached, goOn, stop := make(chan bool), make(chan struct{}), make(chan struct{})
	t.Cleanup(func() { close(stop) })
	f.s.endHook = func(name string, written bool) {
		select {
		case reached <- written:
		case <-stop:
			return
		}
		select {
		case <-goOn:
		case <-stop:
		}
	}
	aborted := make(chan string, 1)
	go func() {
		req, _ := http.NewRequest("POST", f.srv.URL+"/v1/appliances/web/rollout", strings.NewReader(`{"action":"abort"}`))
		req.Header.Set("Authorization", "Bearer "+f.token)
		req.Header.Set("Content-Type", "application/json")
		res, err := testClient.Do(req)
		if err != nil {
			aborted <- err.Error()
			return
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		aborted <- fmt.Sprintf("%d %s", res.StatusCode, b)
	}()
	recorded := func(rollout string, applied int64) func() bool {
		return func() bool {
			var ins api.Instances
			f.must(f.do("GET", "/v1/appliances/web/instances", ""), 200, &ins)
			return len(ins.Instances) == 1 && ins.Instances[0].Rollout == rollout && ins.Instances[0].Applied == applied
		}
	}
	if written := <-reached; written {
		t.Fatal("the end was written before the hook held it")
	}
	// The abort has read the reports: the candidate's reaches the store now.
	report(t, f, n, candidate, "")
	waitFor(t, "the report of the candidate recorded", recorded(st.ID, candidate.Revision))
	goOn <- struct{}{}
	if written := <-reached; !written {
		t.Fatal("the end was not written")
	}
	// The end is written: the instance goes back to the live view, and reports it.
	live := viewOf(t, f, n)
	if live.Rollout != "" {
		t.Fatalf("%s still gets the candidate after the abort: %+v", n, live)
	}
	report(t, f, n, live, "")
	waitFor(t, "the report of the live view recorded", recorded("", live.Revision))
	goOn <- struct{}{}
	if got := <-aborted; !strings.HasPrefix(got, "200 ") {
		t.Fatalf("abort: %s", got)
	}
	got := rolloutStatus(t, f)
	if got.State != api.RolloutAborted || len(got.Instances) != 1 || got.Instances[0].State != "applied" {
		t.Fatalf("aborted rollout: %+v, want %s applied (it reported the candidate before the abort)", got, n)
	}
}

// An instance whose report of the candidate and a later report of it that says less (a view
// read with X-Shoelace-Instance alone says it applied revision 0) were taken while the
// rollout ran, and written together after it was aborted, is shown applied by the aborted
// rollout: the batch keeps the revision the candidate's report said it applied (before, it
// kept the candidate with the later report's revision, 0, and the instance stayed pending).
// A loaded machine made this batch now and then in TestRollout_ReportRacingTheEndCounts.
func TestRollout_LaterReportInTheBatchKeepsTheCandidateApplied(t *testing.T) {
	f := newFixture(t)
	n, st, candidate := candidateOnOneVM(t, f)
	f.must(f.do("POST", "/v1/appliances/web/rollout", `{"action":"abort"}`, "Content-Type", "application/json"), 200, nil)

	// The reports as takeReport queued them while the rollout ran (a reporter of the test's
	// own: the server's writes its batches when it will), then written and counted as the
	// server's reporter does.
	enrolled := st.Started.Add(-time.Second)
	in := func(applied int64, rollout string) *api.Instance {
		return &api.Instance{Appliance: "web", Instance: n, Applied: applied, Rollout: rollout, LastSeen: time.Now().UTC(),
			Token: "instance:web:" + n, Enrolled: true, EnrolledAt: &enrolled}
	}
	r := newReporter(100, time.Minute)
	r.note(in(candidate.Revision, st.ID), nil, st.ID)
	r.note(in(0, ""), nil, "")
	var b reportBatcher
	if got := r.take(&b); got != 1 {
		t.Fatalf("took %d reports, want 1", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f.s.lateApplied(ctx, b.reports)
	got := rolloutStatus(t, f)
	if got.State != api.RolloutAborted || len(got.Instances) != 1 || got.Instances[0].State != "applied" {
		t.Fatalf("aborted rollout: %+v, want %s applied (it reported the candidate applied)", got, n)
	}
}

// candidateOnOneVM starts a manual rollout of appliance web to all of one enrolled instance,
// and returns the instance, the rollout and the candidate's view once the instance is given it.
func candidateOnOneVM(t *testing.T, f *fixture) (string, api.RolloutStatus, api.View) {
	t.Helper()
	f.put("appliances/web/port", "80")
	n := enrollFleet(t, f, 1)[0]
	var st api.RolloutStatus
	f.must(f.do("PUT", "/v1/kv/appliances/web/port?canary=100%25&manual", "81"), http.StatusAccepted, &st)
	waitFor(t, "the candidate", func() bool { return viewOf(t, f, n).Rollout == st.ID })
	return n, st, viewOf(t, f, n)
}
