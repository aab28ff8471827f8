package server

import (
	"net/http"
	"strconv"
	"sync"
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

// A canary reading its view from a replica that has read the store at an abort's revision
// (made through another replica) but not yet handled the abort's record gets the live view,
// not the candidate: answered at the abort's revision, the candidate stayed the agent's, as its
// next long-poll, from that revision, was not woken by the abort (a 304 at the end of its
// wait, until the appliance's next change). So for a plain read (a fresh read of the store)
// and for a long-poll from an older index (the mirror is a watch event ahead of the hub).
func TestRollout_NoCandidateAnsweredAtTheAbortsRevision(t *testing.T) {
	a := newFixture(t)
	b := newFixtureOn(t, a.st)
	b.token = a.token
	a.put("appliances/web/port", "80")
	n := enrollFleet(t, a, 1)[0]
	tok := instanceToken(t, a, n)
	waitFor(t, "replica b knows the instance token", func() bool { return b.s.auth.lookup(tok) != nil })
	before := viewOf(t, b, n)
	var st api.RolloutStatus
	a.must(a.do("PUT", "/v1/kv/appliances/web/port?canary=100%25&manual", "81"), http.StatusAccepted, &st)
	waitFor(t, "the candidate on replica b", func() bool { return viewOf(t, b, n).Rollout == st.ID })

	paused, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	hold := func(ev store.Event) {
		for _, k := range ev.SysKeys {
			if k == rollout.Prefix+"web" {
				once.Do(func() {
					close(paused)
					<-release
				})
				return
			}
		}
	}
	b.s.hub.beforeSys.Store(&hold)
	a.must(a.do("POST", "/v1/appliances/web/rollout", `{"action":"abort"}`, "Content-Type", "application/json"), 200, nil)
	select {
	case <-paused:
	case <-time.After(20 * time.Second):
		t.Fatal("the abort's record never reached replica b's hub")
	}
	answers := make(chan resp, 2)
	go func() { answers <- b.doToken(tok, "GET", "/v1/appliances/web", "", api.HeaderInstance, n) }()
	go func() {
		answers <- b.doToken(tok, "GET", "/v1/appliances/web?index="+strconv.FormatInt(before.Revision, 10)+"&wait=5s", "", api.HeaderInstance, n)
	}()
	time.Sleep(300 * time.Millisecond) // both have read the view at the abort's revision
	close(release)
	for range 2 {
		var v api.View
		r := <-answers
		b.must(r, http.StatusOK, &v)
		if v.Rollout != "" || v.Keys["port"] != "80" {
			t.Fatalf("%s %s on replica b as the abort reached it: %+v, want the live view", r.Request.Method, r.Request.URL, v)
		}
	}
}
