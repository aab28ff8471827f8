package server

import (
	"context"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/testutil"
)

func TestAppliances_ApplyAndView(t *testing.T) {
	f := newFixture(t)
	f.put("shared/system/ntp", "pool.ntp.org")
	f.put("shared/dns", "1.1.1.1")
	f.put("appliances/web-frontend/x", "other")

	var w api.WriteResult
	body := `{"keys":{"system":{"ntp":"time.internal"},"nginx":{"port":8080,"ratio":1.50,"tls":true,"name":"web"},"flat/key":"v"}}`
	r := f.do("PUT", "/v1/appliances/web", body)
	f.must(r, 200, &w)
	if r.index() != w.Revision {
		t.Fatalf("index %d, revision %d", r.index(), w.Revision)
	}

	var v api.View
	r = f.do("GET", "/v1/appliances/web", "")
	f.must(r, 200, &v)
	want := map[string]string{
		"system/ntp":  "time.internal",
		"dns":         "1.1.1.1",
		"nginx/port":  "8080",
		"nginx/ratio": "1.50",
		"nginx/tls":   "true",
		"nginx/name":  "web",
		"flat/key":    "v",
	}
	if v.Appliance != "web" || v.Revision < w.Revision || !maps.Equal(v.Keys, want) {
		t.Fatalf("view %+v, want keys %v at >= %d", v, want, w.Revision)
	}
	if r.index() != v.Revision {
		t.Fatalf("index %d, view revision %d", r.index(), v.Revision)
	}

	// YAML replaces the whole tree: keys not in the body go.
	yml := "keys:\n  nginx:\n    port: 8080\n    hex: 0x1F\n    off: no\n    quoted: \"null\"\n  motd: |\n    hello\n    world\n"
	f.must(f.do("PUT", "/v1/appliances/web", yml, "Content-Type", "application/yaml; charset=utf-8"), 200, &w)
	v = api.View{}
	f.must(f.do("GET", "/v1/appliances/web", ""), 200, &v)
	want = map[string]string{
		"system/ntp":   "pool.ntp.org",
		"dns":          "1.1.1.1",
		"nginx/port":   "8080",
		"nginx/hex":    "0x1F",
		"nginx/off":    "no",
		"nginx/quoted": "null",
		"motd":         "hello\nworld\n",
	}
	if !maps.Equal(v.Keys, want) {
		t.Fatalf("view after YAML apply %v, want %v", v.Keys, want)
	}
	for _, ct := range []string{"application/x-yaml", "text/yaml"} {
		f.must(f.do("PUT", "/v1/appliances/web", "keys: {a: b}", "Content-Type", ct), 200, nil)
	}
	if want := []string{"appliances/web-frontend/x", "appliances/web/a", "shared/dns", "shared/system/ntp"}; !slices.Equal(f.keys(), want) {
		t.Fatalf("keys %v, want %v", f.keys(), want)
	}

	var list api.Appliances
	f.must(f.do("GET", "/v1/appliances", ""), 200, &list)
	if want := []string{"web", "web-frontend"}; !slices.Equal(list.Appliances, want) {
		t.Fatalf("appliances %v, want %v", list.Appliances, want)
	}

	f.mustErr(f.do("GET", "/v1/appliances/db", ""), 404, api.CodeNotFound, "has no keys")
	f.mustErr(f.do("GET", "/v1/appliances/-db", ""), 400, api.CodeInvalidName, "appliance name")
	f.mustErr(f.do("PUT", "/v1/appliances/a%20b", `{"keys":{"a":"b"}}`), 400, api.CodeInvalidName, "appliance name")
}

func TestAppliances_ApplyCAS(t *testing.T) {
	f := newFixture(t)
	var w api.WriteResult
	f.must(f.do("PUT", "/v1/appliances/web?cas=0", `{"keys":{"a":"1"}}`), 200, &w)
	f.mustErr(f.do("PUT", "/v1/appliances/web?cas=0", `{"keys":{"a":"2"}}`), 409, api.CodeConflict)
	f.put("appliances/web/b", "x")
	f.mustErr(f.do("PUT", fmt.Sprintf("/v1/appliances/web?cas=%d", w.Revision), `{"keys":{"a":"3"}}`), 409, api.CodeConflict)
	f.mustErr(f.do("PUT", "/v1/appliances/web?cas=x", `{"keys":{"a":"3"}}`), 400, api.CodeInvalidRequest, "cas")
	var v api.View
	f.must(f.do("GET", "/v1/appliances/web", ""), 200, &v)
	if !maps.Equal(v.Keys, map[string]string{"a": "1", "b": "x"}) {
		t.Fatalf("view after conflicts %v", v.Keys)
	}
	f.must(f.do("PUT", fmt.Sprintf("/v1/appliances/web?cas=%d", v.Revision), `{"keys":{"a":"3"}}`), 200, &w)
}

// ?cas=R holds only when nothing under the appliance changed after R: a key deleted after R
// (or the whole appliance) is a change too, though no key that is left shows it.
func TestAppliances_ApplyCASSeesDeletions(t *testing.T) {
	f := newFixture(t)
	var w api.WriteResult
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1","b":"2","secrets":{"pw":"hunter2"}}}`), 200, &w)
	read := w.Revision
	f.must(f.do("DELETE", "/v1/kv/appliances/web/b", ""), 200, nil)
	r := f.do("PUT", fmt.Sprintf("/v1/appliances/web?cas=%d", read), `{"keys":{"a":"9"}}`)
	f.mustErr(r, 409, api.CodeConflict, `"appliances/web/b" was deleted after the expected revision`)

	f.must(f.do("DELETE", "/v1/kv/appliances/web?recurse", ""), 200, nil)
	r = f.do("PUT", fmt.Sprintf("/v1/appliances/web?cas=%d", read), `{"keys":{"a":"9"}}`)
	f.mustErr(r, 409, api.CodeConflict, "(and 2 more) was deleted")
	if strings.Contains(string(r.body), "pw") || strings.Contains(string(r.body), "hunter2") {
		t.Errorf("conflict names a key under secrets: %s", r.body)
	}
	if keys := f.keys(); len(keys) != 0 {
		t.Fatalf("refused applies wrote %v", keys)
	}

	// After a fresh read the apply goes through; an appliance that had no keys at R is fine.
	var v api.WriteResult
	f.must(f.do("PUT", "/v1/appliances/web?cas=0", `{"keys":{"a":"9"}}`), 200, &v)
	f.must(f.do("PUT", fmt.Sprintf("/v1/appliances/web?cas=%d", v.Revision), `{"keys":{"a":"10"}}`), 200, nil)
	f.must(f.do("PUT", fmt.Sprintf("/v1/appliances/db?cas=%d", v.Revision), `{"keys":{"a":"1"}}`), 200, nil)
	// A revision the store has not reached cannot have been read: it guards nothing.
	f.mustErr(f.do("PUT", fmt.Sprintf("/v1/appliances/db?cas=%d", v.Revision+1000), `{"keys":{"a":"2"}}`), 400, api.CodeInvalidRequest, "ahead of the store")
}

// ?cas=R sees a deletion after R once etcd has compacted R too (its history is an hour on the
// embedded store; a dry run reviewed for longer is the case): the releases after R say so. The
// apply went through, and put the deleted key back, where the same apply before the compaction
// was refused.
func TestAppliances_ApplyCASSeesDeletionsAfterCompaction(t *testing.T) {
	parallelOwnEtcd(t)
	f := newOwnEtcdFixture(t)
	var w api.WriteResult
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1","b":"2","secrets":{"pw":"hunter2"}}}`), 200, &w)
	read := w.Revision
	var d api.WriteResult
	f.must(f.do("DELETE", "/v1/kv/appliances/web/b", ""), 200, &d)
	last := f.put("appliances/other/x", "1")
	if err := f.st.Compact(t.Context(), last); err != nil {
		t.Fatal(err)
	}
	body := `{"keys":{"a":"1","b":"2","secrets":{"pw":"hunter2"}}}`
	r := f.do("PUT", fmt.Sprintf("/v1/appliances/web?cas=%d", read), body)
	f.mustErr(r, 409, api.CodeConflict, `"appliances/web/b" was deleted after the expected revision`, fmt.Sprintf("at revision %d", d.Revision))
	if slices.Contains(f.keys(), "appliances/web/b") {
		t.Fatal("the refused apply put appliances/web/b back")
	}

	// A cas read after the deletion holds; the deletion before it is no change after it.
	var w2 api.WriteResult
	f.must(f.do("PUT", fmt.Sprintf("/v1/appliances/web?cas=%d", last), `{"keys":{"a":"2","secrets":{"pw":"hunter2"}}}`), 200, &w2)

	// The whole appliance deleted: the first deletion after R is named, never a secret's name.
	f.must(f.do("DELETE", "/v1/kv/appliances/web?recurse", ""), 200, nil)
	last = f.put("appliances/other/x", "2")
	if err := f.st.Compact(t.Context(), last); err != nil {
		t.Fatal(err)
	}
	r = f.do("PUT", fmt.Sprintf("/v1/appliances/web?cas=%d", w2.Revision), `{"keys":{"a":"9"}}`)
	f.mustErr(r, 409, api.CodeConflict, "(and 1 more) was deleted after the expected revision")
	if strings.Contains(string(r.body), "pw") || strings.Contains(string(r.body), "hunter2") {
		t.Errorf("conflict names a key under secrets: %s", r.body)
	}
	for _, k := range f.keys() {
		if strings.HasPrefix(k, "appliances/web/") {
			t.Fatalf("a refused apply wrote %s", k)
		}
	}
}

func TestAppliances_BadApplyChangesNothing(t *testing.T) {
	f := newFixture(t, func(c *Config) {
		c.MaxValueBytes = 100
		c.MaxBodyBytes = 5000
		c.MaxTxnOps = 5
	})
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"keep":"me"}}`), 200, nil)
	before := f.keys()
	deep := strings.Repeat(`{"a":`, 33) + `"x"` + strings.Repeat("}", 33)
	cases := []struct {
		name, ct, body string
		status         int
		code           string
		word           string
	}{
		{"empty body", "", ``, 400, api.CodeInvalidBody, "empty"},
		{"not json", "", `keys`, 400, api.CodeInvalidBody, "JSON"},
		{"array body", "", `[]`, 400, api.CodeInvalidBody, "object"},
		{"no keys", "", `{}`, 400, api.CodeInvalidBody, `no "keys"`},
		{"empty keys", "", `{"keys":{}}`, 400, api.CodeInvalidBody, "recursively"},
		{"unknown field", "", `{"keys":{"a":"b"},"x":1}`, 400, api.CodeInvalidBody, `"x"`},
		{"keys twice", "", `{"keys":{"a":"b"},"keys":{"c":"d"}}`, 400, api.CodeInvalidBody, "twice"},
		{"duplicate key", "", `{"keys":{"a":"b","a":"c"}}`, 400, api.CodeInvalidBody, "twice"},
		{"duplicate after flattening", "", `{"keys":{"a/b":"1","a":{"b":"2"}}}`, 400, api.CodeInvalidBody, "twice"},
		{"null", "", `{"keys":{"a":{"b":null}}}`, 400, api.CodeInvalidBody, `"a/b" is null`},
		{"array", "", `{"keys":{"a":[1,2]}}`, 400, api.CodeInvalidBody, "arrays are not supported"},
		{"keys not object", "", `{"keys":"x"}`, 400, api.CodeInvalidBody, "object"},
		{"empty map", "", `{"keys":{"a":{}}}`, 400, api.CodeInvalidBody, "empty map"},
		{"too deep", "", `{"keys":` + deep + `}`, 400, api.CodeInvalidBody, "deeper than 32"},
		{"trailing", "", `{"keys":{"a":"b"}} x`, 400, api.CodeInvalidBody, "after"},
		{"truncated", "", `{"keys":{"a":"b"}`, 400, api.CodeInvalidBody, "JSON"},
		{"bad key", "", `{"keys":{"a":"1","b c":"2"}}`, 400, api.CodeInvalidKey, "only letters"},
		{"dot key", "", `{"keys":{"..":"1"}}`, 400, api.CodeInvalidKey, `".."`},
		{"bad utf8", "", "{\"keys\":{\"a\":\"\xff\"}}", 400, api.CodeInvalidBody, "UTF-8"},
		{"lone surrogate", "", `{"keys":{"a":"x\ud800"}}`, 400, api.CodeInvalidBody, `\ud800 at byte 15 is a lone UTF-16 surrogate`},
		{"lone low surrogate in a name", "", `{"keys":{"a\udc00":"1"}}`, 400, api.CodeInvalidBody, "lone UTF-16 surrogate"},
		{"surrogates the wrong way round", "", `{"keys":{"a":"\ude00\ud83d"}}`, 400, api.CodeInvalidBody, "lone UTF-16 surrogate"},
		{"empty name", "", `{"keys":{"":{"x":"1"}}}`, 400, api.CodeInvalidKey, `a name in "keys" is empty; a key's segments must not be empty`},
		{"empty nested name", "", `{"keys":{"a":{"":{"x":"1"}}}}`, 400, api.CodeInvalidKey, `under "a" is empty`},
		{"empty name of a value", "", `{"keys":{"a":{"":"1"}}}`, 400, api.CodeInvalidKey, "empty"},
		{"yaml empty name", "application/yaml", "keys:\n  \"\": {x: 1}\n", 400, api.CodeInvalidKey, `a name in "keys" is empty (line 2)`},
		{"yaml empty nested name", "application/yaml", "keys:\n  a:\n    '': {x: 1}\n", 400, api.CodeInvalidKey, `under "a" is empty (line 3)`},
		{"yaml lone surrogate", "application/yaml", "keys:\n  a: \"\\ud800\"\n", 400, api.CodeInvalidBody, "YAML"},
		{"value too large", "", `{"keys":{"a":"` + strings.Repeat("v", 101) + `"}}`, 413, api.CodeValueTooLarge, "--max-value-bytes"},
		{"too many keys", "", `{"keys":{"a":"1","b":"1","c":"1","d":"1","e":"1","f":"1"}}`, 413, api.CodeTooLarge, "limit of 5"},
		{"body too large", "", `{"keys":{"a":"` + strings.Repeat(" ", 5000) + `"}}`, 413, api.CodeBodyTooLarge, "5000"},
		{"full key too long", "", `{"keys":{"` + strings.Repeat("k", 128) + `/` + strings.Repeat("k", 128) + `/` + strings.Repeat("k", 128) + `/` + strings.Repeat("k", 120) + `":"v"}}`, 400, api.CodeInvalidKey, "512"},
		{"unsupported type", "text/plain", `{"keys":{"a":"b"}}`, 415, api.CodeUnsupportedType, "text/plain"},
		{"yaml null", "application/yaml", "keys:\n  a: ~\n", 400, api.CodeInvalidBody, "null"},
		{"yaml empty value", "application/yaml", "keys:\n  a:\n", 400, api.CodeInvalidBody, "null"},
		{"yaml list", "application/yaml", "keys:\n  a: [1, 2]\n", 400, api.CodeInvalidBody, "lists are not supported"},
		{"yaml duplicate", "application/yaml", "keys:\n  a: 1\n  a: 2\n", 400, api.CodeInvalidBody, "twice"},
		{"yaml alias", "application/yaml", "keys:\n  a: &x 1\n  b: *x\n", 400, api.CodeInvalidBody, "alias"},
		{"yaml two docs", "application/yaml", "keys: {a: 1}\n---\nkeys: {b: 2}\n", 400, api.CodeInvalidBody, "one YAML document"},
		{"yaml not map", "application/yaml", "- a\n", 400, api.CodeInvalidBody, "map"},
		{"yaml unknown", "application/yaml", "keys: {a: 1}\nother: 2\n", 400, api.CodeInvalidBody, `"other"`},
		{"yaml keys at top level", "application/yaml", "app:\n  port: 8080\n", 400, api.CodeInvalidBody, `"app" at line 1: only "keys" is allowed (the appliance's keys go under a top-level "keys:"`},
		{"json keys at top level", "", `{"app":{"port":8080}}`, 400, api.CodeInvalidBody, `top-level "keys:", {"keys":{…}} in JSON`},
		{"yaml syntax", "application/yaml", "keys: {a: 1\n", 400, api.CodeInvalidBody, "YAML"},
		{"yaml merge", "application/yaml", "keys:\n  <<: {a: 1}\n", 400, api.CodeInvalidBody, "merge"},
		{"yaml empty", "application/yaml", "", 400, api.CodeInvalidBody, "empty"},
	}
	for _, c := range cases {
		var hdr []string
		if c.ct != "" {
			hdr = []string{"Content-Type", c.ct}
		}
		r := f.do("PUT", "/v1/appliances/web", c.body, hdr...)
		if r.StatusCode != c.status || r.errCode() != c.code || !strings.Contains(r.errMessage(), c.word) {
			t.Errorf("%s: %d %s, want %d %s mentioning %q", c.name, r.StatusCode, r.body, c.status, c.code, c.word)
		}
	}
	if after := f.keys(); !slices.Equal(after, before) {
		t.Fatalf("refused applies changed keys: %v, want %v", after, before)
	}
}

// An apply body sent without a Content-Type that says JSON (curl -d) and that is not JSON may
// be YAML: its error says YAML needs Content-Type: application/yaml. A body that is JSON and
// breaks a rule (a null, an array, an empty name) said it too, pointing away from the problem.
func TestAppliances_YAMLHintOnlyForABodyThatIsNotJSON(t *testing.T) {
	f := newFixture(t)
	const hint = "a YAML body needs Content-Type: application/yaml"
	for _, c := range []struct {
		body string
		hint bool
	}{
		{"keys:\n  app:\n    port: 8080\n", true},
		{`{"keys":{"a":"1"}`, true},
		{`{"keys":{"a":null}}`, false},
		{`{"keys":{"a":[1,2]}}`, false},
		{`{"keys":{"":"x"}}`, false},
		{`{"keys":{"a":"\ud800"}}`, false},
	} {
		for _, hdr := range [][]string{nil, {"Content-Type", "application/x-www-form-urlencoded"}} {
			r := f.do("PUT", "/v1/appliances/hint", c.body, hdr...)
			if r.StatusCode != 400 || strings.Contains(r.errMessage(), hint) != c.hint {
				t.Errorf("apply %q (%v): %d %s; want 400 with the YAML hint %t", c.body, hdr, r.StatusCode, r.body, c.hint)
			}
		}
	}
}

func TestAppliances_InstanceReports(t *testing.T) {
	f := newFixture(t)
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	f.must(f.do("PUT", "/v1/appliances/db", `{"keys":{"a":"1"}}`), 200, nil)
	agent := f.newToken(api.TokenRequest{Name: "agent-web", Appliance: "web"})
	v := f.view("web")
	f.must(f.doToken(agent, "GET", "/v1/appliances/web", "", api.HeaderInstance, "vm-1", api.HeaderApplied, fmt.Sprint(v.Revision)), 200, nil)
	f.must(f.doToken(agent, "GET", lp("web", v.Revision, "0"), "", api.HeaderInstance, "vm-2"), 304, nil)
	var got api.Instances
	waitFor(t, "reports recorded", func() bool {
		got = api.Instances{}
		f.must(f.do("GET", "/v1/appliances/web/instances", ""), 200, &got)
		return len(got.Instances) == 2
	})
	if a, b := got.Instances[0], got.Instances[1]; a.Instance != "vm-1" || a.Applied != v.Revision || a.Token != "agent-web" || a.LastSeen.IsZero() ||
		b.Instance != "vm-2" || b.Applied != 0 {
		t.Fatalf("instances %+v", got.Instances)
	}
	// Every agent's address and token name are for operators: an agent token may not list them,
	// not even its own appliance's; a read grant on the appliance may.
	f.mustErr(f.doToken(agent, "GET", "/v1/appliances/web/instances", ""), 403, api.CodeForbidden, "read grant")
	f.mustErr(f.doToken(agent, "GET", "/v1/appliances/db/instances", ""), 403, api.CodeForbidden)
	reader := f.newToken(api.TokenRequest{Name: "reader-web", Read: []string{"appliances/web"}})
	f.must(f.doToken(reader, "GET", "/v1/appliances/web/instances", ""), 200, nil)
	f.mustErr(f.doToken(reader, "GET", "/v1/appliances/db/instances", ""), 403, api.CodeForbidden)
	f.mustErr(f.doToken(agent, "GET", "/v1/appliances/web", "", api.HeaderInstance, "vm 3"), 400, api.CodeInvalidName, "X-Shoelace-Instance")
	f.mustErr(f.doToken(agent, "GET", "/v1/appliances/web", "", api.HeaderInstance, "vm-3", api.HeaderApplied, "x"), 400, api.CodeInvalidRequest, "X-Shoelace-Applied")
	f.mustErr(f.doToken(agent, "GET", "/v1/appliances/web", "", api.HeaderInstance, "vm-3", api.HeaderApplied, "+5"), 400, api.CodeInvalidRequest, "X-Shoelace-Applied")
	f.mustErr(f.doToken(agent, "GET", "/v1/appliances/web", "", api.HeaderApplied, "5"), 400, api.CodeInvalidRequest, "X-Shoelace-Instance")
	var db api.Instances
	f.must(f.do("GET", "/v1/appliances/db/instances", ""), 200, &db)
	if len(db.Instances) != 0 {
		t.Fatalf("db instances %+v", db.Instances)
	}
}

// A fleet's reports arriving together (a shared/ change moves every agent's applied revision)
// are written in batches, and none is lost, even past one batch.
func TestAppliances_InstanceReportsInBatches(t *testing.T) {
	f := newFixture(t)
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	start := f.view("web").Revision
	const fleet = reportBatch + 44
	now := time.Now().UTC()
	for i := range fleet {
		f.s.reports.note(&api.Instance{Appliance: "web", Instance: fmt.Sprintf("vm-%03d", i), Applied: start, LastSeen: now}, nil, "")
	}
	var got api.Instances
	waitFor(t, "every report recorded", func() bool {
		got = api.Instances{}
		f.must(f.do("GET", "/v1/appliances/web/instances", ""), 200, &got)
		return len(got.Instances) == fleet
	})
	for _, in := range got.Instances {
		if in.Applied != start {
			t.Fatalf("instance %+v, want applied %d", in, start)
		}
	}
	if used := f.view("web").Revision - start; used >= fleet {
		t.Errorf("%d reports took %d revisions: they were not batched", fleet, used)
	}
}

// Reports that arrive within the reporter's window of the first are written in one transaction,
// the latest of an instance winning: a stream of changes moves an agent's applied revision with
// each, and writing each report at once cost one etcd write per change.
func TestAppliances_InstanceReportsWithinAWindow(t *testing.T) {
	parallelShared(t)
	f := newFixture(t)
	f.s.reports.window = 2 * time.Second // far longer than the pause below, whatever the machine
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	now := time.Now().UTC()
	// The reporter takes the first report and then waits out its window, collecting the rest:
	// whether it has taken the first before the others are queued makes no difference.
	f.s.reports.note(&api.Instance{Appliance: "web", Instance: "vm-1", Applied: 1, LastSeen: now}, nil, "")
	for applied := int64(2); applied <= 20; applied++ {
		f.s.reports.note(&api.Instance{Appliance: "web", Instance: "vm-1", Applied: applied, LastSeen: now}, nil, "")
	}
	var got api.Instances
	waitFor(t, "the report recorded", func() bool {
		got = api.Instances{}
		r := f.do("GET", "/v1/appliances/web/instances", "")
		if r.StatusCode == 503 {
			return false // the shared etcd, busy with other tests' writes, did not answer in time
		}
		f.must(r, 200, &got)
		return len(got.Instances) == 1
	})
	if got.Instances[0].Applied != 20 {
		t.Fatalf("recorded %+v, want the latest report (applied 20)", got.Instances[0])
	}
	// The record's version counts its writes (the store's revision would count the other
	// tests' writes to the shared etcd as well).
	cli, err := clientv3.New(clientv3.Config{Endpoints: testutil.Etcd(t), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	resp, err := cli.Get(context.Background(), f.st.Root()+"sys/"+instancePrefix+"web/vm-1")
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("the report's record: %v, %v", resp, err)
	}
	if v := resp.Kvs[0].Version; v != 1 {
		t.Errorf("20 reports within the window were written %d times, want 1", v)
	}
}

// A dry run's plan is the apply's: the key named as the appliance's root itself
// (appliances/web, in no view) is not the appliance's, and neither the apply nor its plan
// deletes it. Before, the plan listed it as deleted, and the apply kept it.
func TestAppliances_ApplyDryRunLeavesTheRootKeyOut(t *testing.T) {
	f := newFixture(t)
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	f.put("appliances/web", "the root")
	var plan api.ApplyPlan
	f.must(f.do("PUT", "/v1/appliances/web?dry_run", `{"keys":{"a":"1"}}`), 200, &plan)
	if len(plan.Put)+len(plan.Changed)+len(plan.Deleted) != 0 || plan.Unchanged != 1 || len(plan.Old)+len(plan.New) != 0 {
		t.Fatalf("plan = %+v, want 1 unchanged and nothing else", plan)
	}
	var w api.WriteResult
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, &w)
	if !w.Unchanged {
		t.Fatalf("the apply of the plan: %+v, want unchanged", w)
	}
	f.must(f.do("GET", "/v1/kv/appliances/web", ""), 200, nil)
}

// A dry run of an apply answers what it would put, change and delete, at the revision it read,
// and writes nothing; it works in maintenance mode, and
// only for a token that may write the appliance.
func TestAppliances_ApplyDryRun(t *testing.T) {
	f := newFixture(t)
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"keep":"1","change":"old","gone":"x","secrets":{"pw":"p"}}}`), 200, nil)
	f.put("appliances/web-frontend/other", "1") // another appliance: not part of the plan
	before := f.view("web")

	var plan api.ApplyPlan
	r := f.do("PUT", "/v1/appliances/web?dry_run", `{"keys":{"keep":"1","change":"new","added":{"x":"1"},"secrets":{"pw":"q"}}}`)
	f.must(r, 200, &plan)
	want := api.ApplyPlan{Revision: before.Revision, DryRun: true, Put: []string{"appliances/web/added/x"},
		Changed: []string{"appliances/web/change", "appliances/web/secrets/pw"}, Deleted: []string{"appliances/web/gone"}, Unchanged: 1,
		Old: map[string]string{"appliances/web/change": "old", "appliances/web/gone": "x", "appliances/web/secrets/pw": api.MaskedSecret},
		New: map[string]string{"appliances/web/added/x": "1", "appliances/web/change": "new", "appliances/web/secrets/pw": api.MaskedSecret}}
	if !reflect.DeepEqual(plan, want) {
		t.Fatalf("plan = %+v, want %+v", plan, want)
	}
	if got := r.Header.Get(api.HeaderIndex); got != strconv.FormatInt(before.Revision, 10) {
		t.Errorf("X-Shoelace-Index = %s, want %d", got, before.Revision)
	}
	if after := f.view("web"); after.Revision != before.Revision || !reflect.DeepEqual(after.Keys, before.Keys) {
		t.Fatalf("the dry run wrote: view %+v, was %+v", after, before)
	}

	// The body is checked as for the apply itself; cas belongs to the apply.
	f.mustErr(f.do("PUT", "/v1/appliances/web?dry_run", `{"keys":{"a":null}}`), 400, api.CodeInvalidBody)
	f.mustErr(f.do("PUT", "/v1/appliances/web?dry_run&cas=5", `{"keys":{"a":"1"}}`), 400, api.CodeInvalidRequest, "give that as cas to the apply")
	// A canary apply changes no live key (it starts a rollout, which may be refused): a dry run
	// of one answered the plain apply's plan, as if canary had not been given.
	f.mustErr(f.do("PUT", "/v1/appliances/web?dry_run&canary=10%25", `{"keys":{"a":"1"}}`), 400, api.CodeInvalidRequest, "starts no rollout")

	// Read-only tokens and agents may not; maintenance does not stop a dry run.
	reader := f.newToken(api.TokenRequest{Name: "reader", Read: []string{"appliances/web"}})
	f.mustErr(f.doToken(reader, "PUT", "/v1/appliances/web?dry_run", `{"keys":{"a":"1"}}`), 403, api.CodeForbidden)
	f.must(f.do("PUT", "/v1/maintenance", `{"on":true}`), 200, nil)
	waitFor(t, "maintenance on", func() bool { return f.s.maintenance.Load() })
	f.must(f.do("PUT", "/v1/appliances/web?dry_run", `{"keys":{"keep":"1"}}`), 200, &plan)
	f.mustErr(f.do("PUT", "/v1/appliances/web", `{"keys":{"keep":"1"}}`), 503, api.CodeMaintenance)
	f.must(f.do("PUT", "/v1/maintenance", `{"on":false}`), 200, nil)
}
