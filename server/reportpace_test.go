package server

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// An instance token that alternates its X-Shoelace-Applied between two revisions, on requests
// made as fast as its rate limit lets it, has its record written once a reportEvery at most,
// not at every report window: each write is a revision that etcd keeps until it compacts. The
// latest report is written when its time is up. The first report of a running rollout's
// candidate by an instance of its cohort is written at once all the same (the gate waits for
// it); the next ones wait as any.
func TestReports_AlternatingAppliedIsPaced(t *testing.T) {
	f := newFixture(t)
	first := f.put("appliances/web/port", "80")
	second := f.put("appliances/web/port", "81")
	agent := f.newToken(api.TokenRequest{Name: "web-fleet", Appliance: "web"})
	tok := f.enroll(agent, "web", "vm-0").Token
	poll := func(applied int64, rollout string) {
		t.Helper()
		hdr := []string{api.HeaderInstance, "vm-0", api.HeaderApplied, fmt.Sprint(applied)}
		if rollout != "" {
			hdr = append(hdr, api.HeaderRollout, rollout)
		}
		f.must(f.doToken(tok, "GET", "/v1/appliances/web", "", hdr...), 200, nil)
	}
	recorded := func(applied int64, rollout string) func() bool {
		return func() bool {
			in, ok := f.record("web", "vm-0")
			return ok && in.Applied == applied && in.Rollout == rollout
		}
	}
	poll(first, "")
	waitFor(t, "the first report recorded", recorded(first, ""))

	ctx := context.Background()
	before, err := f.st.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var last int64
	for i := 0; time.Since(start) < 1500*time.Millisecond; i++ {
		last = []int64{second, first}[i%2]
		poll(last, "")
		time.Sleep(20 * time.Millisecond) // within the token's rate limit
	}
	elapsed := time.Since(start)
	waitFor(t, "the latest report recorded", recorded(last, ""))
	after, err := f.st.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if most := int64(elapsed/reportEvery) + 2; after-before > most {
		t.Errorf("reports alternating for %v took %d revisions; want at most %d (one a %v)", elapsed, after-before, most, reportEvery)
	}

	waitFor(t, "no report waiting", func() bool {
		f.s.reports.mu.Lock()
		defer f.s.reports.mu.Unlock()
		return len(f.s.reports.later) == 0 && len(f.s.reports.pending) == 0
	})
	// From now on a report that is no rollout's candidate waits an hour.
	f.s.reports.mu.Lock()
	f.s.reports.every = time.Hour
	f.s.reports.mu.Unlock()
	var st api.RolloutStatus
	f.must(f.do("PUT", "/v1/kv/appliances/web/port?canary=100%25&manual", "8080"), http.StatusAccepted, &st)
	var v api.View
	f.must(f.doToken(tok, "GET", "/v1/appliances/web", "", api.HeaderInstance, "vm-0"), 200, &v)
	if v.Rollout != st.ID {
		t.Fatalf("vm-0 is not served the candidate: %+v", v)
	}
	poll(v.Revision, st.ID)
	waitFor(t, "the first report of the candidate recorded", recorded(v.Revision, st.ID))
	waitFor(t, "the gate counting it", func() bool {
		got := rolloutStatus(t, f)
		return len(got.Instances) == 1 && got.Instances[0].State == "applied"
	})
	// Alternating the rollout's header is paced as any change.
	_, wrote, err := f.st.SysGet(ctx, instanceRecordKey("web", "vm-0"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if i%2 == 0 {
			poll(second, "")
		} else {
			poll(v.Revision, st.ID)
		}
	}
	time.Sleep(3 * reportWindow)
	if _, now, err := f.st.SysGet(ctx, instanceRecordKey("web", "vm-0")); err != nil || now != wrote {
		t.Errorf("the record was written again (revision %d, then %d; %v) within the hour", wrote, now, err)
	}
}

// A report put back after a failed write, of an instance whose later report waits for its time,
// gives way to that one, which keeps the candidate the earlier one applied; the reports waiting
// are written when the server stops (release), their time up or not.
func TestReporter_RequeueGivesWayToAReportWaitingItsTime(t *testing.T) {
	r := newReporter(100, time.Minute)
	r.every = time.Hour
	now := time.Now().UTC()
	r.note(&api.Instance{Appliance: "web", Instance: "a", Applied: 1, LastSeen: now}, nil, "r1")
	var b reportBatcher
	if n := r.take(&b); n != 1 {
		t.Fatalf("took %d", n)
	}
	failed := append([]pendingReport(nil), b.reports...)
	r.note(&api.Instance{Appliance: "web", Instance: "a", Applied: 2, LastSeen: now}, nil, "")
	if n := r.queued(); n != 0 {
		t.Fatalf("%d queued: a report within the hour of the last is", n)
	}
	r.requeue(failed)
	if n := r.queued(); n != 0 {
		t.Fatalf("%d queued after the requeue: the earlier report took the later's place", n)
	}
	r.release()
	if n := r.take(&b); n != 1 || b.reports[0].in.Applied != 2 || b.reports[0].candidate != "r1" {
		t.Fatalf("took %d: %+v; want a's later report (2) with the candidate r1", n, b.reports)
	}
}
