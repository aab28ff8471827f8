package main

import (
	"bytes"
	"reflect"
	"strings"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/api"
)

func TestParseDump(t *testing.T) {
	good := `{"revision":7,"store":"s1","exported":"2026-11-26T02:00:00Z","omitted":["appliances/web/secrets/pw"],
		"keys":{"shared/a":"1","appliances/web/x":"line\n\ttab \u00e9"}}`
	d, err := parseDump([]byte(good))
	if err != nil {
		t.Fatalf("parseDump(good): %v", err)
	}
	if want := (keyMap{"shared/a": "1", "appliances/web/x": "line\n\ttab é"}); !reflect.DeepEqual(d.Keys, want) {
		t.Errorf("keys = %q, want %q", d.Keys, want)
	}
	if d.Revision != 7 || d.Store != "s1" || !reflect.DeepEqual(d.Omitted, []string{"appliances/web/secrets/pw"}) {
		t.Errorf("parseDump(good) = %+v", d)
	}
	// The format before "omitted" existed still reads, as a whole export.
	old, err := parseDump([]byte(`{"revision":3,"keys":{"a":""}}`))
	if err != nil || old.Keys["a"] != "" || len(old.Keys) != 1 || old.Omitted == nil || len(old.Omitted) != 0 {
		t.Errorf("parseDump(old format) = %+v, %v", old, err)
	}

	bad := []struct{ name, in, want string }{
		{"invalid key", `{"keys":{"a//b":"1"}}`, `invalid key "a//b"`},
		{"dot segment", `{"keys":{"a/../b":"1"}}`, `invalid key`},
		{"number value", `{"keys":{"a":1}}`, `value of "a" must be a string`},
		{"null value", `{"keys":{"a":null}}`, `value of "a" is null`},
		{"duplicate key", `{"keys":{"a":"1","b":"2","a":"3"}}`, `member "a" is given twice`},
		{"keys twice", `{"keys":{"a":"1"},"keys":{"b":"2"}}`, `member "keys" is given twice`},
		{"omitted twice as a member", `{"omitted":["secrets/x"],"keys":{},"omitted":[]}`, `member "omitted" is given twice`},
		{"keys not object", `{"keys":["a"]}`, `"keys" must be an object`},
		{"unknown field", `{"kyes":{"a":"1"}}`, `unknown field "kyes"`},
		{"no keys", `{"revision":3}`, `no "keys" object`},
		{"null keys", `{"keys":null}`, `no "keys" object`},
		{"two values", `{"keys":{}} {"keys":{}}`, "data after the JSON object"},
		{"yaml", `keys: {a: b}`, "not an export"},
		{"empty", ``, "not an export"},
		{"invalid utf8", "{\"keys\":{\"a\":\"\xff\"}}", "not valid UTF-8"},
		{"lone surrogate", `{"keys":{"a":"\ud800"}}`, `the string escape \ud800 at byte 14 is a lone UTF-16 surrogate`},
		{"lone surrogate in a key", `{"keys":{"a/\udbff":"1"}}`, `lone UTF-16 surrogate`},
		{"empty key", `{"keys":{"":"1"}}`, `invalid key: a key must not be empty`},
		// Every key refused, in order (it named one, a random one in the map's order).
		{"several refused", `{"keys":{"shared/z z":"1","shared/ok":"2","/web/a":"3","shared/.x":"4"}}`,
			`3 keys refused, nothing written: [1] invalid key "/web/a": a leading '/' is a confd-style path`},
		{"several refused, the last", `{"keys":{"shared/z z":"1","shared/ok":"2","/web/a":"3","shared/.x":"4"}}`,
			`[2] invalid key "shared/.x": segment 2 ".x" must start with a letter or digit [3] invalid key "shared/z z"`},
		{"negative revision", `{"revision":-1,"keys":{}}`, "revision -1: must be >= 0"},
		{"bad time", `{"exported":"yesterday","keys":{}}`, `exported "yesterday": not an RFC 3339 time`},
		{"omitted not secret", `{"omitted":["shared/a"],"keys":{}}`, `omitted key "shared/a" is not a secret key`},
		{"omitted invalid", `{"omitted":["secrets//x"],"keys":{}}`, `omitted: invalid key`},
		{"omitted twice", `{"omitted":["secrets/x","secrets/x"],"keys":{}}`, `omitted key "secrets/x" appears twice`},
		{"omitted and kept", `{"omitted":["secrets/x"],"keys":{"secrets/x":"v"}}`, `key "secrets/x" is both in "keys" and in "omitted"`},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := parseDump([]byte(tt.in)); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("parseDump(%q) = %v, want an error saying %q", tt.in, err, tt.want)
			}
		})
	}
}

func TestBuildDump_RoundTrip(t *testing.T) {
	entries := []api.KV{
		{Key: "shared/z", Value: "last"},
		{Key: "appliances/web/secrets/pw", Value: "hunter2"},
		{Key: "shared/html", Value: "<a href=\"x\">&amp;</a>\r\n"},
		{Key: "secrets/root", Value: "s"},
		{Key: "shared/empty", Value: ""},
	}
	d, included := buildDump(entries, false)
	if want := []string{"appliances/web/secrets/pw", "secrets/root"}; !reflect.DeepEqual(d.Omitted, want) || included != nil {
		t.Errorf("without secrets: omitted %q, included %q; want omitted %q", d.Omitted, included, want)
	}
	if _, ok := d.Keys["secrets/root"]; ok || len(d.Keys) != 3 {
		t.Errorf("without secrets: keys %q", d.Keys)
	}
	d, included = buildDump(entries, true)
	if len(d.Omitted) != 0 || d.Omitted == nil || len(included) != 2 || len(d.Keys) != 5 {
		t.Errorf("with secrets: omitted %q, included %q, %d keys", d.Omitted, included, len(d.Keys))
	}
	var buf bytes.Buffer
	enc := jsonEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(d); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), `"omitted": []`) {
		t.Errorf("an export with nothing left out must say so: %s", buf.String())
	}
	back, err := parseDump(buf.Bytes())
	if err != nil {
		t.Fatalf("parseDump(export): %v\n%s", err, buf.String())
	}
	for _, kv := range entries {
		if got, ok := back.Keys[kv.Key]; !ok || got != kv.Value {
			t.Errorf("round trip %s = %q, want %q", kv.Key, got, kv.Value)
		}
	}
}

func TestPlanImport(t *testing.T) {
	file := dump{
		Keys:    keyMap{"shared/a": "1", "shared/b": "2", "appliances/web/x": "3"},
		Omitted: []string{"appliances/web/secrets/pw", "secrets/gone"},
	}
	store := []api.KV{
		{Key: "appliances/web/secrets/pw", ModRevision: 5},
		{Key: "appliances/old/y", ModRevision: 6},
		{Key: "secrets/other", ModRevision: 7},
		{Key: "shared/a", ModRevision: 8},
	}

	t.Run("non-empty store without a mode merges", func(t *testing.T) {
		p, err := planImport(file, store, "")
		if err != nil {
			t.Fatal(err)
		}
		if p.Mode != modeMerge || len(p.Delete) != 0 || len(p.Txn.Guards) != 0 {
			t.Errorf("plan = %+v, want an unguarded merge that deletes nothing", p)
		}
	})

	t.Run("empty store: puts guarded must-not-exist", func(t *testing.T) {
		p, err := planImport(file, nil, "")
		if err != nil {
			t.Fatal(err)
		}
		if p.Mode != modeEmpty || len(p.Delete) != 0 || len(p.Kept) != 0 {
			t.Errorf("plan = %+v", p)
		}
		if want := []string{"appliances/web/secrets/pw", "secrets/gone"}; !reflect.DeepEqual(p.Missing, want) {
			t.Errorf("missing = %q, want %q", p.Missing, want)
		}
		wantOps := []api.Op{
			{Op: api.OpPut, Key: "appliances/web/x", Value: "3"},
			{Op: api.OpPut, Key: "shared/a", Value: "1"},
			{Op: api.OpPut, Key: "shared/b", Value: "2"},
		}
		wantGuards := []api.Guard{{Key: "appliances/web/x"}, {Key: "shared/a"}, {Key: "shared/b"}}
		if !reflect.DeepEqual(p.Txn.Ops, wantOps) || !reflect.DeepEqual(p.Txn.Guards, wantGuards) {
			t.Errorf("txn = %+v, want ops %+v guards %+v", p.Txn, wantOps, wantGuards)
		}
	})

	t.Run("merge: puts only, no guards when no key holds the file's value", func(t *testing.T) {
		p, err := planImport(file, store, modeMerge)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Txn.Ops) != 3 || len(p.Txn.Guards) != 0 || len(p.Delete) != 0 {
			t.Errorf("txn = %+v", p.Txn)
		}
		for _, op := range p.Txn.Ops {
			if op.Op != api.OpPut {
				t.Errorf("merge op %+v: merge never deletes", op)
			}
		}
		if !reflect.DeepEqual(p.Kept, []string{"appliances/web/secrets/pw"}) || !reflect.DeepEqual(p.Missing, []string{"secrets/gone"}) {
			t.Errorf("kept %q, missing %q", p.Kept, p.Missing)
		}
	})

	t.Run("replace: deletes the others, keeps omitted, guards everything", func(t *testing.T) {
		p, err := planImport(file, store, modeReplace)
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{"appliances/old/y", "secrets/other"}; !reflect.DeepEqual(p.Delete, want) {
			t.Errorf("delete = %q, want %q (omitted secret kept, unlisted secret deleted)", p.Delete, want)
		}
		if !reflect.DeepEqual(p.Kept, []string{"appliances/web/secrets/pw"}) {
			t.Errorf("kept = %q", p.Kept)
		}
		wantOps := []api.Op{
			{Op: api.OpPut, Key: "appliances/web/x", Value: "3"},
			{Op: api.OpPut, Key: "shared/a", Value: "1"},
			{Op: api.OpPut, Key: "shared/b", Value: "2"},
			{Op: api.OpDelete, Key: "appliances/old/y"},
			{Op: api.OpDelete, Key: "secrets/other"},
		}
		if !reflect.DeepEqual(p.Txn.Ops, wantOps) {
			t.Errorf("ops = %+v, want %+v", p.Txn.Ops, wantOps)
		}
		wantGuards := []api.Guard{
			{Key: "appliances/old/y", ModRevision: 6},
			{Key: "appliances/web/secrets/pw", ModRevision: 5},
			{Key: "appliances/web/x", ModRevision: 0},
			{Key: "secrets/other", ModRevision: 7},
			{Key: "shared/a", ModRevision: 8},
			{Key: "shared/b", ModRevision: 0},
		}
		if !reflect.DeepEqual(p.Txn.Guards, wantGuards) {
			t.Errorf("guards = %+v, want %+v", p.Txn.Guards, wantGuards)
		}
	})

	// A key that holds the file's value already is not written (its revision stays, its agents
	// sleep on) but guarded at the revision it was listed with: the store holds the file's
	// values when the transaction commits, or nothing is written.
	same := []api.KV{
		{Key: "shared/a", Value: "1", ModRevision: 8},
		{Key: "shared/b", Value: "old", ModRevision: 9},
		{Key: "appliances/old/y", Value: "y", ModRevision: 6},
	}
	t.Run("merge: keys holding the file's value are guarded, not put", func(t *testing.T) {
		p, err := planImport(file, same, modeMerge)
		if err != nil {
			t.Fatal(err)
		}
		wantOps := []api.Op{
			{Op: api.OpPut, Key: "appliances/web/x", Value: "3"},
			{Op: api.OpPut, Key: "shared/b", Value: "2"},
		}
		wantGuards := []api.Guard{{Key: "shared/a", ModRevision: 8}}
		if !reflect.DeepEqual(p.Txn.Ops, wantOps) || !reflect.DeepEqual(p.Txn.Guards, wantGuards) {
			t.Errorf("txn = %+v, want ops %+v guards %+v", p.Txn, wantOps, wantGuards)
		}
		if !reflect.DeepEqual(p.Put, []string{"appliances/web/x", "shared/b"}) || p.Unchanged != 1 ||
			!reflect.DeepEqual(p.Created, []string{"appliances/web/x"}) || !reflect.DeepEqual(p.Changed, []string{"shared/b"}) {
			t.Errorf("plan put %q created %q changed %q unchanged %d", p.Put, p.Created, p.Changed, p.Unchanged)
		}
	})
	t.Run("replace: keys holding the file's value are not put", func(t *testing.T) {
		p, err := planImport(file, same, modeReplace)
		if err != nil {
			t.Fatal(err)
		}
		wantOps := []api.Op{
			{Op: api.OpPut, Key: "appliances/web/x", Value: "3"},
			{Op: api.OpPut, Key: "shared/b", Value: "2"},
			{Op: api.OpDelete, Key: "appliances/old/y"},
		}
		if !reflect.DeepEqual(p.Txn.Ops, wantOps) {
			t.Errorf("ops = %+v, want %+v", p.Txn.Ops, wantOps)
		}
		if g := p.Txn.Guards; len(g) != 4 || g[2] != (api.Guard{Key: "shared/a", ModRevision: 8}) {
			t.Errorf("guards = %+v: every listed key and the created one, shared/a at 8", g)
		}
	})
	t.Run("nothing to change: no ops", func(t *testing.T) {
		p, err := planImport(dump{Keys: keyMap{"shared/a": "1"}}, same, modeMerge)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Txn.Ops) != 0 || p.Unchanged != 1 {
			t.Errorf("plan = %+v, want no ops and one unchanged key", p)
		}
	})

	t.Run("replace with an empty file deletes every key but the omitted", func(t *testing.T) {
		p, err := planImport(dump{Keys: keyMap{}, Omitted: []string{"secrets/other"}}, store, modeReplace)
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{"appliances/old/y", "appliances/web/secrets/pw", "shared/a"}; !reflect.DeepEqual(p.Delete, want) {
			t.Errorf("delete = %q, want %q", p.Delete, want)
		}
	})
}

func FuzzParseDump(f *testing.F) {
	f.Add([]byte(`{"revision":7,"store":"s","exported":"2026-11-26T02:00:00Z","omitted":["secrets/a"],"keys":{"shared/a":"1"}}`))
	f.Add([]byte(`{"keys":{"a":"1","a":"2"}}`))
	f.Add([]byte(`{"keys":{"a":null}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := parseDump(data)
		if err != nil {
			return
		}
		for k, v := range d.Keys {
			if api.ValidateKey(k) != nil || api.ValidateValue(k, []byte(v), 0) != nil {
				t.Fatalf("parseDump accepted key %q value %q", k, v)
			}
		}
		// No U+FFFD that the file does not spell: encoding/json writes one for a lone surrogate.
		spelt := bytes.Count(data, []byte("\ufffd")) + bytes.Count(bytes.ToLower(data), []byte(`\ufffd`))
		got := 0
		for k, v := range d.Keys {
			got += strings.Count(k+v, "\ufffd")
		}
		if got > spelt {
			t.Fatalf("parseDump accepted %q with %d U+FFFD, but it spells %d", data, got, spelt)
		}
		for _, k := range d.Omitted {
			if _, ok := d.Keys[k]; ok || !api.IsSecret(k) {
				t.Fatalf("parseDump accepted omitted %q", k)
			}
		}
		// What import accepted, export writes back the same.
		var buf bytes.Buffer
		if err := jsonEncoder(&buf).Encode(d); err != nil {
			t.Fatal(err)
		}
		back, err := parseDump(buf.Bytes())
		if err != nil || !reflect.DeepEqual(back.Keys, d.Keys) || !reflect.DeepEqual(back.Omitted, d.Omitted) {
			t.Fatalf("re-parse of %s = %+v, %v", buf.String(), back, err)
		}
	})
}
