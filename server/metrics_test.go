package server

import (
	"context"
	"strconv"
	"strings"
	"testing"
)

// scrape reads /metrics into series ("name{labels}") → value.
func (f *fixture) scrape() map[string]float64 {
	f.t.Helper()
	r := f.doToken("", "GET", "/metrics", "")
	if r.StatusCode != 200 {
		f.t.Fatalf("/metrics: %d", r.StatusCode)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(r.body), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if i < 0 || err != nil {
			f.t.Fatalf("metrics line %q does not parse", line)
		}
		out[line[:i]] = v
	}
	return out
}

// moved fails unless each series grew from before to after.
func moved(t *testing.T, before, after map[string]float64, series ...string) {
	t.Helper()
	for _, s := range series {
		a, ok := after[s]
		if !ok {
			t.Errorf("no series %s", s)
			continue
		}
		if a <= before[s] {
			t.Errorf("%s did not move: %v -> %v", s, before[s], a)
		}
	}
}

func TestMetrics_MoveWithTraffic(t *testing.T) {
	f := newFixture(t)
	before := f.scrape()

	rev := f.put("appliances/web/a", "1")
	v := f.view("web")
	p := f.startPoll(lp("web", v.Revision, "60s"))
	f.waitOpen(1)
	open := f.scrape()
	if got := open["shoelace_long_polls_open"]; got != 1 {
		t.Errorf("shoelace_long_polls_open %v with one long-poll waiting", got)
	}
	f.put("appliances/web/a", "2")
	f.must(p.wait(t), 200, nil)
	f.doToken("", "GET", "/v1/kv/x", "") // 401
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	f.st.Get(ctx, "shared/x") // an etcd request that fails
	waitFor(t, "the watch saw the writes", func() bool { return f.s.hub.current() > rev })

	after := f.scrape()
	moved(t, before, after,
		`shoelace_http_requests_total{code="200",route="PUT /v1/kv/{key...}"}`,
		`shoelace_http_requests_total{code="200",route="GET /v1/appliances/{name}"}`,
		`shoelace_http_requests_total{code="401",route="GET /v1/kv/{key...}"}`,
		`shoelace_http_request_duration_seconds_count{route="PUT /v1/kv/{key...}"}`,
		`shoelace_http_request_duration_seconds_bucket{route="PUT /v1/kv/{key...}",le="+Inf"}`,
		`shoelace_view_reads_total`,
		`shoelace_watch_events_total`,
		`shoelace_store_revision`,
		`shoelace_etcd_request_duration_seconds_count{method="KV/Range"}`,
		`shoelace_etcd_request_duration_seconds_count{method="KV/Txn"}`,
		`shoelace_etcd_request_errors_total{code="Canceled",method="KV/Range"}`,
		`go_memstats_alloc_bytes_total`,
	)
	if got := after["shoelace_long_polls_open"]; got != 0 {
		t.Errorf("shoelace_long_polls_open %v after the long-poll answered", got)
	}
	if after["shoelace_store_revision"] < float64(rev) {
		t.Errorf("shoelace_store_revision %v, want >= %d", after["shoelace_store_revision"], rev)
	}
	var build bool
	for s, v := range after {
		if strings.HasPrefix(s, "shoelace_build_info{") && strings.Contains(s, `version="dev"`) && strings.Contains(s, `goversion="go`) && v == 1 {
			build = true
		}
	}
	if !build || after["go_goroutines"] <= 0 {
		t.Errorf("build info or Go runtime metrics missing")
	}

	// Rate limiting is counted.
	rl := newFixture(t, func(c *Config) { c.RateLimit = 3 }) // a burst of 3: two scrapes get in
	b := rl.scrape()
	for range 5 {
		rl.doToken("", "GET", "/v1/appliances", "")
	}
	moved(t, b, rl.scrape(), `shoelace_rate_limited_total`, `shoelace_http_requests_total{code="429",route="GET /v1/appliances"}`)
}
