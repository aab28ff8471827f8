package store

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestSpans_Meet(t *testing.T) {
	var s spans
	s.add(span{"/a/k", ""})
	s.add(span{"/p/", "/p0"}) // the prefix /p/
	for _, c := range []struct {
		sp   span
		want bool
	}{
		{span{"/a/k", ""}, true},
		{span{"/a/k2", ""}, false},
		{span{"/a/", "/a0"}, true},       // a prefix holding /a/k
		{span{"/a/k\x00", "/b"}, false},  // just after /a/k
		{span{"/a/j", "/a/k"}, false},    // ends before /a/k
		{span{"/a/j", "/a/k\x00"}, true}, // ends just after it
		{span{"/p/x", ""}, true},
		{span{"/p0", ""}, false},
		{span{"/o", "/p/"}, false},
		{span{"/o", "/p/\x00"}, true},
		{span{"/z", "\x00"}, false}, // every key from /z
		{span{"/", "\x00"}, true},
	} {
		if got := s.meets(c.sp); got != c.want {
			t.Errorf("meets(%q) = %v, want %v", c.sp, got, c.want)
		}
	}
	var all spans
	all.add(span{"\x00", "\x00"})
	if !all.meets(span{"/any", ""}) {
		t.Error("every key does not meet /any")
	}
}

// The indexed set answers as a plain list of its spans would, for keys, subtrees and other
// ranges drawn from a small alphabet (so that they often meet).
func TestSpans_MeetsAsAList(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	word := func() string {
		var b strings.Builder
		for range 1 + r.IntN(4) {
			b.WriteByte("ab/"[r.IntN(3)])
		}
		return "/" + b.String()
	}
	draw := func() span {
		k := word()
		switch r.IntN(5) {
		case 0, 1:
			return span{k, ""}
		case 2:
			k = strings.TrimRight(k, "/") + "/"
			return span{k, clientv3.GetPrefixRangeEnd(k)}
		case 3:
			return span{k, "\x00"}
		default:
			if e := word(); e > k {
				return span{k, e}
			}
			return span{k, k + "\x00"}
		}
	}
	meets := func(a, b span) bool {
		switch {
		case a.end == "" && b.end == "":
			return a.key == b.key
		case a.end == "":
			return b.contains(a.key)
		case b.end == "":
			return a.contains(b.key)
		}
		return a.overlaps(b)
	}
	var s spans // one set, reset each round as the batcher's are
	for range 2000 {
		s.reset()
		var list []span
		for range r.IntN(6) {
			sp := draw()
			s.add(sp)
			list = append(list, sp)
		}
		for range 20 {
			sp := draw()
			want := slices.ContainsFunc(list, func(o span) bool { return meets(o, sp) })
			if got := s.meets(sp); got != want {
				t.Fatalf("set %q: meets(%q) = %v, want %v", list, sp, got, want)
			}
		}
	}
}
