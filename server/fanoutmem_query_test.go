package server

import (
	"context"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// A plain long-poll query is read as query reads it, and anything else is left to query.
func TestPlainPollQuery_AgreesWithQuery(t *testing.T) {
	cases := []struct {
		raw   string
		plain bool
	}{
		{"", true},
		{"index=12&wait=5m", true},
		{"index=12&wait=55&stream&delta", true},
		{"index=0&delta=true&base_rollout=ab-12", true},
		{"index=&wait=", true},
		{"&&index=3&", true},
		{"index=3&wait=1s=2", true},
		{"stream=0&delta=false", true},
		{"index=1&index=2", false}, // given twice: query refuses it
		{"index=1&other=2", false}, // unknown: query refuses it
		{"=1", false},              // an empty name: unknown
		{"index=1;wait=2", false},  // a semicolon: ParseQuery refuses it
		{"index=%31", false},       // escaped: query unescapes it
		{"wait=1+s", false},        // '+' is a space to ParseQuery
		{"index=%zz", false},       // a bad escape: query refuses it
		{"base_rollout=a%2Db&delta", false},
	}
	for _, c := range cases {
		q, ok := plainPollQuery(c.raw)
		if ok != c.plain {
			t.Fatalf("%q: plain %v, want %v", c.raw, ok, c.plain)
		}
		if !ok {
			continue
		}
		vals, err := query(&http.Request{URL: &url.URL{RawQuery: c.raw}}, pollParamNames[:]...)
		if err != nil {
			t.Fatalf("%q: plain, but query refuses it: %v", c.raw, err)
		}
		if want := pollQueryOf(vals); q != want {
			t.Fatalf("%q: plain %+v, query %+v", c.raw, q, want)
		}
	}
	// Random queries over the route's names and a few others, values and separators.
	parts := []string{"index", "wait", "stream", "delta", "base_rollout", "x", "", "=", "&", "1", "5m", "true", "%", "+", ";", "a-b"}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		var b strings.Builder
		for range rng.IntN(8) {
			b.WriteString(parts[rng.IntN(len(parts))])
		}
		raw := b.String()
		q, ok := plainPollQuery(raw)
		if !ok {
			continue
		}
		vals, err := query(&http.Request{URL: &url.URL{RawQuery: raw}}, pollParamNames[:]...)
		if err != nil {
			t.Fatalf("%q: plain, but query refuses it: %v", raw, err)
		}
		if want := pollQueryOf(vals); q != want {
			t.Fatalf("%q: plain %+v, query %+v", raw, q, want)
		}
	}
}

// Reading an agent's long-poll allocates nothing: url.ParseQuery's map and value slices, and
// query's list of names, were about 500 bytes of garbage per long-poll, and the heap of a
// replica holding 10,000 of them grew by it (BENCHMARKS.md, fan-out memory per waiter).
func TestPollRequest_PlainQueryAllocatesNothing(t *testing.T) {
	s := &Server{cfg: testConfig()}
	s.cfg.DefaultWait, s.cfg.MaxWait = DefaultConfig().DefaultWait, DefaultConfig().MaxWait
	p := &principal{name: "agent-web", appliance: "web"}
	r, err := http.NewRequestWithContext(context.WithValue(context.Background(), principalKey{}, p),
		"GET", "/v1/appliances/web?index=12&wait=5m", nil)
	if err != nil {
		t.Fatal(err)
	}
	r.SetPathValue("name", "web")
	var pr pollReq
	if err := s.pollRequest(r, &pr); err != nil {
		t.Fatal(err)
	}
	if pr.name != "web" || pr.index != 12 || pr.wait.Minutes() != 5 || pr.o != (pollOpts{}) {
		t.Fatalf("read %+v", pr)
	}
	if n := testing.AllocsPerRun(100, func() { _ = s.pollRequest(r, &pr) }); n != 0 {
		t.Fatalf("%v allocations per long-poll's query, want 0", n)
	}
	// Not plain: read by query, as before.
	r.URL.RawQuery = "index=12&wait=5%6D"
	if err := s.pollRequest(r, &pr); err != nil || pr.wait.Minutes() != 5 {
		t.Fatalf("escaped: %+v, %v", pr, err)
	}
	r.URL.RawQuery = "index=12&index=13"
	if err := s.pollRequest(r, &pr); err == nil || !strings.Contains(err.Error(), "given 2 times") {
		t.Fatalf("twice: %v", err)
	}
}
