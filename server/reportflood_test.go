package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/testutil"
)

// Reports wait to be written as one per instance, the latest winning: a flood of reports from
// one token (100 instances, each reporting 50 times while the writer waits out its window) and
// a fleet reporting together (a shared/ change) are all recorded, none dropped for want of room.
func TestReports_FloodOfOneTokenCrowdsOutNone(t *testing.T) {
	parallelShared(t)
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

// An enrolled instance that reports failures as fast as its rate limit lets it (each with
// another text) has its failure record written once a second at most, not once per report:
// each write is a revision that etcd keeps until it compacts (an hour), and one instance token
// wrote 100 a second of up to 2 KiB each, a fleet's tokens together enough to fill etcd's
// quota within the hour. The last failure is written when its second is up; a report without
// failure still clears the record at once, and the next failure is written at once after it.
func TestReports_FailureFloodOfOneInstanceIsPaced(t *testing.T) {
	f := newFixture(t)
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	agent := f.newToken(api.TokenRequest{Name: "agent-web", Appliance: "web"})
	tok := f.enroll(agent, "web", "vm-1").Token
	report := func(text string) {
		t.Helper()
		f.must(f.doToken(tok, "POST", "/v1/appliances/web/report", fmt.Sprintf(`{"instance":"vm-1","revision":1,"applied":0,"error":%q,"stage":"command"}`, text), "Content-Type", "application/json"), 200, nil)
	}
	failure := func() string {
		t.Helper()
		data, _, err := f.st.SysGet(context.Background(), instanceErrorKey("web", "vm-1"))
		if errors.Is(err, api.ErrNotFound) {
			return ""
		}
		if err != nil {
			t.Fatal(err)
		}
		var in api.Instance
		if err := json.Unmarshal(data, &in); err != nil {
			t.Fatal(err)
		}
		return in.Error
	}
	ctx := context.Background()
	before, err := f.st.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	const reports = 200
	for i := range reports {
		report(fmt.Sprintf("boom %d %s", i, strings.Repeat("x", 1500)))
	}
	elapsed := time.Since(start)
	after, err := f.st.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// One failure write a second, and the instance record's own (the report writer's) beside it.
	if most := 2*int64(elapsed/time.Second+1) + 2; after-before > most {
		t.Errorf("%d failure reports in %v took %d revisions; want at most %d", reports, elapsed, after-before, most)
	}
	last := fmt.Sprintf("boom %d ", reports-1)
	waitFor(t, "the last failure recorded", func() bool { return strings.HasPrefix(failure(), last) })
	report("")
	if got := failure(); got != "" {
		t.Fatalf("after a report without failure, the record says %q", got)
	}
	report("boom again")
	if got := failure(); got != "boom again" {
		t.Fatalf("a failure right after the clear: recorded %q", got)
	}
	time.Sleep(1100 * time.Millisecond)
	report("boom last")
	if got := failure(); got != "boom last" {
		t.Fatalf("a failure a second later: recorded %q", got)
	}
}

// The failure records of the instances of one agent token together are written within a
// budget of bytes a second (failureBudget), the rest as it allows: one holder of the fleet's
// token can enroll --max-instances instances, and each one's pacing (a write a second) then
// multiplied. 300 instance tokens reporting a new 2 KB failure each second filled a 32 MiB
// etcd quota in 20 s (NOSPACE: every write of the store refused). Every instance's latest
// failure is still recorded, later.
func TestReports_FailuresOfOneTokenWithinABudget(t *testing.T) {
	parallelShared(t)
	f := newFixture(t)
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	agent := f.newToken(api.TokenRequest{Name: "agent-web", Appliance: "web"})
	const instances = 10
	toks := make([]string, instances)
	for i := range toks {
		toks[i] = f.enroll(agent, "web", fmt.Sprintf("vm-%d", i)).Token
	}
	// 4 KiB a second after a burst of 8 KiB: four records of 2 KB at once, the others over
	// the next seconds.
	f.s.reports.failureBytes = newLimiterSet(4<<10, 8<<10)
	recorded := func() int {
		t.Helper()
		n := 0
		for i := range instances {
			if _, _, err := f.st.SysGet(context.Background(), instanceErrorKey("web", fmt.Sprintf("vm-%d", i))); err == nil {
				n++
			} else if !errors.Is(err, api.ErrNotFound) {
				t.Fatal(err)
			}
		}
		return n
	}
	for i, tok := range toks {
		body := fmt.Sprintf(`{"instance":"vm-%d","revision":1,"applied":0,"error":%q,"stage":"command"}`, i, strings.Repeat("x", 1800))
		f.must(f.doToken(tok, "POST", "/v1/appliances/web/report", body, "Content-Type", "application/json"), 200, nil)
	}
	if n := recorded(); n > 4 {
		t.Errorf("%d failure records of 2 KB written at once, past a budget of 8 KiB", n)
	}
	waitFor(t, "every instance's failure recorded", func() bool { return recorded() == instances })
}

// A failure that one replica took and wrote late (its agent token's budget made it wait), after
// the instance's next report, without failure, went to another replica, is cleared: that
// replica found no record to clear when it took the report, and the stale failure stayed in
// the instance's record until its next failure or change (appliance instances listed it).
func TestReports_FailureWrittenLateAfterACleanReportElsewhereIsCleared(t *testing.T) {
	parallelShared(t)
	cfg := testutil.StoreConfig(t)
	a := newFixtureOn(t, testutil.OpenStore(t, cfg))
	b := newFixtureOn(t, testutil.OpenStore(t, cfg))
	a.must(a.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	agent := a.newToken(api.TokenRequest{Name: "agent-web", Appliance: "web"})
	const fill = 6
	toks := make([]string, fill)
	for i := range toks {
		toks[i] = a.enroll(agent, "web", fmt.Sprintf("fill-%d", i)).Token
	}
	tok := a.enroll(agent, "web", "vm-1").Token
	a.s.reports.failureBytes = newLimiterSet(4<<10, 8<<10)
	report := func(f *fixture, tok, inst, text string) int {
		t.Helper()
		body := fmt.Sprintf(`{"instance":%q,"revision":1,"applied":0,"error":%q,"stage":"command"}`, inst, text)
		if text == "" {
			body = fmt.Sprintf(`{"instance":%q,"revision":1,"applied":1}`, inst)
		}
		r := f.doToken(tok, "POST", "/v1/appliances/web/report", body, "Content-Type", "application/json")
		r.Body.Close()
		return r.StatusCode
	}
	// The fleet fails on replica a, spending its budget: vm-1's failure waits for it.
	for i, tk := range toks {
		if code := report(a, tk, fmt.Sprintf("fill-%d", i), strings.Repeat("x", 1800)); code != 200 {
			t.Fatalf("report: %d", code)
		}
	}
	if code := report(a, tok, "vm-1", "vm-1 broken"); code != 200 {
		t.Fatalf("report: %d", code)
	}
	// vm-1 is mended at once, and its report goes to replica b.
	waitFor(t, "replica b takes vm-1's report", func() bool { return report(b, tok, "vm-1", "") == 200 })
	waitFor(t, "replica a writes vm-1's failure, its budget's time up", func() bool {
		a.s.reports.mu.Lock()
		defer a.s.reports.mu.Unlock()
		_, waiting := a.s.reports.paced["web/vm-1"]
		return !waiting
	})
	waitFor(t, "vm-1's stale failure cleared", func() bool {
		_, _, err := a.st.SysGet(context.Background(), instanceErrorKey("web", "vm-1"))
		if err != nil && !errors.Is(err, api.ErrNotFound) {
			t.Fatal(err)
		}
		return errors.Is(err, api.ErrNotFound)
	})
}

// A report without failure says a failure reported before it is stale only when both came from
// the same holder of the instance's name: a replica behind may take a report of a token
// replaced since (the name enrolled again), which says nothing of the new holder's failure.
// (Compared by enrollment time, the two holders of one second were one, and CI saw the new
// holder's failure deleted.)
func TestReports_StaleFailureOfItsOwnHolderOnly(t *testing.T) {
	r := newReporter(10, time.Minute)
	old, cur := &principal{record: []byte(`{"name":"instance:web:vm-1","hash":"aa"}`)}, &principal{record: []byte(`{"name":"instance:web:vm-1","hash":"bb"}`)}
	data, err := json.Marshal(failureRecord{Instance: api.Instance{Instance: "vm-1", Error: "boom"}, ReportedAt: time.Now().UnixNano(), Holder: holderOf(cur)})
	if err != nil {
		t.Fatal(err)
	}
	r.cleanTaken("web/vm-1", time.Now().Add(time.Second), holderOf(old))
	if r.staleFailure("web/vm-1", data) {
		t.Fatal("a clean report of the replaced token made the new holder's failure stale")
	}
	r.cleanTaken("web/vm-1", time.Now().Add(time.Second), holderOf(cur))
	if !r.staleFailure("web/vm-1", data) {
		t.Fatal("a later clean report of the same holder did not make its failure stale")
	}
}
