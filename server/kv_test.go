package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/api"
)

func TestKV_PutGetDelete(t *testing.T) {
	f := newFixture(t)
	value := "line one\nünïcødé \t{\"json\": true}\n"
	rev := f.put("shared/motd", value)

	r := f.do("GET", "/v1/kv/shared/motd", "")
	var kv api.KV
	f.must(r, 200, &kv)
	if kv.Key != "shared/motd" || kv.Value != value || kv.ModRevision != rev || kv.CreateRevision != rev || kv.Version != 1 {
		t.Fatalf("got %+v, want key shared/motd value %q at revision %d", kv, value, rev)
	}
	if r.index() < rev {
		t.Fatalf("X-Shoelace-Index %d < write revision %d", r.index(), rev)
	}

	f.mustErr(f.do("GET", "/v1/kv/shared/absent", ""), 404, api.CodeNotFound, "shared/absent")

	var del api.DeleteResult
	r = f.do("DELETE", "/v1/kv/shared/motd", "")
	f.must(r, 200, &del)
	if del.Deleted != 1 || del.Revision <= rev || r.index() != del.Revision {
		t.Fatalf("delete: %+v, index %d", del, r.index())
	}
	f.mustErr(f.do("GET", "/v1/kv/shared/motd", ""), 404, api.CodeNotFound)
	f.mustErr(f.do("DELETE", "/v1/kv/shared/motd", ""), 404, api.CodeNotFound)
	if k := f.keys(); len(k) != 0 {
		t.Fatalf("keys left: %v", k)
	}
}

// GET /v1/kv/{key} with an unknown parameter names every parameter of the route: it named
// recurse and keys alone, and steered users away from ?history.
func TestKV_UnknownQueryParameterNamesHistory(t *testing.T) {
	f := newFixture(t)
	f.put("shared/ntp", "pool")
	f.mustErr(f.do("GET", "/v1/kv/shared/ntp?bogus=1", ""), 400, api.CodeInvalidRequest, `unknown query parameter "bogus"`, "[recurse keys], or history with limit")
	f.must(f.do("GET", "/v1/kv/shared/ntp?history&limit=5", ""), 200, nil)
}

func TestKV_EmptyValue(t *testing.T) {
	f := newFixture(t)
	f.put("shared/empty", "")
	var kv api.KV
	f.must(f.do("GET", "/v1/kv/shared/empty", ""), 200, &kv)
	if kv.Value != "" || kv.Version != 1 {
		t.Fatalf("got %+v", kv)
	}
}

func TestKV_CAS(t *testing.T) {
	f := newFixture(t)
	var w api.WriteResult
	f.must(f.do("PUT", "/v1/kv/shared/a?cas=0", "one"), 200, &w)
	f.mustErr(f.do("PUT", "/v1/kv/shared/a?cas=0", "two"), 409, api.CodeConflict, "shared/a")
	f.mustErr(f.do("PUT", fmt.Sprintf("/v1/kv/shared/a?cas=%d", w.Revision+100), "two"), 409, api.CodeConflict, "shared/a")
	var w2 api.WriteResult
	f.must(f.do("PUT", fmt.Sprintf("/v1/kv/shared/a?cas=%d", w.Revision), "three"), 200, &w2)
	for _, bad := range []string{"abc", "-1", "1.5", ""} {
		f.mustErr(f.do("PUT", "/v1/kv/shared/a?cas="+bad, "four"), 400, api.CodeInvalidRequest, "cas")
	}
	f.mustErr(f.do("PUT", "/v1/kv/shared/a?cas=1&cas=2", "four"), 400, api.CodeInvalidRequest, "cas")
	var kv api.KV
	f.must(f.do("GET", "/v1/kv/shared/a", ""), 200, &kv)
	if kv.Value != "three" || kv.ModRevision != w2.Revision {
		t.Fatalf("after conflicts: %+v, want three at %d", kv, w2.Revision)
	}
}

func TestKV_WholeSegmentPrefixes(t *testing.T) {
	f := newFixture(t)
	f.put("appliances/web/a", "1")
	f.put("appliances/web/b/c", "2")
	f.put("appliances/web-frontend/a", "3")
	f.put("appliances/webx", "4")
	f.put("shared/x", "5")

	var l api.List
	r := f.do("GET", "/v1/kv/appliances/web?recurse", "")
	f.must(r, 200, &l)
	var got []string
	for _, e := range l.Entries {
		got = append(got, e.Key+"="+e.Value)
	}
	if want := []string{"appliances/web/a=1", "appliances/web/b/c=2"}; !slices.Equal(got, want) {
		t.Fatalf("list appliances/web: %v, want %v", got, want)
	}
	if l.Revision <= 0 || r.index() != l.Revision {
		t.Fatalf("list revision %d, index %d", l.Revision, r.index())
	}

	l = api.List{}
	f.must(f.do("GET", "/v1/kv/appliances/web/?recurse&keys", ""), 200, &l)
	if want := []string{"appliances/web/a", "appliances/web/b/c"}; !slices.Equal(l.Keys, want) || len(l.Entries) != 0 {
		t.Fatalf("keys appliances/web/: %+v", l)
	}

	l = api.List{}
	f.must(f.do("GET", "/v1/kv/?recurse&keys=true", ""), 200, &l)
	if len(l.Keys) != 5 {
		t.Fatalf("root listing: %v", l.Keys)
	}
	l = api.List{}
	f.must(f.do("GET", "/v1/kv?recurse", ""), 200, &l)
	if len(l.Entries) != 5 {
		t.Fatalf("root listing without slash: %+v", l)
	}

	var d api.DeleteResult
	f.must(f.do("DELETE", "/v1/kv/appliances/web?recurse", ""), 200, &d)
	if d.Deleted != 2 {
		t.Fatalf("recursive delete of appliances/web deleted %d, want 2", d.Deleted)
	}
	if want := []string{"appliances/web-frontend/a", "appliances/webx", "shared/x"}; !slices.Equal(f.keys(), want) {
		t.Fatalf("after delete: %v, want %v", f.keys(), want)
	}
	f.mustErr(f.do("DELETE", "/v1/kv/appliances/web?recurse", ""), 404, api.CodeNotFound)

	f.mustErr(f.do("DELETE", "/v1/kv/?recurse", ""), 400, api.CodeInvalidKey, "root")
	f.mustErr(f.do("DELETE", "/v1/kv?recurse", ""), 400, api.CodeInvalidKey, "root")
	f.mustErr(f.do("GET", "/v1/kv/shared/x?keys", ""), 400, api.CodeInvalidRequest, "recurse")
	f.mustErr(f.do("GET", "/v1/kv/shared/x?recurse=maybe", ""), 400, api.CodeInvalidRequest, "recurse")
	f.mustErr(f.do("GET", "/v1/kv/shared/x?bogus=1", ""), 400, api.CodeInvalidRequest, "bogus")
	if len(f.keys()) != 3 {
		t.Fatalf("refused requests changed keys: %v", f.keys())
	}
}

// An empty listing still carries its list: {"revision","entries":[]} (or "keys":[]), so that
// a client reading .entries finds an empty list instead of nothing.
func TestKV_EmptyListingHasItsList(t *testing.T) {
	f := newFixture(t)
	f.put("appliances/web-frontend/a", "1")
	for _, tc := range []struct{ path, field, other string }{
		{"/v1/kv/appliances/web?recurse", "entries", "keys"},
		{"/v1/kv/appliances/web?recurse&keys", "keys", "entries"},
	} {
		r := f.do("GET", tc.path, "")
		var m map[string]json.RawMessage
		f.must(r, 200, &m)
		if got := string(m[tc.field]); got != "[]" {
			t.Errorf("GET %s: %q is %q, want [] (body %s)", tc.path, tc.field, got, r.body)
		}
		if _, ok := m[tc.other]; ok {
			t.Errorf("GET %s: body has %q too: %s", tc.path, tc.other, r.body)
		}
		if string(m["revision"]) == "" || r.index() <= 0 {
			t.Errorf("GET %s: no revision: %s", tc.path, r.body)
		}
	}
}

func TestKV_InvalidKeys(t *testing.T) {
	f := newFixture(t)
	long := strings.Repeat("a", 129)
	many := strings.TrimSuffix(strings.Repeat("a/", 33), "/")
	huge := strings.TrimSuffix(strings.Repeat(strings.Repeat("b", 100)+"/", 6), "/")
	cases := []struct {
		path string
		rule string
	}{
		{"a//b", "empty"},
		{"a/./b", `"."`},
		{"a/../b", `".."`},
		{"a/b/", "empty"},
		{"-a", "must start with a letter or digit"},
		{"a%20b", "only letters, digits"},
		{"a%2Fb%2F", "empty"},
		{"caf%C3%A9", "only letters, digits"},
		{"a/" + long, "longer than 128 bytes"},
		{many, "more than 32 segments"},
		{huge, "longer than 512 bytes"},
		{"", "must not be empty"},
		{"%FF", "must start with a letter"},
		{"a%FF", "byte 0xff"},
	}
	for _, c := range cases {
		for _, m := range []string{"GET", "PUT", "DELETE"} {
			r := f.do(m, "/v1/kv/"+c.path, "v")
			f.mustErr(r, 400, api.CodeInvalidKey, c.rule)
		}
	}
	f.mustErr(f.do("GET", "/v1/kv/a//b?recurse", ""), 400, api.CodeInvalidKey, "empty")
	f.mustErr(f.do("GET", "/v1/kv/-x/?recurse", ""), 400, api.CodeInvalidKey, "prefix")
	if k := f.keys(); len(k) != 0 {
		t.Fatalf("invalid keys wrote %v", k)
	}
}

func TestKV_Values(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MaxValueBytes = 1000 })
	f.mustErr(f.do("PUT", "/v1/kv/shared/bin", "ok\xff\xfe"), 400, api.CodeInvalidValue, "UTF-8")
	f.mustErr(f.do("PUT", "/v1/kv/shared/big", strings.Repeat("x", 1001)), 413, api.CodeValueTooLarge, "--max-value-bytes", "1000")

	// A body without Content-Length is cut at the limit too.
	req, _ := http.NewRequest("PUT", f.srv.URL+"/v1/kv/shared/big", strings.NewReader(strings.Repeat("y", 5000)))
	req.ContentLength = -1
	req.Header.Set("Authorization", "Bearer "+f.token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 413 {
		t.Fatalf("chunked oversized value: status %d, want 413", res.StatusCode)
	}
	if k := f.keys(); len(k) != 0 {
		t.Fatalf("refused values wrote %v", k)
	}
	f.put("shared/max", strings.Repeat("z", 1000))
}

func TestRoutes_NotFoundAndMethod(t *testing.T) {
	f := newFixture(t)
	f.mustErr(f.do("GET", "/v2/nothing", ""), 404, api.CodeNotFound, "no such route")
	// The path as sent: decoded, /v1%2Fkv/shared would name /v1/kv/shared, a route that is.
	r404 := f.do("GET", "/v1%2Fkv/shared", "")
	f.mustErr(r404, 404, api.CodeNotFound, `no such route: GET "/v1%2Fkv/shared"`)
	f.mustErr(f.do("GET", "/v1/appliances/web/extra", ""), 404, api.CodeNotFound)
	r := f.do("POST", "/v1/kv/shared/x", "v")
	f.mustErr(r, 405, api.CodeMethod, "POST")
	if allow := r.Header.Get("Allow"); !strings.Contains(allow, "GET") || !strings.Contains(allow, "PUT") || !strings.Contains(allow, "DELETE") {
		t.Fatalf("Allow %q", allow)
	}
	f.mustErr(f.do("DELETE", "/v1/txn", ""), 405, api.CodeMethod)
	f.mustErr(f.do("GET", "/v1/appliances/../kv/x", ""), 400, api.CodeInvalidRequest)
	f.mustErr(f.do("GET", "/v1/nothing", ""), 404, api.CodeNotFound, "no such route")
	f.mustErr(f.do("GET", "/v1", ""), 404, api.CodeNotFound, "no such route")

	// Without a token, every /v1 request is 401, a route that is not there too (before, it was
	// 404, outside the unauthenticated rate limit); elsewhere an unknown route is 404.
	for _, rq := range []struct{ method, path string }{
		{"GET", "/v1/nothing"}, {"GET", "/v1"}, {"POST", "/v1/kv/shared/x"}, {"PATCH", "/v1/txn"}, {"GET", "/v1/kv/shared/x"},
	} {
		f.mustErr(f.doToken("", rq.method, rq.path, ""), 401, api.CodeUnauthorized)
	}
	f.mustErr(f.doToken("", "GET", "/v2/nothing", ""), 404, api.CodeNotFound, "no such route")
	f.must(f.doToken("", "GET", "/v1/openapi.json", ""), 200, nil)
}

func TestHealthAndMetrics(t *testing.T) {
	f := newFixture(t)
	var h Health
	r := f.doToken("", "GET", "/health", "")
	f.must(r, 200, &h)
	if h.Status != "ok" || r.Header.Get(api.HeaderStore) != f.st.ID() {
		t.Fatalf("health %+v, store header %q", h, r.Header.Get(api.HeaderStore))
	}
	var d DepsHealth
	f.must(f.doToken("", "GET", "/health/deps", ""), 200, &d)
	if !d.Reachable || !d.Leader {
		t.Fatalf("deps %+v", d)
	}
	f.put("shared/m", "1")
	r = f.doToken("", "GET", "/metrics", "")
	if r.StatusCode != 200 {
		t.Fatalf("metrics status %d", r.StatusCode)
	}
	for _, name := range []string{"shoelace_http_requests_total", `route="PUT /v1/kv/{key...}"`, "shoelace_long_polls_open", "shoelace_view_reads_total", "shoelace_build_info", "go_goroutines", "shoelace_store_revision"} {
		if !strings.Contains(string(r.body), name) {
			t.Fatalf("metrics lack %s", name)
		}
	}
}
