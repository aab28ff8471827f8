package server

import (
	"fmt"
	"strings"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// A key's history reads its versions back until they hold maxKeyHistoryBytes of values as the
// answer writes them (the newest always; a control character is six bytes in JSON), and says when it left older ones out. It read up to 100 versions whatever
// their size, and built the answer whole before its bound on answers looked at it: 100 versions
// of 1 MB of control characters, 600 MB of JSON each, and six such requests at once took a
// replica to 8.7 GB.
func TestKV_HistoryBoundedInBytes(t *testing.T) {
	f := newFixture(t)
	const size = 600 << 10
	for i := range 12 {
		f.put("appliances/web/big", strings.Repeat("\x01", size-3)+fmt.Sprintf("%03d", i))
	}
	f.put("appliances/web/small", "1")
	f.put("appliances/web/small", "2")
	reader := f.newToken(api.TokenRequest{Name: "reader", Read: []string{"appliances/web"}})

	var h api.KeyHistory
	f.must(f.doToken(reader, "GET", "/v1/kv/appliances/web/big?history&limit=100", ""), 200, &h)
	// Counted as the answer writes them: a control character takes six bytes (\u0001).
	per := 6*(size-3) + 3
	want := (maxKeyHistoryBytes + per - 1) / per
	if len(h.Versions) != want || !h.Cut || h.Compacted {
		t.Fatalf("history of 12 versions of %d bytes: %d versions, cut %v, compacted %v; want %d, cut", size, len(h.Versions), h.Cut, h.Compacted, want)
	}
	for i, v := range h.Versions {
		if suffix := fmt.Sprintf("%03d", 11-i); !strings.HasSuffix(v.Value, suffix) {
			t.Fatalf("version %d ends %q, want %q: not the newest first", i, v.Value[len(v.Value)-3:], suffix)
		}
	}
	if len(h.Releases) != 12 {
		t.Fatalf("%d releases, want 12 (they are not cut)", len(h.Releases))
	}
	// A limit reached is no cut.
	h = api.KeyHistory{}
	f.must(f.doToken(reader, "GET", "/v1/kv/appliances/web/big?history&limit=1", ""), 200, &h)
	if len(h.Versions) != 1 || h.Cut {
		t.Fatalf("limit=1: %d versions, cut %v", len(h.Versions), h.Cut)
	}
	// A small key's history is whole.
	h = api.KeyHistory{}
	f.must(f.doToken(reader, "GET", "/v1/kv/appliances/web/small?history", ""), 200, &h)
	if len(h.Versions) != 2 || h.Cut {
		t.Fatalf("small key: %d versions, cut %v", len(h.Versions), h.Cut)
	}
}
