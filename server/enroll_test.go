package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/testutil"
)

// enroll enrolls instance of appliance with token and returns the answer.
func (f *fixture) enroll(token, appliance, instance string) api.Enrolled {
	f.t.Helper()
	var e api.Enrolled
	f.must(f.doToken(token, "POST", "/v1/appliances/"+appliance+"/enroll", `{"instance":"`+instance+`"}`), 201, &e)
	if e.Appliance != appliance || e.Instance != instance || len(e.Token) < 40 || e.Enrolled.IsZero() {
		f.t.Fatalf("enrolled %+v", e)
	}
	return e
}

// record reads the instance record of appliance's instance straight from the store.
func (f *fixture) record(appliance, instance string) (api.Instance, bool) {
	f.t.Helper()
	data, _, err := f.st.SysGet(context.Background(), instanceRecordKey(appliance, instance))
	if errors.Is(err, api.ErrNotFound) {
		return api.Instance{}, false
	}
	if err != nil {
		f.t.Fatal(err)
	}
	var in api.Instance
	if err := json.Unmarshal(data, &in); err != nil {
		f.t.Fatal(err)
	}
	return in, true
}

func TestEnroll_GivesAnInstanceToken(t *testing.T) {
	f := newFixture(t)
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	agent := f.newToken(api.TokenRequest{Name: "agent-web", Appliance: "web"})
	other := f.newToken(api.TokenRequest{Name: "agent-db", Appliance: "db"})
	reader := f.newToken(api.TokenRequest{Name: "reader", Read: []string{"appliances/web/", "shared/"}})

	f.mustErr(f.doToken(other, "POST", "/v1/appliances/web/enroll", `{"instance":"vm-1"}`), 403, api.CodeForbidden, "agent token")
	f.mustErr(f.doToken(reader, "POST", "/v1/appliances/web/enroll", `{"instance":"vm-1"}`), 403, api.CodeForbidden)
	f.mustErr(f.doToken(agent, "POST", "/v1/appliances/web/enroll", `{"instance":"a/b"}`), 400, api.CodeInvalidName, "instance name")
	f.mustErr(f.doToken(agent, "POST", "/v1/appliances/web/enroll", `{"instance":"vm-1","x":1}`), 400, api.CodeInvalidBody)

	e := f.enroll(agent, "web", "vm-1")
	in, ok := f.record("web", "vm-1")
	if !ok || !in.Enrolled || in.EnrolledAt == nil || !in.EnrolledAt.Equal(e.Enrolled) || in.Token != "instance:web:vm-1" {
		t.Fatalf("record %+v after enrollment at %s", in, e.Enrolled)
	}
	// The instance token reads the view, for its instance when the header is left out, and
	// may not enroll (nor read another appliance).
	var v api.View
	f.must(f.doToken(e.Token, "GET", "/v1/appliances/web", ""), 200, &v)
	f.mustErr(f.doToken(e.Token, "GET", "/v1/appliances/db", ""), 403, api.CodeForbidden)
	f.mustErr(f.doToken(e.Token, "POST", "/v1/appliances/web/enroll", `{"instance":"vm-9"}`), 403, api.CodeForbidden)
	// Its report keeps the enrollment in the record it writes.
	next := f.put("appliances/web/a", "2")
	f.must(f.doToken(e.Token, "GET", "/v1/appliances/web", "", api.HeaderApplied, fmt.Sprint(next)), 200, nil)
	waitFor(t, "the instance token's report recorded", func() bool {
		in, _ = f.record("web", "vm-1")
		return in.Applied == next
	})
	if !in.Enrolled || in.EnrolledAt == nil || !in.EnrolledAt.Equal(e.Enrolled) || in.Token != "instance:web:vm-1" {
		t.Fatalf("record %+v after a report of the instance token", in)
	}
	// An admin may enroll too.
	f.enroll(f.token, "web", "vm-2")
}

// An instance token speaks for its own instance only.
func TestEnroll_InstanceTokenBoundToItsInstance(t *testing.T) {
	f := newFixture(t)
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	agent := f.newToken(api.TokenRequest{Name: "agent-web", Appliance: "web"})
	e := f.enroll(agent, "web", "vm-1")
	f.mustErr(f.doToken(e.Token, "GET", "/v1/appliances/web", "", api.HeaderInstance, "vm-2"), 403, api.CodeForbidden, "bound to instance", "vm-2")
	f.mustErr(f.doToken(e.Token, "GET", "/v1/appliances/web", "", api.HeaderInstance, "vm-2", api.HeaderApplied, "1"), 403, api.CodeForbidden)
	if _, ok := f.record("web", "vm-2"); ok {
		t.Fatal("a refused request recorded a report of another instance")
	}
	f.must(f.doToken(e.Token, "GET", "/v1/appliances/web", "", api.HeaderInstance, "vm-1"), 200, nil)
}

// A name enrolled and stale is taken over: the old instance token is revoked (its long-poll
// ends) and a new one issued. (A fresh one is refused: TestEnroll_SecondEnrollmentConflict.)
func TestEnroll_StaleNameTakenOver(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.InstanceStale = time.Nanosecond })
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	v := f.view("web")
	agent := f.newToken(api.TokenRequest{Name: "agent-web", Appliance: "web"})
	first := f.enroll(agent, "web", "vm-1")

	old := *f
	old.token = first.Token
	p := old.startPoll(lp("web", v.Revision, "30s"))
	f.waitOpen(1)
	// Stale (--instance-stale 1ns) once the clock is past the enrollment, kept whole.
	waitFor(t, "the enrollment stale", func() bool { return time.Now().After(first.Enrolled) })
	second := f.enroll(agent, "web", "vm-1")
	f.mustErr(p.wait(t), 401, api.CodeUnauthorized, "revoked")
	f.mustErr(f.doToken(first.Token, "GET", "/v1/appliances/web", ""), 401, api.CodeUnauthorized)
	f.must(f.doToken(second.Token, "GET", "/v1/appliances/web", ""), 200, nil)
	if in, _ := f.record("web", "vm-1"); !in.Enrolled || !in.EnrolledAt.Equal(second.Enrolled) {
		t.Fatalf("record %+v after the takeover at %s", in, second.Enrolled)
	}
}

// With the default stale time the second enrollment is refused for sure.
func TestEnroll_SecondEnrollmentConflict(t *testing.T) {
	f := newFixture(t)
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	agent := f.newToken(api.TokenRequest{Name: "agent-web", Appliance: "web"})
	e := f.enroll(agent, "web", "vm-1")
	f.mustErr(f.doToken(agent, "POST", "/v1/appliances/web/enroll", `{"instance":"vm-1"}`), 409, api.CodeConflict,
		`"vm-1"`, "enrolled already", e.Enrolled.Add(time.Hour).Format(time.RFC3339), "--instance-stale 1h0m0s", "appliance forget web vm-1")
	f.must(f.doToken(e.Token, "GET", "/v1/appliances/web", ""), 200, nil)
}

// Reports of an enrolled instance made with another token (the fleet's appliance token) do
// not change its record: refused when taken, and by the write's guard when the enrollment
// came after they were queued.
func TestEnroll_ForgedReportIgnored(t *testing.T) {
	f := newFixture(t)
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	agent := f.newToken(api.TokenRequest{Name: "agent-web", Appliance: "web"})
	e := f.enroll(agent, "web", "vm-1")
	before, _ := f.record("web", "vm-1")
	next := f.put("appliances/web/a", "2")
	f.must(f.doToken(agent, "GET", "/v1/appliances/web", "", api.HeaderInstance, "vm-1", api.HeaderApplied, fmt.Sprint(next)), 200, nil)
	// Past the first layer: a forged report queued as if taken before the enrollment.
	f.s.reports.note(&api.Instance{Appliance: "web", Instance: "vm-1", Applied: next, LastSeen: time.Now().UTC(), Token: "agent-web"}, nil, "")
	// A report of another instance, queued after them, marks when they have been written.
	f.must(f.doToken(agent, "GET", "/v1/appliances/web", "", api.HeaderInstance, "vm-2", api.HeaderApplied, fmt.Sprint(next)), 200, nil)
	waitFor(t, "the later report recorded", func() bool {
		in, ok := f.record("web", "vm-2")
		return ok && in.Applied == next
	})
	if in, _ := f.record("web", "vm-1"); in.Applied != before.Applied || in.Token != "instance:web:vm-1" || !in.Enrolled {
		t.Fatalf("record %+v after forged reports, want it as enrolled: %+v", in, before)
	}
	// The instance's own token still reports.
	f.must(f.doToken(e.Token, "GET", "/v1/appliances/web", "", api.HeaderApplied, fmt.Sprint(next)), 200, nil)
	waitFor(t, "the instance's own report recorded", func() bool {
		in, _ := f.record("web", "vm-1")
		return in.Applied == next && in.Enrolled
	})
}

// forget removes the record and revokes the instance token at once; the name may be enrolled
// again right away.
func TestEnroll_ForgetRevokes(t *testing.T) {
	f := newFixture(t)
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	v := f.view("web")
	agent := f.newToken(api.TokenRequest{Name: "agent-web", Appliance: "web"})
	e := f.enroll(agent, "web", "vm-1")
	f.mustErr(f.doToken(agent, "DELETE", "/v1/appliances/web/instances/vm-1", ""), 403, api.CodeForbidden, "admin")

	old := *f
	old.token = e.Token
	p := old.startPoll(lp("web", v.Revision, "30s"))
	f.waitOpen(1)
	f.must(f.do("DELETE", "/v1/appliances/web/instances/vm-1", ""), 200, nil)
	f.mustErr(p.wait(t), 401, api.CodeUnauthorized, "revoked")
	f.mustErr(f.doToken(e.Token, "GET", "/v1/appliances/web", ""), 401, api.CodeUnauthorized)
	if _, ok := f.record("web", "vm-1"); ok {
		t.Fatal("the record is still there")
	}
	if _, _, err := f.st.SysGet(context.Background(), tokenPrefix+"instance:web:vm-1"); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("the instance token record: %v", err)
	}
	f.mustErr(f.do("DELETE", "/v1/appliances/web/instances/vm-1", ""), 404, api.CodeNotFound, `"vm-1"`)
	f.enroll(agent, "web", "vm-1")
}

// Instance token names are reserved: no user token takes one, token revoke points to forget,
// and token listings leave them out unless asked.
func TestEnroll_InstanceTokenNamesReserved(t *testing.T) {
	f := newFixture(t)
	agent := f.newToken(api.TokenRequest{Name: "agent-web", Appliance: "web"})
	f.mustErr(f.do("POST", "/v1/tokens", `{"name":"instance:web:vm-1","appliance":"web"}`), 400, api.CodeInvalidName, "reserved for instance tokens")
	f.mustErr(f.do("POST", "/v1/tokens", `{"name":"a:b","admin":true}`), 400, api.CodeInvalidName, "reserved")
	f.enroll(agent, "web", "vm-1")
	f.mustErr(f.do("DELETE", "/v1/tokens/instance:web:vm-1", ""), 400, api.CodeInvalidName, "appliance forget")

	var l api.TokenList
	f.must(f.do("GET", "/v1/tokens", ""), 200, &l)
	for _, ti := range l.Tokens {
		if ti.Instance != "" || isInstanceToken(ti.Name) {
			t.Fatalf("token listing shows instance token %+v", ti)
		}
	}
	for _, q := range []string{"all", "all=true", "all=1"} {
		l = api.TokenList{}
		f.must(f.do("GET", "/v1/tokens?"+q, ""), 200, &l)
		found := false
		for _, ti := range l.Tokens {
			found = found || (ti.Name == "instance:web:vm-1" && ti.Instance == "vm-1" && ti.Appliance == "web")
		}
		if !found {
			t.Fatalf("?%s does not list the instance token: %+v", q, l.Tokens)
		}
	}
	// all is a flag as every other: false leaves them out, anything else is refused.
	for _, q := range []string{"all=false", "all=0"} {
		l = api.TokenList{}
		f.must(f.do("GET", "/v1/tokens?"+q, ""), 200, &l)
		for _, ti := range l.Tokens {
			if ti.Instance != "" || isInstanceToken(ti.Name) {
				t.Fatalf("?%s lists instance token %+v", q, ti)
			}
		}
	}
	f.mustErr(f.do("GET", "/v1/tokens?all=maybe", ""), 400, api.CodeInvalidRequest, "all", "true or false")
}

// Two replicas enrolling one name at once: exactly one wins, the other is told it is enrolled.
func TestEnroll_ConcurrentOneWins(t *testing.T) {
	cfg := testutil.StoreConfig(t)
	a := newFixtureOn(t, testutil.OpenStore(t, cfg))
	b := newFixtureOn(t, testutil.OpenStore(t, cfg))
	b.token = a.token
	agent := a.newToken(api.TokenRequest{Name: "agent-web", Appliance: "web"})
	waitFor(t, "replica b knows the token", func() bool { return b.s.auth.lookup(agent) != nil })
	for i := range 5 {
		inst := fmt.Sprintf("vm-%d", i)
		var wg sync.WaitGroup
		got := make([]resp, 2)
		for j, f := range []*fixture{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				got[j] = f.doQuietMethod(agent, "POST", "/v1/appliances/web/enroll", `{"instance":"`+inst+`"}`)
			}()
		}
		wg.Wait()
		won := 0
		for _, r := range got {
			switch r.StatusCode {
			case 201:
				won++
			case 409:
				if r.errCode() != api.CodeConflict {
					t.Fatalf("409 with %s", r.body)
				}
			default:
				t.Fatalf("enroll %s: %d %s", inst, r.StatusCode, r.body)
			}
		}
		if won != 1 {
			t.Fatalf("enroll %s twice at once: %d won, want exactly 1", inst, won)
		}
	}
}

// doQuietMethod is doToken that may run off the test goroutine (failures are status 0); hdr
// are header name and value pairs.
func (f *fixture) doQuietMethod(token, method, path, body string, hdr ...string) resp {
	req, err := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	if err != nil {
		return resp{Response: &http.Response{}, body: []byte(err.Error())}
	}
	req.Header.Set("Authorization", "Bearer "+token)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := testClient.Do(req)
	if err != nil {
		return resp{Response: &http.Response{Request: req}, body: []byte(err.Error())}
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return resp{Response: res, body: b}
}

// The enrolled instances of an agent token are capped by --max-instances.
func TestEnroll_CappedPerToken(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MaxInstances = 2 })
	agent := f.newToken(api.TokenRequest{Name: "agent-web", Appliance: "web"})
	f.enroll(agent, "web", "vm-1")
	f.enroll(agent, "web", "vm-2")
	f.mustErr(f.doToken(agent, "POST", "/v1/appliances/web/enroll", `{"instance":"vm-3"}`), 409, api.CodeConflict, "--max-instances")
	f.must(f.do("DELETE", "/v1/appliances/web/instances/vm-1", ""), 200, nil)
	f.enroll(agent, "web", "vm-3")
}

// An enrolled record that expires takes its instance token with it.
func TestEnroll_ExpiredRecordRevokesToken(t *testing.T) {
	f := newFixture(t)
	agent := f.newToken(api.TokenRequest{Name: "agent-web", Appliance: "web"})
	e := f.enroll(agent, "web", "vm-1")
	in, _ := f.record("web", "vm-1")
	in.LastSeen = in.LastSeen.Add(-instanceExpiry - time.Hour)
	putRecord(t, f.st, in)
	if err := f.s.sweepInstances(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.mustErr(f.doToken(e.Token, "GET", "/v1/appliances/web", ""), 401, api.CodeUnauthorized)
	if _, ok := f.record("web", "vm-1"); ok {
		t.Fatal("the expired record is still there")
	}
}

// The failure an enrolled instance reported goes with its record: forget, expiry and a
// takeover remove it, so that neither a name's next holder inherits it nor records of gone
// instances pile up.
func TestEnroll_FailureGoesWithTheRecord(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.InstanceStale = time.Nanosecond })
	agent := f.newToken(api.TokenRequest{Name: "agent-web", Appliance: "web"})
	failed := func(tok, instance string) {
		t.Helper()
		f.must(f.doToken(tok, "POST", "/v1/appliances/web/report", `{"instance":"`+instance+`","error":"boom","stage":"command"}`, "Content-Type", "application/json"), 200, nil)
		if _, _, err := f.st.SysGet(context.Background(), instanceErrorKey("web", instance)); err != nil {
			t.Fatalf("the failure of %s is not recorded: %v", instance, err)
		}
	}
	gone := func(what, instance string) {
		t.Helper()
		if _, _, err := f.st.SysGet(context.Background(), instanceErrorKey("web", instance)); !errors.Is(err, api.ErrNotFound) {
			t.Errorf("after %s, the failure of %s is still there: %v", what, instance, err)
		}
	}
	failed(f.enroll(agent, "web", "vm-3").Token, "vm-3") // expires at the end, its report long written
	failed(f.enroll(agent, "web", "vm-1").Token, "vm-1")
	f.must(f.do("DELETE", "/v1/appliances/web/instances/vm-1", ""), 200, nil)
	gone("forget", "vm-1")

	e := f.enroll(agent, "web", "vm-2")
	failed(e.Token, "vm-2")
	// Stale (--instance-stale 1ns) once the clock's second is past the record's last sign of its
	// holder: the report, in the enrollment's second or (on a loaded host) the next.
	in, _ := f.record("web", "vm-2")
	waitFor(t, "the holder's last report a second old", func() bool {
		return time.Now().UTC().Truncate(time.Second).After(in.LastSeen) && time.Now().UTC().Truncate(time.Second).After(e.Enrolled)
	})
	f.enroll(agent, "web", "vm-2")
	gone("a takeover", "vm-2")

	// Expire vm-3 as if its report were queued long ago. On a loaded host the batch that writes
	// its report may still be under way, and write its record (and what the replica noted of
	// it) after the expiry's: make it again until it holds.
	waitFor(t, "vm-3's record expired", func() bool {
		f.s.reports.forget("web", "vm-3")
		in, _ = f.record("web", "vm-3")
		in.LastSeen = in.LastSeen.Add(-instanceExpiry - time.Hour)
		putRecord(t, f.st, in)
		if err := f.s.sweepInstances(context.Background()); err != nil {
			t.Fatal(err)
		}
		_, ok := f.record("web", "vm-3")
		return !ok
	})
	gone("expiry", "vm-3")
}

// An agent whose enrollment's answer was lost (the connection broke after the server wrote the
// token) asked again and got 409 for --instance-stale (an hour), rendering meanwhile as an
// instance that rollouts cannot draw. With the enrollment key it sent the first time, it is
// given a new token while the first was never used; another key, none, or the same key once
// the token reported (a clone of the VM holding a copy of the key) stay 409.
func TestEnroll_LostAnswerEnrolledAgainWithItsKey(t *testing.T) {
	f := newFixture(t)
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	agent := f.newToken(api.TokenRequest{Name: "agent-web", Appliance: "web"})
	key, other := strings.Repeat("k", 64), strings.Repeat("o", 64)
	enrollWith := func(key string) resp {
		return f.doToken(agent, "POST", "/v1/appliances/web/enroll", `{"instance":"vm-1"}`, api.HeaderEnrollKey, key)
	}

	f.mustErr(enrollWith("short"), 400, api.CodeInvalidRequest, api.HeaderEnrollKey, "32 to 256")
	f.mustErr(enrollWith(strings.Repeat("k", 63)+"!"), 400, api.CodeInvalidRequest, api.HeaderEnrollKey)
	var lost, again api.Enrolled
	f.must(enrollWith(key), 201, &lost) // its answer never reached the agent
	// Not again at once (the agent asks a minute later): the key enrolls again only after
	// enrollRetryAge, which the rest of the test lowers.
	f.mustErr(enrollWith(key), 409, api.CodeConflict, "enrolled already")
	f.s.enrollRetryAge = 0
	f.mustErr(enrollWith(other), 409, api.CodeConflict, "enrolled already")
	f.mustErr(f.doToken(agent, "POST", "/v1/appliances/web/enroll", `{"instance":"vm-1"}`), 409, api.CodeConflict)
	f.must(enrollWith(key), 201, &again)
	if again.Token == lost.Token {
		t.Fatal("the same token given twice")
	}
	f.mustErr(f.doToken(lost.Token, "GET", "/v1/appliances/web", ""), 401, api.CodeUnauthorized)

	// The agent has its token now and reports with it: its key no longer enrolls the name.
	next := f.put("appliances/web/a", "2")
	f.must(f.doToken(again.Token, "GET", "/v1/appliances/web", "", api.HeaderApplied, fmt.Sprint(next)), 200, nil)
	waitFor(t, "the report recorded", func() bool {
		in, _ := f.record("web", "vm-1")
		return in.Applied == next
	})
	f.mustErr(enrollWith(key), 409, api.CodeConflict, "enrolled already")
	f.must(f.doToken(again.Token, "GET", "/v1/appliances/web", ""), 200, nil)
}

// A replica that did not make an enrollment remembered the reports of the instance's previous
// token (by its name, which every token of the instance shares) and, for a minute, took the
// new token's report for one it had written: the record stayed as the enrollment wrote it, and
// the enrollment key enrolled the name again (retriedByHolder) while the new token was in use.
// Every replica now forgets what it wrote of an instance when its token changes.
func TestEnroll_KeyRetryRefusedOnceReportedThroughAnotherReplica(t *testing.T) {
	cfg := testutil.StoreConfig(t)
	a := newFixtureOn(t, testutil.OpenStore(t, cfg))
	b := newFixtureOn(t, testutil.OpenStore(t, cfg))
	b.token = a.token
	a.must(a.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	agent := a.newToken(api.TokenRequest{Name: "agent-web", Appliance: "web"})
	key := strings.Repeat("k", 64)
	enrollWith := func() resp {
		return a.doToken(agent, "POST", "/v1/appliances/web/enroll", `{"instance":"vm-1"}`, api.HeaderEnrollKey, key)
	}
	applied := a.put("appliances/web/a", "2")
	// reportedVia reports through b with tok, and waits until the record is written after the
	// instance token (revision tokRev).
	reportedVia := func(tok string) {
		t.Helper()
		waitFor(t, "replica b knows the token", func() bool { return b.s.auth.lookup(tok) != nil })
		b.must(b.doToken(tok, "GET", "/v1/appliances/web", "", api.HeaderApplied, fmt.Sprint(applied)), 200, nil)
		waitFor(t, "the report recorded", func() bool {
			_, recRev, _ := a.st.SysGet(context.Background(), instanceRecordKey("web", "vm-1"))
			_, tokRev, _ := a.st.SysGet(context.Background(), tokenPrefix+instanceTokenName("web", "vm-1"))
			return recRev > tokRev
		})
	}

	var first, second api.Enrolled
	a.must(enrollWith(), 201, &first)
	reportedVia(first.Token)
	a.must(a.do("DELETE", "/v1/appliances/web/instances/vm-1", ""), 200, nil)
	a.must(enrollWith(), 201, &second) // the name is free again: a new enrollment
	reportedVia(second.Token)
	a.mustErr(enrollWith(), 409, api.CodeConflict, "enrolled already")
	b.must(b.doToken(second.Token, "GET", "/v1/appliances/web", ""), 200, nil)
}

// Enrollments of one agent token arriving together are capped as one after another are: the
// cap was checked against the tokens this replica had cached, before any of them was written,
// so 40 at once under --max-instances 5 enrolled 11 (a holder of the fleet's agent token went
// past the cap that bounds what it may mint).
func TestEnroll_CapHoldsForEnrollmentsAtOnce(t *testing.T) {
	const max, n = 5, 40
	f := newFixture(t, func(c *Config) { c.MaxInstances = max; c.RateLimit = 1000 })
	agent := f.newToken(api.TokenRequest{Name: "agent-web", Appliance: "web"})
	var wg sync.WaitGroup
	start := make(chan struct{})
	got := make([]resp, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			got[i] = f.doQuietMethod(agent, "POST", "/v1/appliances/web/enroll", fmt.Sprintf(`{"instance":"vm-%d"}`, i))
		}()
	}
	close(start)
	wg.Wait()
	won := 0
	for _, r := range got {
		switch r.StatusCode {
		case 201:
			won++
		case 409:
		default:
			t.Fatalf("enroll: %d %s", r.StatusCode, r.body)
		}
	}
	if won != max {
		t.Fatalf("%d enrollments at once under --max-instances %d: %d enrolled, want %d", n, max, won, max)
	}
	if got := f.s.auth.enrolledBy("agent-web", ""); got != max {
		t.Fatalf("agent-web has %d instance tokens, want %d", got, max)
	}
}
