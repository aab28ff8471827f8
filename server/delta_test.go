package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/client"
	"github.com/shoelace-dev/shoelace/server/store"
)

// follower follows web's view as an agent would, with deltas, by plain long-polls or by a
// stream, and keeps the view it built.
type follower struct {
	mu        sync.Mutex
	view      *api.View
	fallbacks atomic.Int64 // full reads after a delta did not match
}

func (fl *follower) get() *api.View {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	return fl.view
}

func (fl *follower) set(v *api.View) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	fl.view = v
}

// countFallbacks counts the followers' reads of the view without index: what the client does
// when a delta's sum does not match.
type countFallbacks struct {
	next http.RoundTripper
	n    *atomic.Int64
}

func (c countFallbacks) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == "GET" && strings.HasPrefix(r.URL.Path, "/v1/appliances/") && !r.URL.Query().Has("index") {
		c.n.Add(1)
	}
	return c.next.RoundTrip(r)
}

func (f *fixture) followerClient(t *testing.T, fl *follower) *client.Client {
	c, err := client.New(f.srv.URL, client.Options{Token: f.token, Wrap: func(rt http.RoundTripper) http.RoundTripper {
		return countFallbacks{next: rt, n: &fl.fallbacks}
	}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// follow runs fl until ctx ends: stream or plain long-polls, both with delta.
func (f *fixture) follow(ctx context.Context, t *testing.T, fl *follower, streaming bool, start api.View) {
	c := f.followerClient(t, fl)
	cur := &start
	fl.set(cur)
	idx, store := start.Revision, f.st.ID()
	for ctx.Err() == nil {
		p := client.Poll{Index: idx, Wait: 5 * time.Second, Store: store, Delta: true, Instance: "follower"}
		if streaming {
			p.Instance = "streamer"
			p.Base = cur
			m, err := c.StreamView(ctx, "web", p, func(v *api.View, m client.Meta) error {
				cur, idx = v, v.Revision
				if m.Store != "" {
					store = m.Store
				}
				fl.set(v)
				return nil
			})
			if errors.Is(err, client.ErrNoStream) {
				t.Errorf("stream refused: %v", err)
				return
			}
			idx = max(idx, m.Index)
			if err != nil && ctx.Err() == nil {
				time.Sleep(10 * time.Millisecond)
			}
			continue
		}
		p.Base = cur
		v, m, err := c.WatchView(ctx, "web", p)
		switch {
		case err != nil:
			time.Sleep(10 * time.Millisecond)
		case v == nil:
			idx = max(idx, m.Index)
		default:
			cur, idx, store = v, v.Revision, m.Store
			fl.set(v)
		}
	}
}

// Property: whatever the writes (puts, deletes, recursive deletes, transactions, under
// shared/ and the appliance), compactions and store changes, an agent following with deltas,
// by long-polls or by a stream, always holds the view a full read gives.
func TestDelta_FollowersMatchFullViews(t *testing.T) {
	parallelOwnEtcd(t)
	f := newOwnEtcdFixture(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	f.put("appliances/web/anchor", "1")
	for i := range 30 {
		f.put(fmt.Sprintf("shared/base-%02d", i), strings.Repeat("s", 20+i))
	}
	start := f.view("web")
	ctx, cancel := context.WithCancel(context.Background())
	var plain, streamed follower
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); f.follow(ctx, t, &plain, false, start) }()
	go func() { defer wg.Done(); f.follow(ctx, t, &streamed, true, start) }()
	defer func() { cancel(); wg.Wait() }()

	key := func() string {
		root := []string{"shared", "appliances/web", "appliances/other"}[rng.IntN(3)]
		dir := []string{"", "dir/", "dir/sub/", "etc/"}[rng.IntN(4)]
		return fmt.Sprintf("%s/%sk%d", root, dir, rng.IntN(8))
	}
	ops := 150
	if testing.Short() {
		ops = 60
	}
	deltasBefore := f.s.hub.deltaAnswers.Load()
	for i := range ops {
		n := rng.IntN(20)
		if i == ops*2/3 {
			n = 19 // one store change at least
		}
		switch {
		case n < 9:
			f.put(key(), fmt.Sprintf("v%d-%s", i, strings.Repeat("x", rng.IntN(50))))
		case n < 12:
			f.do("DELETE", "/v1/kv/"+key(), "")
		case n < 14:
			root := []string{"shared/dir", "appliances/web/dir", "shared/etc"}[rng.IntN(3)]
			f.do("DELETE", "/v1/kv/"+root+"?recurse", "")
		case n < 17:
			var txn api.Txn
			for range 1 + rng.IntN(5) {
				if rng.IntN(3) == 0 {
					txn.Ops = append(txn.Ops, api.Op{Op: api.OpDelete, Key: key()})
				} else {
					txn.Ops = append(txn.Ops, api.Op{Op: api.OpPut, Key: key(), Value: fmt.Sprint(rng.Int())})
				}
			}
			body, _ := json.Marshal(txn)
			f.do("POST", "/v1/txn", string(body), "Content-Type", "application/json")
		case n < 19:
			rev := f.view("web").Revision
			if err := f.st.Compact(context.Background(), rev); err != nil && !strings.Contains(err.Error(), "compacted") {
				t.Fatalf("compact: %v", err)
			}
		default:
			if i > ops/2 && rng.IntN(3) == 0 || i == ops*2/3 {
				if _, err := f.st.ResetID(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
		}
		want := f.view("web")
		for name, fl := range map[string]*follower{"long-poll": &plain, "stream": &streamed} {
			waitFor(t, name+" follower at the view", func() bool {
				v := fl.get()
				return v != nil && maps.Equal(v.Keys, want.Keys)
			})
		}
	}
	if n := f.s.hub.deltaAnswers.Load() - deltasBefore; n < int64(ops/4) {
		t.Fatalf("%d deltas made for %d changes: the followers got full views", n, ops)
	}
	if a, b := plain.fallbacks.Load(), streamed.fallbacks.Load(); a+b > 0 {
		t.Fatalf("deltas did not match what the followers had: %d (long-poll) and %d (stream) full reads", a, b)
	}
}

// BenchmarkMirror_Diff is one delta of a one-key change to a 10,000-key view, made from the
// mirror (sum included), against encoding that view whole as a full answer does.
func BenchmarkMirror_Diff(b *testing.B) {
	keys := map[string]string{}
	for i := range 10000 {
		keys[fmt.Sprintf("appliances/big/svc/%05d", i)] = fmt.Sprintf("10.0.%d.%d", i/256, i%256)
	}
	var m mirror
	m.load(keys, 10, m.restart())
	m.apply(store.ChangeEvent{Event: store.Event{Revision: 11}, Changes: []store.Change{{Key: "appliances/big/svc/00042", Value: "x"}}})
	b.Run("delta", func(b *testing.B) {
		for b.Loop() {
			if _, _, ok := m.diff("big", 10, side{}, side{}, 11); !ok {
				b.Fatal("no delta")
			}
		}
	})
	b.Run("full", func(b *testing.B) {
		for b.Loop() {
			v, _, _ := m.view("big", 11)
			if _, err := json.Marshal(v); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// The mirror's change history is bounded: a delta from before what it keeps is refused (the
// full view is answered), one from within it is exact.
func TestMirror_DiffHistoryBounds(t *testing.T) {
	var m mirror
	m.load(map[string]string{"appliances/web/a": "0", "shared/s": "0"}, 10, m.restart())
	rev := int64(10)
	for i := range maxChanges + 10 {
		rev++
		key := "shared/s"
		if i%2 == 0 {
			key = "appliances/web/a"
		}
		m.apply(store.ChangeEvent{Event: store.Event{Revision: rev}, Changes: []store.Change{{Key: key, Value: fmt.Sprint(i)}}})
	}
	if len(m.changes) > maxChanges || m.changesFrom <= 10 {
		t.Fatalf("history of %d changes from %d", len(m.changes), m.changesFrom)
	}
	if _, _, ok := m.diff("web", 10, side{}, side{}, rev); ok {
		t.Fatal("a delta from before the history")
	}
	base := rev - 3
	d, _, ok := m.diff("web", base, side{}, side{}, rev)
	if !ok {
		t.Fatalf("no delta from %d (history from %d)", base, m.changesFrom)
	}
	v, _, _ := m.view("web", rev)
	// At base, the events up to i = base-11 were applied: a holds the last even i, s the last odd.
	last := base - 11
	even, odd := last-last%2, last-1+last%2
	was := api.View{Appliance: "web", Revision: base, Keys: map[string]string{"a": fmt.Sprint(even), "s": fmt.Sprint(odd)}}
	got, err := api.ApplyDelta(was, d)
	if err != nil || !maps.Equal(got.Keys, v.Keys) {
		t.Fatalf("delta %+v from %v: %v %v, want %v", d, was.Keys, err, got.Keys, v.Keys)
	}
}

// Many long-polls with delta from one base, woken by one change, share one delta.
func TestDelta_ManyWaitersOneDelta(t *testing.T) {
	const n = 300
	f := newFixture(t)
	for i := range 20 {
		f.put(fmt.Sprintf("appliances/web/k%02d", i), strings.Repeat("v", 30))
	}
	v := f.view("web")
	tr := &http.Transport{MaxIdleConnsPerHost: n}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: testClient.Timeout}
	bodies := make(chan string, n)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("GET", f.srv.URL+lp("web", v.Revision, "60s")+"&delta", nil)
			req.Header.Set("Authorization", "Bearer "+f.token)
			res, err := hc.Do(req)
			if err != nil {
				bodies <- err.Error()
				return
			}
			defer res.Body.Close()
			var u api.Update
			json.NewDecoder(res.Body).Decode(&u)
			bodies <- fmt.Sprint(res.StatusCode, u.Base, u.Set)
		}()
	}
	f.waitOpen(n)
	before := f.s.hub.deltaAnswers.Load()
	f.put("shared/everyone", "wake up")
	wg.Wait()
	close(bodies)
	counts := map[string]int{}
	for b := range bodies {
		counts[b]++
	}
	want := fmt.Sprint(200, v.Revision, map[string]string{"everyone": "wake up"})
	if counts[want] != n {
		t.Fatalf("answers %v, want %d × %q", counts, n, want)
	}
	if made := f.s.hub.deltaAnswers.Load() - before; made != 1 {
		t.Fatalf("%d long-polls woken by one write made %d deltas, want 1", n, made)
	}
}

// A delta is answered exactly when it is smaller than the full view: for small views too (an
// estimate of the view's size, tens of bytes over it, let deltas larger than the view
// through), and for values that JSON escapes (the estimate was under the view then).
func TestDelta_OnlyWhenSmallerThanTheView(t *testing.T) {
	parallelShared(t)
	f := newFixture(t)
	deltas, fulls := 0, 0
	for _, pad := range []string{"p", "<", "\n", "é"} {
		for n := range 90 {
			f.put("appliances/web/pad", strings.Repeat(pad, n))
			base := f.view("web")
			f.put("appliances/web/k", fmt.Sprint("v", n))
			r := f.do("GET", lp("web", base.Revision, "30s")+"&delta", "")
			var u api.Update
			f.must(r, 200, &u)
			// The sizes of both answers at the answer's revision.
			now := f.view("web")
			now.Revision = u.Revision
			d := api.Diff(base, now)
			db, _ := api.Marshal(d)
			vb, _ := api.Marshal(now)
			body := strings.TrimSuffix(string(r.body), "\n")
			if u.IsDelta() {
				deltas++
				if len(body) >= len(vb) {
					t.Fatalf("pad %q×%d: a delta of %d bytes answered for a view of %d: %s", pad, n, len(body), len(vb), body)
				}
				if body != string(db) {
					t.Fatalf("pad %q×%d: delta %s, want %s", pad, n, body, db)
				}
				continue
			}
			fulls++
			if len(db) < len(vb) {
				t.Fatalf("pad %q×%d: the full view (%d bytes) answered for a delta of %d: %s", pad, n, len(vb), len(db), db)
			}
		}
	}
	if deltas == 0 || fulls == 0 {
		t.Fatalf("%d deltas and %d full views: the cases do not straddle the view's size", deltas, fulls)
	}
}

// viewJSONLen counts what api.Marshal writes, whatever the bytes.
func TestViewJSONLen(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []string{"a", "<", ">", "&", "\"", "\\", "\n", "\r", "\t", "\b", "\f", "\x01", "\x1f", "\x7f", "é", "\u2028", "\u2029", "😀", "\xff", "/"}
	str := func() string {
		var b strings.Builder
		for range rng.IntN(12) {
			b.WriteString(alphabet[rng.IntN(len(alphabet))])
		}
		return b.String()
	}
	for range 2000 {
		v := api.View{Appliance: str(), Revision: rng.Int64N(1 << rng.IntN(62)), Keys: map[string]string{}}
		if rng.IntN(2) == 0 {
			v.Rollout = str()
		}
		for range rng.IntN(5) {
			v.Keys[str()] = str()
		}
		b, _ := api.Marshal(v)
		if got := viewJSONLen(v.Appliance, v.Revision, v.Rollout, v.Keys); got != len(b) {
			t.Fatalf("viewJSONLen %d, api.Marshal %d: %s", got, len(b), b)
		}
	}
}
