package store_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/testutil"
	"github.com/shoelace-dev/shoelace/server/store"
)

// SysPage answers at most limit keys of its spans, in the spans' order and each span's key
// order, and says whether any remain; an empty span (From not below To) holds none.
func TestStore_SysPage(t *testing.T) {
	ctx := t.Context()
	s := testutil.Store(t)
	for i := range 30 {
		for _, k := range []string{fmt.Sprintf("page/a%02d", i), fmt.Sprintf("page/b%02d", i)} {
			if _, err := s.SysPut(ctx, k, []byte(k), 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := s.SysPut(ctx, "pagf", []byte("x"), 0); err != nil {
		t.Fatal(err)
	}
	keys := func(kvs []store.SysKV) []string {
		var out []string
		for _, kv := range kvs {
			if string(kv.Value) != kv.Key {
				t.Fatalf("%s holds %q", kv.Key, kv.Value)
			}
			out = append(out, kv.Key)
		}
		return out
	}
	for _, c := range []struct {
		limit      int
		spans      []store.SysSpan
		first, end string
		n          int
		more       bool
	}{
		{5, []store.SysSpan{{"page/", "page0"}}, "page/a00", "page/a04", 5, true},
		{60, []store.SysSpan{{"page/", "page0"}}, "page/a00", "page/b29", 60, false},
		{100, []store.SysSpan{{"page/", "page0"}}, "page/a00", "page/b29", 60, false},
		{3, []store.SysSpan{{"page/a28", "page/b"}, {"page/b", "page0"}}, "page/a28", "page/b00", 3, true},
		{32, []store.SysSpan{{"page/a", "page/b"}, {"page/b28", "page0"}}, "page/a00", "page/b29", 32, false},
		{31, []store.SysSpan{{"page/a", "page/b"}, {"page/b28", "page0"}}, "page/a00", "page/b28", 31, true},
		{30, []store.SysSpan{{"page/a", "page/b"}, {"page/c", "page0"}}, "page/a00", "page/a29", 30, false},
		{4, []store.SysSpan{{"page/b", "page/a"}, {"page/b27", "page0"}}, "page/b27", "page/b29", 3, false},
	} {
		kvs, rev, more, err := s.SysPage(ctx, c.limit, c.spans...)
		got := keys(kvs)
		if err != nil || rev <= 0 || len(got) != c.n || got[0] != c.first || got[len(got)-1] != c.end || more != c.more || !slices.IsSorted(got) {
			t.Errorf("SysPage(%d, %v) = %d keys %s..%s, more %v, rev %d, %v; want %d %s..%s, more %v",
				c.limit, c.spans, len(got), got[0], got[len(got)-1], more, rev, err, c.n, c.first, c.end, c.more)
		}
	}
}
