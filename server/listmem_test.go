package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"runtime/debug"
	rmetrics "runtime/metrics"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/testutil"
	"github.com/shoelace-dev/shoelace/internal/testutil/faultproxy"
)

// seedRaw writes n keys of size bytes each under prefix straight into etcd (no release
// records: the test is about reading them).
func seedRaw(t *testing.T, cfg testutilConfig, prefix string, n, size int) {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: cfg.endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	v := strings.Repeat("v", size)
	// 512 keys, at most ~1 MiB, a transaction (the client sends 2 MiB a request at most): seeding
	// costs etcd's work per key mostly, and 64 keys a transaction took a quarter longer.
	for i := 0; i < n; {
		var ops []clientv3.Op
		for bytes := 0; i < n && len(ops) < 512 && bytes < 1<<20; i++ {
			k := fmt.Sprintf("%skv/%s/%06d", cfg.root, prefix, i)
			ops = append(ops, clientv3.OpPut(k, v))
			bytes += len(k) + len(v)
		}
		if _, err := cli.Txn(context.Background()).Then(ops...).Commit(); err != nil {
			t.Fatal(err)
		}
	}
}

type testutilConfig struct {
	endpoints []string
	root      string
}

// peakHeap samples the live heap every 2 ms until stop is called, and returns the highest
// seen above base. The GC runs at 5% growth meanwhile, so that a cycle ends every few MiB
// allocated, and the heap is read as the last cycle found it live: not the garbage that the
// GC has not collected yet, which the heap's size (HeapAlloc) counts. With the package's other
// tests' data in the process (a base of 120 MiB), a cycle's marking takes long enough on a
// loaded machine for the readers to allocate tens of MiB meanwhile: HeapAlloc rose 68 MiB
// where 41 were live.
func peakHeap() (stop func() (peak, base uint64)) {
	gc := debug.SetGCPercent(5)
	runtime.GC()
	sample := []rmetrics.Sample{{Name: "/gc/heap/live:bytes"}}
	live := func() uint64 {
		rmetrics.Read(sample)
		return sample[0].Value.Uint64()
	}
	base := live()
	var peak atomic.Uint64
	done := make(chan struct{})
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		for {
			if l := live(); l > peak.Load() {
				peak.Store(l)
			}
			select {
			case <-done:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	return func() (uint64, uint64) {
		close(done)
		<-ended
		debug.SetGCPercent(gc)
		p := peak.Load()
		if p < base {
			p = base
		}
		return p - base, base
	}
}

// A listing over a large key space is read from etcd and written a page at a time: the
// replica read it whole (etcd's answer, its keys and values as strings, the JSON) before the
// bound on answers counted it, so that one listing of 64 MiB took the heap up by ~400 MiB,
// and the bound on answers, which lets a token hold one answer however large, never refused
// it. The answer is the same, byte for byte, as the listing of a small key space reads.
func TestKV_LargeListingIsPaged(t *testing.T) {
	cfg := testutil.StoreConfig(t)
	f := newFixtureOn(t, testutil.OpenStore(t, cfg))
	const n, size = 4096, 16 << 10 // 64 MiB
	seedRaw(t, testutilConfig{cfg.Endpoints, cfg.Root}, "appliances/big", n, size)
	reader := f.newToken(api.TokenRequest{Name: "reader", Read: []string{"appliances/big"}})

	stop := peakHeap()
	req, _ := http.NewRequest("GET", f.srv.URL+"/v1/kv/appliances/big?recurse", nil)
	req.Header.Set("Authorization", "Bearer "+reader)
	res, err := testClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.New()
	_, err = io.Copy(sum, res.Body) // what the client holds is not the replica's
	res.Body.Close()
	peak, base := stop()
	t.Logf("listing of %d MiB: heap up by %d MiB at most (from %d MiB)", n*size>>20, peak>>20, base>>20)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("listing: %d %v", res.StatusCode, err)
	}
	if peak > 32<<20 {
		t.Errorf("a listing of %d MiB took the heap up by %d MiB, want at most 32 MiB", n*size>>20, peak>>20)
	}
	rev, _ := strconv.ParseInt(res.Header.Get(api.HeaderIndex), 10, 64)
	want := sha256.Sum256(wantListing(t, f, "appliances/big", false, nil, rev))
	if !bytes.Equal(sum.Sum(nil), want[:]) {
		t.Error("the paged listing differs from the listing read whole")
	}
}

// wantListing is the answer to a listing of prefix read whole, at rev, as it was answered
// before listings were paged.
func wantListing(t *testing.T, f *fixture, prefix string, keysOnly bool, filter func(string) bool, rev int64) []byte {
	t.Helper()
	// Read now: only the server's own keys (a replica's beat) were written since rev.
	kvs, _, err := f.st.List(context.Background(), prefix, keysOnly)
	if err != nil {
		t.Fatal(err)
	}
	out := listAnswer{Revision: rev}
	names, entries := []string{}, []api.KV{}
	for _, kv := range kvs {
		if filter != nil && !filter(kv.Key) {
			continue
		}
		names, entries = append(names, kv.Key), append(entries, kv)
	}
	if keysOnly {
		out.Keys = &names
	} else {
		out.Entries = &entries
	}
	b, err := json.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}

// Listings that take several pages are answered byte for byte as when they were read whole:
// the values, the keys only, the root, a prefix's own key first, a token that reads only part
// of what it lists (whole pages of keys it may not read left out), and none at all.
func TestKV_PagedListingAsWhole(t *testing.T) {
	cfg := testutil.StoreConfig(t)
	f := newFixtureOn(t, testutil.OpenStore(t, cfg))
	raw := testutilConfig{cfg.Endpoints, cfg.Root}
	seedRaw(t, raw, "appliances/web", 300, 10)
	seedRaw(t, raw, "appliances/web/sub", 40, 3000)
	seedRaw(t, raw, "shared/x", 16, 1) // exactly one first page
	f.put("appliances/web", "the prefix's own key")
	f.put("appliances/web-frontend/a", "not under appliances/web")
	part := f.newToken(api.TokenRequest{Name: "part", Read: []string{"appliances/web/sub", "shared/x/000003"}})
	rev := f.st.Revision
	for _, c := range []struct {
		token, path, prefix string
		keysOnly            bool
		filter              func(string) bool
	}{
		{f.token, "/v1/kv/appliances/web?recurse", "appliances/web", false, nil},
		{f.token, "/v1/kv/appliances/web?recurse&keys", "appliances/web", true, nil},
		{f.token, "/v1/kv/?recurse", "", false, nil},
		{f.token, "/v1/kv/shared/x?recurse", "shared/x", false, nil},
		{f.token, "/v1/kv/appliances/web/sub?recurse", "appliances/web/sub", false, nil},
		{part, "/v1/kv/appliances?recurse", "appliances", false, func(k string) bool { return strings.HasPrefix(k, "appliances/web/sub/") }},
		{part, "/v1/kv/?recurse&keys", "", true, func(k string) bool {
			return strings.HasPrefix(k, "appliances/web/sub/") || k == "shared/x/000003"
		}},
		{f.token, "/v1/kv/appliances/none?recurse", "appliances/none", false, nil},
	} {
		r := f.doToken(c.token, "GET", c.path, "")
		if r.StatusCode != 200 {
			t.Fatalf("GET %s: %d %s", c.path, r.StatusCode, r.body)
		}
		at, _ := strconv.ParseInt(r.Header.Get(api.HeaderIndex), 10, 64)
		if cur, _ := rev(context.Background()); at > cur || at < cur-2 {
			t.Errorf("GET %s: X-Shoelace-Index %d, want the store's revision %d", c.path, at, cur)
		}
		if want := wantListing(t, f, c.prefix, c.keysOnly, c.filter, at); string(r.body) != string(want) {
			t.Errorf("GET %s: %d bytes, differing from the whole listing's %d:\n%.300s\nwant\n%.300s", c.path, len(r.body), len(want), r.body, want)
		}
	}
}

// A paged listing whose later page cannot be read (etcd went away after its first) is cut
// off: the client reads an answer that does not end, never a JSON listing of the pages before.
func TestKV_PagedListingCutOffOnFailure(t *testing.T) {
	cfg := testutil.StoreConfig(t)
	seedRaw(t, testutilConfig{cfg.Endpoints, cfg.Root}, "appliances/big", 2048, 4<<10) // 8 MiB
	p := faultproxy.Start(t, cfg.Endpoints[0])
	f := newFixtureOn(t, throughProxy(t, cfg, p))
	res, err := testClient.Do(mustRequest(t, f, "/v1/kv/appliances/big?recurse"))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("listing: %d", res.StatusCode)
	}
	p.Down() // the server is blocked writing a page the client has not read
	defer p.Up()
	body, err := io.ReadAll(res.Body)
	if err == nil {
		t.Fatalf("a listing whose later page failed read whole (%d bytes, ending %q)", len(body), body[max(0, len(body)-20):])
	}
	if json.Valid(body) {
		t.Fatalf("the cut listing is valid JSON (%d bytes)", len(body))
	}
}

func mustRequest(t *testing.T, f *fixture, path string) *http.Request {
	t.Helper()
	req, err := http.NewRequest("GET", f.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+f.token)
	return req
}

// GET /v1/appliances reads a page of keys at a time and skips the rest of each appliance's
// keys: it read every key under appliances/ at once (keys only), for a list of names, on a
// request that an agent's token may make: 200,000 keys of ten appliances took the heap up
// by ~90 MiB a request. The names are those of the whole read, neighbours that sort between
// an appliance and its keys (web-x, web.y before web/) included.
func TestAppliances_ListPaged(t *testing.T) {
	cfg := testutil.StoreConfig(t)
	f := newFixtureOn(t, testutil.OpenStore(t, cfg))
	raw := testutilConfig{cfg.Endpoints, cfg.Root}
	for _, a := range []struct {
		name string
		n    int
	}{{"web", 600}, {"web-x", 1}, {"web.y", 300}, {"web0", 1}, {"webz", 257}, {"z", 1}} {
		seedRaw(t, raw, "appliances/"+a.name, a.n, 1)
	}
	f.put("appliances/lone", "a key named as an appliance, not one")
	var got api.Appliances
	f.must(f.do("GET", "/v1/appliances", ""), 200, &got)
	if want := "web web-x web.y web0 webz z"; strings.Join(got.Appliances, " ") != want {
		t.Fatalf("appliances %q, want %q", got.Appliances, want)
	}

	for i := range 10 {
		seedRaw(t, raw, fmt.Sprintf("appliances/big%d/some/longer/path/to/a/key", i), 20000, 1)
	}
	agent := f.newToken(api.TokenRequest{Name: "agent", Appliance: "big3"})
	stop := peakHeap()
	r := f.doToken(agent, "GET", "/v1/appliances", "")
	peak, base := stop()
	t.Logf("GET /v1/appliances over 200,000 keys: heap up by %d MiB at most (from %d MiB)", peak>>20, base>>20)
	if r.StatusCode != 200 || string(r.body) != "{\"appliances\":[\"big3\"]}\n" {
		t.Fatalf("an agent's GET /v1/appliances: %d %s", r.StatusCode, r.body)
	}
	if peak > 16<<20 {
		t.Errorf("GET /v1/appliances took the heap up by %d MiB, want at most 16 MiB", peak>>20)
	}
}

// A paged listing costs its token's rate limit once, for the whole answer (at most one burst,
// as an answer written whole): charged for each page, an 8 MiB listing kept a token at 10
// requests/s waiting 8 s for its next request. The test's token may make one request every 2 s
// (a burst of 1), so that the charge shows however long the listing took to arrive (under the
// race detector the bucket refilled between a listing charged at 10/s and the next request):
// the listing and its charge take 2 requests' worth, and the next request waits 4 s at most,
// where a charge per page (8 pages) made it wait 18 s.
func TestKV_PagedListingChargedOnce(t *testing.T) {
	cfg := testutil.StoreConfig(t)
	f := newFixtureOn(t, testutil.OpenStore(t, cfg), func(c *Config) { c.RateLimit = 0.5 })
	seedRaw(t, testutilConfig{cfg.Endpoints, cfg.Root}, "appliances/big", 2048, 4<<10) // 8 MiB
	reader := f.newToken(api.TokenRequest{Name: "charged-reader", Read: []string{"appliances/big"}})
	if r := f.doToken(reader, "GET", "/v1/kv/appliances/big?recurse", ""); r.StatusCode != 200 || len(r.body) < 8<<20 {
		t.Fatalf("listing: %d, %d bytes", r.StatusCode, len(r.body))
	}
	began := time.Now()
	r := f.doToken(reader, "GET", "/v1/kv/appliances/big/000001", "")
	f.mustErr(r, 429, api.CodeRateLimited) // charged
	for r.StatusCode == 429 && time.Since(began) < 25*time.Second {
		time.Sleep(100 * time.Millisecond)
		r = f.doToken(reader, "GET", "/v1/kv/appliances/big/000001", "")
	}
	if took := time.Since(began); r.StatusCode != 200 || took > 8*time.Second {
		t.Fatalf("the token's next request after an 8 MiB listing: %d after %v, want 200 within 8s (one burst at 0.5/s: 4s)", r.StatusCode, took.Round(time.Millisecond))
	}
}
