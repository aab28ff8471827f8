package api

import (
	"encoding/json"
	"errors"
	"maps"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestViewSum_OrderAndBoundaries(t *testing.T) {
	a := ViewSum(map[string]string{"a": "1", "b": "2"})
	if b := ViewSum(map[string]string{"b": "2", "a": "1"}); a != b {
		t.Fatalf("sum depends on map order: %s %s", a, b)
	}
	// Moving bytes between a key and its value must change the sum.
	if ViewSum(map[string]string{"ab": "c"}) == ViewSum(map[string]string{"a": "bc"}) {
		t.Fatal("sum does not tell key from value")
	}
	if ViewSum(nil) != ViewSum(map[string]string{}) {
		t.Fatal("nil and empty views differ")
	}
}

func TestApplyDelta(t *testing.T) {
	base := View{Appliance: "web", Revision: 5, Keys: map[string]string{"a": "1", "b": "2", "c": "3"}}
	now := View{Appliance: "web", Revision: 9, Keys: map[string]string{"a": "1", "b": "20", "d": "4"}, Rollout: "r1"}
	d := Diff(base, now)
	if got, want := d.Set, map[string]string{"b": "20", "d": "4"}; !maps.Equal(got, want) {
		t.Fatalf("set %v, want %v", got, want)
	}
	if len(d.Unset) != 1 || d.Unset[0] != "c" || d.Base != 5 || d.Revision != 9 || d.Rollout != "r1" {
		t.Fatalf("delta %+v", d)
	}
	got, err := ApplyDelta(base, d)
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(got.Keys, now.Keys) || got.Revision != 9 || got.Rollout != "r1" {
		t.Fatalf("applied %+v, want %+v", got, now)
	}
	if base.Keys["c"] != "3" || base.Keys["b"] != "2" {
		t.Fatalf("base changed: %v", base.Keys)
	}
	other := View{Appliance: "web", Revision: 5, Keys: map[string]string{"a": "1", "b": "2", "e": "5"}}
	if _, err := ApplyDelta(other, d); !errors.Is(err, ErrDeltaSum) {
		t.Fatalf("delta applied to another base: err %v, want ErrDeltaSum", err)
	}
	if _, err := ApplyDelta(View{Appliance: "db", Keys: base.Keys}, d); !errors.Is(err, ErrDeltaSum) {
		t.Fatalf("delta applied to another appliance: err %v", err)
	}
}

func TestUpdate_Decode(t *testing.T) {
	for _, tc := range []struct {
		line             string
		delta, heartbeat bool
	}{
		{`{"appliance":"web","revision":3,"keys":{"a":"1"}}`, false, false},
		{`{"appliance":"web","revision":3,"base":2,"set":{"a":"1"},"sum":"x"}`, true, false},
		{`{"heartbeat":true,"revision":3}`, false, true},
	} {
		var u Update
		if err := json.Unmarshal([]byte(tc.line), &u); err != nil {
			t.Fatal(err)
		}
		if u.IsDelta() != tc.delta || u.Heartbeat != tc.heartbeat || u.Revision != 3 {
			t.Fatalf("%s: %+v", tc.line, u)
		}
	}
}

// parseKeys reads "k=v" lines into a view's keys (a fuzz input).
func parseKeys(s string) map[string]string {
	keys := map[string]string{}
	for _, line := range strings.Split(s, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && k != "" {
			keys[k] = v
		}
	}
	return keys
}

// FuzzDelta checks that the delta between any two views, sent as JSON, applied to the first
// gives the second, and that applying any delta to any view never panics and never gives a
// view whose sum differs from the delta's.
func FuzzDelta(f *testing.F) {
	f.Add("a=1\nb=2", "a=1\nb=3", []byte(`{"appliance":"web","base":1,"set":{"b":"3"},"sum":""}`))
	f.Add("", "x=", []byte(`{"appliance":"web","base":1,"unset":["x","x"]}`))
	f.Add("a/b=\x00\nc=", "a/b=\x00x", []byte(`{}`))
	f.Fuzz(func(t *testing.T, a, b string, raw []byte) {
		if !utf8.ValidString(a) || !utf8.ValidString(b) {
			return // views are JSON text: their keys and values are UTF-8
		}
		base := View{Appliance: "web", Revision: 1, Keys: parseKeys(a)}
		now := View{Appliance: "web", Revision: 2, Keys: parseKeys(b)}
		data, err := json.Marshal(Diff(base, now))
		if err != nil {
			t.Fatal(err)
		}
		var u Update
		if err := json.Unmarshal(data, &u); err != nil {
			t.Fatal(err)
		}
		got, err := ApplyDelta(base, u.Delta())
		if err != nil {
			t.Fatalf("apply %s: %v", data, err)
		}
		if !maps.Equal(got.Keys, now.Keys) {
			t.Fatalf("applied %v, want %v", got.Keys, now.Keys)
		}
		var d Delta
		if json.Unmarshal(raw, &d) != nil {
			return
		}
		if v, err := ApplyDelta(base, d); err == nil && ViewSum(v.Keys) != d.Sum {
			t.Fatalf("applied a delta whose sum does not match")
		}
	})
}
