package server

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/testutil"
)

// Key histories (and release pages) asked for together share one read of the release
// records: each request read and decoded every record (up to --release-max-bytes, 256 MiB),
// though its answer is a few releases, too small for the bound on large answers to count:
// twenty read tokens' histories over 15 MiB of records took the heap up by 670 MiB (49 MiB
// shared).
func TestReleases_ReadsShared(t *testing.T) {
	cfg := testutil.StoreConfig(t)
	f := newFixtureOn(t, testutil.OpenStore(t, cfg))
	f.put("appliances/web/k0000", "v")
	cli, err := clientv3.New(clientv3.Config{Endpoints: cfg.Endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	names := make([]string, 400)
	for i := range names {
		names[i] = fmt.Sprintf("appliances/web/some/rather/long/key/name/%04d", i)
	}
	const records = 800
	var ops []clientv3.Op
	for i := range records {
		rec, _ := json.Marshal(api.Release{ID: fmt.Sprintf("%019d-%04d", time.Now().UnixNano(), i), Time: time.Now(), Token: "admin", Kind: api.KindTxn,
			Changes: []api.ReleaseChange{{Scope: api.ScopeAppliance, Appliance: "web", Changed: names, ChangedCount: len(names)}}})
		ops = append(ops, clientv3.OpPut(fmt.Sprintf("%ssys/releases/%019d-%04d", cfg.Root, time.Now().UnixNano(), i), string(rec)))
		if len(ops) == 50 || i == records-1 {
			if _, err := cli.Txn(context.Background()).Then(ops...).Commit(); err != nil {
				t.Fatal(err)
			}
			ops = nil
		}
	}
	const readers = 20
	tokens := make([]string, readers)
	for i := range tokens {
		tokens[i] = f.newToken(api.TokenRequest{Name: fmt.Sprintf("reader-%d", i), Read: []string{"appliances/web"}})
	}

	peak, base := peakOfReads(t, f, tokens, "/v1/kv/appliances/web/k0000?history")
	t.Logf("%d key histories over %d release records (%d KiB each): heap up by %d MiB at most (from %d MiB)", readers, records, 20, peak>>20, base>>20)
	if peak > 150<<20 {
		t.Errorf("%d key histories took the heap up by %d MiB, want at most 150 MiB", readers, peak>>20)
	}
}

// Reads of an appliance at a past revision (GET …/at/{revision}, which rollback and diff use)
// are made a few at a time: each is its request's alone (no flight to share), and twenty at
// once for an appliance of 8 MiB held twenty copies of its tree, as etcd gave it, as a map and
// as JSON, before the bound on answers counted them: the heap went up by 336 MiB (91 MiB then).
// The test reads an appliance of 2 MiB: under the race detector (which slows the embedded etcd
// too) the twenty reads of 8 MiB took long enough that the last in line waited past its
// request's timeout; 2 MiB take ~8 s there.
func TestApplianceAt_ReadsBounded(t *testing.T) {
	longerOpTimeout(t, 2*time.Minute) // 20 reads of 2 MiB each through a few slots, on a loaded machine
	cfg := testutil.StoreConfig(t)
	cfg.RequestTimeout = opTimeout // the store's reads wait no less than the requests do
	f := newFixtureOn(t, testutil.OpenStore(t, cfg))
	seedRaw(t, testutilConfig{cfg.Endpoints, cfg.Root}, "appliances/hist", 512, 4<<10) // 2 MiB
	rev := f.put("appliances/hist/last", "1")
	const readers = 20
	tokens := make([]string, readers)
	for i := range tokens {
		tokens[i] = f.newToken(api.TokenRequest{Name: fmt.Sprintf("at-reader-%d", i), Read: []string{"appliances/hist"}})
	}
	began := time.Now()
	peak, base := peakOfReads(t, f, tokens, fmt.Sprintf("/v1/appliances/hist/at/%d", rev))
	t.Logf("reads took %s", time.Since(began))
	t.Logf("%d reads of a 2 MiB appliance at a past revision: heap up by %d MiB at most (from %d MiB)", readers, peak>>20, base>>20)
	// 86 MiB before, 21–24 MiB alone and up to 41 MiB after the package's other tests (whose
	// keys the shared etcd holds) here.
	if peak > 64<<20 {
		t.Errorf("%d reads at a past revision took the heap up by %d MiB, want at most 64 MiB", readers, peak>>20)
	}
}

// An appliance's keys at a past revision are read from etcd and encoded a page at a time, and
// a large answer written in parts as it is read: four at a time, each tree was read whole, as
// etcd's answer and as a map, and its JSON built whole (six times its values for control
// characters, which JSON escapes as \u0001), before a byte was written. Ten read tokens asking
// at once for a 9.5 MB tree of control characters, each at another of its revisions, took the
// heap up by 323–450 MiB (1–40 MiB now; four asking, as many as the slots let in at once, the
// same); each answer is still the tree's JSON, byte for byte.
func TestApplianceAt_LargeTreeReadInParts(t *testing.T) {
	longerOpTimeout(t, 2*time.Minute)
	cfg := testutil.StoreConfig(t)
	cfg.RequestTimeout = opTimeout
	f := newFixtureOn(t, testutil.OpenStore(t, cfg))
	cli, err := clientv3.New(clientv3.Config{Endpoints: cfg.Endpoints, DialTimeout: 5 * time.Second, MaxCallSendMsgSize: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	root := cfg.Root + "kv/appliances/big/"
	tree := map[string]string{}
	for i := range 9 {
		k, v := fmt.Sprintf("conf/part%d", i), strings.Repeat("\x01", 950_000)
		if _, err := cli.Put(context.Background(), root+k, v); err != nil {
			t.Fatal(err)
		}
		tree[k] = v
	}
	// Four at once is what the handler's slots let in: more only wait their turn (ten took
	// over the client's 90 s under -race on a loaded CI machine).
	const readers = 4
	wants := make([]string, readers) // the sha256 of each revision's answer
	revs := make([]int64, readers)
	for i := range readers {
		v := fmt.Sprintf("%08d", i) + strings.Repeat("\x01", 1_000_000)
		res, err := cli.Put(context.Background(), root+"hot", v)
		if err != nil {
			t.Fatal(err)
		}
		revs[i], tree["hot"] = res.Header.Revision, v
		body, err := api.Marshal(ApplianceAt{Appliance: "big", Revision: revs[i], Keys: tree})
		if err != nil {
			t.Fatal(err)
		}
		wants[i] = fmt.Sprintf("%x", sha256.Sum256(append(body, '\n')))
	}
	clear(tree)
	tokens := make([]string, readers)
	for i := range tokens {
		tokens[i] = f.newToken(api.TokenRequest{Name: fmt.Sprintf("at-large-%d", i), Read: []string{"appliances/big"}})
	}
	stop := peakHeap()
	var wg sync.WaitGroup
	for i := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, err := http.NewRequest("GET", fmt.Sprintf("%s/v1/appliances/big/at/%d", f.srv.URL, revs[i]), nil)
			if err != nil {
				t.Error(err)
				return
			}
			req.Header.Set("Authorization", "Bearer "+tokens[i])
			res, err := (&http.Client{Timeout: 5 * time.Minute}).Do(req)
			if err != nil {
				t.Errorf("GET at %d: %v", revs[i], err)
				return
			}
			defer res.Body.Close()
			h := sha256.New() // the test's client holds no answer: its heap is the server's
			n, err := io.Copy(h, res.Body)
			if err != nil || res.StatusCode != 200 {
				t.Errorf("GET at %d: %d, %d bytes read, %v", revs[i], res.StatusCode, n, err)
				return
			}
			if got := fmt.Sprintf("%x", h.Sum(nil)); got != wants[i] {
				t.Errorf("GET at %d: an answer of %d bytes that is not the tree's JSON", revs[i], n)
			}
		}()
	}
	wg.Wait()
	peak, base := stop()
	t.Logf("%d reads of a 9.5 MB tree of control characters at past revisions: heap up by %d MiB at most (from %d MiB)", readers, peak>>20, base>>20)
	if peak > 150<<20 {
		t.Errorf("%d reads at past revisions took the heap up by %d MiB, want at most 150 MiB", readers, peak>>20)
	}
}

// peakOfReads GETs path once with each of tokens, all at once, and returns how far the heap
// went up meanwhile, and from where (see peakHeap); each must be answered 200. The answers are
// read and dropped as they come: the test's clients, in the process measured, hold none (an
// answer written in parts reaches them all at once, and their copies were most of the peak).
func peakOfReads(t *testing.T, f *fixture, tokens []string, path string) (peak, base uint64) {
	t.Helper()
	stop := peakHeap()
	var wg sync.WaitGroup
	statuses := make(chan int, len(tokens))
	for _, tok := range tokens {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, err := http.NewRequest("GET", f.srv.URL+path, nil)
			if err != nil {
				t.Error(err)
				return
			}
			req.Header.Set("Authorization", "Bearer "+tok)
			res, err := testClient.Do(req)
			if err != nil {
				t.Errorf("GET %s: %v", path, err)
				return
			}
			defer res.Body.Close()
			if _, err := io.Copy(io.Discard, res.Body); err != nil {
				t.Errorf("GET %s: read: %v", path, err)
			}
			statuses <- res.StatusCode
		}()
	}
	wg.Wait()
	peak, base = stop()
	close(statuses)
	for st := range statuses {
		if st != 200 {
			t.Fatalf("GET %s: %d", path, st)
		}
	}
	return peak, base
}
