package store

import "testing"

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
