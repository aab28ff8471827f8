package server

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/testutil"
)

// poll is a long-poll running in the background.
type poll struct {
	done chan resp
}

func (f *fixture) startPoll(path string, hdr ...string) *poll {
	p := &poll{done: make(chan resp, 1)}
	go func() {
		p.done <- f.doQuiet(path, hdr...)
	}()
	return p
}

// doQuiet is a GET that reports failures as a status 0 response (usable off the test goroutine).
func (f *fixture) doQuiet(path string, hdr ...string) resp {
	req, err := http.NewRequest("GET", f.srv.URL+path, nil)
	if err != nil {
		return resp{Response: &http.Response{}, body: []byte(err.Error())}
	}
	req.Header.Set("Authorization", "Bearer "+f.token)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := testClient.Do(req)
	if err != nil {
		return resp{Response: &http.Response{Request: req}, body: []byte(err.Error())}
	}
	defer res.Body.Close()
	var b []byte
	buf := make([]byte, 4096)
	for {
		n, err := res.Body.Read(buf)
		b = append(b, buf[:n]...)
		if err != nil {
			break
		}
	}
	return resp{Response: res, body: b}
}

func (p *poll) wait(t testing.TB) resp {
	t.Helper()
	select {
	case r := <-p.done:
		return r
	case <-time.After(30 * time.Second):
		t.Fatalf("long-poll did not answer")
		return resp{}
	}
}

// pending fails the test if the long-poll has answered already.
func (p *poll) pending(t testing.TB) {
	t.Helper()
	select {
	case r := <-p.done:
		t.Fatalf("long-poll answered early: %d %s", r.StatusCode, r.body)
	default:
	}
}

func (f *fixture) view(name string) api.View {
	f.t.Helper()
	var v api.View
	f.must(f.do("GET", "/v1/appliances/"+name, ""), 200, &v)
	return v
}

func (f *fixture) waitOpen(n int) {
	f.t.Helper()
	waitFor(f.t, fmt.Sprintf("%d open long-polls", n), func() bool { return f.s.hub.open() == n })
}

func lp(name string, index int64, wait string) string {
	return fmt.Sprintf("/v1/appliances/%s?index=%d&wait=%s", name, index, wait)
}

func TestLongPoll_WakesOnPutDeleteAndShared(t *testing.T) {
	f := newFixture(t)
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1","b":"2"}}`), 200, nil)
	f.must(f.do("PUT", "/v1/appliances/web-frontend", `{"keys":{"a":"1"}}`), 200, nil)
	v := f.view("web")

	steps := []struct {
		name   string
		change func() int64
		check  func(api.View) bool
	}{
		{"put", func() int64 { return f.put("appliances/web/a", "changed") }, func(v api.View) bool { return v.Keys["a"] == "changed" }},
		{"delete", func() int64 {
			var d api.DeleteResult
			f.must(f.do("DELETE", "/v1/kv/appliances/web/b", ""), 200, &d)
			return d.Revision
		}, func(v api.View) bool { _, ok := v.Keys["b"]; return !ok }},
		{"shared", func() int64 { return f.put("shared/dns", "9.9.9.9") }, func(v api.View) bool { return v.Keys["dns"] == "9.9.9.9" }},
		{"apply", func() int64 {
			var w api.WriteResult
			f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"c":"3"}}`), 200, &w)
			return w.Revision
		}, func(v api.View) bool { return v.Keys["c"] == "3" && v.Keys["a"] == "" }},
	}
	for _, s := range steps {
		p := f.startPoll(lp("web", v.Revision, "30s"))
		f.waitOpen(1)
		// A change to another appliance, even one whose name starts with "web", wakes nobody.
		f.put("appliances/web-frontend/a", "x"+s.name)
		waitFor(t, "hub sees the other write", func() bool { return f.s.hub.current() > v.Revision })
		// The hub wakes waiters under the lock in which it records the revision: once it has
		// seen the write, a long-poll it woke is no longer open.
		if n := f.s.hub.open(); n != 1 {
			t.Fatalf("%s: a write to appliances/web-frontend woke the long-poll of web (%d open)", s.name, n)
		}
		p.pending(t)
		rev := s.change()
		r := p.wait(t)
		var got api.View
		f.must(r, 200, &got)
		if got.Revision < rev || !s.check(got) {
			t.Fatalf("%s: woke with %+v, want revision >= %d and the change", s.name, got, rev)
		}
		if r.index() != got.Revision {
			t.Fatalf("%s: index %d, view revision %d", s.name, r.index(), got.Revision)
		}
		v = got
	}
	if n := f.s.hub.open(); n != 0 {
		t.Fatalf("%d long-polls left open", n)
	}
}

func TestLongPoll_ChangeBeforeRegistering(t *testing.T) {
	f := newFixture(t)
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	v := f.view("web")
	rev := f.put("shared/x", "1")
	waitFor(t, "hub sees the write", func() bool { return f.s.hub.current() >= rev })
	// The agent asks with the index it had before the change: answered at once.
	r := f.do("GET", lp("web", v.Revision, "10m"), "")
	var got api.View
	f.must(r, 200, &got)
	if got.Revision < rev || got.Keys["x"] != "1" {
		t.Fatalf("got %+v", got)
	}
}

func TestLongPoll_TimeoutIs304(t *testing.T) {
	f := newFixture(t)
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	v := f.view("web")
	for _, wait := range []string{"200ms", "0.2", "0"} {
		r := f.do("GET", lp("web", v.Revision, wait), "")
		if r.StatusCode != http.StatusNotModified || len(r.body) != 0 {
			t.Fatalf("wait=%s: %d %s, want 304", wait, r.StatusCode, r.body)
		}
		if r.index() < v.Revision || r.Header.Get(api.HeaderStore) != f.st.ID() {
			t.Fatalf("wait=%s: 304 headers %v", wait, r.Header)
		}
	}
	if n := f.s.hub.open(); n != 0 {
		t.Fatalf("%d long-polls left open", n)
	}
}

func TestLongPoll_AnsweredAtOnce(t *testing.T) {
	f := newFixture(t)
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	v := f.view("web")
	cases := []struct {
		name string
		path string
		hdr  []string
	}{
		{"index ahead of the store", lp("web", v.Revision+1000, "10m"), nil},
		{"another store", lp("web", v.Revision, "10m"), []string{api.HeaderStore, "another-store-id"}},
	}
	for _, c := range cases {
		var got api.View
		f.must(f.do("GET", c.path, "", c.hdr...), 200, &got)
		if got.Keys["a"] != "1" {
			t.Fatalf("%s: %+v", c.name, got)
		}
	}
	// A replica that started after the index cannot know what changed: it answers at once.
	f2 := newFixtureOn(t, f.st)
	f2.token = f.token
	var got api.View
	f.must(f2.do("GET", lp("web", 1, "10m"), ""), 200, &got)
	// Same store id and a current index: it waits.
	r := f2.do("GET", lp("web", v.Revision, "100ms"), "", api.HeaderStore, f.st.ID())
	if r.StatusCode != http.StatusNotModified {
		t.Fatalf("current index: %d %s", r.StatusCode, r.body)
	}
}

func TestLongPoll_ApplianceCreatedWhileWaiting(t *testing.T) {
	f := newFixture(t)
	rev := f.put("shared/x", "1")
	waitFor(t, "hub sees the write", func() bool { return f.s.hub.current() >= rev })
	p := f.startPoll(lp("db", rev, "30s"))
	f.waitOpen(1)
	f.must(f.do("PUT", "/v1/appliances/db", `{"keys":{"port":"5432"}}`), 200, nil)
	var got api.View
	f.must(p.wait(t), 200, &got)
	if got.Keys["port"] != "5432" || got.Keys["x"] != "1" {
		t.Fatalf("got %+v", got)
	}
	// Deleting the appliance wakes its waiters with 404.
	p = f.startPoll(lp("db", got.Revision, "30s"))
	f.waitOpen(1)
	f.must(f.do("DELETE", "/v1/kv/appliances/db?recurse", ""), 200, nil)
	f.mustErr(p.wait(t), 404, api.CodeNotFound, "has no keys")
}

func TestLongPoll_ClientGoneIsFreed(t *testing.T) {
	f := newFixture(t)
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	v := f.view("web")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		req, _ := http.NewRequestWithContext(ctx, "GET", f.srv.URL+lp("web", v.Revision, "10m"), nil)
		req.Header.Set("Authorization", "Bearer "+f.token)
		if res, err := testClient.Do(req); err == nil {
			res.Body.Close()
		}
	}()
	f.waitOpen(1)
	cancel()
	<-done
	f.waitOpen(0)
}

func TestLongPoll_Cap(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MaxWaiters = 2 })
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	v := f.view("web")
	p1 := f.startPoll(lp("web", v.Revision, "30s"))
	p2 := f.startPoll(lp("web", v.Revision, "30s"))
	f.waitOpen(2)
	r := f.do("GET", lp("web", v.Revision, "30s"), "")
	f.mustErr(r, 503, api.CodeTooManyWaiters, "limit 2")
	if ra, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || ra < 1 {
		t.Fatalf("Retry-After %q", r.Header.Get("Retry-After"))
	}
	// Plain reads are not long-polls: still served.
	f.view("web")
	f.put("appliances/web/a", "2")
	f.must(p1.wait(t), 200, nil)
	f.must(p2.wait(t), 200, nil)
}

func TestLongPoll_BadParameters(t *testing.T) {
	f := newFixture(t)
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	for path, word := range map[string]string{
		"/v1/appliances/web?wait=1s":            "needs index",
		"/v1/appliances/web?index=x":            "index",
		"/v1/appliances/web?index=-2":           "index",
		"/v1/appliances/web?index=1&wait=11m":   "maximum",
		"/v1/appliances/web?index=1&wait=601":   "maximum",
		"/v1/appliances/web?index=1&wait=-1s":   "negative",
		"/v1/appliances/web?index=1&wait=soon":  "duration",
		"/v1/appliances/web?index=1&wait=NaN":   "duration",
		"/v1/appliances/web?index=1&timeout=1s": "timeout",
	} {
		f.mustErr(f.do("GET", path, ""), 400, api.CodeInvalidRequest, word)
	}
}

func TestLongPoll_DrainAnswers304(t *testing.T) {
	parallelShared(t)
	f := newFixture(t)
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	v := f.view("web")
	p := f.startPoll(lp("web", v.Revision, "10m"))
	f.waitOpen(1)
	f.s.Drain()
	r := p.wait(t)
	if r.StatusCode != http.StatusNotModified || r.index() < v.Revision {
		t.Fatalf("drained long-poll: %d %v", r.StatusCode, r.Header)
	}
	// New long-polls during the drain are answered too.
	if r := f.do("GET", lp("web", v.Revision, "10m"), ""); r.StatusCode != http.StatusNotModified {
		t.Fatalf("long-poll while draining: %d", r.StatusCode)
	}
}

func TestLongPoll_TwoReplicasOneStore(t *testing.T) {
	cfg := testutil.StoreConfig(t)
	a := newFixtureOn(t, testutil.OpenStore(t, cfg))
	b := newFixtureOn(t, testutil.OpenStore(t, cfg))
	if a.st.ID() != b.st.ID() {
		t.Fatalf("store ids differ: %s %s", a.st.ID(), b.st.ID())
	}
	b.token = a.token
	a.must(a.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	v := a.view("web")
	p := a.startPoll(lp("web", v.Revision, "30s"))
	a.waitOpen(1)
	rev := b.put("shared/ntp", "time.internal")
	var got api.View
	a.must(p.wait(t), 200, &got)
	if got.Revision < rev || got.Keys["ntp"] != "time.internal" {
		t.Fatalf("replica a woke with %+v", got)
	}
	// An index that replica b answered with is valid on a, even before a has seen it.
	var w api.WriteResult
	b.must(b.do("PUT", "/v1/appliances/web", `{"keys":{"a":"2"}}`), 200, &w)
	r := a.do("GET", lp("web", w.Revision, "200ms"), "", api.HeaderStore, b.st.ID())
	if r.StatusCode != http.StatusNotModified {
		t.Fatalf("index from the other replica: %d %s", r.StatusCode, r.body)
	}
}

func TestLongPoll_ThousandWaitersOneViewRead(t *testing.T) {
	const n = 1000
	f := newFixture(t)
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	v := f.view("web")
	tr := &http.Transport{MaxIdleConnsPerHost: n, MaxConnsPerHost: 0}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: testClient.Timeout}
	results := make(chan string, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("GET", f.srv.URL+lp("web", v.Revision, "60s"), nil)
			req.Header.Set("Authorization", "Bearer "+f.token)
			res, err := client.Do(req)
			if err != nil {
				results <- err.Error()
				return
			}
			res.Body.Close()
			results <- fmt.Sprintf("%d %s", res.StatusCode, res.Header.Get(api.HeaderIndex))
		}()
	}
	f.waitOpen(n)
	before := f.s.ViewReads()
	rev := f.put("shared/everyone", "wake up")
	wg.Wait()
	close(results)
	counts := map[string]int{}
	for r := range results {
		counts[r]++
	}
	reads := f.s.ViewReads() - before
	if len(counts) != 1 {
		t.Fatalf("answers differ: %v", counts)
	}
	for r, c := range counts {
		var status int
		var idx int64
		fmt.Sscanf(r, "%d %d", &status, &idx)
		if status != 200 || idx < rev || c != n {
			t.Fatalf("answers %v, want %d × 200 at >= %d", counts, n, rev)
		}
	}
	if reads > 1 {
		t.Fatalf("%d long-polls woken by one write made %d store view reads, want at most 1", n, reads)
	}
}

func TestHub_CompactionFallback(t *testing.T) {
	parallelOwnEtcd(t)
	f := newOwnEtcdFixture(t)
	ctx := context.Background()
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	old := f.view("web").Revision
	f.put("appliances/other/x", "1")
	last := f.put("appliances/other/x", "2")
	if err := f.st.Compact(ctx, last); err != nil {
		t.Fatalf("compact: %v", err)
	}
	// A hub that last saw revision old (its watch broke before the compaction) re-watches from
	// old+1, finds it compacted, and answers its waiters with a fresh view.
	hctx, cancel := context.WithCancel(ctx)
	defer cancel()
	h := newHub(hctx, f.st, testutil.Logger(), newMetrics("test"), 10)
	h.reset(old)
	woke := make(chan wake, 1)
	go func() {
		wk, err := h.wait(hctx, "web", old, "", "", 0, time.Minute)
		if err != nil {
			t.Errorf("wait: %v", err)
		}
		woke <- wk
	}()
	waitFor(t, "waiter registered", func() bool { return h.open() == 1 })
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.run(hctx)
	}()
	select {
	case wk := <-woke:
		if wk.kind != wakeChanged || wk.rev < last {
			t.Fatalf("woke with %+v, want changed at >= %d", wk, last)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("waiter not woken after compaction")
	}
	h.mu.Lock()
	base := h.base
	h.mu.Unlock()
	if base < last {
		t.Fatalf("hub base %d, want >= %d", base, last)
	}
	// After the reset the hub watches again: a new change wakes a new waiter.
	go func() {
		wk, _ := h.wait(hctx, "web", base, "", "", 0, time.Minute)
		woke <- wk
	}()
	waitFor(t, "waiter registered", func() bool { return h.open() == 1 })
	rev := f.put("appliances/web/a", "2")
	select {
	case wk := <-woke:
		if wk.kind != wakeChanged || wk.rev < rev {
			t.Fatalf("woke with %+v", wk)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("waiter not woken after re-watch")
	}
	cancel()
	<-done
}

func TestLongPoll_StoreIDChangeWakesEveryone(t *testing.T) {
	cfg := testutil.StoreConfig(t)
	a := newFixtureOn(t, testutil.OpenStore(t, cfg))
	b := newFixtureOn(t, testutil.OpenStore(t, cfg))
	b.token = a.token
	a.must(a.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	v := a.view("web")
	old := a.st.ID()
	pa := a.startPoll(lp("web", v.Revision, "30s"), api.HeaderStore, old)
	pb := b.startPoll(lp("web", v.Revision, "30s"), api.HeaderStore, old)
	a.waitOpen(1)
	b.waitOpen(1)
	id, err := b.st.ResetID(context.Background()) // as a restore does
	if err != nil || id == old {
		t.Fatalf("reset id: %q %v", id, err)
	}
	for _, r := range []resp{pa.wait(t), pb.wait(t)} {
		if r.StatusCode != 200 || r.Header.Get(api.HeaderStore) != id {
			t.Fatalf("after the store id changed: %d, store %q, want 200 and %q", r.StatusCode, r.Header.Get(api.HeaderStore), id)
		}
	}
	// An agent that still sends the old id is answered at once.
	r := a.do("GET", lp("web", v.Revision, "30s"), "", api.HeaderStore, old)
	if r.StatusCode != 200 {
		t.Fatalf("old store id: %d", r.StatusCode)
	}
}

func TestLongPoll_SurvivesEtcdRestart(t *testing.T) {
	parallelOwnEtcd(t)
	dir := t.TempDir()
	st, _, stop := ownEtcdStore(t, dir)
	f := newFixtureOn(t, st)
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	v := f.view("web")
	p := f.startPoll(lp("web", v.Revision, "60s"))
	f.waitOpen(1)

	stop()
	// While etcd is away the process is healthy, its dependency is not, and writes say so.
	f.must(f.doToken("", "GET", "/health", ""), 200, nil)
	if r := f.doToken("", "GET", "/health/deps", ""); r.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/health/deps with etcd away: %d %s", r.StatusCode, r.body)
	}
	if r := f.do("PUT", "/v1/kv/appliances/web/a", "lost"); r.StatusCode != http.StatusServiceUnavailable || r.errCode() != api.CodeUnavailable {
		t.Fatalf("write with etcd away: %d %s", r.StatusCode, r.body)
	}
	p.pending(t)

	testutil.StartEtcd(t, dir)
	waitFor(t, "etcd back", func() bool { return f.doToken("", "GET", "/health/deps", "").StatusCode == 200 })
	rev := f.put("appliances/web/a", "2")
	var got api.View
	f.must(p.wait(t), 200, &got)
	if got.Revision < rev || got.Keys["a"] != "2" {
		t.Fatalf("after etcd restart woke with %+v", got)
	}
	// And the hub keeps watching.
	p = f.startPoll(lp("web", got.Revision, "60s"))
	f.waitOpen(1)
	f.put("shared/b", "3")
	f.must(p.wait(t), 200, nil)
}

// TestLongPoll_StoreWentBack: etcd brought back from a copy of its data without a revision bump
// (a VM snapshot of a member, a restore without --bump-revision) holds older revisions than the
// replica saw, under the same store id. Long-polls must be answered with the store's view as it is,
// later writes (at revisions the replica had seen before) must wake them, and system keys written
// then must take effect: the replica re-watched from its old revision and heard nothing for good.
func TestLongPoll_StoreWentBack(t *testing.T) {
	parallelOwnEtcd(t)
	testStoreWentBack(t, false)
}

// TestLongPoll_StoreWentBackBeforeTheWatchCaughtUp: as TestLongPoll_StoreWentBack, when the
// replica had written, read and taken long-polls at revisions its watch had not reached yet
// (it was to watch again after etcd restarted, and etcd went away before it did). The replica
// compared the revision of the store brought back with its watch's alone, found it no lower, and
// went on as if on the same history: the long-poll waited for a revision of the history gone, the
// writes at revisions below it woke nothing, and the token revoked in that history stayed revoked
// on this replica alone. TestLongPoll_StoreWentBack failed so about 2 runs in 3.
func TestLongPoll_StoreWentBackBeforeTheWatchCaughtUp(t *testing.T) {
	parallelOwnEtcd(t)
	testStoreWentBack(t, true)
}

// testStoreWentBack restarts the etcd of a replica on the same data, writes, opens a long-poll,
// and brings etcd back from the copy of its data before the writes. With holdWatch, the replica
// watches again after the first restart only once the store went back.
func testStoreWentBack(t *testing.T, holdWatch bool) {
	dir := t.TempDir()
	eps, stop := testutil.StartEtcd(t, dir)
	cfg := testutil.StoreConfig(t)
	cfg.Endpoints, cfg.RequestTimeout = eps, 2*time.Second
	cfg.WatchProgressInterval = 300 * time.Millisecond // the silent watch breaks sooner
	st := testutil.OpenStore(t, cfg)
	f := newFixtureOn(t, st)
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"old"}}`), 200, nil)
	reader := f.newToken(api.TokenRequest{Name: "reader", Read: []string{"appliances/web"}})
	held, release := make(chan struct{}), make(chan struct{})
	if holdWatch {
		var once sync.Once
		f.s.hub.mu.Lock()
		f.s.hub.beforeRewatch = func() {
			once.Do(func() { close(held) })
			<-release
		}
		f.s.hub.mu.Unlock()
		defer func() {
			select {
			case <-release:
			default:
				close(release)
			}
		}()
	}

	stop()
	copyDir := filepath.Join(t.TempDir(), "copy")
	if err := os.CopyFS(copyDir, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	_, stop = testutil.StartEtcd(t, dir)
	waitFor(t, "etcd back", func() bool { return f.doToken("", "GET", "/health/deps", "").StatusCode == 200 })
	if holdWatch {
		select {
		case <-held:
		case <-time.After(10 * time.Second):
			t.Fatal("the watch did not break when etcd restarted")
		}
	}
	for i := range 20 {
		f.put("appliances/web/a", fmt.Sprintf("new-%d", i))
	}
	f.must(f.do("DELETE", "/v1/tokens/reader", ""), 200, nil)
	v := f.view("web")
	p := f.startPoll(lp("web", v.Revision, "60s"))
	f.waitOpen(1)

	stop()
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(dir, os.DirFS(copyDir)); err != nil {
		t.Fatal(err)
	}
	testutil.StartEtcd(t, dir)
	if holdWatch {
		close(release)
	}

	// The open long-poll is answered with the view the store holds now.
	var got api.View
	f.must(p.wait(t), 200, &got)
	if got.Keys["a"] != "old" || got.Revision >= v.Revision {
		t.Fatalf("long-poll after the store went back answered %+v, want a=old below revision %d", got, v.Revision)
	}
	// A write now lands on a revision the replica had already seen: it must still wake.
	p = f.startPoll(lp("web", got.Revision, "60s"))
	f.waitOpen(1)
	rev := f.put("appliances/web/a", "after")
	if rev >= v.Revision {
		t.Fatalf("write after the rewind at revision %d, want one below %d (the test needs it)", rev, v.Revision)
	}
	f.must(p.wait(t), 200, &got)
	if got.Keys["a"] != "after" {
		t.Fatalf("long-poll after a write on the rewound store answered %+v", got)
	}
	// The store holds the token revoked in the history that is gone: it stands again, as on
	// every replica that starts on this store (the runbook says to revoke it once more).
	f.must(f.doToken(reader, "GET", "/v1/kv/appliances/web/a", ""), 200, nil)
	f.must(f.do("DELETE", "/v1/tokens/reader", ""), 200, nil)
	f.mustErr(f.doToken(reader, "GET", "/v1/kv/appliances/web/a", ""), 401, api.CodeUnauthorized)
	// A system key written by another replica reaches this one.
	cfg = testutil.StoreConfig(t)
	cfg.Root, cfg.Endpoints = st.Root(), eps
	other := testutil.OpenStore(t, cfg)
	if _, err := other.SysPut(context.Background(), maintenanceKey, []byte("on"), -1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "maintenance seen", func() bool {
		return f.do("PUT", "/v1/kv/appliances/web/a", "x").errCode() == api.CodeMaintenance
	})
}

// The keys named as a root itself ("shared", appliances/web) are in no view: a write of one
// wakes no long-poll. Before, a write of the key "shared" answered every long-poll of every
// appliance with its view as it was, at once, and every agent ran a pass for nothing.
func TestLongPoll_KeysNamedAsARootWakeNobody(t *testing.T) {
	f := newFixture(t)
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	v := f.view("web")
	p := f.startPoll(lp("web", v.Revision, "30s"))
	f.waitOpen(1)
	for _, k := range []string{"shared", "appliances/web"} {
		rev := f.put(k, "x")
		waitFor(t, "hub sees the write of "+k, func() bool { return f.s.hub.current() >= rev })
		if n := f.s.hub.open(); n != 1 {
			t.Fatalf("a write of %s woke the long-poll of web (%d open)", k, n)
		}
		p.pending(t)
	}
	rev := f.put("shared/dns", "9.9.9.9")
	var got api.View
	f.must(p.wait(t), 200, &got)
	if got.Revision < rev || got.Keys["dns"] != "9.9.9.9" || len(got.Keys) != 2 {
		t.Fatalf("woke with %+v, want dns and a at %d or later", got, rev)
	}
}
