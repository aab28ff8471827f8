package api

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"math/rand/v2"
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

// The sum is fixed by the contract (docs/DESIGN.md): the empty view's is zero, and a one-key
// view's is the sha256 of uvarint(len(key)) key uvarint(len(value)) value.
func TestViewSum_Defined(t *testing.T) {
	if got := ViewSum(nil); got != strings.Repeat("0", 64) {
		t.Fatalf("empty view: %s", got)
	}
	h := sha256.Sum256([]byte("\x04port\x048080"))
	if got, want := ViewSum(map[string]string{"port": "8080"}), hex.EncodeToString(h[:]); got != want {
		t.Fatalf("one key: %s, want %s", got, want)
	}
	// Two keys: the sum modulo 2^256 of their digests (carries across words).
	a, b := sha256.Sum256([]byte("\x01a\x011")), sha256.Sum256([]byte("\x01b\x012"))
	x, y := new(big.Int).SetBytes(a[:]), new(big.Int).SetBytes(b[:])
	z := new(big.Int).Add(x, y)
	z.Mod(z, new(big.Int).Lsh(big.NewInt(1), 256))
	if got, want := ViewSum(map[string]string{"a": "1", "b": "2"}), fmt.Sprintf("%064x", z); got != want {
		t.Fatalf("two keys: %s, want %s", got, want)
	}
}

// Following a view delta by delta with the sums kept (ApplyDeltaSum) gives the same view and
// the same sum as computing them whole, under random changes.
func TestApplyDeltaSum_Incremental(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	cur := View{Appliance: "web", Revision: 1, Keys: map[string]string{}}
	sum := ""
	for step := range 500 {
		next := View{Appliance: "web", Revision: cur.Revision + 1, Keys: maps.Clone(cur.Keys)}
		for range 1 + rng.IntN(5) {
			k := fmt.Sprintf("k%d", rng.IntN(40))
			if rng.IntN(3) == 0 {
				delete(next.Keys, k)
			} else {
				next.Keys[k] = fmt.Sprint(rng.IntN(10))
			}
		}
		got, gotSum, err := ApplyDeltaSum(cur, sum, Diff(cur, next))
		if err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		if !maps.Equal(got.Keys, next.Keys) || gotSum != ViewSum(next.Keys) {
			t.Fatalf("step %d: view %v sum %s, want %v %s", step, got.Keys, gotSum, next.Keys, ViewSum(next.Keys))
		}
		cur, sum = got, gotSum
	}
	// A wrong sum given for the base is caught, not carried on.
	if _, _, err := ApplyDeltaSum(cur, strings.Repeat("1", 64), Diff(cur, cur)); !errors.Is(err, ErrDeltaSum) {
		t.Fatalf("wrong base sum: %v", err)
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

// A delta that sets a key breaking the key rules does not apply (even with the right sum): a
// view made of deltas is then never checked whole (the agent checks full views only).
func TestApplyDelta_RefusesInvalidKeys(t *testing.T) {
	base := View{Appliance: "web", Revision: 5, Keys: map[string]string{"a": "1"}}
	for _, bad := range []string{"../etc/passwd", "/abs", "a//b", "x/./y", "a\nb"} {
		now := View{Appliance: "web", Revision: 6, Keys: map[string]string{"a": "1", bad: "evil"}}
		if _, err := ApplyDelta(base, Diff(base, now)); err == nil || !strings.Contains(err.Error(), "sets") {
			t.Errorf("delta setting %q: err %v, want one naming the key", bad, err)
		}
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

// parseKeys reads "k=v" lines into a view's keys (a fuzz input), keeping the keys that keep the
// key rules, as a view's do (ApplyDelta refuses a delta that sets another).
func parseKeys(s string) map[string]string {
	keys := map[string]string{}
	for _, line := range strings.Split(s, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && ValidateKey(k) == nil {
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

// BenchmarkApplyDeltaSum is a one-key change to a 10,000-key view, followed as a streaming
// client does (the base's sum known) and as ApplyDelta does (the sum computed whole).
func BenchmarkApplyDeltaSum(b *testing.B) {
	base := View{Appliance: "web", Revision: 1, Keys: map[string]string{}}
	for i := range 10000 {
		base.Keys[fmt.Sprintf("app/section%d/key%d", i%100, i)] = strings.Repeat("v", 16)
	}
	now := View{Appliance: "web", Revision: 2, Keys: maps.Clone(base.Keys)}
	now.Keys["app/section1/key1"] = "changed"
	d := Diff(base, now)
	sum := ViewSum(base.Keys)
	b.Run("sum-kept", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := ApplyDeltaSum(base, sum, d); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sum-whole", func(b *testing.B) {
		for b.Loop() {
			if _, err := ApplyDelta(base, d); err != nil {
				b.Fatal(err)
			}
		}
	})
}
