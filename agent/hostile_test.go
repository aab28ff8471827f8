//go:build !windows

package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/agent"
	"github.com/shoelace-dev/shoelace/internal/api"
)

// A server (or a man in the middle on plain http) that redirects the agent's requests to
// another address gets no request there: the agent followed the redirect with its instance
// token, which its client sets on every request wherever it goes, and rendered what the other
// address answered. It keeps its files and cache, says what to change, and goes on once the
// server answers again.
func TestAgent_RunRedirectToAnotherAddressNotFollowed(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.Path+" "+r.Header.Get("Authorization"))
		mu.Unlock()
		io.WriteString(w, `{"appliance":"web","revision":99,"keys":{"a":"planted"}}`)
	}))
	defer other.Close()
	srv := newViewServer(t, map[string]string{"a": "1"})
	a, dir, logs := testAgent(t, srv, header+enrollTemplate)
	stop := runAgent(t, a)
	defer stop()
	waitFor(t, "first render", fileIs(dir+"/a", "a=1"))
	srv.set(map[string]*string{"a": str("2")})
	waitFor(t, "a re-rendered with the instance token", func() bool {
		auth, _ := srv.lastAuth()
		return fileIs(dir+"/a", "a=2")() && auth == "instance-token-1"
	})
	waitFor(t, "the cache at revision 11", func() bool { c, err := agent.LoadCache(dir+"/cache", "web"); return err == nil && c.Revision == 11 })

	srv.mu.Lock()
	srv.redirect = strings.Replace(other.URL, "127.0.0.1", "localhost", 1)
	srv.mu.Unlock()
	srv.set(map[string]*string{"a": str("3")}) // answers the long-poll waiting; the next one is redirected
	waitFor(t, "a=3 (or what the other address planted)", func() bool {
		return fileIs(dir+"/a", "a=3")() || fileIs(dir+"/a", "a=planted")()
	})
	waitFor(t, "the redirect refused (or followed)", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) > 0 || strings.Contains(logs.String(), "the server redirects to another address, which the agent does not follow")
	})
	mu.Lock()
	if len(seen) > 0 {
		t.Errorf("the other address saw %d requests, the first %q", len(seen), seen[0])
	}
	mu.Unlock()
	if got := read(t, dir+"/a"); got != "a=3" {
		t.Fatalf("a = %q while the server redirects, want a=3 kept", got)
	}
	waitFor(t, "the cache at revision 12", func() bool { c, err := agent.LoadCache(dir+"/cache", "web"); return err == nil && c.Revision == 12 })
	if c, err := agent.LoadCache(dir+"/cache", "web"); err != nil || c.Keys["a"] != "3" {
		t.Fatalf("cache = %+v, %v; want revision 12 kept", c, err)
	}

	srv.mu.Lock()
	srv.redirect = ""
	srv.mu.Unlock()
	srv.set(map[string]*string{"a": str("4")})
	waitFor(t, "a re-rendered once the server answers", fileIs(dir+"/a", "a=4"))
}

// A view holding a key that breaks the key rules (DESIGN.md, "Key space") — a ".." segment, an
// absolute path, a control character — is not the server's to send: the agent refuses it whole,
// keeping its files and its cache, and takes the next good view. It rendered it and cached it
// before, and the next start without the server found the cache unusable ("cached view
// unusable"): the last-known-good view was lost.
func TestAgent_RunRefusesViewWithInvalidKeys(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	a, dir, logs := testAgent(t, srv, header+"templates:\n  - contents: \"a={{ key \\\"a\\\" }}{{ range tree \\\"\\\" }} {{ .Key }}{{ end }}\"\n    destination: $DIR/a\n")
	stop := runAgent(t, a)
	defer stop()
	waitFor(t, "first render", fileIs(dir+"/a", "a=1 a"))
	waitFor(t, "the cache at revision 10", func() bool { c, err := agent.LoadCache(dir+"/cache", "web"); return err == nil && c.Revision == 10 })
	prev := ""
	for i, bad := range []string{"../../etc/passwd", "/etc/shadow", "x\n/y", "a//b", "x/./y"} {
		change := map[string]*string{bad: str("evil"), "a": str(fmt.Sprint(i + 2))}
		if prev != "" {
			change[prev] = nil
		}
		srv.set(change)
		prev = bad
		waitFor(t, fmt.Sprintf("the view with %q refused", bad), func() bool {
			return strings.Count(logs.String(), "server sent a view holding a key that breaks the key rules; keeping files") > i
		})
		if got := read(t, dir+"/a"); got != "a=1 a" {
			t.Fatalf("with %q: a = %q, want a=1 kept", bad, got)
		}
		if c, err := agent.LoadCache(dir+"/cache", "web"); err != nil || c.Revision != 10 {
			t.Fatalf("with %q: cache = %+v, %v; want revision 10 kept", bad, c, err)
		}
	}
	srv.set(map[string]*string{prev: nil, "a": str("9")})
	waitFor(t, "the next good view rendered", fileIs(dir+"/a", "a=9 a"))
	waitFor(t, "the cache at the good view", func() bool { c, err := agent.LoadCache(dir+"/cache", "web"); return err == nil && c.Keys["a"] == "9" })

	// once refuses such a view too.
	srv2 := newViewServer(t, map[string]string{"a": "1", "../b": "2"})
	b, _, _ := testAgent(t, srv2, header+"templates:\n  - contents: \"a={{ key \\\"a\\\" }}\"\n    destination: $DIR/a\n")
	if err := b.Once(context.Background(), "", false); err == nil || !strings.Contains(err.Error(), `invalid key "../b"`) {
		t.Fatalf("once with an invalid key = %v", err)
	}
}

// A server that answers every long-poll 304 with another store id made the agent ask again at
// once, each time from revision 0, with no pause: a busy loop of requests (thousands a second)
// for as long as it went on. A store change is followed at once; one right after another is
// paced by the backoff, and the files and cache stay as they are.
func TestAgent_RunStoreChangingEveryAnswerIsPaced(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	a, dir, logs := testAgent(t, srv, header+enrollTemplate)
	stop := runAgent(t, a)
	defer stop()
	waitFor(t, "first render", fileIs(dir+"/a", "a=1"))
	waitFor(t, "the cache at revision 10", func() bool { c, err := agent.LoadCache(dir+"/cache", "web"); return err == nil && c.Revision == 10 })
	var n atomic.Int64
	srv.mu.Lock()
	srv.hostile = func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(api.HeaderStore, fmt.Sprintf("store-%d", 100+n.Add(1)))
		w.Header().Set(api.HeaderIndex, "10")
		w.WriteHeader(http.StatusNotModified)
	}
	srv.cond.Broadcast()
	srv.mu.Unlock()
	srv.CloseClientConnections() // the long-poll waiting ends; the next one meets the handler
	got := countFor(3*time.Second, &n)
	// Paced from the second change in a row: 125–250 ms, then doubling, is at most some 15
	// requests in 3 s; a busy loop made thousands.
	if got > 30 {
		t.Fatalf("%d requests in 3 s while the store changed at every answer", got)
	}
	if !strings.Contains(logs.String(), "the server answered with another store again") {
		t.Fatalf("no log of the store changing again")
	}
	if got := read(t, dir+"/a"); got != "a=1" {
		t.Fatalf("a = %q, want a=1 kept", got)
	}
	if c, err := agent.LoadCache(dir+"/cache", "web"); err != nil || c.Revision != 10 {
		t.Fatalf("cache = %+v, %v; want revision 10 kept", c, err)
	}
}

// A server whose every stream line is a delta that does not apply (its sum wrong) makes the
// agent read the full view and stream again: not at once, again and again.
func TestAgent_RunDeltaThatNeverAppliesIsPaced(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	a, dir, _ := testAgent(t, srv, header+enrollTemplate)
	var streams atomic.Int64
	srv.mu.Lock()
	srv.hostile = func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		w.Header().Set(api.HeaderStore, "store-1")
		w.Header().Set(api.HeaderIndex, "10")
		if !r.URL.Query().Has("stream") {
			json.NewEncoder(w).Encode(api.View{Appliance: "web", Revision: 10, Keys: map[string]string{"a": "1"}})
			return
		}
		streams.Add(1)
		w.Header().Set("Content-Type", api.ContentTypeStream)
		json.NewEncoder(w).Encode(api.Update{Appliance: "web", Revision: 11, Base: 10, Set: map[string]string{"a": "2"}, Sum: api.ViewSum(map[string]string{"b": "x"})})
	}
	srv.mu.Unlock()
	stop := runAgent(t, a)
	defer stop()
	waitFor(t, "first render", fileIs(dir+"/a", "a=1"))
	if got := countFor(3*time.Second, &streams); got > 30 {
		t.Fatalf("%d streams in 3 s, each a delta that does not apply", got)
	}
}

// countFor is how many times n is counted during d from now.
func countFor(d time.Duration, n *atomic.Int64) int64 {
	from := n.Load()
	time.Sleep(d)
	return n.Load() - from
}

// A stream's delta that sets a key breaking the key rules (its sum right) is not applied: the
// agent reads the view whole, which holds the key, refuses it, and keeps its files and cache.
// Views made of deltas are not checked whole (a one-key change to a 10,000-key view cost
// 2.3 ms of checks): applying a delta checks the keys it sets.
func TestAgent_RunDeltaSettingAnInvalidKeyRefused(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	a, dir, logs := testAgent(t, srv, header+"templates:\n  - contents: \"a={{ key \\\"a\\\" }}{{ range tree \\\"\\\" }} {{ .Key }}{{ end }}\"\n    destination: $DIR/a\n")
	bad := map[string]string{"a": "2", "../../etc/passwd": "evil"}
	var sent atomic.Bool // the first stream's view sent: deltas from then on
	srv.mu.Lock()
	srv.hostile = func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		w.Header().Set(api.HeaderStore, "store-1")
		if !r.URL.Query().Has("stream") {
			v := api.View{Appliance: "web", Revision: 10, Keys: map[string]string{"a": "1"}}
			if sent.Load() {
				v.Revision, v.Keys = 11, bad // the view whole, read after the delta did not apply
			}
			w.Header().Set(api.HeaderIndex, fmt.Sprint(v.Revision))
			json.NewEncoder(w).Encode(v)
			return
		}
		w.Header().Set(api.HeaderIndex, "10")
		w.Header().Set("Content-Type", api.ContentTypeStream)
		sent.Store(true)
		json.NewEncoder(w).Encode(api.Update{Appliance: "web", Revision: 11, Base: 10,
			Set: map[string]string{"a": "2", "../../etc/passwd": "evil"}, Sum: api.ViewSum(bad)})
	}
	srv.mu.Unlock()
	stop := runAgent(t, a)
	defer stop()
	waitFor(t, "first render", fileIs(dir+"/a", "a=1 a"))
	waitFor(t, "the view refused", func() bool {
		return strings.Contains(logs.String(), "server sent a view holding a key that breaks the key rules; keeping files")
	})
	if got := read(t, dir+"/a"); got != "a=1 a" {
		t.Fatalf("a = %q, want a=1 kept", got)
	}
	waitFor(t, "the cache of the first view", func() bool {
		c, err := agent.LoadCache(dir+"/cache", "web")
		return err == nil && c.Revision == 10 && c.Keys["a"] == "1"
	})
}

// A server that answers every long-poll at once with a view no newer than the one the agent
// holds — the same view again (a caching proxy, a server that ignores index), or one revision
// further back each time — or with a view of another store each time, made the agent ask again
// at once: some 5,000 requests a second, and with views going back a render at each (with
// another store, a full re-render and an info line at each); a stream of such lines was read as
// fast as it came. Such answers are paced by the backoff, as quick 304s are; each is still taken
// (a server whose store went back, or was restored, answers such a view once, and it is rendered).
func TestAgent_RunAnswersNoNewerThanHeldArePaced(t *testing.T) {
	for _, tc := range []struct {
		name               string
		stream, back, flip bool
	}{
		{"same view, long-polls", false, false, false},
		{"same view, stream lines", true, false, false},
		{"going back, long-polls", false, true, false},
		{"going back, stream lines", true, true, false},
		{"another store each time, long-polls", false, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newViewServer(t, map[string]string{"a": "1"})
			a, dir, _ := testAgent(t, srv, header+enrollTemplate)
			var answers, rev atomic.Int64
			rev.Store(10)
			// Each answer is the view at 10 again, or one revision further back; a line of a
			// stream carries 64 KiB, so that what the agent has not read fills the connection's
			// buffers and the lines written count the lines read.
			next := func() api.View {
				answers.Add(1)
				r := rev.Load()
				if tc.back {
					r = rev.Add(-1)
				}
				return api.View{Appliance: "web", Revision: r, Keys: map[string]string{"a": fmt.Sprint(min(r, 10) % 10), "pad": strings.Repeat("x", 64<<10)}}
			}
			srv.mu.Lock()
			srv.hostile = func(w http.ResponseWriter, r *http.Request) {
				if r.Method != http.MethodGet {
					w.WriteHeader(http.StatusNoContent)
					return
				}
				w.Header().Set(api.HeaderStore, "store-1")
				w.Header().Set(api.HeaderIndex, "10")
				q := r.URL.Query()
				if tc.flip && q.Has("index") {
					w.Header().Set(api.HeaderStore, fmt.Sprintf("store-%d", answers.Load()+2))
				}
				switch {
				case !q.Has("index"):
					json.NewEncoder(w).Encode(api.View{Appliance: "web", Revision: 10, Keys: map[string]string{"a": "0", "pad": strings.Repeat("x", 64<<10)}})
				case q.Has("stream") && !tc.stream:
					w.WriteHeader(http.StatusBadRequest)
					json.NewEncoder(w).Encode(api.ErrorBody{Error: &api.Error{Code: api.CodeInvalidRequest, Message: "unknown parameter stream"}})
				case q.Has("stream"):
					w.Header().Set("Content-Type", api.ContentTypeStream)
					for r.Context().Err() == nil {
						if err := json.NewEncoder(w).Encode(next()); err != nil {
							return
						}
						w.(http.Flusher).Flush()
					}
				default:
					json.NewEncoder(w).Encode(next())
				}
			}
			srv.mu.Unlock()
			stop := runAgent(t, a)
			defer stop()
			waitFor(t, "first render", func() bool { _, err := os.Stat(dir + "/a"); return err == nil })
			time.Sleep(2 * time.Second) // a stream's buffers fill
			// Paced: 125–250 ms, then doubling, is a few answers in 3 s; unpaced, thousands.
			if got := countFor(3*time.Second, &answers); got > 30 {
				t.Fatalf("%d answers taken in 3 s (%s)", got, tc.name)
			}
		})
	}
}

// An enrollment answered with a token that cannot be sent (a line break, a control character,
// none at all: a broken server or proxy) was taken and saved: every request after it failed
// in Go's client ("invalid header field value"), which the agent read as a network failure,
// so that no change reached the files again, across restarts too (the file kept it). Such a
// token is refused as a failed enrollment: the agent goes on with the appliance token.
func TestAgent_RunRefusesAnEnrolledTokenThatCannotBeSent(t *testing.T) {
	for _, tok := range []string{"instance-token-1\r\nX-Evil: 1", "", "tok\x00en", "t\u00e9"} {
		t.Run(fmt.Sprintf("%q", tok), func(t *testing.T) {
			srv := newViewServer(t, map[string]string{"a": "1"})
			srv.mu.Lock()
			srv.enrollToken = tok
			if tok == "" {
				srv.enrollToken = "\t"
			}
			srv.mu.Unlock()
			a, dir, logs := testAgent(t, srv, header+enrollTemplate)
			stop := runAgent(t, a)
			defer stop()
			waitFor(t, "first render", fileIs(dir+"/a", "a=1"))
			srv.set(map[string]*string{"a": str("2")})
			waitFor(t, "the change rendered", fileIs(dir+"/a", "a=2"))
			if _, err := os.Stat(agent.InstanceTokenPath(dir+"/cache", "web")); !os.IsNotExist(err) {
				t.Errorf("instance token file saved: %v", err)
			}
			if !strings.Contains(logs.String(), "not enrolled") {
				t.Errorf("no warning about the enrollment:\n%s", logs.String())
			}
		})
	}
}

// A view whose rollout id cannot be sent back in X-Shoelace-Rollout (a line break, a control
// character: no server makes one) was rendered and cached: every long-poll after it carried the
// id, which Go's client refused to send ("invalid header field value"), read as a network
// failure, so that no later change reached the files, across restarts too (the cache kept it).
// It is refused as a view with a bad key is: files and cache kept, the next good view taken.
func TestAgent_RunRefusesViewWithABadRolloutID(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	a, dir, logs := testAgent(t, srv, header+enrollTemplate)
	stop := runAgent(t, a)
	defer stop()
	waitFor(t, "first render", fileIs(dir+"/a", "a=1"))
	waitFor(t, "the cache at revision 10", func() bool { c, err := agent.LoadCache(dir+"/cache", "web"); return err == nil && c.Revision == 10 })
	for i, bad := range []string{"r1\r\nX-Evil: 1", "r\x00", "r 1", strings.Repeat("r", 300)} {
		srv.mu.Lock()
		srv.rollout = bad
		srv.mu.Unlock()
		srv.set(map[string]*string{"a": str(fmt.Sprint(i + 2))})
		waitFor(t, fmt.Sprintf("the view with rollout %q refused", bad), func() bool {
			return strings.Count(logs.String(), "rollout id") > i
		})
		if got := read(t, dir+"/a"); got != "a=1" {
			t.Fatalf("with rollout %q: a = %q, want a=1 kept", bad, got)
		}
		if c, err := agent.LoadCache(dir+"/cache", "web"); err != nil || c.Revision != 10 {
			t.Fatalf("with rollout %q: cache = %+v, %v; want revision 10 kept", bad, c, err)
		}
	}
	srv.mu.Lock()
	srv.rollout = "20261205-r2"
	srv.mu.Unlock()
	srv.set(map[string]*string{"a": str("9")})
	waitFor(t, "the next good view rendered", fileIs(dir+"/a", "a=9"))

	// once refuses such a view too.
	srv2 := newViewServer(t, map[string]string{"a": "1"})
	srv2.rollout = "r\n1"
	b, _, _ := testAgent(t, srv2, header+enrollTemplate)
	if err := b.Once(context.Background(), "", false); err == nil || !strings.Contains(err.Error(), "rollout id") {
		t.Fatalf("once with a bad rollout id = %v", err)
	}
}

// A view with a negative revision is no server's: once refuses it, and run keeps its files and
// cache and takes the next good view. It was rendered, cached and reported at revision -5.
func TestAgent_NegativeRevisionRefused(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	negative := func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		w.Header().Set(api.HeaderStore, "store-1")
		w.Header().Set(api.HeaderIndex, "10")
		json.NewEncoder(w).Encode(api.View{Appliance: "web", Revision: -5, Keys: map[string]string{"a": "evil"}})
	}
	srv.mu.Lock()
	srv.hostile = negative
	srv.mu.Unlock()
	b, bdir, _ := testAgent(t, srv, header+"templates:\n  - contents: \"a={{ key \\\"a\\\" }}\"\n    destination: $DIR/a\n")
	if err := b.Once(context.Background(), "", false); err == nil || !strings.Contains(err.Error(), "the server answered a view of revision -5") {
		t.Fatalf("once with a negative revision = %v", err)
	}
	if _, err := os.Stat(bdir + "/a"); !os.IsNotExist(err) {
		t.Fatalf("once rendered a view of a negative revision: %v", err)
	}

	srv.mu.Lock()
	srv.hostile = nil
	srv.mu.Unlock()
	a, dir, logs := testAgent(t, srv, header+enrollTemplate)
	stop := runAgent(t, a)
	defer stop()
	waitFor(t, "first render", fileIs(dir+"/a", "a=1"))
	waitFor(t, "the cache at revision 10", func() bool { c, err := agent.LoadCache(dir+"/cache", "web"); return err == nil && c.Revision == 10 })
	srv.mu.Lock()
	srv.hostile = negative
	srv.cond.Broadcast()
	srv.mu.Unlock()
	srv.CloseClientConnections() // the long-poll waiting ends; the next one meets the handler
	waitFor(t, "the view refused", func() bool {
		return strings.Contains(logs.String(), "server sent a view that no server sends; keeping files")
	})
	if got := read(t, dir+"/a"); got != "a=1" {
		t.Fatalf("a = %q, want a=1 kept", got)
	}
	if c, err := agent.LoadCache(dir+"/cache", "web"); err != nil || c.Revision != 10 {
		t.Fatalf("cache = %+v, %v; want revision 10 kept", c, err)
	}
}

// A server (or a man in the middle on plain http) that enrolls the agent and then refuses its
// every request with the instance token (401), while a request with the appliance token waits as
// a long-poll does, made the agent loop at network speed: each 401 dropped the token, enrolled
// again at once, and the enrollment's new token cut the request waiting, so that the next
// request, refused again, went without the backoff of a failure (hundreds of enrollments and
// whole-view requests a second, for as long as it lasted; on a stream always, on plain
// long-polls when the cut came before the refusal's answer was read). A refused token is a
// failure: the requests after it back off.
func TestAgent_RunInstanceTokenRefusedEveryTimeBacksOff(t *testing.T) {
	for _, stream := range []bool{false, true} {
		t.Run(map[bool]string{false: "long-poll", true: "stream"}[stream], func(t *testing.T) {
			srv := newViewServer(t, map[string]string{"a": "1"})
			a, dir, _ := testAgent(t, srv, header+enrollTemplate)
			refusing := false // srv.mu
			srv.mu.Lock()
			srv.hostile = func(w http.ResponseWriter, r *http.Request) {
				// srv.mu is held.
				if r.Method != http.MethodGet {
					w.WriteHeader(http.StatusNoContent)
					return
				}
				if refusing && r.Header.Get("Authorization") != "Bearer "+srv.applianceToken() {
					http.Error(w, `{"error":{"code":"unauthorized","message":"token revoked"}}`, http.StatusUnauthorized)
					return
				}
				w.Header().Set(api.HeaderStore, "store-1")
				w.Header().Set(api.HeaderIndex, "10")
				q := r.URL.Query()
				whole := q.Get("index") == "" || q.Get("index") == "0"
				view := api.View{Appliance: "web", Revision: 10, Keys: map[string]string{"a": "1"}}
				switch {
				case stream && q.Has("stream"):
					w.Header().Set("Content-Type", api.ContentTypeStream)
					if whole {
						json.NewEncoder(w).Encode(view)
					} else {
						json.NewEncoder(w).Encode(api.Update{Revision: 10, Heartbeat: true})
					}
					w.(http.Flusher).Flush()
				case whole:
					json.NewEncoder(w).Encode(view) // to a stream's request too: long-polls follow
					return
				}
				srv.mu.Unlock()
				select {
				case <-r.Context().Done():
				case <-time.After(2 * time.Second):
				}
				srv.mu.Lock()
				if !stream {
					w.WriteHeader(http.StatusNotModified)
				}
			}
			srv.mu.Unlock()
			stop := runAgent(t, a)
			defer stop()
			waitFor(t, "first render", fileIs(dir+"/a", "a=1"))
			waitFor(t, "enrolled", func() bool { srv.mu.Lock(); defer srv.mu.Unlock(); return srv.enrolls == 1 })
			srv.mu.Lock()
			refusing = true
			srv.mu.Unlock()
			waitFor(t, "the token refused and enrolled again", func() bool { srv.mu.Lock(); defer srv.mu.Unlock(); return srv.enrolls > 1 })
			srv.mu.Lock()
			before := srv.enrolls
			srv.mu.Unlock()
			time.Sleep(3 * time.Second)
			srv.mu.Lock()
			n := srv.enrolls - before
			srv.mu.Unlock()
			// With backoff (at least 125ms, 250ms, 500ms, 1s after the refusals in a row), 5 at
			// most, and one a report's refusal may add; a loop without it, hundreds.
			if n > 6 {
				t.Fatalf("%d enrollments in 3s of refusals, want the requests refused to back off", n)
			}
		})
	}
}
