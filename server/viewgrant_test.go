package server

import (
	"strings"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// A view is shared/ overlaid by the appliance's keys, so reading it takes a grant on both (or the
// appliance's agent token). A pipeline token made with --write appliances/web alone, which applies
// and reads web's keys one by one, was told only that it "may not read the view of appliance web":
// the refusal names what the token lacks and how to grant it.
func TestAuth_ViewRefusalNamesTheMissingGrant(t *testing.T) {
	f := newFixture(t)
	f.put("shared/dns", "1.1.1.1")
	f.put("appliances/web/a", "1")
	writer := f.newToken(api.TokenRequest{Name: "writer", Write: []string{"appliances/web"}})
	shared := f.newToken(api.TokenRequest{Name: "shared-reader", Read: []string{"shared"}})
	both := f.newToken(api.TokenRequest{Name: "both", Read: []string{"shared"}, Write: []string{"appliances/web"}})

	f.must(f.doToken(writer, "GET", "/v1/kv/appliances/web/a", ""), 200, nil)
	f.mustErr(f.doToken(writer, "GET", "/v1/appliances/web", ""), 403, api.CodeForbidden,
		`token "writer" may not read the view of appliance "web"`, "shared/ overlaid by appliances/web/",
		"may not read shared/", "--read shared")
	f.mustErr(f.doToken(shared, "GET", "/v1/appliances/web", ""), 403, api.CodeForbidden,
		`token "shared-reader" may not read the view of appliance "web"`, "may not read appliances/web/",
		"--read appliances/web")
	f.must(f.doToken(both, "GET", "/v1/appliances/web", ""), 200, nil)
}

// An agent token of another appliance is told no grant to add: it reads its own view only.
func TestAuth_ViewRefusalOfAnotherAppliancesAgent(t *testing.T) {
	f := newFixture(t)
	f.put("appliances/web/a", "1")
	f.put("appliances/db/a", "1")
	agent := f.newToken(api.TokenRequest{Name: "db-agents", Appliance: "db"})
	r := f.doToken(agent, "GET", "/v1/appliances/web", "")
	f.mustErr(r, 403, api.CodeForbidden, `token "db-agents" may not read the view of appliance "web"`)
	if m := r.errMessage(); strings.Contains(m, "--read") {
		t.Errorf("an agent token is told to add a grant: %q", m)
	}
}
