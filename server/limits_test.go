package server

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// as returns the fixture acting with token.
func (f *fixture) as(token string) *fixture {
	g := *f
	g.token = token
	return &g
}

// mustRetryAfter checks that a refusal says when to come back.
func mustRetryAfter(t testing.TB, r resp) {
	t.Helper()
	if ra, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || ra < 1 {
		t.Fatalf("%d without a Retry-After: %q", r.StatusCode, r.Header.Get("Retry-After"))
	}
}

// The defaults let one appliance token serve a 10,000-VM fleet on one replica: agents
// long-poll with wait=55s (about 180 requests/s), and a change wakes all of them at once.
func TestConfig_LimitDefaultsFitAFleet(t *testing.T) {
	const fleet = 10000
	c := DefaultConfig()
	if got := c.tokenRateLimit(); got < fleet/55*2 {
		t.Errorf("token ceiling %g requests/s, want at least twice the %d/s of a fleet's long-polls", got, fleet/55)
	}
	if burst := newAuthState(c).ceilings.burst; burst < fleet {
		t.Errorf("token ceiling burst %d, want at least a fleet woken at once (%d)", burst, fleet)
	}
	if c.MaxInstances < fleet || c.MaxWaiters < fleet {
		t.Errorf("max instances %d, max long-polls %d: want at least %d", c.MaxInstances, c.MaxWaiters, fleet)
	}
	c.RateLimit = 0
	if got := c.tokenRateLimit(); got != 0 {
		t.Errorf("--rate-limit 0 leaves a token ceiling of %g", got)
	}
	c.TokenRateLimit = 5
	if got := c.tokenRateLimit(); got != 0 {
		t.Errorf("--rate-limit 0 with --token-rate-limit 5 leaves a ceiling of %g, want every rate limit off", got)
	}
	for _, bad := range []func(*Config){
		func(c *Config) { c.TokenRateLimit = -1 },
		func(c *Config) { c.RateLimit = math.NaN() }, // passed "< 0" and turned every rate limit off
		func(c *Config) { c.RateLimit = math.Inf(1) },
		func(c *Config) { c.TokenRateLimit = math.NaN() },
		func(c *Config) { c.MaxInstances = 0 },
		func(c *Config) { c.MaxWaiters = 0 },
		func(c *Config) { c.MaxWaitersPerToken = -1 },
	} {
		c := DefaultConfig()
		bad(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "--") {
			t.Errorf("validate %+v: %v, want an error naming the flag", c, err)
		}
	}
}

// A new instance name per request does not multiply an agent token's rate limit: the token's
// requests, all instances together, stay under its ceiling.
func TestAuth_AgentTokenCeiling(t *testing.T) {
	f := newFixture(t, func(c *Config) {
		c.RateLimit = 1000     // per instance: never reached here
		c.TokenRateLimit = 0.5 // burst of 5, then one per 2 s
	})
	f.put("appliances/web/a", "1")
	agent := f.s.testToken(t, api.TokenRequest{Name: "agent", Appliance: "web"})
	var refused resp
	for i := range 20 {
		r := f.doToken(agent, "GET", "/v1/appliances/web", "", api.HeaderInstance, fmt.Sprintf("made-up-%d", i))
		if r.StatusCode == 429 {
			refused = r
			if i < 5 {
				t.Fatalf("refused after %d requests, the burst is 5", i)
			}
			break
		}
		f.must(r, 200, nil)
	}
	if refused.Response == nil {
		t.Fatal("20 requests, each with a new instance name, all answered: no per-token ceiling")
	}
	f.mustErr(refused, 429, api.CodeRateLimited, "--token-rate-limit", "agent")
	mustRetryAfter(t, refused)
	// The ceiling is per token: another agent token of the same appliance is served.
	other := f.s.testToken(t, api.TokenRequest{Name: "agent-2", Appliance: "web"})
	f.must(f.doToken(other, "GET", "/v1/appliances/web", "", api.HeaderInstance, "vm-1"), 200, nil)
}

// --rate-limit 0 turns every rate limit off, the agent tokens' ceiling included.
func TestAuth_RateLimitZeroTurnsTheCeilingOff(t *testing.T) {
	f := newFixture(t, func(c *Config) {
		c.RateLimit = 0
		c.TokenRateLimit = 0.001
		c.MaxInstances = 2
	})
	f.put("appliances/web/a", "1")
	agent := f.s.testToken(t, api.TokenRequest{Name: "agent", Appliance: "web"})
	for i := range 20 {
		f.must(f.doToken(agent, "GET", "/v1/appliances/web", "", api.HeaderInstance, fmt.Sprintf("vm-%d", i)), 200, nil)
	}
}

// An agent token may use at most --max-instances instance names at once on a replica: made-up
// names cannot grow the limiters without bound.
func TestAuth_InstancesPerTokenCapped(t *testing.T) {
	f := newFixture(t, func(c *Config) {
		c.RateLimit = 1000
		c.TokenRateLimit = 1e6
		c.MaxInstances = 3
	})
	f.put("appliances/web/a", "1")
	agent := f.s.testToken(t, api.TokenRequest{Name: "agent", Appliance: "web"})
	for _, in := range []string{"vm-1", "vm-2", "vm-3"} {
		f.must(f.doToken(agent, "GET", "/v1/appliances/web", "", api.HeaderInstance, in), 200, nil)
	}
	r := f.doToken(agent, "GET", "/v1/appliances/web", "", api.HeaderInstance, "vm-4")
	f.mustErr(r, 429, api.CodeRateLimited, "--max-instances", "agent")
	mustRetryAfter(t, r)
	// The names it has go on; another token has its own.
	f.must(f.doToken(agent, "GET", "/v1/appliances/web", "", api.HeaderInstance, "vm-1"), 200, nil)
	other := f.s.testToken(t, api.TokenRequest{Name: "agent-2", Appliance: "web"})
	f.must(f.doToken(other, "GET", "/v1/appliances/web", "", api.HeaderInstance, "vm-4"), 200, nil)
	// A name unused for a while is forgotten, and makes room.
	l := f.s.auth.limits
	l.mu.Lock()
	l.sweepLocked(time.Now().Add(limiterIdle + time.Minute))
	l.mu.Unlock()
	f.must(f.doToken(agent, "GET", "/v1/appliances/web", "", api.HeaderInstance, "vm-4"), 200, nil)
}

// The last-used times of revoked tokens are dropped.
func TestAuthState_LastUsedForgetsRevoked(t *testing.T) {
	a := newAuthState(Config{})
	for _, n := range []string{"ci", "ops"} {
		a.set(&tokenRecord{Name: n, Hash: hashSecret(n)}, 0)
		a.touch(n)
	}
	a.remove("ci", 0)
	a.touch("ops")
	if _, ok := a.used("ci"); ok {
		t.Fatal("the last-used time of a revoked token is kept")
	}
	if _, ok := a.used("ops"); !ok {
		t.Fatal("the last-used time of a token in use was dropped")
	}
	a.mu.RLock()
	n := len(a.lastUsed)
	a.mu.RUnlock()
	if n != 1 {
		t.Fatalf("%d last-used times for 1 token", n)
	}
}

// A holder of the fleet's shared appliance token cannot starve an enrolled instance: not by
// naming it (its per-instance limiter), nor by made-up names (the cap), nor by the ceiling.
func TestAuth_InstanceTokenNotStarvedByTheFleetToken(t *testing.T) {
	f := newFixture(t, func(c *Config) {
		c.RateLimit = 2        // burst of 2
		c.TokenRateLimit = 0.5 // ceiling burst of 5
		c.MaxInstances = 3
	})
	f.put("appliances/web/a", "1")
	agent := f.s.testToken(t, api.TokenRequest{Name: "agent", Appliance: "web"})
	vm := f.enroll(agent, "web", "vm-1").Token
	// The shared token spends vm-1's rate, the cap of names and the ceiling.
	for i := range 20 {
		f.doToken(agent, "GET", "/v1/appliances/web", "", api.HeaderInstance, "vm-1")
		f.doToken(agent, "GET", "/v1/appliances/web", "", api.HeaderInstance, fmt.Sprintf("made-up-%d", i))
	}
	f.mustErr(f.doToken(agent, "GET", "/v1/appliances/web", "", api.HeaderInstance, "vm-1"), 429, api.CodeRateLimited)
	// vm-1's own token is served, and limited on its own.
	f.must(f.doToken(vm, "GET", "/v1/appliances/web", ""), 200, nil)
	f.must(f.doToken(vm, "GET", "/v1/appliances/web", ""), 200, nil)
	f.mustErr(f.doToken(vm, "GET", "/v1/appliances/web", ""), 429, api.CodeRateLimited)
}

// Instance tokens enrolled by one agent token share a ceiling: enrolling many names must not
// multiply the agent token's ceiling by --max-instances.
func TestAuth_EnrolledInstancesShareACeiling(t *testing.T) {
	f := newFixture(t, func(c *Config) {
		c.RateLimit = 2        // burst of 2 per instance token
		c.TokenRateLimit = 0.5 // ceiling burst of 5
		c.MaxInstances = 50
	})
	f.put("appliances/web/a", "1")
	agent := f.s.testToken(t, api.TokenRequest{Name: "agent", Appliance: "web"})
	var vms []string
	for i := range 4 { // 4 enrollments fit under the ceiling's burst of 5
		var e api.Enrolled
		name := fmt.Sprintf("vm-%d", i)
		f.must(f.doToken(agent, "POST", "/v1/appliances/web/enroll", `{"instance":"`+name+`"}`, api.HeaderInstance, name), 201, &e)
		vms = append(vms, e.Token)
	}
	served := 0
	for _, vm := range vms {
		for range 2 {
			if r := f.doToken(vm, "GET", "/v1/appliances/web", ""); r.StatusCode == 200 {
				served++
			}
		}
	}
	if served > 5 { // the ceiling's burst
		t.Fatalf("4 instance tokens of one agent token were served %d requests at once, over the ceiling's burst of 5", served)
	}
}

// A refusal names the rate as the flag took it: %g wrote --rate-limit 1000000 as 1e+06.
func TestPerSecond(t *testing.T) {
	for rate, want := range map[float64]string{100: "100", 1e6: "1000000", 2.5e6: "2500000", 0.5: "0.5", 1000: "1000"} {
		if got := perSecond(rate); got != want {
			t.Errorf("perSecond(%v) = %q, want %q", rate, got, want)
		}
	}
}
