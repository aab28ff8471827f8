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

// BenchmarkPutKV is PUT /v1/kv through the server's handler (no socket) on an embedded etcd
// in process, as `shoelace server` runs by default, by many writers at once, each on an
// appliance of its own: the server's own work per write (auth, limiter, audit line, release
// record, group commit) and its allocations, which tests/bench's throughput rows pay per put.
func BenchmarkPutKV(b *testing.B) {
	cfg := testutil.StoreConfig(b)
	cfg.Endpoints, cfg.DataDir = nil, b.TempDir()
	f := newFixtureLog(b, testutil.OpenStore(b, cfg), NewLogger(io.Discard, slog.LevelWarn),
		func(c *Config) { c.RateLimit = 1e6 })
	h := f.s.Handler()
	value := strings.Repeat("v", 48)
	var writers atomic.Int64
	b.SetParallelism(32)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		w := writers.Add(1)
		for i := 0; pb.Next(); i++ {
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
