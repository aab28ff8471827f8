package bench

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/client"
	"github.com/shoelace-dev/shoelace/internal/testutil"
)

// countingConn counts the bytes read from a connection: what the server sent the client, on
// the wire (headers, chunk framing and compression included).
type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// countingClient is an HTTP client of its own connections whose received bytes n counts; with
// gzip false it asks for identity bodies (as the agent's client did before gzip).
func countingClient(n *atomic.Int64, gzip bool) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		DisableCompression: !gzip,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return countingConn{Conn: c, n: n}, nil
		},
	}
	return &http.Client{Transport: tr}
}

// BenchmarkBytesPerChange measures what one key changed in a 10,000-key view costs each agent
// on the wire: a plain long-poll's answer (the full view, uncompressed: the baseline), a
// long-poll with delta and a stream's line with delta (the figure); and what gzip makes of
// the full view.
func BenchmarkBytesPerChange(b *testing.B) {
	ctx := context.Background()
	addr, tokenFile, _ := shoelaceServer(b, testutil.Etcd(b))
	admin := adminClient(b, addr, tokenFile, nil)
	// 10,000 keys of about 25 bytes each in the view's JSON, as in issue 20's measure, written
	// in transactions under the store's limit of operations.
	var txn api.Txn
	for i := range 10000 {
		txn.Ops = append(txn.Ops, api.Op{Op: api.OpPut, Key: fmt.Sprintf("appliances/big/svc/%05d", i), Value: fmt.Sprintf("10.%d.%d.%d", i/65536, i/256%256, i%256)})
		if len(txn.Ops) == 100 || i == 9999 {
			if _, err := admin.Txn(ctx, txn); err != nil {
				b.Fatal(err)
			}
			txn.Ops = txn.Ops[:0]
		}
	}
	var nFull, nDelta, nStream, nGzip atomic.Int64
	full := adminClient(b, addr, tokenFile, countingClient(&nFull, false))
	delta := adminClient(b, addr, tokenFile, countingClient(&nDelta, true))
	streamer := adminClient(b, addr, tokenFile, countingClient(&nStream, true))
	zipped := adminClient(b, addr, tokenFile, countingClient(&nGzip, true))

	v, _, err := admin.View(ctx, "big")
	if err != nil {
		b.Fatal(err)
	}
	// The stream runs throughout; each change's line is counted.
	lines := make(chan *api.View, 1)
	sctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		base, idx := v, v.Revision
		for sctx.Err() == nil {
			m, err := streamer.StreamView(sctx, "big", client.Poll{Index: idx, Delta: true, Base: &base}, func(nv *api.View, _ client.Meta) error {
				base, idx = *nv, nv.Revision
				lines <- nv
				return nil
			})
			if err != nil && sctx.Err() == nil {
				b.Errorf("stream: %v", err)
				return
			}
			idx = max(idx, m.Index)
		}
	}()
	defer func() { stop(); wg.Wait() }()
	waitLongPolls(b, addr, 1)
	<-time.After(100 * time.Millisecond) // the stream's first line (a heartbeat) is in
	samples := 20
	if quick() {
		samples = 3
	}
	var fullB, deltaB, streamB []float64
	for i := range samples {
		nFull.Store(0)
		nDelta.Store(0)
		var got [2]*api.View
		var pw sync.WaitGroup
		pw.Add(2)
		go func() {
			defer pw.Done()
			got[0], _, _ = full.WatchView(ctx, "big", client.Poll{Index: v.Revision, Wait: time.Minute})
		}()
		go func() {
			defer pw.Done()
			got[1], _, _ = delta.WatchView(ctx, "big", client.Poll{Index: v.Revision, Wait: time.Minute, Delta: true, Base: &v})
		}()
		waitLongPolls(b, addr, 3)
		nStream.Store(0)
		if _, err := admin.Put(ctx, fmt.Sprintf("appliances/big/svc/%05d", i*97%10000), []byte(fmt.Sprint("changed-", i)), client.NoCAS); err != nil {
			b.Fatal(err)
		}
		pw.Wait()
		var sv *api.View
		select {
		case sv = <-lines:
		case <-time.After(30 * time.Second):
			b.Fatal("no stream line")
		}
		if got[0] == nil || got[1] == nil || len(got[1].Keys) != 10000 || got[1].Revision != got[0].Revision || sv.Revision != got[0].Revision {
			b.Fatalf("answers: %v %v %v", got[0] == nil, got[1] == nil, sv.Revision)
		}
		fullB = append(fullB, float64(nFull.Load()))
		deltaB = append(deltaB, float64(nDelta.Load()))
		streamB = append(streamB, float64(nStream.Load()))
		v = *got[1]
	}
	nFull.Store(0)
	if _, _, err := full.View(ctx, "big"); err != nil {
		b.Fatal(err)
	}
	plain := float64(nFull.Load())
	nGzip.Store(0)
	if _, _, err := zipped.View(ctx, "big"); err != nil {
		b.Fatal(err)
	}
	gz := float64(nGzip.Load())

	worst := func(s []float64) float64 { return slices.Max(s) }
	b.ReportMetric(worst(fullB), "full-bytes")
	b.ReportMetric(worst(deltaB), "delta-bytes")
	b.ReportMetric(worst(streamB), "stream-line-bytes")
	b.ReportMetric(gz, "gzip-view-bytes")
	b.ReportMetric(0, "ns/op")
	record(b, Row{Target: "6. bytes per agent for a one-key change to a 10,000-key view (long-poll with delta)", Unit: "bytes",
		Figure: worst(deltaB), Baseline: worst(fullB), Against: "full view, uncompressed", Limit: 2048,
		Note: fmt.Sprintf("worst of %d changes, on the wire with headers; a stream's line with delta: %.0f bytes", samples, worst(streamB))})
	record(b, Row{Target: "6. bytes of a full 10,000-key view, gzip", Unit: "bytes", Figure: gz, Baseline: plain,
		Against: "uncompressed", Ratio: true, Limit: 0.5, Note: "GET on the wire with headers"})
}

// waitLongPolls waits until the server at addr holds n open long-polls.
func waitLongPolls(b *testing.B, addr string, n int) {
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		if int(metric(b, addr, "shoelace_long_polls_open")) == n {
			return
		}
	}
	b.Fatalf("the server never held %d long-polls", n)
}
