package server

import (
	"slices"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// An escaped '/' in a KV path is a '/' like a plain one: the key rules judge the decoded key.
// So the prefix "/" (plain "//" or "%2F", either case) is the root, as a grant's "/" is: a
// listing of it is the plain root listing of the keys the token may read, and a recursive delete
// of it is refused as the root's is. A double-escaped "%252F" is the text "%2F", never a '/'.
func TestKV_EscapedSlashInPath(t *testing.T) {
	f := newFixture(t)
	f.put("shared/a", "1")
	f.put("appliances/web/b", "2")
	f.put("appliances/db/c", "3")
	reader := f.newToken(api.TokenRequest{Name: "escaped-reader", Read: []string{"appliances/web"}})

	list := func(token, path string) []string {
		t.Helper()
		var l api.List
		f.must(f.doToken(token, "GET", path, ""), 200, &l)
		var keys []string
		for _, e := range l.Entries {
			keys = append(keys, e.Key)
		}
		return keys
	}
	for _, token := range []string{f.token, reader} {
		want := list(token, "/v1/kv/?recurse")
		if len(want) == 0 {
			t.Fatalf("root listing is empty")
		}
		for _, p := range []string{"/v1/kv/%2F?recurse", "/v1/kv/%2f?recurse", "/v1/kv//?recurse"} {
			if got := list(token, p); !slices.Equal(got, want) {
				t.Errorf("GET %s: %v, want %v (as /v1/kv/?recurse)", p, got, want)
			}
		}
	}
	if got := list(reader, "/v1/kv/%2F?recurse&keys"); got != nil {
		t.Errorf("&keys listing has entries: %v", got)
	}
	// Inside a key too, in either case.
	for _, p := range []string{"/v1/kv/appliances%2Fweb%2Fb", "/v1/kv/appliances%2fweb/b"} {
		var kv api.KV
		f.must(f.do("GET", p, ""), 200, &kv)
		if kv.Key != "appliances/web/b" || kv.Value != "2" {
			t.Errorf("GET %s: %+v", p, kv)
		}
	}
	if got := list(f.token, "/v1/kv/appliances%2Fweb%2F?recurse"); !slices.Equal(got, []string{"appliances/web/b"}) {
		t.Errorf("GET appliances%%2Fweb%%2F?recurse: %v", got)
	}

	// Where the rules refuse a '/', the escaped one is refused the same, naming the rule.
	for _, c := range []struct{ method, path, code, rule string }{
		{"GET", "/v1/kv/%2F", api.CodeInvalidKey, "empty"},
		{"PUT", "/v1/kv/%2F", api.CodeInvalidKey, "empty"},
		{"DELETE", "/v1/kv/%2F", api.CodeInvalidKey, "empty"},
		{"DELETE", "/v1/kv/%2F?recurse", api.CodeInvalidKey, "root"},
		{"DELETE", "/v1/kv//?recurse", api.CodeInvalidKey, "root"},
		{"GET", "/v1/kv/%2Fshared?recurse", api.CodeInvalidKey, "invalid prefix"},
		{"GET", "/v1/kv/%2Fshared?recurse", api.CodeInvalidKey, "empty"},
		{"GET", "/v1/kv/%2F%2F?recurse", api.CodeInvalidKey, "empty"},
		{"GET", "/v1/kv/shared%2F%2Fa", api.CodeInvalidKey, "empty"},
		{"PUT", "/v1/kv/shared%2Fx%2F", api.CodeInvalidKey, "empty"},
		{"GET", "/v1/kv/%252F?recurse", api.CodeInvalidKey, `"%2F"`},
		{"GET", "/v1/kv/shared%252Fa", api.CodeInvalidKey, "'%'"},
		{"PUT", "/v1/kv/shared%252Fa", api.CodeInvalidKey, "'%'"},
	} {
		f.mustErr(f.do(c.method, c.path, "v"), 400, c.code, c.rule)
	}
	if got := f.keys(); !slices.Equal(got, []string{"appliances/db/c", "appliances/web/b", "shared/a"}) {
		t.Fatalf("keys now %v", got)
	}
}

// An unclean KV path (one ServeMux would rewrite: "//", "." or "..", plain or escaped) is refused
// with the rule its key breaks, and with the prefix rule only where the path names a prefix: a
// recursive GET or DELETE. A PUT, a ?history read or ?recurse=false names a key, as the same
// request on a clean path does; it was called an invalid prefix whenever ?recurse was there.
func TestKV_UncleanPathNamesTheKeyRuleUnlessRecursive(t *testing.T) {
	f := newFixture(t)
	f.put("shared/a", "1")
	for _, c := range []struct{ method, path, rule string }{
		{"GET", "/v1/kv/shared//a?recurse", `invalid prefix "shared//a"`},
		{"GET", "/v1/kv/shared%2F%2Fa?recurse=true", `invalid prefix "shared//a"`},
		{"DELETE", "/v1/kv/shared/%2E%2E/a?recurse", `invalid prefix "shared/../a"`},
		{"GET", "/v1/kv/shared//a?recurse=false", `invalid key "shared//a"`},
		{"GET", "/v1/kv/shared//a?history&recurse", `invalid key "shared//a"`},
		{"PUT", "/v1/kv/shared//a?recurse", `invalid key "shared//a"`},
		{"PUT", "/v1/kv/shared%2F..%2Fa?recurse", `invalid key "shared/../a"`},
		{"DELETE", "/v1/kv/shared//a?recurse=0", `invalid key "shared//a"`},
		{"GET", "/v1/kv/shared//a", `invalid key "shared//a"`},
	} {
		f.mustErr(f.do(c.method, c.path, "v"), 400, api.CodeInvalidKey, c.rule)
	}
	if got := f.keys(); !slices.Equal(got, []string{"shared/a"}) {
		t.Fatalf("keys now %v", got)
	}
}
