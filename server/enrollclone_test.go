package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/testutil"
)

// Two clones of a VM (the same enrollment key in their cache_dir, the same instance name)
// that boot within 10 s of each other: one is enrolled; the other was told that the name
// "may be taken over" in an hour "or freed now with shoelace appliance forget", which would
// only hand the name from one clone to the other. It is now told that another machine holds
// the name with its own enrollment key, and what to do: give it an instance name of its own
// and remove its key file. One token stands, the winner's, on every replica.
func TestEnroll_ClonesWithOneKeyOneWins(t *testing.T) {
	cfg := testutil.StoreConfig(t)
	var logs syncBuffer
	a := newFixtureLog(t, testutil.OpenStore(t, cfg), slog.New(slog.NewJSONHandler(&logs, nil)))
	b := newFixtureOn(t, testutil.OpenStore(t, cfg))
	b.token = a.token
	a.must(a.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	agent := a.newToken(api.TokenRequest{Name: "agent-web", Appliance: "web"})
	waitFor(t, "replica b knows the token", func() bool { return b.s.auth.lookup(agent) != nil })
	key := strings.Repeat("c1", 32)

	var got [2]resp
	var wg sync.WaitGroup
	for i, f := range []*fixture{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i] = f.enrollQuiet(agent, key)
		}()
	}
	wg.Wait()
	var winner api.Enrolled
	loser := -1
	for i, r := range got {
		switch r.StatusCode {
		case 201:
			a.must(r, 201, &winner)
		case 409:
			loser = i
		default:
			t.Fatalf("enroll: %d %s", r.StatusCode, r.body)
		}
	}
	if winner.Token == "" || loser < 0 {
		t.Fatalf("clones enrolling at once: %d %s, %d %s; want one 201 and one 409", got[0].StatusCode, got[0].body, got[1].StatusCode, got[1].body)
	}
	a.mustErr(got[loser], 409, api.CodeConflict, `"vm-1"`, `"web"`, "same enrollment key", "not been used yet", "clone",
		"instance name of its own", "web.enroll-key")

	// The winner goes on with its token; the clone asks again (a minute later, past 10 s):
	// still refused, now that the winner used its token, and told to free the name only if the
	// other machine is gone.
	applied := a.put("appliances/web/a", "2")
	a.must(a.doToken(winner.Token, "GET", "/v1/appliances/web", "", api.HeaderApplied, fmt.Sprint(applied)), 200, nil)
	waitFor(t, "the winner's report recorded", func() bool { in, _ := a.record("web", "vm-1"); return in.Applied == applied })
	a.s.enrollRetryAge, b.s.enrollRetryAge = 0, 0
	for _, f := range []*fixture{a, b} {
		f.mustErr(f.enrollQuiet(agent, key), 409, api.CodeConflict, `"vm-1"`, "another machine with this same enrollment key", "clone",
			"instance name of its own", "web.enroll-key", "appliance forget web vm-1")
	}
	if !strings.Contains(logs.String(), `"msg":"enrollment refused: another machine has the enrollment key of the instance's holder (a clone?)","appliance":"web","instance":"\"vm-1\""`) {
		t.Fatalf("the server does not say it refused a clone:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), key) {
		t.Fatal("the logs hold the enrollment key")
	}
	stored := storedInstanceToken(t, a, "vm-1")
	if stored.Hash != hashSecret(winner.Token) {
		t.Fatal("the stored instance token is not the winner's")
	}
	for _, f := range []*fixture{a, b} {
		f.must(f.doToken(winner.Token, "GET", "/v1/appliances/web", ""), 200, nil)
	}
}

// A clone that asks with the key once the holder's token is over 10 s old and never used (a
// holder whose answer was lost cannot be told from it) gets the name, and only one token
// stands: the other clone's token is refused, saying its instance was enrolled again; its
// report queued before is not written; and enrolling again it is refused as a clone while the
// new token is young, not handed the name back and forth.
func TestEnroll_CloneTakingAnUnusedTokenLeavesOneStanding(t *testing.T) {
	parallelShared(t)
	f := newFixture(t)
	f.s.reports.window = 2 * time.Second
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	agent := f.newToken(api.TokenRequest{Name: "agent-web", Appliance: "web"})
	key := strings.Repeat("c2", 32)
	var first, second api.Enrolled
	f.must(f.enrollQuiet(agent, key), 201, &first)
	f.s.enrollRetryAge = 0 // as if over 10 s had passed
	applied := f.put("appliances/web/a", "2")
	f.must(f.doToken(first.Token, "GET", "/v1/appliances/web", "", api.HeaderApplied, fmt.Sprint(applied)), 200, nil) // queued
	// The report is queued, not written yet: for the store the first token is still unused.
	f.must(f.enrollQuiet(agent, key), 201, &second)
	f.s.enrollRetryAge = enrollRetryAge
	f.mustErr(f.doToken(first.Token, "GET", "/v1/appliances/web", ""), 401, api.CodeUnauthorized, "replaced", "enrolled again")
	f.mustErr(f.enrollQuiet(agent, key), 409, api.CodeConflict, "same enrollment key", "not been used yet", "clone")
	f.reportedAfter(agent, applied)
	if in, _ := f.record("web", "vm-1"); in.Applied == applied {
		t.Fatalf("the replaced token's report was written over the new holder's record: %+v", in)
	}
	if storedInstanceToken(t, f, "vm-1").Hash != hashSecret(second.Token) {
		t.Fatal("the stored instance token is not the second clone's")
	}
	f.must(f.doToken(second.Token, "GET", "/v1/appliances/web", ""), 200, nil)
}

// storedInstanceToken is the instance token record of web's instance, as the store holds it.
func storedInstanceToken(t *testing.T, f *fixture, instance string) *tokenRecord {
	t.Helper()
	key := tokenPrefix + instanceTokenName("web", instance)
	data, _, err := f.st.SysGet(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := decodeToken(key, data)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// Enrollments of one name racing through two replicas (two agents with keys of their own and a
// clone of the first with its key, all asking again at once), an admin forgetting the name
// between them, and every token ever issued for it reporting through both replicas all along
// (applied revisions and failures, each token's marked with a rollout id of its own): once the
// name's last enrollment is made, in the middle of it all, nothing but that enrollment is in its
// record, no failure is recorded, and only its token stands, in the store and on both replicas.
func TestEnroll_HostileRaceLeavesOneHolder(t *testing.T) {
	cfg := testutil.StoreConfig(t)
	a := newFixtureOn(t, testutil.OpenStore(t, cfg))
	b := newFixtureOn(t, testutil.OpenStore(t, cfg))
	b.token = a.token
	a.must(a.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	agent := a.newToken(api.TokenRequest{Name: "agent-web", Appliance: "web"})
	waitFor(t, "replica b knows the token", func() bool { return b.s.auth.lookup(agent) != nil })
	a.s.enrollRetryAge, b.s.enrollRetryAge = 0, 0 // an unused token's key enrolls again at once
	reps := []*fixture{a, b}

	var mu sync.Mutex
	var tokens []string // every token answered; a token's reports carry its index as rollout
	stop, stopReports := make(chan struct{}), make(chan struct{})
	var churn, reports sync.WaitGroup
	for i, key := range []string{strings.Repeat("a", 64), strings.Repeat("b", 64), strings.Repeat("a", 64)} {
		churn.Add(1)
		go func() {
			defer churn.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				if r := reps[(i+n)%2].enrollQuiet(agent, key); r.StatusCode == 201 {
					var e api.Enrolled
					if json.Unmarshal(r.body, &e) == nil {
						mu.Lock()
						tokens = append(tokens, e.Token)
						mu.Unlock()
					}
				}
				time.Sleep(3 * time.Millisecond)
			}
		}()
	}
	churn.Add(1)
	go func() {
		defer churn.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(30 * time.Millisecond):
			}
			a.doQuietMethod(a.token, "DELETE", "/v1/appliances/web/instances/vm-1", "")
		}
	}()
	for _, f := range reps {
		reports.Add(1)
		go func() {
			defer reports.Done()
			for {
				select {
				case <-stopReports:
					return
				default:
				}
				mu.Lock()
				toks := slices.Clone(tokens)
				mu.Unlock()
				for id, tok := range toks {
					mark := fmt.Sprintf("%x", id+1)
					f.doQuietMethod(tok, "GET", "/v1/appliances/web", "", api.HeaderApplied, "1", api.HeaderRollout, mark)
					f.doQuietMethod(tok, "POST", "/v1/appliances/web/report", `{"instance":"vm-1","applied":1,"rollout":"`+mark+`","error":"boom","stage":"command"}`,
						"Content-Type", "application/json")
				}
				time.Sleep(time.Millisecond)
			}
		}()
	}
	time.Sleep(time.Second)
	close(stop)
	churn.Wait()
	if r := a.do("DELETE", "/v1/appliances/web/instances/vm-1", ""); r.StatusCode != 200 && r.StatusCode != 404 { // 404: forgotten already
		t.Fatalf("forget: %d %s", r.StatusCode, r.body)
	}
	last := a.enroll(agent, "web", "vm-1") // never reports
	time.Sleep(200 * time.Millisecond)     // the old tokens go on reporting meanwhile
	close(stopReports)
	reports.Wait()
	for _, f := range reps {
		f.reportedAfter(agent, 1)
	}

	if in, ok := a.record("web", "vm-1"); !ok || in.Rollout != "" || in.Applied != 0 || !in.EnrolledAt.Equal(last.Enrolled) {
		t.Fatalf("after %d tokens raced, the record of the last enrollment (at %s) is %+v", len(tokens), last.Enrolled, in)
	}
	if _, _, err := a.st.SysGet(context.Background(), instanceErrorKey("web", "vm-1")); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("a failure recorded for the last enrollment, which never reported one: %v", err)
	}
	if storedInstanceToken(t, a, "vm-1").Hash != hashSecret(last.Token) {
		t.Fatal("the stored instance token is not the last enrollment's")
	}
	for _, f := range reps {
		waitFor(t, "the replica holds the last token only", func() bool {
			return f.s.auth.lookup(last.Token) != nil && !slices.ContainsFunc(tokens, func(tok string) bool { return f.s.auth.lookup(tok) != nil })
		})
		for _, tok := range tokens {
			f.mustErr(f.doToken(tok, "GET", "/v1/appliances/web", ""), 401, api.CodeUnauthorized, `"vm-1"`)
		}
	}
	t.Logf("%d tokens raced", len(tokens))
}
