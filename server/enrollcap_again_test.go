package server

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// At the cap, enrollments of names the agent token has enrolled already (their holders asking
// again, their answers lost; or new machines taking over stale names) take no new place, and
// so many at once are not refused as over it: each counted a place for every other one under
// way, though none of them adds an instance token, and all but one were refused with 409
// "token … has enrolled 2 instances, the limit".
func TestEnroll_CapCountsAgainNoNamesTwice(t *testing.T) {
	const max = 3
	f := newFixture(t, func(c *Config) { c.MaxInstances = max; c.RateLimit = 1000 })
	agent := f.newToken(api.TokenRequest{Name: "agent-web", Appliance: "web"})
	key := func(i int) string { return fmt.Sprintf("%064d", i) }
	body := func(i int) string { return fmt.Sprintf(`{"instance":"vm-%d"}`, i) }
	for i := range max {
		f.must(f.doToken(agent, "POST", "/v1/appliances/web/enroll", body(i), api.HeaderEnrollKey, key(i)), 201, nil)
	}
	f.s.enrollRetryAge = 0
	for round := range 5 {
		var wg sync.WaitGroup
		start := make(chan struct{})
		got := make([]resp, max)
		for i := range max {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				got[i] = f.doQuietMethod(agent, "POST", "/v1/appliances/web/enroll", body(i), api.HeaderEnrollKey, key(i))
			}()
		}
		close(start)
		wg.Wait()
		for i, r := range got {
			if r.StatusCode != 201 {
				t.Fatalf("round %d: vm-%d's holder asking again at the cap: %d %s", round, i, r.StatusCode, strings.TrimSpace(string(r.body)))
			}
		}
	}
	if got := f.s.auth.enrolledBy("agent-web", ""); got != max {
		t.Fatalf("agent-web has %d instance tokens, want %d", got, max)
	}
}
