package bench

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/client"
	"github.com/shoelace-dev/shoelace/internal/testutil"
)

// BenchmarkFanOut measures one change under shared/ waking n open long-polls spread over 10
// appliances (as n agents would hold them) on one server: per b.N change, the time from the
// write until the last long-poll has its new view, and how many views the server read from
// the store for it (shoelace_view_reads_total).
func BenchmarkFanOut(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("longpolls=%d", n), func(b *testing.B) { benchFanOut(b, n) })
	}
}

func benchFanOut(b *testing.B, n int) {
	ctx := context.Background()
	addr, tokenFile, _ := shoelaceServer(b, testutil.Etcd(b))
	tr := &http.Transport{MaxIdleConnsPerHost: n + 10}
	b.Cleanup(tr.CloseIdleConnections)
	cl := adminClient(b, addr, tokenFile, &http.Client{Transport: tr})
	apps := min(n, 10)
	var rev int64
	for i := range apps {
		r, err := cl.Put(ctx, fmt.Sprintf("appliances/app%d/port", i), []byte("1"), client.NoCAS)
		if err != nil {
			b.Fatal(err)
		}
		rev = r
	}
	var last, all latencies
	reads := 0.0
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		answers := make(chan time.Time, n)
		var wg sync.WaitGroup
		for j := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				v, _, err := cl.WatchView(ctx, fmt.Sprintf("app%d", j%apps), client.Poll{Index: rev, Wait: time.Minute})
				if err != nil || v == nil || v.Keys["wake"] != fmt.Sprint(i) {
					b.Errorf("long-poll: view %+v, error %v", v, err)
				}
				answers <- time.Now()
			}()
		}
		waitLongPolls(b, addr, n)
		before := metric(b, addr, "shoelace_view_reads_total")
		b.StartTimer()
		t0 := time.Now()
		r, err := cl.Put(ctx, "shared/wake", []byte(fmt.Sprint(i)), client.NoCAS)
		if err != nil {
			b.Fatal(err)
		}
		wg.Wait()
		b.StopTimer()
		close(answers)
		var end time.Time
		for t := range answers {
			all = append(all, t.Sub(t0))
			if t.After(end) {
				end = t
			}
		}
		last = append(last, end.Sub(t0))
		reads += metric(b, addr, "shoelace_view_reads_total") - before
		rev = r
		b.StartTimer()
	}
	b.StopTimer()
	last.report(b, "ms-last")
	b.ReportMetric(all.at(0.50), "p50-ms-each")
	b.ReportMetric(reads/float64(b.N), "store-view-reads/op")
	b.ReportMetric(0, "ns/op")
}

// waitLongPolls waits until the server holds n open long-polls (shoelace_long_polls_open).
func waitLongPolls(b *testing.B, addr string, n int) {
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		if int(metric(b, addr, "shoelace_long_polls_open")) == n {
			return
		}
	}
	b.Fatalf("the server never held %d long-polls", n)
}

// metric reads one unlabelled counter or gauge from the server's /metrics.
func metric(b *testing.B, addr, name string) float64 {
	res, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatalf("metric %s: %v", name, err)
			}
			return f
		}
	}
	b.Fatalf("metric %s not in /metrics", name)
	return 0
}
