package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/testutil"
)

// webSchema: nginx/port required, a port; nginx/host a hostname; nginx/timeout a duration;
// nginx/mode one of a, b; env matching ^(prod|dev)$.
const webSchema = `{
  "type": "object",
  "required": ["nginx"],
  "properties": {
    "nginx": {
      "type": "object",
      "required": ["port"],
      "properties": {
        "port": {"type": "string", "format": "port"},
        "host": {"type": "string", "format": "hostname"},
        "timeout": {"type": "string", "format": "duration"},
        "mode": {"enum": ["a", "b"]}
      }
    },
    "env": {"type": "string", "pattern": "^(prod|dev)$"}
  }
}`

func TestSchema_SetGetRemove(t *testing.T) {
	f := newFixture(t)
	f.mustErr(f.do("GET", "/v1/appliances/web/schema", ""), 404, api.CodeNotFound, "no schema")
	f.must(f.do("PUT", "/v1/appliances/web/schema", webSchema), 200, nil)
	r := f.do("GET", "/v1/appliances/web/schema", "")
	f.must(r, 200, nil)
	if string(r.body) != webSchema {
		t.Fatalf("schema read back %s", r.body)
	}

	// A token that may write the appliance may set its schema; one that may not, may not.
	w := f.newToken(api.TokenRequest{Name: "web-writer", Write: []string{"appliances/web"}})
	ro := f.newToken(api.TokenRequest{Name: "reader", Read: []string{"appliances/web"}})
	f.must(f.doToken(w, "PUT", "/v1/appliances/web/schema", webSchema), 200, nil)
	f.mustErr(f.doToken(w, "PUT", "/v1/appliances/db/schema", webSchema), 403, api.CodeForbidden)
	f.mustErr(f.doToken(ro, "PUT", "/v1/appliances/web/schema", webSchema), 403, api.CodeForbidden)
	f.mustErr(f.doToken(ro, "DELETE", "/v1/appliances/web/schema", ""), 403, api.CodeForbidden)
	f.must(f.doToken(ro, "GET", "/v1/appliances/web/schema", ""), 200, nil)

	f.must(f.do("DELETE", "/v1/appliances/web/schema", ""), 200, nil)
	f.mustErr(f.do("GET", "/v1/appliances/web/schema", ""), 404, api.CodeNotFound)
	f.mustErr(f.do("DELETE", "/v1/appliances/web/schema", ""), 404, api.CodeNotFound)

	// Set over keys that break it: set, with a warning that says how; over keys that fit: none.
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"nginx":{"port":"0"}}}`), 200, nil)
	var res api.SchemaResult
	f.must(f.do("PUT", "/v1/appliances/web/schema", webSchema), 200, &res)
	if res.Revision <= 0 || !strings.Contains(res.Warning, "break it") || !strings.Contains(res.Warning, "key nginx/port: format") {
		t.Fatalf("schema set over keys that break it: %+v", res)
	}
	f.must(f.do("DELETE", "/v1/appliances/web/schema", ""), 200, nil)
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"nginx":{"port":"80"}}}`), 200, nil)
	res = api.SchemaResult{}
	f.must(f.do("PUT", "/v1/appliances/web/schema", webSchema), 200, &res)
	if res.Revision <= 0 || res.Warning != "" {
		t.Fatalf("schema set over keys that fit: %+v", res)
	}
}

func TestSchema_InvalidSchemaRefused(t *testing.T) {
	f := newFixture(t)
	for _, c := range []struct{ name, schema, word string }{
		{"not JSON", `{"type": `, "not JSON"},
		{"bad type", `{"type": 12}`, "type"},
		{"bad pattern", `{"properties": {"a": {"pattern": "("}}}`, "pattern"},
		{"bad required", `{"required": "a"}`, "required"},
		{"ref to a file", `{"$ref": "file:///etc/passwd"}`, "may not refer"},
		{"ref to a URL", `{"$ref": "https://example.com/s.json"}`, "may not refer"},
		// The JSON decoder kept the last of a member given twice: the schema set required "b"
		// alone, not what its author read in the file.
		{"member twice", `{"type": "object", "required": ["a"], "required": ["b"]}`, `member "required" is given twice`},
		{"lone surrogate", `{"properties": {"a": {"const": "\ud800"}}}`, "lone UTF-16 surrogate"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f.mustErr(f.do("PUT", "/v1/appliances/web/schema", c.schema), 400, api.CodeInvalidSchema, "invalid schema", c.word)
		})
	}
	f.mustErr(f.do("GET", "/v1/appliances/web/schema", ""), 404, api.CodeNotFound)
}

func TestSchema_Formats(t *testing.T) {
	for _, c := range []struct {
		format, value string
		ok            bool
	}{
		{"port", "1", true}, {"port", "65535", true}, {"port", "0", false}, {"port", "65536", false},
		{"port", "080", false}, {"port", "-1", false}, {"port", "", false}, {"port", "80a", false},
		{"hostname", "web-1.example.com", true}, {"hostname", "bad_host!", false},
		{"duration", "1h30m", true}, {"duration", "30", false}, {"duration", "soon", false},
	} {
		sch, err := compileSchema([]byte(`{"format": "` + c.format + `"}`))
		if err != nil {
			t.Fatalf("compile: %v", err)
		}
		if err := sch.Validate(c.value); (err == nil) != c.ok {
			t.Errorf("%s %q: error %v, want ok %v", c.format, c.value, err, c.ok)
		}
	}
}

// schemaFixture is a fixture with appliance web valid under webSchema, and db without schema.
func schemaFixture(t *testing.T) *fixture {
	f := newFixture(t)
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"nginx":{"port":"80","mode":"a"},"env":"prod"}}`), 200, nil)
	f.must(f.do("PUT", "/v1/appliances/db", `{"keys":{"port":"nope"}}`), 200, nil)
	f.must(f.do("PUT", "/v1/appliances/web/schema", webSchema), 200, nil)
	return f
}

func TestSchema_EveryWriteKindIsChecked(t *testing.T) {
	f := schemaFixture(t)
	for _, c := range []struct {
		name, method, path, body string
		words                    []string
	}{
		{"apply bad port", "PUT", "/v1/appliances/web", `{"keys":{"nginx":{"port":"99999"}}}`, []string{"key nginx/port", "format"}},
		{"apply missing required", "PUT", "/v1/appliances/web", `{"keys":{"env":"prod"}}`, []string{"key nginx", "required"}},
		{"apply bad enum", "PUT", "/v1/appliances/web", `{"keys":{"nginx":{"port":"80","mode":"c"}}}`, []string{"key nginx/mode", "enum"}},
		{"apply bad pattern", "PUT", "/v1/appliances/web", `{"keys":{"nginx":{"port":"80"},"env":"qa"}}`, []string{"key env", "pattern"}},
		{"apply bad duration", "PUT", "/v1/appliances/web", `{"keys":{"nginx":{"port":"80","timeout":"5"}}}`, []string{"key nginx/timeout", "format"}},
		{"apply bad hostname", "PUT", "/v1/appliances/web", `{"keys":{"nginx":{"port":"80","host":"a b"}}}`, []string{"key nginx/host", "format"}},
		{"put bad port", "PUT", "/v1/kv/appliances/web/nginx/port", "http", []string{"key nginx/port", "format"}},
		{"put bad enum", "PUT", "/v1/kv/appliances/web/nginx/mode", "z", []string{"key nginx/mode", "enum"}},
		{"put value over a subtree", "PUT", "/v1/kv/appliances/web/nginx", "x", []string{"nginx", "cannot describe"}},
		{"delete required", "DELETE", "/v1/kv/appliances/web/nginx/port", "", []string{"key nginx/port", "required"}},
		{"delete subtree", "DELETE", "/v1/kv/appliances/web/nginx?recurse", "", []string{"key nginx", "required"}},
		{"delete appliance", "DELETE", "/v1/kv/appliances/web?recurse", "", []string{"key nginx", "required"}},
		{"delete every appliance", "DELETE", "/v1/kv/appliances?recurse", "", []string{"key nginx", "required"}},
		{"txn put", "POST", "/v1/txn", `{"ops":[{"op":"put","key":"shared/x","value":"1"},{"op":"put","key":"appliances/web/env","value":"staging"}]}`, []string{"key env", "pattern"}},
		{"txn delete", "POST", "/v1/txn", `{"ops":[{"op":"delete","key":"appliances/web/nginx/port"}]}`, []string{"key nginx/port", "required"}},
		{"txn delete recurse", "POST", "/v1/txn", `{"ops":[{"op":"delete","key":"appliances/web","recurse":true},{"op":"put","key":"appliances/db/port","value":"1"}]}`, []string{"key nginx", "required"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			before, _, err := f.st.List(context.Background(), "", false)
			if err != nil {
				t.Fatal(err)
			}
			f.mustErr(f.do(c.method, c.path, c.body), 422, api.CodeSchemaViolation, append([]string{`appliance "web"`}, c.words...)...)
			after, _, err := f.st.List(context.Background(), "", false)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(after) != fmt.Sprint(before) {
				t.Fatalf("a refused write changed the store:\nbefore %v\nafter  %v", before, after)
			}
		})
	}

	// An apply's dry run answers what the apply would.
	f.mustErr(f.do("PUT", "/v1/appliances/web?dry_run", `{"keys":{"nginx":{"port":"0"}}}`), 422, api.CodeSchemaViolation, "key nginx/port")
	f.must(f.do("PUT", "/v1/appliances/web?dry_run", `{"keys":{"nginx":{"port":"1"}}}`), 200, nil)

	// Valid writes of every kind go through.
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"nginx":{"port":"8080","host":"web.internal","timeout":"30s"},"env":"dev"}}`), 200, nil)
	f.must(f.do("PUT", "/v1/kv/appliances/web/nginx/port", "443"), 200, nil)
	f.must(f.do("PUT", "/v1/kv/appliances/web/extra/free", "anything"), 200, nil)
	f.must(f.do("DELETE", "/v1/kv/appliances/web/nginx/host", ""), 200, nil)
	f.must(f.do("DELETE", "/v1/kv/appliances/web/extra?recurse", ""), 200, nil)
	f.must(f.do("POST", "/v1/txn", `{"ops":[{"op":"put","key":"appliances/web/nginx/mode","value":"b"},{"op":"delete","key":"appliances/web/env"}]}`), 200, nil)
	want := map[string]string{"nginx/port": "443", "nginx/timeout": "30s", "nginx/mode": "b"}
	if got := ownKeys(f.view("web")); !maps.Equal(got, want) {
		t.Fatalf("web %v, want %v", got, want)
	}

	// Not checked: shared/ (even when it breaks nothing here), and appliances without a schema.
	f.must(f.do("PUT", "/v1/kv/shared/nginx", "x"), 200, nil)
	f.must(f.do("PUT", "/v1/kv/appliances/db/port", "still-nope"), 200, nil)
	f.must(f.do("PUT", "/v1/appliances/db", `{"keys":{"x":"y"}}`), 200, nil)

	// Without the schema, the refused writes go through.
	f.must(f.do("DELETE", "/v1/appliances/web/schema", ""), 200, nil)
	f.must(f.do("DELETE", "/v1/kv/appliances/web/nginx/port", ""), 200, nil)
}

// sendQuiet sends a request with f's token; a failure is a status 0 response (usable off the
// test goroutine).
func sendQuiet(f *fixture, method, path, body string) resp {
	req, err := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	if err != nil {
		return resp{Response: &http.Response{}, body: []byte(err.Error())}
	}
	req.Header.Set("Authorization", "Bearer "+f.token)
	res, err := testClient.Do(req)
	if err != nil {
		return resp{Response: &http.Response{Request: req}, body: []byte(err.Error())}
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return resp{Response: &http.Response{Request: req}, body: []byte(err.Error())}
	}
	return resp{Response: res, body: b}
}

// ownKeys is v's keys without shared/'s (the tests here write none that web has).
func ownKeys(v api.View) map[string]string {
	out := map[string]string{}
	for k, val := range v.Keys {
		if k != "nginx" { // shared/nginx, written late in the test
			out[k] = val
		}
	}
	return out
}

// TestSchema_ChangeWhileWritesStream swaps the schema for a stricter one while two replicas
// (each with its own schema cache) write to the appliance: once the swap has committed, no
// write that breaks the new schema is accepted.
func TestSchema_ChangeWhileWritesStream(t *testing.T) {
	cfg := testutil.StoreConfig(t)
	a := newFixtureOn(t, testutil.OpenStore(t, cfg))
	b := newFixtureOn(t, testutil.OpenStore(t, cfg))
	b.token = a.token
	a.must(a.do("PUT", "/v1/appliances/web", `{"keys":{"nginx":{"port":"80"}}}`), 200, nil)
	a.must(a.do("PUT", "/v1/appliances/web/schema", webSchema), 200, nil)
	// The stricter schema allows port 80 only.
	strict := strings.Replace(webSchema, `"format": "port"`, `"format": "port", "enum": ["80"]`, 1)

	type accepted struct {
		rev   int64
		value string
		// sentAfter: sent once the swap had committed. A write of the value the key holds
		// writes nothing and answers the revision the key got it at, before the swap maybe.
		sentAfter bool
	}
	var (
		mu      sync.Mutex
		oks     []accepted
		swapRev atomic.Int64
		after   atomic.Int64 // writes answered after the swap committed
		stop    = make(chan struct{})
		wg      sync.WaitGroup
	)
	write := func(f *fixture, n int) {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			port := []string{"80", "8080"}[i%2]
			sentAfter := swapRev.Load() > 0
			var r resp
			switch (i / 2 % 3) + n {
			case 0, 3:
				r = sendQuiet(f, "PUT", "/v1/kv/appliances/web/nginx/port", port)
			case 1, 4:
				r = sendQuiet(f, "PUT", "/v1/appliances/web", `{"keys":{"nginx":{"port":"`+port+`"}}}`)
			default:
				r = sendQuiet(f, "POST", "/v1/txn", `{"ops":[{"op":"put","key":"appliances/web/nginx/port","value":"`+port+`"}]}`)
			}
			swapped := swapRev.Load() > 0
			switch r.StatusCode {
			case 200:
				var w api.WriteResult
				if err := json.Unmarshal(r.body, &w); err != nil {
					t.Errorf("decode %s: %v", r.body, err)
					return
				}
				mu.Lock()
				oks = append(oks, accepted{w.Revision, port, sentAfter})
				mu.Unlock()
			case 422:
			default:
				t.Errorf("write: status %d: %s", r.StatusCode, r.body)
				return
			}
			if swapped {
				after.Add(1)
			}
		}
	}
	wg.Add(2)
	go write(a, 0)
	go write(b, 1)
	waitFor(t, "writes before the swap", func() bool { mu.Lock(); defer mu.Unlock(); return len(oks) >= 20 })
	var w api.WriteResult
	a.must(a.do("PUT", "/v1/appliances/web/schema", strict), 200, &w)
	swapRev.Store(w.Revision)
	waitFor(t, "writes after the swap", func() bool { return after.Load() >= 40 })
	close(stop)
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	var late int
	for _, o := range oks {
		if o.rev > w.Revision || o.sentAfter {
			late++
			if o.value != "80" {
				t.Errorf("write of port %s accepted at revision %d (sent after the swap: %v), after the stricter schema (revision %d)", o.value, o.rev, o.sentAfter, w.Revision)
			}
		}
	}
	if late == 0 {
		t.Fatalf("no write accepted after the swap")
	}
	if got := a.view("web").Keys["nginx/port"]; got != "80" {
		t.Fatalf("port %s after the stream, want 80", got)
	}
}

// TestSchema_OtherReplicaSeesChangesAtOnce: a replica whose cached schemas are stale neither
// lets a write through that a schema set on another replica refuses, nor refuses one that a
// schema removed there no longer does.
func TestSchema_OtherReplicaSeesChangesAtOnce(t *testing.T) {
	cfg := testutil.StoreConfig(t)
	a := newFixtureOn(t, testutil.OpenStore(t, cfg))
	b := newFixtureOn(t, testutil.OpenStore(t, cfg))
	b.token = a.token
	b.must(b.do("PUT", "/v1/appliances/web", `{"keys":{"nginx":{"port":"80"}}}`), 200, nil) // b caches: no schema
	a.must(a.do("PUT", "/v1/appliances/web/schema", webSchema), 200, nil)
	b.mustErr(b.do("PUT", "/v1/kv/appliances/web/nginx/port", "0"), 422, api.CodeSchemaViolation, "key nginx/port")
	b.mustErr(b.do("PUT", "/v1/appliances/web", `{"keys":{"env":"prod"}}`), 422, api.CodeSchemaViolation, "key nginx")
	// b caches the schema now; a removes it, then sets one that allows any port.
	a.must(a.do("DELETE", "/v1/appliances/web/schema", ""), 200, nil)
	b.must(b.do("PUT", "/v1/kv/appliances/web/nginx/port", "0"), 200, nil)
	a.must(a.do("PUT", "/v1/appliances/web/schema", webSchema), 200, nil)
	b.mustErr(b.do("DELETE", "/v1/kv/appliances/web/nginx/port", ""), 422, api.CodeSchemaViolation, "required")
	a.must(a.do("PUT", "/v1/appliances/web/schema", `{"type":"object"}`), 200, nil)
	b.must(b.do("DELETE", "/v1/kv/appliances/web/nginx/port", ""), 200, nil)
}

// FuzzSchema_Compile: any body set as a schema is compiled or refused with invalid_schema,
// and a compiled one checks any tree without panicking.
func FuzzSchema_Compile(f *testing.F) {
	f.Add([]byte(webSchema), "nginx/port", "80")
	f.Add([]byte(`{"required": "a"}`), "a", "")
	f.Add([]byte(`{"$ref": "#/$defs/x", "$defs": {"x": {"pattern": "^a"}}}`), "a/b", "c")
	f.Add([]byte(`{"$ref": "file:///etc/passwd"}`), "a", "b")
	f.Add([]byte(`{"properties": {"a": {"format": "duration"}}}`), "a", "1h")
	f.Fuzz(func(t *testing.T, data []byte, key, value string) {
		sch, err := compileSchema(data)
		if err != nil {
			if api.AsError(err).Code != api.CodeInvalidSchema {
				t.Fatalf("compile %q: %v, want an invalid_schema error", data, err)
			}
			return
		}
		doc, err := nestTree(map[string]string{key: value})
		if err != nil {
			return
		}
		if err := sch.Validate(doc); err != nil {
			if e := violation("web", err, schemaWords(data)); api.AsError(e).Code != api.CodeSchemaViolation {
				t.Fatalf("violation %v", e)
			}
		}
	})
}

// TestSchema_ConcurrentWritersAllLand: writes to one appliance with a schema are serialized by
// its tree version; concurrent valid writers each get through, none with a spurious 409.
func TestSchema_ConcurrentWritersAllLand(t *testing.T) {
	parallelShared(t)
	f := schemaFixture(t)
	const writers, each = 32, 3
	var wg sync.WaitGroup
	errs := make(chan string, writers*each)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				r := sendQuiet(f, "PUT", fmt.Sprintf("/v1/kv/appliances/web/w%d/k%d", w, i), "v")
				if r.StatusCode != 200 {
					errs <- fmt.Sprintf("writer %d put %d: status %d: %s", w, i, r.StatusCode, r.body)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if n := len(f.view("web").Keys); n != writers*each+3 {
		t.Fatalf("web has %d keys, want %d", n, writers*each+3)
	}
}

// A schema whose validation fans out (nested anyOf, $ref into $defs that fan out, or a $ref loop)
// is refused when set: 40 levels of two-way anyOf kept a replica at full CPU, its memory
// growing by gigabytes, from the PUT of the schema on. Recursive schemas that go into one key
// per level, and large flat ones, stay accepted.
func TestCompileSchema_CostBounded(t *testing.T) {
	chain := func(levels int, leaf string, branch func(next string) string) string {
		var defs []string
		for i := 0; i < levels; i++ {
			defs = append(defs, fmt.Sprintf(`"d%d": %s`, i, branch(fmt.Sprintf(`{"$ref": "#/$defs/d%d"}`, i+1))))
		}
		defs = append(defs, fmt.Sprintf(`"d%d": %s`, levels, leaf))
		return `{"$defs": {` + strings.Join(defs, ",") + `}, "properties": {"port": {"$ref": "#/$defs/d0"}}}`
	}
	for name, schema := range map[string]string{
		"anyOf fan-out": chain(40, `{"type": "number"}`, func(n string) string { return `{"anyOf": [` + n + `,` + n + `]}` }),
		"allOf fan-out": chain(40, `{"type": "number"}`, func(n string) string { return `{"allOf": [` + n + `,` + n + `]}` }),
		"recursive fan-out": `{"$defs": {"d": {"anyOf": [{"properties": {"a": {"$ref": "#/$defs/d"}}}, {"properties": {"a": {"$ref": "#/$defs/d"}}}]}},
			"$ref": "#/$defs/d"}`,
		"ref loop": `{"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}`,
	} {
		done := make(chan error, 1)
		go func() { _, err := compileSchema([]byte(schema)); done <- err }()
		select {
		case err := <-done:
			if err == nil || api.AsError(err).Code != api.CodeInvalidSchema {
				t.Errorf("%s: compiled (err %v), want it refused as invalid_schema", name, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: compile still running after 30s", name)
		}
	}
	props := make([]string, 500)
	for i := range props {
		props[i] = fmt.Sprintf(`"k%d": {"type": "string", "pattern": "^[a-z]+$", "enum": ["a", "b"]}`, i)
	}
	for name, schema := range map[string]string{
		"tree":       `{"$defs": {"node": {"properties": {"left": {"$ref": "#/$defs/node"}, "right": {"$ref": "#/$defs/node"}, "v": {"format": "port"}}}}, "$ref": "#/$defs/node"}`,
		"flat":       `{"required": ["k1"], "properties": {` + strings.Join(props, ",") + `}}`,
		"some anyOf": chain(6, `{"type": "string"}`, func(n string) string { return `{"anyOf": [` + n + `,` + n + `]}` }),
	} {
		if _, err := compileSchema([]byte(schema)); err != nil {
			t.Errorf("%s: %v, want it accepted", name, err)
		}
	}
}

// A violation names the key and the rule, never the value: the value may be a secret, or a key
// the writer may not read (every write checks the whole tree). pattern and format quoted it.
func TestSchema_ViolationHidesValue(t *testing.T) {
	f := newFixture(t)
	f.must(f.do("PUT", "/v1/kv/appliances/sec/secrets/db", "hunter2"), 200, nil)
	f.must(f.do("PUT", "/v1/kv/appliances/sec/other", "swordfish"), 200, nil)
	for _, rule := range []string{`{"pattern": "^x"}`, `{"format": "port"}`, `{"format": "ipv4"}`, `{"format": "email"}`, `{"format": "duration"}`} {
		schema := `{"properties": {"secrets": {"properties": {"db": ` + rule + `}}, "other": ` + rule + `}}`
		r := f.do("PUT", "/v1/appliances/sec/schema", schema)
		f.must(r, 200, nil)
		if strings.Contains(string(r.body), "hunter2") || strings.Contains(string(r.body), "swordfish") {
			t.Errorf("schema %s: the warning quotes a value: %s", rule, r.body)
		}
		r = f.do("PUT", "/v1/kv/appliances/sec/port", "80")
		f.mustErr(r, 422, api.CodeSchemaViolation, "secrets/db")
		if strings.Contains(string(r.body), "hunter2") || strings.Contains(string(r.body), "swordfish") {
			t.Errorf("schema %s: the violation quotes a value: %s", rule, r.body)
		}
	}
}

// A secret's length is a clue to it: maxLength and minLength under a secrets segment say the
// rule, not the length they found; elsewhere they say both.
func TestSchema_ViolationHidesASecretsLength(t *testing.T) {
	f := newFixture(t)
	f.must(f.do("PUT", "/v1/kv/appliances/seclen/secrets/db", "hunter2-is-23-bytes-long"), 200, nil)
	f.must(f.do("PUT", "/v1/kv/appliances/seclen/name", "nineteen-bytes-long"), 200, nil)
	for _, rule := range []string{`{"maxLength": 4}`, `{"minLength": 40}`} {
		schema := `{"properties": {"secrets": {"properties": {"db": ` + rule + `}}}}`
		// The warning and the message, not the whole body: its revision (4244 once) may hold 24.
		r := f.do("PUT", "/v1/appliances/seclen/schema", schema)
		var res api.SchemaResult
		f.must(r, 200, &res)
		if res.Warning == "" || strings.Contains(res.Warning, "24") {
			t.Errorf("schema %s: no warning, or the warning shows the secret's length: %s", rule, r.body)
		}
		r = f.do("PUT", "/v1/kv/appliances/seclen/port", "80")
		f.mustErr(r, 422, api.CodeSchemaViolation, "a secret's length is not shown")
		if strings.Contains(r.errMessage(), "24") {
			t.Errorf("schema %s: the violation shows the secret's length: %s", rule, r.body)
		}
		// Not a secret: the length found helps whoever mends it.
		f.must(f.do("PUT", "/v1/appliances/seclen/schema", `{"properties": {"name": `+rule+`}}`), 200, nil)
		f.mustErr(f.do("PUT", "/v1/kv/appliances/seclen/port", "80"), 422, api.CodeSchemaViolation, "19")
	}
}

// The names under a secrets segment are not shown, nor their lengths: a propertyNames rule that
// one breaks is named at the key that holds the names, with its limit, not the length found. The
// library checks a name as an instance of its own: its violation was named at "the appliance's
// tree" and said the name's length.
func TestSchema_ViolationHidesASecretNamesLength(t *testing.T) {
	f := newFixture(t)
	f.must(f.do("PUT", "/v1/kv/appliances/secname/secrets/hunter2-is-24-bytes-long", "x"), 200, nil)
	for _, rule := range []string{`{"maxLength": 4}`, `{"minLength": 40}`} {
		f.must(f.do("PUT", "/v1/appliances/secname/schema", `{"properties": {"secrets": {"propertyNames": `+rule+`}}}`), 200, nil)
		r := f.do("PUT", "/v1/kv/appliances/secname/port", "80")
		f.mustErr(r, 422, api.CodeSchemaViolation, "key secrets:", "a secret's length is not shown")
		if strings.Contains(r.errMessage(), "24") {
			t.Errorf("schema %s: the violation shows the length of a name under secrets: %s", rule, r.body)
		}
	}
}

// Two names of one object that break its propertyNames rule are one broken rule, said once, as
// a name's (never which): the library reports each name apart, and the violation listed the
// same line twice, as "the value does not match".
func TestSchema_BrokenNamesSaidOnce(t *testing.T) {
	f := newFixture(t)
	f.must(f.do("PUT", "/v1/appliances/names/schema", `{"properties": {"hosts": {"propertyNames": {"pattern": "^[a-z]+$"}}}}`), 200, nil)
	f.must(f.do("PUT", "/v1/kv/appliances/names/port", "80"), 200, nil)
	r := f.do("PUT", "/v1/appliances/names", `{"keys": {"port": "80", "hosts/A1": "x", "hosts/B2": "y"}}`)
	f.mustErr(r, 422, api.CodeSchemaViolation, `key hosts: propertyNames/pattern: a name does not match pattern "^[a-z]+$"`)
	if n := strings.Count(r.errMessage(), "pattern:"); n != 1 {
		t.Errorf("the broken propertyNames rule is said %d times: %s", n, r.errMessage())
	}
}

// A schema is bounded by --max-schema-bytes, not --max-value-bytes: compiling one takes time
// that grows faster than its size (38000 properties, 1 MiB, took 12 s of CPU), and a write token
// may set one as often as its rate limit lets it.
func TestSchema_SizeLimit(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MaxSchemaBytes = 200 })
	props := make([]string, 10)
	for i := range props {
		props[i] = fmt.Sprintf(`"k%d": {"type": "string"}`, i)
	}
	big := `{"properties": {` + strings.Join(props, ",") + `}}`
	f.mustErr(f.do("PUT", "/v1/appliances/web/schema", big), 413, api.CodeValueTooLarge, "--max-schema-bytes", "200")
	f.must(f.do("PUT", "/v1/appliances/web/schema", `{"required": ["port"]}`), 200, nil)
	if DefaultConfig().MaxSchemaBytes != 64<<10 {
		t.Errorf("default --max-schema-bytes %d, want 64 KiB", DefaultConfig().MaxSchemaBytes)
	}
	cfg := testConfig()
	cfg.MaxSchemaBytes = 0
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "--max-schema-bytes") {
		t.Errorf("--max-schema-bytes 0: %v", err)
	}
}

// webSchemaYAML is webSchema as a pipeline's repository may keep it.
const webSchemaYAML = `# the web appliance's keys
type: object
required: [nginx]
properties:
  nginx:
    type: object
    required: [port]
    properties:
      port: {type: string, format: port}
      host: {type: string, format: hostname}
      timeout: {type: string, format: duration}
      mode: {enum: [a, b]}
  env:
    type: string
    pattern: ^(prod|dev)$
`

// A schema sent as YAML is set as the JSON it says, its members in the order written, and
// checks writes as the JSON one does.
func TestSchema_YAMLBody(t *testing.T) {
	f := newFixture(t)
	for _, ct := range []string{api.ContentTypeYAML, "application/x-yaml", "text/yaml; charset=utf-8"} {
		f.must(f.do("PUT", "/v1/appliances/web/schema", webSchemaYAML, "Content-Type", ct), 200, nil)
		r := f.do("GET", "/v1/appliances/web/schema", "")
		f.must(r, 200, nil)
		var got, want any
		if err := json.Unmarshal(r.body, &got); err != nil {
			t.Fatalf("%s: the schema read back is not JSON: %v\n%s", ct, err, r.body)
		}
		if err := json.Unmarshal([]byte(webSchema), &want); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: the schema read back is\n%s\nwant what webSchema says", ct, r.body)
		}
		if i, j := strings.Index(string(r.body), `"required"`), strings.Index(string(r.body), `"properties"`); i < 0 || j < i {
			t.Fatalf("%s: members out of the order written:\n%s", ct, r.body)
		}
	}
	f.mustErr(f.do("PUT", "/v1/appliances/web", `{"keys":{"nginx":{"port":"0"}}}`), 422, api.CodeSchemaViolation, "nginx/port")
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"nginx":{"port":"8080"},"env":"prod"}}`), 200, nil)

	// YAML's scalars keep their meaning: a quoted 8080 is a string, an unquoted one a number,
	// a date the text written.
	f.must(f.do("PUT", "/v1/appliances/db/schema", "properties:\n  port: {const: \"8080\"}\n  day: {const: 2026-12-04}\n  n: {maximum: 0x10}\n",
		"Content-Type", api.ContentTypeYAML), 200, nil)
	r := f.do("GET", "/v1/appliances/db/schema", "")
	for _, want := range []string{`"const": "8080"`, `"const": "2026-12-04"`, `"maximum": 16`} {
		if !strings.Contains(string(r.body), want) {
			t.Errorf("YAML schema read back without %s:\n%s", want, r.body)
		}
	}
	f.must(f.do("PUT", "/v1/appliances/db", `{"keys":{"port":"8080","day":"2026-12-04"}}`), 200, nil)
	f.mustErr(f.do("PUT", "/v1/appliances/db", `{"keys":{"port":"8081"}}`), 422, api.CodeSchemaViolation, "port")
}

// What JSON cannot say is refused, naming the line, and nothing is set.
func TestSchema_YAMLBodyRefused(t *testing.T) {
	f := newFixture(t)
	bomb := "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
	for i, prev := 0, "a"; i < 8; i++ {
		name := fmt.Sprintf("b%d", i)
		bomb += fmt.Sprintf("%s: &%s [*%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s]\n", name, name, prev, prev, prev, prev, prev, prev, prev, prev, prev, prev)
		prev = name
	}
	for _, c := range []struct{ name, body, want string }{
		{"not YAML", "type: [object\n", "not valid YAML"},
		{"empty", "# nothing\n", "empty"},
		{"two documents", "type: object\n---\ntype: string\n", "more than one YAML document"},
		{"key not a string", "properties:\n  200: {type: string}\n", `line 2: key "200" at /properties is not a string`},
		{"merge key", "base: &b {type: string}\nproperties:\n  a:\n    <<: *b\n", "merge keys"},
		{"key twice", "type: object\ntype: string\n", `key "type"`},
		{"infinity", "maximum: .inf\n", "not a number JSON can hold"},
		{"binary", "const: !!binary aGVsbG8=\n", "!!binary"},
		{"not a schema", "type: 12\n", "type"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f.mustErr(f.do("PUT", "/v1/appliances/web/schema", c.body, "Content-Type", api.ContentTypeYAML), 400, api.CodeInvalidSchema, "invalid schema", c.want)
		})
	}
	// A billion laughs is over the limit as JSON long before its nodes are all written.
	f.mustErr(f.do("PUT", "/v1/appliances/web/schema", bomb, "Content-Type", api.ContentTypeYAML), 413, api.CodeValueTooLarge, "as JSON")
	// Under a limit far larger, its nodes are bounded.
	if _, err := yamlSchemaToJSON([]byte(bomb), 1<<30); err == nil || !strings.Contains(err.Error(), "aliases are expanded") {
		t.Errorf("a billion laughs under a limit of 1 GiB: %v, want over %d nodes", err, yamlSchemaNodes)
	}
	// Under the limit as YAML, over it as JSON (an alias used many times).
	big := "defs: &d {type: string, pattern: \"^[a-z]+$\", description: \"" + strings.Repeat("x", 1000) + "\"}\nproperties:\n"
	for i := range 80 {
		big += fmt.Sprintf("  k%d: *d\n", i)
	}
	f.mustErr(f.do("PUT", "/v1/appliances/web/schema", big, "Content-Type", api.ContentTypeYAML), 413, api.CodeValueTooLarge, "as JSON")
	f.mustErr(f.do("PUT", "/v1/appliances/web/schema", webSchema, "Content-Type", "text/plain"), 415, api.CodeUnsupportedType, "application/yaml")
	f.mustErr(f.do("GET", "/v1/appliances/web/schema", ""), 404, api.CodeNotFound)
}

// A YAML schema whose aliases make a small body stand for a huge JSON one is refused as it is
// converted, once the JSON is over --max-schema-bytes: before, the whole JSON was built and
// indented first, and a string of the body's size used by 100,000 aliases held gigabytes.
func TestSchema_YAMLAliasesOfALongStringStopAtTheLimit(t *testing.T) {
	f := newFixture(t)
	body := "l0: &l0 \"" + strings.Repeat("x", 5000) + "\"\n"
	for i := 1; i <= 4; i++ { // 10,000 uses of the string: 50 MB of JSON
		body += fmt.Sprintf("l%d: &l%d [%s]\n", i, i, strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*l%d,", i-1), 10), ","))
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	r := f.do("PUT", "/v1/appliances/web/schema", body, "Content-Type", api.ContentTypeYAML)
	runtime.ReadMemStats(&after)
	f.mustErr(r, 413, api.CodeValueTooLarge, "--max-schema-bytes", "as JSON")
	if got := after.TotalAlloc - before.TotalAlloc; got > 8<<20 {
		t.Errorf("refusing a YAML schema of %d bytes allocated %d MiB; want the conversion to stop near the limit of %d bytes", len(body), got>>20, DefaultMaxSchemaBytes)
	}
	// A long key used at every level of a deep nesting is refused too (a key's path was built
	// at each level and held until the end: depth × path bytes).
	deep := "k: &k \"" + strings.Repeat("y", 2000) + "\"\nv: " + strings.Repeat("{*k: ", 300) + "1" + strings.Repeat("}", 300) + "\n"
	runtime.GC()
	runtime.ReadMemStats(&before)
	r = f.do("PUT", "/v1/appliances/web/schema", deep, "Content-Type", api.ContentTypeYAML)
	runtime.ReadMemStats(&after)
	f.mustErr(r, 413, api.CodeValueTooLarge, "as JSON")
	if got := after.TotalAlloc - before.TotalAlloc; got > 8<<20 {
		t.Errorf("refusing a deep YAML schema of %d bytes allocated %d MiB", len(deep), got>>20)
	}
	f.mustErr(f.do("GET", "/v1/appliances/web/schema", ""), 404, api.CodeNotFound)
}

// A YAML schema converts to valid JSON that says the same as the YAML (a decoder's view of
// it), or is refused with an error; never a panic, never JSON that does not parse.
func FuzzSchema_YAMLToJSON(f *testing.F) {
	f.Add([]byte(webSchemaYAML))
	f.Add([]byte("a: &x {b: [1, 2.5, true, null, ~, 2026-12-04, \"s\"]}\nc: *x\n"))
	f.Add([]byte("<<: {a: 1}\n"))
	f.Add([]byte("? [a]\n: b\n"))
	f.Add([]byte("a: !!binary aGk=\nb: .nan\n"))
	f.Add([]byte("- 0x1F\n- 0o17\n- 1_000\n- -.inf\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := yamlSchemaToJSON(data, DefaultMaxSchemaBytes)
		if err != nil {
			return
		}
		if !json.Valid(out) {
			t.Fatalf("YAML %q converted to JSON that does not parse: %s", data, out)
		}
		if len(out) > DefaultMaxSchemaBytes {
			t.Fatalf("YAML of %d bytes became %d bytes of JSON, over the limit of %d", len(data), len(out), DefaultMaxSchemaBytes)
		}
		var indented bytes.Buffer
		if err := json.Indent(&indented, out, "", "  "); err != nil || !bytes.Equal(indented.Bytes(), out) {
			t.Fatalf("YAML %q converted to JSON not indented as json.Indent would: %s", data, out)
		}
	})
}

// GET …/schema carries X-Shoelace-Index as every answer does: the revision it was read at, not
// the schema's own mod_revision, which is older once anything else was written.
func TestSchema_GetIndexIsTheReadRevision(t *testing.T) {
	f := newFixture(t)
	f.must(f.do("PUT", "/v1/appliances/web/schema", `{"type":"object"}`, "Content-Type", "application/json"), 200, nil)
	after := f.put("shared/ntp", "pool.ntp.org")
	r := f.do("GET", "/v1/appliances/web/schema", "")
	f.must(r, 200, nil)
	if r.index() < after {
		t.Errorf("X-Shoelace-Index %d of the schema read, want at least %d (a write made before the read)", r.index(), after)
	}
	r = f.do("GET", "/v1/appliances/db/schema", "")
	f.mustErr(r, 404, api.CodeNotFound)
	if r.index() < after {
		t.Errorf("X-Shoelace-Index %d of the 404, want at least %d", r.index(), after)
	}
}

// A violation names no key under a secrets segment that the writer typed and the schema does
// not hold (a value typed where a name belongs becomes part of a key): additionalProperties
// listed them, and a location reached through patternProperties named them. Names the schema
// holds itself are named as before.
func TestSchema_ViolationHidesTypedSecretNames(t *testing.T) {
	f := newFixture(t)
	schema := `{"properties": {"secrets": {"type": "object", "properties": {"db": {"pattern": "^[0-9]+$"}},
		"patternProperties": {"^x": {"pattern": "^[0-9]+$"}}, "additionalProperties": false}}}`
	f.must(f.do("PUT", "/v1/appliances/sec/schema", schema, "Content-Type", "application/json"), 200, nil)
	for _, c := range []struct{ body, want string }{
		{`{"keys":{"secrets":{"db":"1","Hunter2Password":"v"}}}`, "key secrets: additionalProperties: 1 additional properties not allowed (names under a secrets segment are not shown)"},
		{`{"keys":{"secrets":{"db":"1","xHunter2Password":"v"}}}`, "key secrets/…: pattern"},
		{`{"keys":{"secrets":{"db":"v"}}}`, "key secrets/db: pattern"},
	} {
		r := f.do("PUT", "/v1/appliances/sec", c.body, "Content-Type", "application/json")
		f.mustErr(r, 422, api.CodeSchemaViolation, c.want)
		if strings.Contains(string(r.body), "Hunter2") {
			t.Errorf("%s: the violation names a secret key the writer typed: %s", c.body, r.body)
		}
	}
	// The warning of a schema set over such keys alike.
	f.must(f.do("PUT", "/v1/kv/appliances/sec2/secrets/Hunter2Password", "v"), 200, nil)
	var res api.SchemaResult
	f.must(f.do("PUT", "/v1/appliances/sec2/schema", schema, "Content-Type", "application/json"), 200, &res)
	if res.Warning == "" || strings.Contains(res.Warning, "Hunter2") {
		t.Errorf("warning %q: want one that names no secret key the writer typed", res.Warning)
	}
}

// A delete that removes none of an appliance's keys is no write to the appliance, so its schema
// does not judge it, even where the appliance's tree breaks it (a schema set over it, or before
// any key): a key it lacks is 404, as without a schema, and a recursive delete of appliances
// deletes the others' keys instead of being refused in the name of one it leaves as it is.
func TestSchema_DeleteOfNothingIsNotChecked(t *testing.T) {
	f := newFixture(t)
	f.must(f.do("PUT", "/v1/appliances/web/schema", webSchema), 200, nil) // web has no key yet
	f.mustErr(f.do("DELETE", "/v1/kv/appliances/web/nginx/port", ""), 404, api.CodeNotFound)
	f.mustErr(f.do("DELETE", "/v1/kv/appliances/web?recurse", ""), 404, api.CodeNotFound)
	f.must(f.do("PUT", "/v1/kv/appliances/db/port", "1"), 200, nil)
	f.must(f.do("DELETE", "/v1/kv/appliances?recurse", ""), 200, nil)
	if _, _, err := f.st.Get(context.Background(), "appliances/db/port"); err == nil {
		t.Fatal("appliances/db/port is still there after the recursive delete of appliances")
	}

	// Keys that break the schema set over them: a delete of a key web lacks is still 404, and
	// one of its keys is checked whole, as any write to it.
	f.must(f.do("DELETE", "/v1/appliances/web/schema", ""), 200, nil)
	f.must(f.do("PUT", "/v1/kv/appliances/web/env", "qa"), 200, nil)
	f.must(f.do("PUT", "/v1/appliances/web/schema", webSchema), 200, nil)
	f.mustErr(f.do("DELETE", "/v1/kv/appliances/web/nginx/port", ""), 404, api.CodeNotFound)
	f.mustErr(f.do("DELETE", "/v1/kv/appliances/web/env", ""), 422, api.CodeSchemaViolation, `appliance "web"`, "key nginx", "required")
	f.mustErr(f.do("PUT", "/v1/kv/appliances/web/env", "qa"), 422, api.CodeSchemaViolation, `appliance "web"`, "key env", "pattern")
	f.mustErr(f.do("DELETE", "/v1/kv/appliances?recurse", ""), 422, api.CodeSchemaViolation, `appliance "web"`, "key nginx", "required")
}
