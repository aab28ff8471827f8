package server

import (
	"net/http"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// An API path ending in '/' has an empty last segment, which no route has: it is 400 before any
// token is read, as a path with an empty segment elsewhere is (/v1/appliances//instances).
// /v1/appliances/ was an unknown route instead: 401 without a token, 404 with one. A KV path's
// trailing '/' is a prefix's, and a listing of it (or of the root) is still answered.
func TestPaths_TrailingSlashRefusedBeforeTheToken(t *testing.T) {
	f := newFixture(t)
	f.put("appliances/web/port", "80")
	for _, p := range []string{"/v1/appliances/", "/v1/appliances/web/", "/v1/tokens/", "/v1/appliances/web/instances/", "/v1/"} {
		for _, token := range []string{"", f.token} {
			r := f.doToken(token, "GET", p, "")
			f.mustErr(r, http.StatusBadRequest, api.CodeInvalidRequest, "ends in '/'")
		}
	}
	var l api.List
	f.must(f.do("GET", "/v1/kv/appliances/?recurse", ""), 200, &l)
	if len(l.Entries) != 1 {
		t.Fatalf("listing of appliances/: %+v", l)
	}
	f.must(f.do("GET", "/v1/kv/?recurse&keys", ""), 200, nil)
	f.must(f.do("GET", "/v1/appliances", ""), 200, nil)
}
