package server

import (
	"fmt"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/testutil"
	"github.com/shoelace-dev/shoelace/internal/testutil/faultproxy"
)

// TestLongPoll_WatchMovesOffAFrozenMember: a replica whose etcd watch runs through a member that
// freezes (a stalled disk, a SIGSTOP) hears nothing from it; its watch breaks and is opened again,
// and the balancer must not put it back on the frozen member for good: the long-polls of the
// replica wake for each write while the member stays frozen. The three "members" are three
// proxies to one etcd, so that only the proxy decides which one a stream goes through.
func TestLongPoll_WatchMovesOffAFrozenMember(t *testing.T) {
	parallelShared(t)
	cfg := testutil.StoreConfig(t)
	a := newFixtureOn(t, testutil.OpenStore(t, cfg))
	var ps []*faultproxy.Proxy
	bcfg := cfg
	bcfg.Endpoints = nil
	for range 3 {
		p := faultproxy.Start(t, cfg.Endpoints[0])
		ps = append(ps, p)
		bcfg.Endpoints = append(bcfg.Endpoints, p.URL())
	}
	bcfg.RequestTimeout = time.Second
	bcfg.AttemptTimeout = 300 * time.Millisecond
	bcfg.WatchProgressInterval = 200 * time.Millisecond
	b := newFixtureOn(t, testutil.OpenStore(t, bcfg))

	// wake writes key and waits for a long-poll on b taken at the revision before to answer.
	wake := func(key string, within time.Duration) {
		t.Helper()
		before := a.put("appliances/web/"+key+"-before", "x")
		// b has seen before once a long-poll at before-1 answers at once.
		b.must(b.doToken(a.token, "GET", fmt.Sprintf("/v1/appliances/web?index=%d&wait=30s", before-1), ""), 200, nil)
		done := make(chan resp, 1)
		go func() {
			done <- b.doToken(a.token, "GET", fmt.Sprintf("/v1/appliances/web?index=%d&wait=60s", before), "")
		}()
		time.Sleep(50 * time.Millisecond) // the long-poll waits
		rev := a.put("appliances/web/"+key, "x")
		select {
		case r := <-done:
			if r.StatusCode != 200 || r.index() < rev {
				t.Fatalf("%s: long-poll %d at index %d, want 200 at %d or later", key, r.StatusCode, r.index(), rev)
			}
		case <-time.After(within):
			t.Fatalf("%s: the long-poll on the replica did not answer within %s of the write", key, within)
		}
	}
	wake("k0", 20*time.Second)
	// The proxy carrying b's watch is the one that forwards the next event while nothing else
	// is asked of b (keepalives on the others can share the moment: try again).
	carrier := faultproxy.Carrier(t, ps, func(try int) {
		time.Sleep(300 * time.Millisecond) // b's own reads of the wake above are done
		rev := a.put(fmt.Sprintf("appliances/web/probe-%d", try), "x")
		b.must(b.doToken(a.token, "GET", fmt.Sprintf("/v1/appliances/web?index=%d&wait=30s", rev-1), ""), 200, nil)
	})
	ps[carrier].Freeze()
	defer ps[carrier].Thaw()
	for i := range 4 {
		wake(fmt.Sprintf("frozen-%d", i), 20*time.Second)
	}
}
