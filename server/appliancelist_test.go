package server

import (
	"slices"
	"strings"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// GET /v1/appliances lists what the console lists: the appliances whose view the token may
// read, and those whose own keys it may read or write without a grant on shared/. A pipeline
// token made with --write appliances/web alone (or --read appliances/web) was shown web in the
// console and not by the API, and so not by shoelace appliance ls, whose --help said otherwise.
func TestAppliances_ListIsTheConsolesRule(t *testing.T) {
	f := newFixture(t)
	f.put("shared/dns", "1.1.1.1")
	f.put("appliances/web/a", "1")
	f.put("appliances/web-frontend/a", "1")
	f.put("appliances/db/a", "1")
	for _, c := range []struct {
		req  api.TokenRequest
		want []string
	}{
		{api.TokenRequest{Name: "web-writer", Write: []string{"appliances/web"}}, []string{"web"}},
		{api.TokenRequest{Name: "web-reader", Read: []string{"appliances/web"}}, []string{"web"}},
		{api.TokenRequest{Name: "web-pipeline", Read: []string{"shared"}, Write: []string{"appliances/web"}}, []string{"web"}},
		{api.TokenRequest{Name: "shared-only", Read: []string{"shared"}}, []string{}},
		{api.TokenRequest{Name: "db-agents", Appliance: "db"}, []string{"db"}},
		{api.TokenRequest{Name: "all-own", Read: []string{"appliances"}}, []string{"db", "web", "web-frontend"}},
	} {
		tok := f.newToken(c.req)
		var list api.Appliances
		f.must(f.doToken(tok, "GET", "/v1/appliances", ""), 200, &list)
		if !slices.Equal(list.Appliances, c.want) {
			t.Errorf("token %s: GET /v1/appliances = %v, want %v", c.req.Name, list.Appliances, c.want)
		}
		b := newUIBrowser(t, f.srv.URL, nil)
		b.signIn(tok)
		page := string(b.get("/ui/").body)
		for _, n := range []string{"db", "web", "web-frontend"} {
			shown := strings.Contains(page, `href="/ui/appliances/`+n+`"`)
			if shown != slices.Contains(c.want, n) {
				t.Errorf("token %s: the console shows %s: %v; the API lists %v", c.req.Name, n, shown, list.Appliances)
			}
		}
	}
}
