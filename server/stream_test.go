package server

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/client"
)

// stream is a streaming long-poll read in the background, line by line.
type stream struct {
	res   *http.Response
	lines chan api.Update
	raw   chan []byte
	done  chan struct{}
}

// openStream opens path (a long-poll with stream) with token; it fails the test unless the
// answer is 200 application/x-ndjson.
func (f *fixture) openStream(token, path string, hdr ...string) *stream {
	f.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f.t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, "GET", f.srv.URL+path, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := testClient.Do(req)
	if err != nil {
		f.t.Fatalf("stream %s: %v", path, err)
	}
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != api.ContentTypeStream {
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		f.t.Fatalf("stream %s: %d %s %s", path, res.StatusCode, res.Header.Get("Content-Type"), b)
	}
	s := &stream{res: res, lines: make(chan api.Update, 100), raw: make(chan []byte, 100), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		defer close(s.lines)
		defer res.Body.Close()
		dec := json.NewDecoder(res.Body)
		for {
			var m json.RawMessage
			if dec.Decode(&m) != nil {
				return
			}
			var u api.Update
			if json.Unmarshal(m, &u) != nil {
				return
			}
			s.raw <- m
			s.lines <- u
		}
	}()
	return s
}

// next returns the stream's next line.
func (s *stream) next(t testing.TB) (api.Update, []byte) {
	t.Helper()
	select {
	case u, ok := <-s.lines:
		if !ok {
			t.Fatal("stream ended, want a line")
		}
		return u, <-s.raw
	case <-time.After(30 * time.Second):
		t.Fatal("no line within 30 s")
	}
	return api.Update{}, nil
}

// ends checks that the stream ends without another line.
func (s *stream) ends(t testing.TB, why string) {
	t.Helper()
	select {
	case u, ok := <-s.lines:
		if ok {
			t.Fatalf("%s: stream went on with %+v, want its end", why, u)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: stream did not end", why)
	}
}

func streamPath(name string, index int64, extra string) string {
	return lp(name, index, "60s") + "&stream" + extra
}

// A stream writes a heartbeat at once when nothing changed, then one full view per change, each
// at its revision.
func TestStream_LinesPerChange(t *testing.T) {
	f := newFixture(t)
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	v := f.view("web")
	s := f.openStream(f.token, streamPath("web", v.Revision, ""))
	if got := s.res.Header.Get(api.HeaderStore); got != f.st.ID() {
		t.Fatalf("store header %q", got)
	}
	if u, _ := s.next(t); !u.Heartbeat || u.Revision < v.Revision {
		t.Fatalf("first line %+v, want a heartbeat at >= %d", u, v.Revision)
	}
	f.waitOpen(1)
	rev := f.put("appliances/web/a", "2")
	u, _ := s.next(t)
	if u.Heartbeat || u.IsDelta() || u.Revision != rev || u.Keys["a"] != "2" {
		t.Fatalf("line after a put: %+v, want the view at %d", u, rev)
	}
	rev = f.put("shared/ntp", "pool")
	if u, _ := s.next(t); u.Revision != rev || u.Keys["ntp"] != "pool" || u.Keys["a"] != "2" {
		t.Fatalf("line after a shared put: %+v", u)
	}
	f.put("appliances/other/x", "1") // another appliance: no line
	rev = f.put("appliances/web/b", "3")
	if u, _ := s.next(t); u.Revision != rev || !maps.Equal(u.Keys, map[string]string{"a": "2", "b": "3", "ntp": "pool"}) {
		t.Fatalf("line after a second put: %+v", u)
	}
	// Its stream is one long-poll (once it waits again: the line is read before that).
	waitFor(t, "the stream to wait for the next change", func() bool { return f.s.hub.open() >= 1 })
	if n := f.s.hub.open(); n != 1 {
		t.Fatalf("open long-polls %d, want 1", n)
	}
}

// A stream from an index older than the last change starts with the view.
func TestStream_FirstLineIsTheChangedView(t *testing.T) {
	f := newFixture(t)
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	old := f.view("web").Revision
	rev := f.put("appliances/web/a", "2")
	// Until the hub has seen the change, a heartbeat first is right (nothing it knows of
	// changed): wait, so that the first line has a change to answer.
	waitFor(t, "the hub to see the put", func() bool { return f.s.hub.current() >= rev })
	s := f.openStream(f.token, streamPath("web", old, ""))
	if u, _ := s.next(t); u.Heartbeat || u.Revision != rev || u.Keys["a"] != "2" {
		t.Fatalf("first line %+v, want the view at %d", u, rev)
	}
}

// A stream's wait bounds it; drain, revocation, a newer long-poll of the same agent and a
// store change end it; and it counts against the caps as one long-poll.
func TestStream_Ends(t *testing.T) {
	parallelShared(t)
	f := newFixture(t, func(c *Config) { c.MaxWaitersPerToken = 1 })
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	v := f.view("web")

	t.Run("wait", func(t *testing.T) {
		s := f.openStream(f.token, lp("web", v.Revision, "1s")+"&stream")
		s.next(t)
		s.ends(t, "wait expired")
	})
	t.Run("cap and replacement", func(t *testing.T) {
		agent := f.as(f.newToken(api.TokenRequest{Name: "agent-web", Appliance: "web"}))
		s := f.openStream(agent.token, streamPath("web", v.Revision, ""), api.HeaderInstance, "vm-1")
		s.next(t)
		f.waitOpen(1)
		// The token's one long-poll is the stream: another instance's is refused.
		f.mustErr(agent.do("GET", lp("web", v.Revision, "30s"), "", api.HeaderInstance, "vm-2"), 503, api.CodeTooManyWaiters)
		// The same instance's new long-poll takes its place.
		p := agent.startPoll(lp("web", v.Revision, "30s"), api.HeaderInstance, "vm-1")
		s.ends(t, "replaced")
		f.waitOpen(1)
		f.put("appliances/web/a", "2")
		f.must(p.wait(t), 200, nil)
		v = f.view("web")
	})
	t.Run("revoked", func(t *testing.T) {
		tok := f.newToken(api.TokenRequest{Name: "short", Appliance: "web"})
		s := f.openStream(tok, streamPath("web", v.Revision, ""))
		s.next(t)
		f.waitOpen(1)
		f.must(f.do("DELETE", "/v1/tokens/short", ""), 200, nil)
		s.ends(t, "revoked")
	})
	t.Run("store changed", func(t *testing.T) {
		s := f.openStream(f.token, streamPath("web", v.Revision, ""))
		s.next(t)
		f.waitOpen(1)
		if _, err := f.st.ResetID(context.Background()); err != nil {
			t.Fatal(err)
		}
		s.ends(t, "store id changed")
	})
	t.Run("drain", func(t *testing.T) {
		v := f.view("web")
		s := f.openStream(f.token, streamPath("web", v.Revision, ""), api.HeaderStore, f.st.ID())
		s.next(t)
		f.waitOpen(1)
		f.s.Drain()
		s.ends(t, "drain")
	})
}

// With delta, a stream's and a long-poll's answers are the difference from the view at the
// index; the plain long-poll's answer stays the full view.
func TestDelta_OneKeyChange(t *testing.T) {
	f := newFixture(t)
	keys := map[string]string{}
	for i := range 200 {
		keys["k"+strings.Repeat("x", i%7)+string(rune('a'+i%26))+string(rune('a'+i/26))] = strings.Repeat("v", 40)
	}
	body, _ := json.Marshal(api.Apply{Keys: keys})
	f.must(f.do("PUT", "/v1/appliances/web", string(body)), 200, nil)
	f.put("shared/ntp", "pool")
	v := f.view("web")
	s := f.openStream(f.token, streamPath("web", v.Revision, "&delta"))
	s.next(t) // heartbeat
	f.waitOpen(1)
	rev := f.put("appliances/web/ka", "new")
	u, raw := s.next(t)
	if !u.IsDelta() || u.Base != v.Revision || u.Revision != rev || !maps.Equal(u.Set, map[string]string{"ka": "new"}) || len(u.Unset) != 0 {
		t.Fatalf("delta line %s", raw)
	}
	got, err := api.ApplyDelta(v, u.Delta())
	if err != nil {
		t.Fatal(err)
	}
	if want := f.view("web"); !maps.Equal(got.Keys, want.Keys) {
		t.Fatal("applied delta differs from the view")
	}
	// A delete of a shared key is an unset.
	rev = f.put("shared/dns", "1")
	s.next(t)
	r := f.do("DELETE", "/v1/kv/shared/dns", "")
	f.must(r, 200, nil)
	if u, raw := s.next(t); !u.IsDelta() || len(u.Unset) != 1 || u.Unset[0] != "dns" || u.Base != rev {
		t.Fatalf("delete line %s", raw)
	}

	// Plain long-polls: with delta, a delta; without, the view as ever.
	cur := f.view("web")
	dp := f.startPoll(lp("web", cur.Revision, "30s") + "&delta")
	pp := f.startPoll(lp("web", cur.Revision, "30s"))
	f.waitOpen(3)
	rev = f.put("appliances/web/kb", "x")
	var d api.Update
	f.must(dp.wait(t), 200, &d)
	if !d.IsDelta() || d.Base != cur.Revision || d.Revision != rev || !maps.Equal(d.Set, map[string]string{"kb": "x"}) {
		t.Fatalf("long-poll delta %+v", d)
	}
	var full map[string]any
	f.must(pp.wait(t), 200, &full)
	if _, ok := full["base"]; ok || full["keys"] == nil {
		t.Fatalf("plain long-poll answered %v", full)
	}
	// Not from a compacted-away base, R=0 or another store: the full view.
	for _, c := range []struct {
		path string
		hdr  []string
	}{
		{lp("web", 0, "30s") + "&delta", nil},
		{lp("web", cur.Revision, "30s") + "&delta", []string{api.HeaderStore, "other-store"}},
	} {
		var u api.Update
		f.must(f.do("GET", c.path, "", c.hdr...), 200, &u)
		if u.IsDelta() || u.Keys["kb"] != "x" {
			t.Fatalf("%s: %+v, want the full view", c.path, u)
		}
	}
	f.mustErr(f.do("GET", "/v1/appliances/web?delta", ""), 400, api.CodeInvalidRequest, "index")
	f.mustErr(f.do("GET", lp("web", 1, "1s")+"&base_rollout=ab", ""), 400, api.CodeInvalidRequest, "delta")
	f.mustErr(f.do("GET", lp("web", 1, "1s")+"&delta&base_rollout=<b>", ""), 400, api.CodeInvalidRequest, "base_rollout")
}

// A canary switching between the live view and the candidate gets exactly that difference.
func TestDelta_CanarySwitch(t *testing.T) {
	f := newFixture(t)
	f.put("shared/ntp", "pool")
	// Enough keys that the difference is smaller than the view.
	for i := range 20 {
		f.put(fmt.Sprintf("shared/filler-%d", i), strings.Repeat("x", 30))
	}
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"port":"80","name":"web","old":"1"}}`), 200, nil)
	enrollFleet(t, f, 1)
	tok := instanceToken(t, f, "vm-0")
	live := viewOf(t, f, "vm-0")
	s := f.openStream(tok, streamPath("web", live.Revision, "&delta"), api.HeaderInstance, "vm-0")
	s.next(t) // heartbeat
	f.waitOpen(1)
	var st api.RolloutStatus
	f.must(f.do("PUT", "/v1/appliances/web?canary=100%25&manual", `{"keys":{"port":"8080","name":"web","new":"2"}}`), http.StatusAccepted, &st)
	u, raw := s.next(t)
	if !u.IsDelta() || u.Rollout != st.ID || !maps.Equal(u.Set, map[string]string{"port": "8080", "new": "2"}) || len(u.Unset) != 1 || u.Unset[0] != "old" {
		t.Fatalf("switch to the candidate: %s", raw)
	}
	cand, err := api.ApplyDelta(live, u.Delta())
	if err != nil {
		t.Fatal(err)
	}
	if want := viewOf(t, f, "vm-0"); !maps.Equal(cand.Keys, want.Keys) || want.Rollout != st.ID {
		t.Fatalf("candidate built %v, want %v", cand.Keys, want.Keys)
	}
	// A shared change during the rollout: the candidate plus that change.
	rev := f.put("shared/dns", "1")
	u, raw = s.next(t)
	if !u.IsDelta() || u.Base != cand.Revision || u.Revision != rev || !maps.Equal(u.Set, map[string]string{"dns": "1"}) || u.Rollout != st.ID {
		t.Fatalf("shared change in the rollout: %s", raw)
	}
	cand, _ = api.ApplyDelta(cand, u.Delta())
	// The abort brings the canary back to the live view; the stream follows with its
	// base_rollout.
	f.must(f.do("POST", "/v1/appliances/web/rollout", `{"action":"abort"}`, "Content-Type", "application/json"), 200, nil)
	u, raw = s.next(t)
	if !u.IsDelta() || u.Rollout != "" || !maps.Equal(u.Set, map[string]string{"port": "80", "old": "1"}) || len(u.Unset) != 1 || u.Unset[0] != "new" {
		t.Fatalf("switch back to live: %s", raw)
	}
	back, err := api.ApplyDelta(cand, u.Delta())
	if err != nil {
		t.Fatal(err)
	}
	if want := viewOf(t, f, "vm-0"); !maps.Equal(back.Keys, want.Keys) || want.Rollout != "" {
		t.Fatalf("live built %v, want %v", back.Keys, want.Keys)
	}
}

// Full views over 1 KiB are gzipped for clients that take it, encoded once per view.
func TestGzip_FullViews(t *testing.T) {
	f := newFixture(t)
	f.put("appliances/small/a", "1")
	f.put("appliances/web/big", strings.Repeat("abcdefgh", 512))
	get := func(path string) resp {
		return f.do("GET", path, "", "Accept-Encoding", "gzip")
	}
	r := get("/v1/appliances/small")
	f.must(r, 200, nil)
	if r.Header.Get("Content-Encoding") != "" {
		t.Fatalf("small view gzipped")
	}
	r = get("/v1/appliances/web")
	if r.StatusCode != 200 || r.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("big view: %d %v", r.StatusCode, r.Header)
	}
	zr, err := gzip.NewReader(bytes.NewReader(r.body))
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := io.ReadAll(zr)
	var v api.View
	if err := json.Unmarshal(plain, &v); err != nil || len(v.Keys["big"]) != 4096 || len(r.body) > 200 {
		t.Fatalf("gzipped view %d bytes: %v %d", len(r.body), err, len(v.Keys["big"]))
	}
	// A long-poll too; without Accept-Encoding it is plain.
	p := f.startPoll(lp("web", v.Revision, "30s"), "Accept-Encoding", "gzip")
	q := f.startPoll(lp("web", v.Revision, "30s"), "Accept-Encoding", "gzip;q=0")
	f.waitOpen(2)
	f.put("appliances/web/x", "1")
	if r := p.wait(t); r.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("long-poll not gzipped: %v", r.Header)
	}
	if r := q.wait(t); r.Header.Get("Content-Encoding") != "" || !json.Valid(r.body) {
		t.Fatalf("long-poll gzipped for a client that refuses it: %v", r.Header)
	}
}

// Behind a proxy that buffers whole answers no line arrives: the client says ErrNoStream in
// seconds, and plain long-polls through the same proxy work.
func TestStream_BufferingProxyFallsBack(t *testing.T) {
	f := newFixture(t)
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	v := f.view("web")
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, _ := http.NewRequestWithContext(r.Context(), r.Method, f.srv.URL+r.URL.RequestURI(), nil)
		req.Header = r.Header.Clone()
		res, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body) // the whole answer first
		maps.Copy(w.Header(), res.Header)
		w.WriteHeader(res.StatusCode)
		w.Write(body)
	}))
	defer proxy.Close()
	c, err := client.New(proxy.URL, client.Options{Token: f.token, StreamFirstLine: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.StreamView(context.Background(), "web", client.Poll{Index: v.Revision, Wait: time.Minute, Base: &v}, func(*api.View, client.Meta) error {
		t.Fatal("a view through a buffering proxy")
		return nil
	})
	if !errors.Is(err, client.ErrNoStream) {
		t.Fatalf("through a buffering proxy: %v, want ErrNoStream", err)
	}
	f.waitOpen(0) // the abandoned stream is freed
	done := make(chan *api.View, 1)
	go func() {
		nv, _, err := c.WatchView(context.Background(), "web", client.Poll{Index: v.Revision, Wait: 30 * time.Second})
		if err != nil {
			t.Error(err)
		}
		done <- nv
	}()
	f.waitOpen(1)
	f.put("appliances/web/a", "2")
	if nv := <-done; nv == nil || nv.Keys["a"] != "2" {
		t.Fatalf("plain long-poll through the proxy: %+v", nv)
	}
}

// A client outside a rollout's cohort that names the rollout in base_rollout gets the full
// live view, never a delta from the candidate: that delta would name the candidate's keys
// (its unset) and which keys it changes.
func TestDelta_BaseRolloutOutsideTheCohort(t *testing.T) {
	f := newFixture(t)
	for i := range 20 {
		f.put(fmt.Sprintf("shared/filler-%d", i), strings.Repeat("x", 30))
	}
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"port":"80","name":"web"}}`), 200, nil)
	enrollFleet(t, f, 1)
	var reader api.TokenCreated
	f.must(f.do("POST", "/v1/tokens", `{"name":"web-reader","appliance":"web"}`, "Content-Type", "application/json"), 201, &reader)
	var st api.RolloutStatus
	f.must(f.do("PUT", "/v1/appliances/web?canary=100%25&manual", `{"keys":{"port":"8080","name":"web","secret-candidate-key":"2"}}`), http.StatusAccepted, &st)
	if v := viewOf(t, f, "vm-0"); v.Rollout != st.ID {
		t.Fatalf("vm-0 is not in the cohort: %+v", v)
	}
	for _, c := range []struct {
		name, token string
		hdr         []string
	}{
		{"agent token", reader.Token, []string{api.HeaderInstance, "vm-0"}},
		{"admin token", f.token, nil},
	} {
		cur := f.view("web")
		p := f.startPoll(lp("web", cur.Revision, "30s")+"&delta&base_rollout="+st.ID, append([]string{"Authorization", "Bearer " + c.token}, c.hdr...)...)
		select {
		case r := <-p.done:
			t.Fatalf("%s: answered at once: %d %s", c.name, r.StatusCode, r.body)
		case <-time.After(200 * time.Millisecond):
		}
		f.waitOpen(1)
		f.put(fmt.Sprintf("shared/wake-%s", strings.ReplaceAll(c.name, " ", "-")), "1")
		r := p.wait(t)
		var u api.Update
		f.must(r, 200, &u)
		if u.IsDelta() || strings.Contains(string(r.body), "secret-candidate-key") || u.Keys["port"] != "80" {
			t.Fatalf("%s outside the cohort, base_rollout=%s: %s", c.name, st.ID, r.body)
		}
	}
}

// A stream checks that its token still grants what it did before each line: a revocation the
// hub's wake-up missed (the stream was writing a line, not registered) and a record changed in
// the store without a new secret (other scopes, written to etcd directly) end it without another
// line. A record read again unchanged (the watch event of a token created here) does not.
func TestStream_EndsWhenItsTokenChanges(t *testing.T) {
	f := newFixture(t)
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	f.must(f.do("PUT", "/v1/appliances/db", `{"keys":{"a":"1"}}`), 200, nil)

	open := func(name string) *stream {
		tok := f.newToken(api.TokenRequest{Name: name, Appliance: "web"})
		v := f.view("web")
		s := f.openStream(tok, streamPath("web", v.Revision, ""))
		s.next(t) // heartbeat
		f.waitOpen(1)
		// Lines go on while the token stands (its own watch event came meanwhile).
		f.put("appliances/web/a", name+"-1")
		if u, raw := s.next(t); u.Keys["a"] != name+"-1" {
			t.Fatalf("line %s", raw)
		}
		return s
	}

	t.Run("revoked between registrations", func(t *testing.T) {
		s := open("lost-wakeup")
		// The revocation as the cache applies it, its hub wake-up lost (as when the stream is
		// not registered at that moment).
		f.s.auth.remove("lost-wakeup", 0)
		f.put("appliances/web/a", "after-revoke")
		s.ends(t, "revoked")
		f.waitOpen(0)
	})
	t.Run("scopes changed", func(t *testing.T) {
		s := open("rescoped")
		m, _, err := f.st.SysList(context.Background(), tokenPrefix+"rescoped")
		if err != nil {
			t.Fatal(err)
		}
		rec, err := decodeToken(tokenPrefix+"rescoped", m[tokenPrefix+"rescoped"])
		if err != nil {
			t.Fatal(err)
		}
		rec.Appliance = "db"
		body, _ := json.Marshal(rec)
		if _, err := f.st.SysPut(context.Background(), tokenPrefix+"rescoped", body, -1); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the changed record", func() bool {
			f.s.auth.mu.RLock()
			defer f.s.auth.mu.RUnlock()
			r := f.s.auth.byName["rescoped"]
			return r != nil && r.Appliance == "db"
		})
		f.put("appliances/web/a", "after-rescope")
		s.ends(t, "scopes changed")
	})
}

// A client that opens a stream and stops reading is cut off once a line waits longer than
// streamLineTimeout to be taken, not held (out of the caps) until the wait's write deadline.
func TestStream_SlowReaderIsCutOff(t *testing.T) {
	old := streamLineTimeout
	t.Cleanup(func() { streamLineTimeout = old }) // after the fixture's server is closed
	streamLineTimeout = time.Second
	f := newFixture(t)
	big := strings.Repeat("x", 200<<10)
	keys := map[string]string{}
	for i := range 4 {
		keys[fmt.Sprintf("k%d", i)] = big
	}
	body, _ := json.Marshal(api.Apply{Keys: keys})
	f.must(f.do("PUT", "/v1/appliances/web", string(body)), 200, nil)
	v := f.view("web")

	c, err := net.Dial("tcp", strings.TrimPrefix(f.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.(*net.TCPConn).SetReadBuffer(4096) // small and fixed: it fills at once
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", lp("web", v.Revision, "300s")+"&stream", f.token)
	f.waitOpen(1)
	// Each change is a line of the whole view (800 KB): the buffers fill, the stream's write
	// blocks.
	for i := range 20 {
		f.put("appliances/web/k0", fmt.Sprintf("%8d%s", i, big[:len(big)-8]))
		time.Sleep(20 * time.Millisecond) // a line each
	}
	// Cut off, the stream's handler returns; held, it would stay blocked in its write for the
	// 300 s wait (and more).
	waitFor(t, "the end of the stream's handler", func() bool {
		buf := make([]byte, 64<<20)
		return !strings.Contains(string(buf[:runtime.Stack(buf, true)]), "server.(*Server).streamView")
	})
}
