package server

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/testutil"
)

// writeBench is a fixture of the benchmarks below, on an embedded etcd in process (as `shoelace
// server` runs by default) and a rate limit that refuses nothing, and its handler.
func writeBench(b *testing.B) (*fixture, http.Handler) {
	cfg := testutil.StoreConfig(b)
	cfg.Endpoints, cfg.DataDir = nil, b.TempDir()
	f := newFixtureLog(b, testutil.OpenStore(b, cfg), NewLogger(io.Discard, slog.LevelWarn),
		func(c *Config) { c.RateLimit = 1e6 })
	return f, f.s.Handler()
}

// BenchmarkPutKV is PUT /v1/kv through the server's handler (no socket) on an embedded etcd
// in process, as `shoelace server` runs by default, by many writers at once, each on an
// appliance of its own: the server's own work per write (auth, limiter, audit line, release
// record, group commit) and its allocations, which tests/bench's throughput rows pay per put.
// Every value is new (48 bytes, a counter at its end), as in tests/bench: a put of the value a
// key holds writes nothing, so the same value each time would measure a read.
func BenchmarkPutKV(b *testing.B) {
	f, h := writeBench(b)
	var seq atomic.Int64
	prefix := strings.Repeat("v", 36)
	var writers atomic.Int64
	b.SetParallelism(32)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		w := writers.Add(1)
		for i := 0; pb.Next(); i++ {
			value := fmt.Sprintf("%s%012d", prefix, seq.Add(1))
			req := httptest.NewRequest("PUT", fmt.Sprintf("/v1/kv/appliances/tput%d/k%d", w, i%10), strings.NewReader(value))
			req.Header.Set("Authorization", "Bearer "+f.token)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusOK {
				b.Errorf("PUT: %d %s", rec.Code, rec.Body)
				return
			}
		}
	})
}

// BenchmarkTxn is POST /v1/txn of 10 puts through the server's handler, as BenchmarkPutKV is
// PUT /v1/kv: the server's own work per transaction, which tests/bench's txn rows pay. Every
// value is new, as in BenchmarkPutKV.
func BenchmarkTxn(b *testing.B) {
	f, h := writeBench(b)
	var seq atomic.Int64
	prefix := strings.Repeat("v", 36)
	var writers atomic.Int64
	b.SetParallelism(32)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		w := writers.Add(1)
		var body strings.Builder
		for pb.Next() {
			body.Reset()
			body.WriteString(`{"ops":[`)
			for j := range 10 {
				if j > 0 {
					body.WriteByte(',')
				}
				fmt.Fprintf(&body, `{"op":"put","key":"appliances/txn%d/k%d","value":"%s%012d"}`, w, j, prefix, seq.Add(1))
			}
			body.WriteString(`]}`)
			req := httptest.NewRequest("POST", "/v1/txn", strings.NewReader(body.String()))
			req.Header.Set("Authorization", "Bearer "+f.token)
			req.Header.Set("Content-Type", "application/json")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusOK {
				b.Errorf("POST /v1/txn: %d %s", rec.Code, rec.Body)
				return
			}
		}
	})
}
