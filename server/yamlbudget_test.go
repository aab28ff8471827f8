package server

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// A body of many tiny keys is refused once it passes the key limit, as it is read: before, the
// whole body was flattened into a map first (480,000 keys of a 5 MB body: ~108 MB of heap)
// and refused after.
func TestApplyBody_TooManyKeysRefusedAsRead(t *testing.T) {
	var js, ym strings.Builder
	js.WriteString(`{"keys":{`)
	ym.WriteString("keys:\n")
	const n = 200_000
	for i := range n {
		if i > 0 {
			js.WriteByte(',')
		}
		fmt.Fprintf(&js, `"k%d":"1"`, i)
		fmt.Fprintf(&ym, "  k%d: 1\n", i)
	}
	js.WriteString("}}")
	for _, c := range []struct{ media, body string }{{"application/json", js.String()}, {api.ContentTypeYAML, ym.String()}} {
		t.Run(c.media, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			_, err := applyBody([]byte(c.body), c.media, "web", 1000, 100)
			runtime.ReadMemStats(&after)
			if e := api.AsError(err); e.Code != api.CodeTooLarge || !strings.Contains(e.Message, "limit of 100") {
				t.Fatalf("%d keys, limit 100: %v, want too_large naming the limit", n, err)
			}
			if c.media == "application/json" {
				// The decoder's tokens of 101 keys, not a map of 200,000.
				if grew := after.TotalAlloc - before.TotalAlloc; grew > 4<<20 {
					t.Errorf("refusing %d keys allocated %d MiB, want under 4", n, grew>>20)
				}
			}
		})
	}
}

// YAML bodies are parsed within a budget of bytes per replica (the parser builds the whole
// document first): with the budget taken, a YAML apply waits, then is answered 503 with
// Retry-After and writes nothing; a JSON apply is not held; once the budget is back, the
// YAML apply goes through.
func TestApply_YAMLBodiesWithinTheBudget(t *testing.T) {
	f := newFixture(t)
	f.s.yamlBudget.wait = 200 * time.Millisecond
	ctx := context.Background()
	if err := f.s.yamlBudget.sem.Acquire(ctx, f.s.yamlBudget.max); err != nil {
		t.Fatal(err)
	}
	r := f.do("PUT", "/v1/appliances/web", "keys:\n  port: 80\n", "Content-Type", api.ContentTypeYAML)
	f.mustErr(r, 503, api.CodeUnavailable, "large YAML bodies", "nothing was written")
	if r.Header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	f.mustErr(f.do("GET", "/v1/kv/appliances/web/port", ""), 404, api.CodeNotFound)
	f.must(f.do("PUT", "/v1/appliances/db", `{"keys":{"port":"5432"}}`), 200, nil)

	f.s.yamlBudget.sem.Release(f.s.yamlBudget.max)
	f.must(f.do("PUT", "/v1/appliances/web", "keys:\n  port: 80\n", "Content-Type", api.ContentTypeYAML), 200, nil)
	// Each body gave its share back: the whole budget can be taken again.
	if !f.s.yamlBudget.sem.TryAcquire(f.s.yamlBudget.max) {
		t.Fatal("the budget was not given back after the applies")
	}
	f.s.yamlBudget.sem.Release(f.s.yamlBudget.max)
}
