package server

import (
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/server/rollout"
	"github.com/shoelace-dev/shoelace/server/store"
)

// A canary's long-poll answered (304, wait over) while the replica had seen a rollout's record
// but not yet handled it must not carry the record's revision: the agent asks again from the
// index it was given, and the rollout's wake reaches only long-polls below that revision, so it
// stayed on the live view until the next change (and the rollout halted at its deadline).
func TestRollout_CanaryNotMissedByAnAnswerBeforeTheRecord(t *testing.T) {
	f := newFixture(t)
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"port":"80"}}`), 200, nil)
	enrollFleet(t, f, 1)
	tok := instanceToken(t, f, "vm-0")
	live := viewOf(t, f, "vm-0")

	paused, release := make(chan struct{}), make(chan struct{})
	before := func(ev store.Event) {
		for _, k := range ev.SysKeys {
			if k == rollout.Prefix+"web" {
				close(paused)
				<-release
				return
			}
		}
	}
	f.s.hub.beforeSys.Store(&before)
	started := make(chan resp, 1)
	go func() {
		started <- f.do("PUT", "/v1/appliances/web?canary=100%25&manual", `{"keys":{"port":"8080"}}`)
	}()
	select {
	case <-paused:
	case <-time.After(20 * time.Second):
		t.Fatal("the rollout's record never reached the hub")
	}
	poll := func(index int64, wait string) resp {
		return f.doToken(tok, "GET", "/v1/appliances/web?index="+strconv.FormatInt(index, 10)+"&wait="+wait, "", api.HeaderInstance, "vm-0")
	}
	r := poll(live.Revision, "200ms")
	f.must(r, http.StatusNotModified, nil)
	index := r.index()
	close(release)
	var st api.RolloutStatus
	f.must(<-started, http.StatusAccepted, &st)

	var v api.View
	start := time.Now()
	r = poll(index, "5s")
	f.must(r, http.StatusOK, &v)
	if v.Rollout != st.ID || v.Keys["port"] != "8080" || time.Since(start) > 4*time.Second {
		t.Fatalf("canary asking from %d (given while the record was not handled): %+v after %s", index, v, time.Since(start))
	}
}
