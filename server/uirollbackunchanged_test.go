package server

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// A console rollback to the state the appliance holds writes nothing and says so: its API
// handler returns the unchanged answer (an *unchangedLater, so that its shares of the body
// budget are given back before the wait for the hub), which uiCall answers as apiHandler does,
// not as an error.
func TestUI_RollbackThatChangesNothing(t *testing.T) {
	f := newFixture(t)
	uiSeed(f)
	good := f.put("appliances/web-frontend/mode", "good")
	b := newUIBrowser(t, f.srv.URL, nil)
	c := b.signIn(f.token)
	n := len(f.history("/v1/appliances/web-frontend/releases").Releases)
	var v api.View
	f.must(f.do("GET", "/v1/appliances/web-frontend", ""), 200, &v)
	r := b.post("/ui/appliances/web-frontend/rollback", url.Values{"csrf": {c}, "to": {jsonNum(good)}, "cas": {jsonNum(good)}, "step": {"apply"}})
	mustStatus(t, r, http.StatusSeeOther)
	if loc := r.Header.Get("Location"); !strings.HasPrefix(loc, "/ui/appliances/web-frontend?unchanged=") {
		t.Fatalf("after a rollback to the state held: Location %q, want ?unchanged=", loc)
	}
	if m := len(f.history("/v1/appliances/web-frontend/releases").Releases); m != n {
		t.Fatalf("%d releases after a rollback that changes nothing, %d before", m, n)
	}
}
