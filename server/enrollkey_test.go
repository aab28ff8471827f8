package server

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/testutil"
)

// Attacks on the enrollment key (see retriedByHolder) that the server withstands.

// enrollQuiet enrolls vm-1 of web with token and key; it may run off the test goroutine.
func (f *fixture) enrollQuiet(token, key string) resp {
	return f.doQuietMethod(token, "POST", "/v1/appliances/web/enroll", `{"instance":"vm-1"}`,
		"Content-Type", "application/json", api.HeaderEnrollKey, key)
}

// Many enrollments with one key at once, through two replicas (clones of a VM booting
// together, or an agent's request sent again): those answered 201 are the holder asking
// again, one after another, and one token stands at the end, on both replicas, the one in
// the store; once it reported, the key is refused.
func TestEnroll_SameKeyAtOnceOneTokenStands(t *testing.T) {
	cfg := testutil.StoreConfig(t)
	a := newFixtureOn(t, testutil.OpenStore(t, cfg))
	b := newFixtureOn(t, testutil.OpenStore(t, cfg))
	b.token = a.token
	a.s.enrollRetryAge, b.s.enrollRetryAge = 0, 0 // the key may enroll again at once
	a.must(a.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	agent := a.newToken(api.TokenRequest{Name: "agent-web", Appliance: "web"})
	waitFor(t, "replica b knows the token", func() bool { return b.s.auth.lookup(agent) != nil })
	key := strings.Repeat("k", 64)
	a.must(a.enrollQuiet(agent, key), 201, nil) // lost

	got := make([]resp, 8)
	var wg sync.WaitGroup
	for i := range got {
		f := []*fixture{a, b}[i%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i] = f.enrollQuiet(agent, key)
		}()
	}
	wg.Wait()
	var tokens []string
	for _, r := range got {
		switch r.StatusCode {
		case 201:
			var e api.Enrolled
			a.must(r, 201, &e)
			tokens = append(tokens, e.Token)
		case 409:
		default:
			t.Fatalf("enroll: %d %s", r.StatusCode, r.body)
		}
	}
	if len(tokens) == 0 {
		t.Fatal("no enrollment with the key answered 201")
	}
	data, _, err := a.st.SysGet(context.Background(), tokenPrefix+instanceTokenName("web", "vm-1"))
	if err != nil {
		t.Fatal(err)
	}
	stored, err := decodeToken(tokenPrefix+instanceTokenName("web", "vm-1"), data)
	if err != nil {
		t.Fatal(err)
	}
	standing := ""
	for _, tok := range tokens {
		if hashSecret(tok) == stored.Hash {
			standing = tok
		}
	}
	if standing == "" {
		t.Fatalf("the stored token is none of the %d answered", len(tokens))
	}
	for _, f := range []*fixture{a, b} {
		waitFor(t, "the replica holds the stored token only", func() bool {
			for _, tok := range tokens {
				if (f.s.auth.lookup(tok) != nil) != (tok == standing) {
					return false
				}
			}
			return true
		})
		for _, tok := range tokens {
			want := 401
			if tok == standing {
				want = 200
			}
			if r := f.doToken(tok, "GET", "/v1/appliances/web", ""); r.StatusCode != want {
				t.Fatalf("a token answered by an enrollment: %d, want %d", r.StatusCode, want)
			}
		}
	}
	waitFor(t, "the report recorded", func() bool {
		_, recRev, _ := a.st.SysGet(context.Background(), instanceRecordKey("web", "vm-1"))
		_, tokRev, _ := a.st.SysGet(context.Background(), tokenPrefix+instanceTokenName("web", "vm-1"))
		return recRev > tokRev
	})
	a.mustErr(a.enrollQuiet(agent, key), 409, api.CodeConflict, "enrolled already")
	b.mustErr(b.enrollQuiet(agent, key), 409, api.CodeConflict, "enrolled already")
}

// Whoever else holds the fleet's appliance token, or another instance's token, cannot write
// the record of an instance whose answer was lost, and so cannot keep its holder from asking
// again with its key: their reports naming it are ignored or refused. Nor can they enroll it
// with another key, a key of the wrong shape, or two keys.
func TestEnroll_KeyRetryNotDeniedByOthers(t *testing.T) {
	var logs syncBuffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f := newFixtureLog(t, testutil.Store(t), log)
	f.s.enrollRetryAge = 0 // the key may enroll again at once
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	agent := f.newToken(api.TokenRequest{Name: "agent-web", Appliance: "web"})
	key := "Kk_-" + strings.Repeat("7", 60)
	f.must(f.enrollQuiet(agent, key), 201, nil) // lost
	other := f.enroll(agent, "web", "vm-2").Token
	applied := f.put("appliances/web/a", "2")
	_, tokRev, err := f.st.SysGet(context.Background(), tokenPrefix+instanceTokenName("web", "vm-1"))
	if err != nil {
		t.Fatal(err)
	}
	as := func(token string, hdr ...string) resp {
		return f.doToken(token, "GET", "/v1/appliances/web", "", append([]string{api.HeaderInstance, "vm-1", api.HeaderApplied, fmt.Sprint(applied)}, hdr...)...)
	}
	f.must(as(agent), 200, nil)
	f.must(as(agent, api.HeaderRollout, "1234-ab"), 200, nil)
	f.mustErr(as(other), 403, api.CodeForbidden, "bound to instance")
	f.must(f.doToken(agent, "POST", "/v1/appliances/web/report", `{"instance":"vm-1","applied":1,"error":"boom"}`), 200, nil)
	f.mustErr(f.doToken(other, "POST", "/v1/appliances/web/report", `{"instance":"vm-1","applied":1,"error":"boom"}`, api.HeaderInstance, "vm-2"),
		400, api.CodeInvalidRequest)
	f.mustErr(f.doToken(other, "POST", "/v1/appliances/web/report", `{"instance":"vm-1","applied":1,"error":"boom"}`), 400, api.CodeInvalidRequest)
	time.Sleep(3 * f.s.reports.window)
	f.must(f.doToken(other, "GET", "/v1/appliances/web", "", api.HeaderApplied, fmt.Sprint(applied)), 200, nil) // a batch after theirs
	waitFor(t, "vm-2's report recorded", func() bool { in, _ := f.record("web", "vm-2"); return in.Applied == applied })
	if _, recRev, _ := f.st.SysGet(context.Background(), instanceRecordKey("web", "vm-1")); recRev != tokRev {
		t.Fatalf("vm-1's record written at %d by others' reports, after its enrollment at %d", recRev, tokRev)
	}

	for _, k := range []string{strings.Repeat("7", 64), strings.ToLower(key), key + ";", key + ",x", strings.Repeat("k", 257)} {
		if r := f.enrollQuiet(agent, k); r.StatusCode != 409 && r.StatusCode != 400 {
			t.Fatalf("enroll with key %q: %d %s", k, r.StatusCode, r.body)
		}
	}
	r := f.doToken(agent, "POST", "/v1/appliances/web/enroll", `{"instance":"vm-1"}`, "Content-Type", "application/json")
	f.mustErr(r, 409, api.CodeConflict)
	req, _ := http.NewRequest("POST", f.srv.URL+"/v1/appliances/web/enroll", strings.NewReader(`{"instance":"vm-1"}`))
	req.Header.Set("Authorization", "Bearer "+agent)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Add(api.HeaderEnrollKey, strings.Repeat("x", 64))
	req.Header.Add(api.HeaderEnrollKey, key)
	res, err := testClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 400 {
		t.Fatalf("two keys: %d, want 400", res.StatusCode)
	}

	f.must(f.enrollQuiet(agent, key), 201, nil)
	if s := logs.String(); strings.Contains(s, key) || strings.Contains(s, hashSecret(key)) {
		t.Fatal("the logs hold the enrollment key or its hash")
	}
}

// An enrollment asked again with its key after its answer was lost gave the instance a new
// enrolled_at: a rollout that drew the instance in between (it was enrolled before the start)
// stopped counting it, though it is the same VM. The holder's retry keeps the instance's first
// enrollment time, in the answer, the record and the reports of the new token, on every replica.
func TestEnroll_KeyRetryKeepsEnrolledAt(t *testing.T) {
	cfg := testutil.StoreConfig(t)
	a := newFixtureOn(t, testutil.OpenStore(t, cfg))
	b := newFixtureOn(t, testutil.OpenStore(t, cfg))
	b.token = a.token
	a.s.enrollRetryAge = 0 // the key may enroll again at once
	a.must(a.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	agent := a.newToken(api.TokenRequest{Name: "agent-web", Appliance: "web"})
	key := strings.Repeat("k", 64)
	var lost, again api.Enrolled
	a.must(a.enrollQuiet(agent, key), 201, &lost)
	// The retry comes later by the clock, so that a time of its own would differ.
	waitFor(t, "the enrollment older", func() bool { return time.Now().After(lost.Enrolled) })
	a.must(a.enrollQuiet(agent, key), 201, &again)
	if !again.Enrolled.Equal(lost.Enrolled) {
		t.Fatalf("the retry answered enrolled %s, want the first enrollment's %s", again.Enrolled, lost.Enrolled)
	}
	if in, _ := a.record("web", "vm-1"); !in.Enrolled || in.EnrolledAt == nil || !in.EnrolledAt.Equal(lost.Enrolled) {
		t.Fatalf("record %+v after the retry, want enrolled_at %s", in, lost.Enrolled)
	}
	applied := a.put("appliances/web/a", "2")
	waitFor(t, "replica b knows the new token", func() bool { return b.s.auth.lookup(again.Token) != nil })
	b.must(b.doToken(again.Token, "GET", "/v1/appliances/web", "", api.HeaderApplied, fmt.Sprint(applied)), 200, nil)
	waitFor(t, "the report recorded", func() bool { in, _ := a.record("web", "vm-1"); return in.Applied == applied })
	if in, _ := a.record("web", "vm-1"); !in.EnrolledAt.Equal(lost.Enrolled) {
		t.Fatalf("record %+v after a report of the new token, want enrolled_at %s", in, lost.Enrolled)
	}
	// Forgotten and enrolled again, the name has a new enrollment time.
	a.must(a.do("DELETE", "/v1/appliances/web/instances/vm-1", ""), 200, nil)
	fresh := a.enroll(agent, "web", "vm-1")
	if in, _ := a.record("web", "vm-1"); !in.EnrolledAt.Equal(fresh.Enrolled) || !fresh.Enrolled.After(lost.Enrolled) {
		t.Fatalf("record %+v after a new enrollment at %s", in, fresh.Enrolled)
	}
}
