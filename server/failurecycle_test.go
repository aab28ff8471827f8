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

// An instance that alternates failures with reports without one (each failure deferred by
// the budget, each clear dropping it) took a new share of its agent token's failure budget,
// and left a timer, at each failure: the token's budget went into debt without bound, and the
// failure of another instance of the token waited behind failures never written.
func TestReports_FailureClearCyclesDoNotRunUpTheBudget(t *testing.T) {
	f := newFixture(t)
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	agent := f.newToken(api.TokenRequest{Name: "agent-web", Appliance: "web"})
	cycler := f.enroll(agent, "web", "vm-cycle").Token
	legit := f.enroll(agent, "web", "vm-legit").Token
	// 4 KiB a second after a burst of 8 KiB.
	f.s.reports.failureBytes = newLimiterSet(4<<10, 8<<10)
	report := func(tok, inst, text string) {
		t.Helper()
		body := fmt.Sprintf(`{"instance":%q,"revision":1,"applied":0,"error":%q,"stage":"command"}`, inst, text)
		f.must(f.doToken(tok, "POST", "/v1/appliances/web/report", body, "Content-Type", "application/json"), 200, nil)
	}
	for i := range 200 {
		report(cycler, "vm-cycle", fmt.Sprintf("boom %d %s", i, strings.Repeat("x", 1800)))
		report(cycler, "vm-cycle", "")
	}
	start := time.Now()
	report(legit, "vm-legit", "the legitimate failure")
	deadline := start.Add(10 * time.Second)
	for {
		_, _, err := f.st.SysGet(context.Background(), instanceErrorKey("web", "vm-legit"))
		if err == nil {
			break
		}
		if !errors.Is(err, api.ErrNotFound) {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			var debt time.Duration
			l := f.s.reports.failureBytes
			l.mu.Lock()
			for _, e := range l.m {
				debt = max(debt, e.lim.ReserveN(time.Now(), 1).DelayFrom(time.Now()))
			}
			l.mu.Unlock()
			t.Fatalf("the failure of another instance of the token not recorded after %v (its token's budget in debt for %v)", time.Since(start).Round(time.Second), debt.Round(time.Second))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A failure that halts a rollout is written at once; a failure the same instance reported
// before it, still waiting for the budget, was written when its time came, over it: the
// instance listed an old failure in place of the one that halted the rollout.
func TestReports_HaltingFailureIsNotOverwrittenByAnOlderOne(t *testing.T) {
	parallelShared(t)
	f := newFixture(t)
	f.put("appliances/web/port", "80")
	fleet := enrollFleet(t, f, 10)
	// 2 KiB a second after a burst of 4 KiB: most of the fleet's failures below wait.
	f.s.reports.failureBytes = newLimiterSet(2<<10, 4<<10)
	for _, n := range fleet {
		report(t, f, n, viewOf(t, f, n), "old failure of "+n+" "+strings.Repeat("x", 1000))
	}
	var st api.RolloutStatus
	f.must(f.do("PUT", "/v1/kv/appliances/web/port?canary=10%25&bake=1h", "bad"), 202, &st)
	canary := st.Cohort[0]
	report(t, f, canary, viewOf(t, f, canary), "candidate broke nginx")
	if st = rolloutStatus(t, f); st.State != api.RolloutHalted {
		t.Fatalf("a failure of the candidate did not halt the rollout: %+v", st)
	}
	// Until every failure waiting has had its time.
	var wait time.Duration
	l := f.s.reports.failureBytes
	l.mu.Lock()
	for _, e := range l.m {
		wait = max(wait, e.lim.ReserveN(time.Now(), 1).DelayFrom(time.Now()))
	}
	l.mu.Unlock()
	time.Sleep(wait + 500*time.Millisecond)
	var list api.Instances
	f.must(f.do("GET", "/v1/appliances/web/instances", ""), 200, &list)
	for _, in := range list.Instances {
		if in.Instance == canary && in.Error != "candidate broke nginx" {
			t.Fatalf("%v after the halt, %s lists the failure %.40q, not the one that halted the rollout", wait.Round(time.Second), canary, in.Error)
		}
	}
}
