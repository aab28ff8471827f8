package server

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/testutil"
)

// A long-poll (or a stream) whose index etcd compacted is answered at once with the full view,
// as DESIGN.md says, though the view did not change after it: on an external etcd (asked
// through a read at that revision) and on the embedded one (asked in process). An index the
// store still has waits as before.
func TestLongPoll_CompactedIndexAnsweredAtOnce(t *testing.T) {
	embedded := func(t *testing.T) *fixture {
		cfg := testutil.StoreConfig(t)
		cfg.Endpoints, cfg.DataDir = nil, t.TempDir()
		return newFixtureOn(t, testutil.OpenStore(t, cfg))
	}
	for _, c := range []struct {
		name string
		f    func(t *testing.T) *fixture
	}{{"external", func(t *testing.T) *fixture { return newFixture(t) }}, {"embedded", embedded}} {
		t.Run(c.name, func(t *testing.T) {
			f := c.f(t)
			old := f.put("appliances/web/a", "1")
			kept := f.put("appliances/other/x", "1")
			// Not compacted: the long-poll waits for a change that does not come.
			start := time.Now()
			f.must(f.do("GET", lp("web", old, "1s"), ""), http.StatusNotModified, nil)
			if time.Since(start) < 800*time.Millisecond {
				t.Fatalf("an index the store keeps was answered after %s", time.Since(start))
			}
			last := f.put("appliances/other/x", "2")
			if err := f.st.Compact(context.Background(), last); err != nil {
				t.Fatalf("compact: %v", err)
			}
			// The replica has seen the compaction's revision: an index it has not passed is as
			// new as any it knows, and waits without asking the store (on a loaded machine the
			// watch had not brought last yet, and the long-poll of kept waited its 30 s).
			waitFor(t, "the hub to see the last write", func() bool { return f.s.hub.current() >= last })
			for _, index := range []int64{old, kept} {
				start = time.Now()
				var v api.View
				r := f.do("GET", lp("web", index, "30s"), "")
				if r.StatusCode != http.StatusOK {
					// What the store and the hub say now, to tell why it waited.
					c, err := f.st.Compacted(context.Background(), index)
					f.s.hub.mu.Lock()
					rev, base := f.s.hub.rev, f.s.hub.base
					f.s.hub.mu.Unlock()
					t.Errorf("compacted index %d (compaction at %d) answered %d after %s; now the store says compacted %v (%v), the hub is at %d from %d",
						index, last, r.StatusCode, time.Since(start), c, err, rev, base)
				}
				f.must(r, http.StatusOK, &v)
				if d := time.Since(start); d > 10*time.Second || v.Keys["a"] != "1" || v.Revision < last || r.index() < last {
					t.Fatalf("compacted index %d: after %s, view %+v at index %d", index, d, v, r.index())
				}
			}
			// A stream from a compacted index starts with the view, not a heartbeat.
			req, _ := http.NewRequest("GET", f.srv.URL+"/v1/appliances/web?index="+strconv.FormatInt(old, 10)+"&stream&wait=30s", nil)
			req.Header.Set("Authorization", "Bearer "+f.token)
			res, err := testClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			line, err := bufio.NewReader(res.Body).ReadBytes('\n')
			if err != nil {
				t.Fatalf("stream: %d %v", res.StatusCode, err)
			}
			var first struct {
				Heartbeat bool              `json:"heartbeat"`
				Keys      map[string]string `json:"keys"`
			}
			if err := json.Unmarshal(line, &first); err != nil || first.Heartbeat || first.Keys["a"] != "1" {
				t.Fatalf("stream from a compacted index: first line %s (%v)", line, err)
			}
		})
	}
}
