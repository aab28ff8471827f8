package bench

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/client"
)

// throughputRateLimit is the server's --rate-limit in the throughput benchmark: per token and
// replica, far above what two cores can write, so that the limiter is consulted on every
// request but refuses none (the default, 100/s, would measure the limiter).
const throughputRateLimit = 1_000_000

// txnOps is the number of puts in one transaction of the txn path.
const txnOps = 10

// throughputPairs is how many pairs of rounds (raw etcd, then the API, or the other way round)
// a case of the throughput benchmark runs. Two rounds of each, compared by their totals, moved
// the 64-writer ratios by a quarter from one run to the next (0.52-0.69x in eight runs of one
// commit): a pair hit by a stall of the host weighed on the whole. The median of five pairs,
// each writer first in turn, is the ratio of a typical pair.
const throughputPairs = 5

// BenchmarkWriteThroughput measures puts/s through a real `shoelace server` (PUT /v1/kv/{key},
// and POST /v1/txn of 10 puts, counted as 10 puts) at 1, 16 and 64 concurrent writers, against
// client/v3 writing straight to the same etcd in the same run (plain puts, and transactions of
// 10 puts): the durable etcd `shoelace server` embeds by default, in the server's process, which
// client/v3 reaches through --etcd-listen from the benchmark's process. The server runs as in
// production: a token on every request, its rate limiter (raised, see throughputRateLimit), the
// audit line of every write, and a release record in every write's transaction.
//
// Each case runs throughputPairs pairs of rounds, one round of each writer, the first writer
// alternating from pair to pair; the row holds the pair whose ratio is the median of the pairs'.
// It decides its own duration (-benchtime 1x).
func BenchmarkWriteThroughput(b *testing.B) {
	srv := embeddedServer(b, b.TempDir(), "--rate-limit", fmt.Sprint(throughputRateLimit))
	eps, addr, tokenFile, root := srv.eps, srv.addr, srv.tokenFile, srv.root
	token := strings.TrimSpace(string(waitFile(b, tokenFile)))
	hc := &http.Client{Transport: &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256}}
	cl, err := client.New("http://"+addr, client.Options{Token: token, HTTPClient: hc})
	if err != nil {
		b.Fatal(err)
	}
	c := etcdClient(b, eps)
	raw := root + "raw/"
	// Every value is new (48 bytes, a counter at its end), for both writers: a write of the
	// value a key holds writes nothing through the API (no revision, no release), so the same
	// value each time would measure a read against etcd's writes.
	var seq atomic.Int64
	prefix := strings.Repeat("v", 36)
	value := func() string { return fmt.Sprintf("%s%012d", prefix, seq.Add(1)) }
	round, pairs := time.Second, throughputPairs
	if quick() {
		round, pairs = 250*time.Millisecond, 1
	}
	// The writers' keys: worker w writes keys of an appliance of its own, 10 keys per worker.
	key := func(w, i int) string { return fmt.Sprintf("appliances/tput%d/k%d", w, i%txnOps) }
	type writer func(ctx context.Context, w, i int) error
	paths := []struct {
		name, target string
		puts         int // per call
		api, raw     writer
	}{
		{"put", "PUT /v1/kv", 1,
			func(ctx context.Context, w, i int) error {
				_, err := cl.Put(ctx, key(w, i), []byte(value()), client.NoCAS)
				return err
			},
			func(ctx context.Context, w, i int) error {
				_, err := c.Put(ctx, raw+key(w, i), value())
				return err
			}},
		{"txn", "POST /v1/txn (10 puts)", txnOps,
			func(ctx context.Context, w, i int) error {
				t := api.Txn{Ops: make([]api.Op, txnOps)}
				for j := range t.Ops {
					t.Ops[j] = api.Op{Op: api.OpPut, Key: key(w, j), Value: value()}
				}
				_, err := cl.Txn(ctx, t)
				return err
			},
			func(ctx context.Context, w, i int) error {
				ops := make([]clientv3.Op, txnOps)
				for j := range ops {
					ops[j] = clientv3.OpPut(raw+key(w, j), value())
				}
				_, err := c.Txn(ctx).Then(ops...).Commit()
				return err
			}},
	}
	for _, p := range paths {
		for _, conc := range []int{1, 16, 64} {
			b.Run(fmt.Sprintf("path=%s/conc=%d", p.name, conc), func(b *testing.B) {
				var apiRates, rawRates, pairRatios []float64
				rate := func(w writer) float64 {
					n, d := driveWrites(b, conc, round, w)
					return float64(n) * float64(p.puts) / d.Seconds()
				}
				for i := range pairs {
					var api, raw float64
					if i%2 == 0 {
						raw = rate(p.raw)
						api = rate(p.api)
					} else {
						api = rate(p.api)
						raw = rate(p.raw)
					}
					apiRates, rawRates, pairRatios = append(apiRates, api), append(rawRates, raw), append(pairRatios, api/raw)
				}
				m := medianAt(pairRatios)
				apiRate, rawRate := apiRates[m], rawRates[m]
				b.ReportMetric(apiRate, "puts/s")
				b.ReportMetric(rawRate, "raw-puts/s")
				writers := fmt.Sprintf("%d writers", conc)
				if conc == 1 {
					writers = "1 writer"
				}
				row := Row{Target: fmt.Sprintf("2. write throughput, %s, %s, embedded etcd on disk", p.target, writers),
					Unit: "puts/s", Figure: apiRate, Baseline: rawRate, Against: "raw etcd", Ratio: true, Limit: 0.6, AtLeast: true,
					Note: fmt.Sprintf("median of %d pairs of %v rounds, ratios %s; server at --rate-limit 1e6 (the default 100/s would throttle)",
						pairs, round, ratios(pairRatios))}
				if conc == 1 {
					// One writer at a time is bound by one write's latency, not throughput:
					// issue 20 sets no target for it.
					row.Limit = 0.3
					row.Note = "no target in issue 20 (one write at a time: latency-bound); " + row.Note
				}
				record(b, row)
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}

// driveWrites runs conc goroutines calling write for d and returns how many calls completed and how
// long they took from the first start to the last return. A failed call fails b.
func driveWrites(b *testing.B, conc int, d time.Duration, write func(ctx context.Context, w, i int) error) (int64, time.Duration) {
	ctx := context.Background()
	var n atomic.Int64
	var wg sync.WaitGroup
	var errOnce sync.Once
	var firstErr error
	start := time.Now()
	deadline := start.Add(d)
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(deadline); i++ {
				if err := write(ctx, w, i); err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		b.Fatal(firstErr)
	}
	return n.Load(), time.Since(start)
}
