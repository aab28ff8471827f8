package server

import (
	"net/http"
	"strings"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// The store's page needs a read, write or admin token, as GET /v1/status does: the session of an
// agent's token (or of an instance's) is not offered a link to it, which answered only 403.
func TestUI_StoreLinkOnlyForTokensThatMayReadIt(t *testing.T) {
	f := newFixture(t)
	uiSeed(f)
	agent := f.newToken(api.TokenRequest{Name: "web-agent", Appliance: "web-frontend"})
	for _, c := range []struct {
		who, token string
		store      int
	}{
		{"admin", f.token, 200},
		{"reader", f.newToken(api.TokenRequest{Name: "web-reader", Read: []string{"appliances/web-frontend", "shared"}}), 200},
		{"agent", agent, http.StatusForbidden},
		{"instance", f.enroll(agent, "web-frontend", "vm-1").Token, http.StatusForbidden},
	} {
		b := newUIBrowser(t, f.srv.URL, nil)
		b.signIn(c.token)
		mustStatus(t, b.get("/ui/store"), c.store)
		for _, p := range []string{"/ui/", "/ui/appliances/web-frontend", "/ui/store"} {
			page := b.get(p)
			if got, want := strings.Contains(string(page.body), `href="/ui/store"`), c.store == 200; got != want {
				t.Errorf("%s: %s links to the store's page: %v, want %v", c.who, p, got, want)
			}
		}
	}
}
