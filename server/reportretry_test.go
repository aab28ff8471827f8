package server

import (
	"context"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/testutil"
	"github.com/shoelace-dev/shoelace/internal/testutil/faultproxy"
)

// replicaWithFreezableStore returns a replica whose store reaches etcd through p with a
// request timeout of 1 s, and a replica of the same store reaching it directly.
func replicaWithFreezableStore(t *testing.T) (a, b *fixture, p *faultproxy.Proxy) {
	t.Helper()
	cfg := testutil.StoreConfig(t)
	a = newFixtureOn(t, testutil.OpenStore(t, cfg))
	p = faultproxy.Start(t, cfg.Endpoints[0])
	b = newFixtureOn(t, throughProxy(t, cfg, p))
	return a, b, p
}

// A batch of reports that the store did not take (etcd away for a moment) is written once the
// store is back, without the agents reporting again: an agent that follows a stream reports
// only when it applies a change, and its record stayed behind for good (a rollout waiting on
// it halted at its deadline).
func TestReports_FailedWriteIsTriedAgain(t *testing.T) {
	parallelShared(t)
	a, b, p := replicaWithFreezableStore(t)
	rev := a.put("appliances/web/x", "1")
	waitFor(t, "replica b to see the write", func() bool { return b.s.hub.current() >= rev })

	p.Down() // refused, not held: a write is not applied later
	b.s.reports.note(&api.Instance{Appliance: "web", Instance: "vm-1", Token: "agent-web", Applied: rev, LastSeen: time.Now().UTC()}, nil, "")
	time.Sleep(3 * time.Second) // its write failed: the store's request timeout is 1 s here
	if got := listRecords(t, a.st, "web"); len(got) != 0 {
		t.Fatalf("records written while etcd was away: %v", got)
	}
	p.Up()
	waitFor(t, "the report written once etcd is back", func() bool { return listRecords(t, a.st, "web")["vm-1"].Applied == rev })
}

// A report above the replica's revision that the store cannot judge when it arrives (etcd
// frozen: the replica cannot ask whether the revision exists) is queued, and the writer asks:
// a real one is written, a forged one left out. Both were ignored.
func TestReports_UnjudgedReportJudgedByTheWriter(t *testing.T) {
	parallelShared(t)
	a, b, p := replicaWithFreezableStore(t)
	rev := a.put("appliances/web/x", "1")
	waitFor(t, "replica b to see the write", func() bool { return b.s.hub.current() >= rev })
	time.Sleep(2 * storeRevCheckEvery) // past what b last learnt of the store's revision

	p.Freeze()
	later := a.put("appliances/web/x", "2") // b's watch does not bring it: it is frozen
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	now := time.Now().UTC()
	b.s.takeReport(ctx, &api.Instance{Appliance: "web", Instance: "real", Token: "agent-web", Applied: later, LastSeen: now}, nil, "")
	b.s.takeReport(ctx, &api.Instance{Appliance: "web", Instance: "forged", Token: "agent-web", Applied: later + 1000, LastSeen: now}, nil, "")
	p.Thaw()
	waitFor(t, "the real report written", func() bool { return listRecords(t, a.st, "web")["real"].Applied == later })
	if got := listRecords(t, a.st, "web"); len(got) != 1 {
		t.Fatalf("records %v, want only the real one", got)
	}
}

// Reports put back after a failed write go before those queued since; a later report of the
// same instance, queued meanwhile, wins and keeps the candidate the earlier one applied.
func TestReporter_RequeueKeepsLaterReports(t *testing.T) {
	r := newReporter(100, time.Minute)
	r.every = 0 // a's later report is queued at once (else it waits for its time, and wins then)
	now := time.Now().UTC()
	in := func(name string, applied int64) *api.Instance {
		return &api.Instance{Appliance: "web", Instance: name, Applied: applied, LastSeen: now}
	}
	r.note(in("a", 1), nil, "r1")
	r.note(in("b", 1), nil, "")
	var b reportBatcher
	if n := r.take(&b); n != 2 {
		t.Fatalf("took %d", n)
	}
	failed := append([]pendingReport(nil), b.reports...)
	r.note(in("c", 1), nil, "")
	r.note(in("a", 2), nil, "") // later than the failed one of a
	r.requeue(failed)
	b = reportBatcher{}
	r.take(&b)
	var got []string
	for _, p := range b.reports {
		got = append(got, p.in.Instance)
		if p.in.Instance == "a" && (p.in.Applied != 2 || p.candidate != "r1") {
			t.Errorf("a: applied %d, candidate %q; want the later report (2) with the candidate r1", p.in.Applied, p.candidate)
		}
	}
	if want := []string{"b", "c", "a"}; len(got) != 3 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Errorf("order %v, want %v", got, want)
	}
}
