package server

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/api"
)

func TestTxn_AllOrNothing(t *testing.T) {
	f := newFixture(t)
	old := f.put("shared/old", "x")
	f.put("appliances/web/gone/a", "1")
	f.put("appliances/web/gone/b", "2")
	f.put("appliances/web-frontend/gone", "keep")

	body := fmt.Sprintf(`{"ops":[{"op":"put","key":"shared/new","value":"n"},{"op":"delete","key":"shared/old"},{"op":"delete","key":"appliances/web/gone","recurse":true}],"guards":[{"key":"shared/old","mod_revision":%d},{"key":"shared/new","mod_revision":0}]}`, old)
	var w api.WriteResult
	r := f.do("POST", "/v1/txn", body)
	f.must(r, 200, &w)
	if w.Revision <= old || r.index() != w.Revision {
		t.Fatalf("txn %+v index %d", w, r.index())
	}
	if want := []string{"appliances/web-frontend/gone", "shared/new"}; !slices.Equal(f.keys(), want) {
		t.Fatalf("after txn: %v, want %v", f.keys(), want)
	}

	// A failed guard is 409 naming the key, and nothing is applied.
	body = `{"ops":[{"op":"put","key":"shared/other","value":"o"}],"guards":[{"key":"shared/new","mod_revision":1}]}`
	f.mustErr(f.do("POST", "/v1/txn", body), 409, api.CodeConflict, "shared/new")
	body = `{"ops":[{"op":"put","key":"shared/other","value":"o"}],"guards":[{"key":"shared/new","mod_revision":0}]}`
	f.mustErr(f.do("POST", "/v1/txn", body), 409, api.CodeConflict, "shared/new")
	if want := []string{"appliances/web-frontend/gone", "shared/new"}; !slices.Equal(f.keys(), want) {
		t.Fatalf("after conflicts: %v, want %v", f.keys(), want)
	}
}

func TestTxn_BadBodies(t *testing.T) {
	f := newFixture(t, func(c *Config) {
		c.MaxTxnOps = 3
		c.MaxValueBytes = 100
		c.MaxBodyBytes = 2000
	})
	f.put("shared/keep", "k")
	put := func(k, v string) string { return fmt.Sprintf(`{"op":"put","key":%q,"value":%q}`, k, v) }
	cases := []struct {
		name, body string
		status     int
		code       string
		words      []string
	}{
		{"empty", ``, 400, api.CodeInvalidBody, []string{"empty"}},
		{"not json", `ops`, 400, api.CodeInvalidBody, nil},
		{"array body", `[1]`, 400, api.CodeInvalidBody, []string{"the body must be a JSON object, not a JSON array"}},
		{"no ops", `{"ops":[]}`, 400, api.CodeInvalidBody, []string{"no ops"}},
		{"null ops", `{"ops":null}`, 400, api.CodeInvalidBody, []string{"no ops"}},
		{"unknown field", `{"ops":[` + put("shared/a", "1") + `],"extra":1}`, 400, api.CodeInvalidBody, []string{"extra"}},
		{"unknown op field", `{"ops":[{"op":"put","key":"shared/a","value":"1","ttl":5}]}`, 400, api.CodeInvalidBody, []string{"ttl"}},
		{"trailing", `{"ops":[` + put("shared/a", "1") + `]} {}`, 400, api.CodeInvalidBody, []string{"after"}},
		{"bad op", `{"ops":[{"op":"get","key":"shared/a"}]}`, 400, api.CodeInvalidBody, []string{"put", "delete"}},
		{"bad key", `{"ops":[` + put("shared/a", "1") + `,` + put("shared//b", "2") + `]}`, 400, api.CodeInvalidKey, []string{"op 2", "empty"}},
		{"bad guard key", `{"ops":[` + put("shared/a", "1") + `],"guards":[{"key":"../x","mod_revision":0}]}`, 400, api.CodeInvalidKey, []string{"guard 1"}},
		{"negative guard", `{"ops":[` + put("shared/a", "1") + `],"guards":[{"key":"shared/a","mod_revision":-1}]}`, 400, api.CodeInvalidBody, []string{"mod_revision"}},
		{"delete with value", `{"ops":[{"op":"delete","key":"shared/keep","value":"v"}]}`, 400, api.CodeInvalidBody, []string{"no value"}},
		{"put recurse", `{"ops":[{"op":"put","key":"shared/a","value":"v","recurse":true}]}`, 400, api.CodeInvalidBody, []string{"recurse"}},
		{"delete root", `{"ops":[{"op":"delete","key":"","recurse":true}]}`, 400, api.CodeInvalidKey, []string{"root"}},
		{"bad utf8 value", "{\"ops\":[{\"op\":\"put\",\"key\":\"shared/a\",\"value\":\"\xff\"}]}", 400, api.CodeInvalidBody, []string{"UTF-8"}},
		{"lone surrogate value", `{"ops":[{"op":"put","key":"shared/a","value":"\ud800"}]}`, 400, api.CodeInvalidBody, []string{`\ud800`, "lone UTF-16 surrogate", "UTF-8 text"}},
		{"lone surrogate key", `{"ops":[{"op":"delete","key":"shared/\udfff"}]}`, 400, api.CodeInvalidBody, []string{"lone UTF-16 surrogate"}},
		{"key given twice", `{"ops":[{"op":"put","key":"shared/a","value":"1","key":"shared/b"}]}`, 400, api.CodeInvalidBody, []string{`member "key" is given twice`}},
		// encoding/json matches a member to a field regardless of case: "Key" was taken for
		// "key" and put shared/b, where every other reader of the body sees a put of shared/a.
		{"key given twice in another case", `{"ops":[{"op":"put","key":"shared/a","value":"1","Key":"shared/b"}]}`, 400, api.CodeInvalidBody, []string{`member "Key"`, `is not "key"`, "case-sensitive"}},
		{"ops with a long s", `{"opſ":[` + put("shared/a", "1") + `]}`, 400, api.CodeInvalidBody, []string{`member "opſ"`, `is not "ops"`}},
		{"value in capitals", `{"ops":[{"op":"put","key":"shared/a","VALUE":"1"}]}`, 400, api.CodeInvalidBody, []string{`member "VALUE"`, `is not "value"`}},
		{"ops in another case", `{"Ops":[` + put("shared/a", "1") + `]}`, 400, api.CodeInvalidBody, []string{`member "Ops"`, `is not "ops"`}},
		{"guard revision in another case", `{"ops":[` + put("shared/a", "1") + `],"guards":[{"key":"shared/keep","Mod_Revision":0}]}`, 400, api.CodeInvalidBody, []string{`member "Mod_Revision"`, `is not "mod_revision"`}},
		{"value too large", `{"ops":[` + put("shared/a", strings.Repeat("v", 101)) + `]}`, 413, api.CodeValueTooLarge, []string{"--max-value-bytes"}},
		{"too many ops", `{"ops":[` + put("shared/a", "1") + `,` + put("shared/b", "1") + `,` + put("shared/c", "1") + `,` + put("shared/d", "1") + `]}`, 413, api.CodeTooLarge, []string{"limit of 3"}},
		{"null value", `{"ops":[{"op":"put","key":"shared/keep","value":null}]}`, 400, api.CodeInvalidBody, []string{"op 1", "value is null"}},
		{"null recurse", `{"ops":[{"op":"delete","key":"shared/keep","recurse":null}]}`, 400, api.CodeInvalidBody, []string{"op 1", "recurse is null"}},
		{"null guard revision", `{"ops":[` + put("shared/a", "1") + `],"guards":[{"key":"shared/b","mod_revision":null}]}`, 400, api.CodeInvalidBody, []string{"guard 1", "mod_revision is null"}},
		{"guard without revision", `{"ops":[` + put("shared/a", "1") + `],"guards":[{"key":"shared/b"}]}`, 400, api.CodeInvalidBody, []string{"guard 1", "mod_revision is missing", "0: the key must not exist"}},
		{"body too large", `{"ops":[` + strings.Repeat(" ", 2000) + `]}`, 413, api.CodeBodyTooLarge, []string{"2000"}},
	}
	for _, c := range cases {
		r := f.do("POST", "/v1/txn", c.body)
		if r.StatusCode != c.status {
			t.Errorf("%s: status %d, want %d: %s", c.name, r.StatusCode, c.status, r.body)
			continue
		}
		f.mustErr(r, c.status, c.code, c.words...)
	}
	f.mustErr(f.do("POST", "/v1/txn", `{"ops":[`+put("shared/a", "1")+`]}`, "Content-Type", "text/plain"), 415, api.CodeUnsupportedType)
	if want := []string{"shared/keep"}; !slices.Equal(f.keys(), want) {
		t.Fatalf("bad txns changed keys: %v", f.keys())
	}
}

// curl -d and wget --post-data send application/x-www-form-urlencoded when no type is given:
// such a body is read as JSON (strictly), so that the curl line a user writes first works.
func TestJSONBodies_CurlDefaultContentType(t *testing.T) {
	f := newFixture(t)
	const form = "application/x-www-form-urlencoded"
	var w api.WriteResult
	f.must(f.do("POST", "/v1/txn", `{"ops":[{"op":"put","key":"shared/a","value":"1"}]}`, "Content-Type", form), 200, &w)
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"port":8080}}`, "Content-Type", form), 200, &w)
	var tok struct {
		Token string `json:"token"`
	}
	f.must(f.do("POST", "/v1/tokens", `{"name":"ci","read":["shared"]}`, "Content-Type", form), 201, &tok)
	if tok.Token == "" {
		t.Fatalf("token create with %s answered no secret", form)
	}
	if want := []string{"appliances/web/port", "shared/a"}; !slices.Equal(f.keys(), want) {
		t.Fatalf("keys = %v, want %v", f.keys(), want)
	}
	// Still JSON only: a form body or a YAML body without its type is refused, and the
	// apply says how to send YAML.
	f.mustErr(f.do("POST", "/v1/txn", "ops=1", "Content-Type", form), 400, api.CodeInvalidBody, "not valid")
	f.mustErr(f.do("PUT", "/v1/appliances/web", "keys:\n  port: 8081\n", "Content-Type", form), 400, api.CodeInvalidBody, "Content-Type: application/yaml")
	f.mustErr(f.do("PUT", "/v1/appliances/web", "keys:\n  port: 8081\n"), 400, api.CodeInvalidBody, "Content-Type: application/yaml")
	f.mustErr(f.do("PUT", "/v1/appliances/web", "keys:\n  port: 8081\n", "Content-Type", "application/json"), 400, api.CodeInvalidBody, "JSON")
	f.mustErr(f.do("POST", "/v1/txn", `{"ops":[{"op":"put","key":"shared/b","value":"1"}]}`, "Content-Type", "text/plain"), 415, api.CodeUnsupportedType)
	if want := []string{"appliances/web/port", "shared/a"}; !slices.Equal(f.keys(), want) {
		t.Fatalf("refused bodies changed keys: %v", f.keys())
	}
}

// A put op without "value" puts the empty value, as "value":"" does (DESIGN.md, shoelace txn):
// older clients left an empty string out of their JSON.
func TestTxn_PutWithoutValueIsEmpty(t *testing.T) {
	f := newFixture(t)
	f.must(f.do("POST", "/v1/txn", `{"ops":[{"op":"put","key":"shared/empty"},{"op":"put","key":"shared/also","value":""}]}`), 200, nil)
	for _, k := range []string{"shared/empty", "shared/also"} {
		var kv api.KV
		f.must(f.do("GET", "/v1/kv/"+k, ""), 200, &kv)
		if kv.Value != "" || kv.Version != 1 {
			t.Errorf("%s: %+v, want the empty value, version 1", k, kv)
		}
	}
}
