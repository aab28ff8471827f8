package server

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// A report without failure clears the instance's failure on any replica: one that started
// after the failure was recorded (a restart), and one that learns of it from the store (the
// instance's reports go to another replica behind the load balancer). Before, only the replica
// that recorded a failure cleared it, from its memory: after a restart, or a failure taken by
// another replica, `shoelace appliance instances` showed the old error for good once the agent
// had recovered.
func TestReports_CleanReportClearsAFailureRecordedElsewhere(t *testing.T) {
	f := newFixture(t)
	agent := f.newToken(api.TokenRequest{Name: "agent-web", Appliance: "web"})
	rev := f.put("appliances/web/a", "1")
	tok := f.enroll(agent, "web", "vm-1").Token
	report := func(g *fixture, failure string) {
		t.Helper()
		body := fmt.Sprintf(`{"instance":"vm-1","applied":%d,"error":%q,"stage":"command","revision":%d}`, rev, failure, rev)
		g.must(g.doToken(tok, "POST", "/v1/appliances/web/report", body, "Content-Type", "application/json"), 200, nil)
	}
	recorded := func() bool {
		_, _, err := f.st.SysGet(context.Background(), instanceErrorKey("web", "vm-1"))
		if err != nil && !errors.Is(err, api.ErrNotFound) {
			t.Fatal(err)
		}
		return err == nil
	}
	shown := func(g *fixture) string {
		t.Helper()
		var l api.Instances
		g.must(g.do("GET", "/v1/appliances/web/instances", ""), 200, &l)
		for _, in := range l.Instances {
			if in.Instance == "vm-1" {
				return in.Error
			}
		}
		t.Fatalf("vm-1 is not listed: %+v", l)
		return ""
	}

	// Recorded by the first replica; the second starts after it.
	report(f, "boom")
	if !recorded() || shown(f) != "boom" {
		t.Fatalf("the failure is not recorded: %q", shown(f))
	}
	g := newFixtureOn(t, f.st)
	g.token = f.token
	report(g, "")
	if recorded() {
		t.Errorf("a replica started after the failure did not clear it with a report without one")
	}
	if e := shown(g); e != "" {
		t.Errorf("after the agent recovered, its instance still shows the error %q", e)
	}

	// Recorded by the first replica while the second runs: the second learns of it from the
	// store's watch.
	report(f, "boom again")
	deadline := time.Now().Add(20 * time.Second)
	for recorded() {
		if time.Now().After(deadline) {
			t.Fatalf("reports without failure through another replica never cleared the failure: %q", shown(g))
		}
		report(g, "")
		time.Sleep(20 * time.Millisecond)
	}
	if e := shown(f); e != "" {
		t.Errorf("after the agent recovered, its instance still shows the error %q", e)
	}
}
