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
