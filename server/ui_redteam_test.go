package server

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// The holder of an agent token (on every VM of a fleet, in its baked image) enrolls as many
// instance tokens as it likes: each signing in once must not count as a token of its own at the
// cap of sessions, where the token holding the most loses its oldest; the admin's one session
// stays.
func TestUI_InstanceTokenFloodKeepsOthers(t *testing.T) {
	f := newFixture(t)
	uiSeed(f)
	victim := newUIBrowser(t, f.srv.URL, nil)
	victim.signIn(f.token)
	agent := f.newToken(api.TokenRequest{Name: "web-agent", Appliance: "web-frontend"})
	var enrolled []string
	for i := range 3 {
		enrolled = append(enrolled, f.enroll(agent, "web-frontend", fmt.Sprintf("vm-%d", i)).Token)
	}
	waitFor(t, "the instance tokens in the cache", func() bool {
		return f.s.auth.byNameRecord(instanceTokenName("web-frontend", "vm-2")) != nil
	})
	// Sessions of as many more instance tokens of the same agent token as fill the cap (the
	// rate limit spreads their enrollments and sign-ins over minutes), one each.
	for i := range uiMaxSessions - 1 {
		inst := fmt.Sprintf("filler-%d", i)
		f.s.ui.create(&tokenRecord{Name: instanceTokenName("web-frontend", inst), Hash: fmt.Sprintf("%064x", i),
			Appliance: "web-frontend", Instance: inst, Parent: "web-agent"}, time.Now())
	}
	for _, tok := range enrolled {
		newUIBrowser(t, f.srv.URL, nil).signIn(tok)
	}
	if n := len(f.s.ui.m); n != uiMaxSessions {
		t.Fatalf("%d sessions, want the cap %d", n, uiMaxSessions)
	}
	mustStatus(t, victim.get("/ui/store"), http.StatusOK)
}
