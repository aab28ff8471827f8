package server

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// An apply in YAML held its share of the YAML budget until its handler returned, through its
// wait for the body budget's share of the live tree it reads (a dry run's, a write with canary's):
// a YAML apply holding its body's share and waiting for the YAML budget, which that one held,
// waited for it while it waited for that body's share, until the YAML budget's wait ran out
// (503). The YAML budget bounds the parse: its share is given back once the body is parsed.
func TestApply_YAMLShareGivenBackBeforeTheLiveTreesWait(t *testing.T) {
	f := newFixture(t)
	f.s.bodyBudget = newBodyBudget(64 << 10) // before any request: a budget of 8 × 64 KiB
	f.s.bodyBudget.wait = 2 * time.Second
	f.s.yamlBudget = newYAMLBudget(1000) // a large body's share is all of it
	f.s.yamlBudget.wait = 2 * time.Second
	// A live tree that fits the body budget, not beside another body's share.
	f.put("appliances/web/a", strings.Repeat("a", 240_000))
	f.put("appliances/web/b", strings.Repeat("b", 240_000))
	yaml := []string{"Content-Type", "application/yaml"}
	y := f.s.yamlBudget

	// The dry run waits for the YAML budget, ahead of the large apply.
	if !y.sem.TryAcquire(y.max - 10) {
		t.Fatal("the YAML budget is not free")
	}
	dry := make(chan resp, 1)
	go func() { dry <- f.do("PUT", "/v1/appliances/web?dry_run=true", "keys:\n  port: \"1\"\n", yaml...) }()
	waitFor(t, "the dry run's wait for the YAML budget", func() bool {
		if y.sem.TryAcquire(1) {
			y.sem.Release(1)
			return false
		}
		return true
	})
	// The large apply takes its body's share, then waits for the YAML budget behind it.
	b := f.s.bodyBudget
	large := make(chan resp, 1)
	go func() {
		large <- f.do("PUT", "/v1/appliances/other", "keys:\n  blob: "+strings.Repeat("x", 300_000)+"\n", yaml...)
	}()
	waitFor(t, "the large apply's share of the body budget", func() bool {
		if b.sem.TryAcquire(b.size()) {
			b.sem.Release(b.size())
			return false
		}
		return true
	})
	start := time.Now()
	y.sem.Release(y.max - 10)
	for name, ch := range map[string]chan resp{"the dry run": dry, "the large apply": large} {
		if r := <-ch; r.StatusCode != http.StatusOK {
			t.Errorf("%s: %d %s", name, r.StatusCode, r.body[:min(len(r.body), 300)])
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("the two took %v, want them each in turn at once", d)
	}
	budgetWhole(t, f, "the dry run and the large apply")
}
