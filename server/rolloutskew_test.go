package server

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/testutil"
)

// Whether an instance was enrolled when a rollout drew its cohort is decided by etcd revisions,
// not by the replicas' clocks. An instance forgotten and enrolled again just after the rollout
// started, through a replica whose clock is a minute behind, has an enrollment time before the
// start: it was served the candidate (the replica that took its requests, and one that read
// the tokens at its start, judged it drawn), and the report of the candidate its previous holder
// made, which an enrollment keeps in the instance's record, counted for the gates as its.
func TestRollout_EnrolledAgainThroughAReplicaWhoseClockIsBehindIsNotDrawn(t *testing.T) {
	cfg := testutil.StoreConfig(t)
	f := newFixtureOn(t, testutil.OpenStore(t, cfg))
	f.put("appliances/web/port", "80")
	agent := f.newToken(api.TokenRequest{Name: "web-fleet", Appliance: "web"})
	drawn := f.enroll(agent, "web", "vm-0")
	var st api.RolloutStatus
	f.must(f.do("PUT", "/v1/kv/appliances/web/port?canary=100%25&manual", "8080"), http.StatusAccepted, &st)
	var v api.View
	f.must(f.doToken(drawn.Token, "GET", "/v1/appliances/web", "", api.HeaderInstance, "vm-0"), 200, &v)
	if v.Keys["port"] != "8080" || v.Rollout != st.ID {
		t.Fatalf("the drawn instance's view: %+v", v)
	}
	rep, _ := json.Marshal(api.Report{Instance: "vm-0", Revision: v.Revision, Applied: v.Revision, Rollout: v.Rollout})
	f.must(f.doToken(drawn.Token, "POST", "/v1/appliances/web/report", string(rep), "Content-Type", "application/json"), 200, nil)
	waitFor(t, "the candidate's report counted", func() bool {
		got := rolloutStatus(t, f)
		return len(got.Instances) == 1 && got.Instances[0].State == "applied"
	})

	// vm-0 is forgotten, then enrolled again through a replica whose clock is a minute behind:
	// its token and record (which keeps what the previous holder reported) say it was enrolled
	// a minute before the rollout started. They are written as such an enrollment writes them.
	f.must(f.do("DELETE", "/v1/appliances/web/instances/vm-0", ""), 200, nil)
	ctx := context.Background()
	behind := st.Started.Add(-time.Minute)
	const secret = "sl_enrolled-again-through-a-replica-whose-clock-is-behind"
	tokName := instanceTokenName("web", "vm-0")
	tok, _ := json.Marshal(&tokenRecord{Name: tokName, Hash: hashSecret(secret), Appliance: "web", Instance: "vm-0", Parent: "web-fleet", Created: behind})
	in, _ := json.Marshal(api.Instance{Appliance: "web", Instance: "vm-0", Applied: v.Revision, Rollout: st.ID, LastSeen: behind.Truncate(time.Second),
		Token: tokName, Enrolled: true, EnrolledAt: &behind})
	again, err := f.st.SysApply(ctx, nil, map[string][]byte{tokenPrefix + tokName: tok, instanceRecordKey("web", "vm-0"): in}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if again <= st.Revision {
		t.Fatalf("enrolled again at revision %d, the rollout started at %d", again, st.Revision)
	}
	// A replica that learns of the token by its watch, and one that reads it as it starts.
	waitFor(t, "the token enrolled again known", func() bool {
		return f.s.auth.byNameRecord(tokName) != nil && f.s.auth.byNameRecord(tokName).Created.Equal(behind)
	})
	started := newFixtureOn(t, testutil.OpenStore(t, cfg))
	started.token = f.token
	for _, r := range []*fixture{f, started} {
		for _, path := range []string{"/v1/appliances/web", "/v1/appliances/web?index=1&wait=5s"} {
			var got api.View
			r.must(r.doToken(secret, "GET", path, "", api.HeaderInstance, "vm-0"), 200, &got)
			if got.Keys["port"] != "80" || got.Rollout != "" {
				t.Errorf("GET %s with vm-0's token enrolled again after the start: %+v, want the live view", path, got)
			}
		}
	}
	// The report of the candidate kept in its record is the previous holder's: it does not count.
	for _, r := range []*fixture{f, started} {
		got := rolloutStatus(t, r)
		if got.State != api.RolloutRunning || len(got.Instances) != 1 || got.Instances[0].State == "applied" {
			t.Errorf("rollout after vm-0 was enrolled again: %+v", got)
		}
	}
}

// An enrollment's holder that asks again with its enrollment key (its answer lost) gets a token
// written after the rollout started, which keeps the revision of the enrollment the rollout drew:
// it is served the candidate, and its reports count.
func TestRollout_HolderEnrolledAgainWithItsKeyStaysDrawn(t *testing.T) {
	f := newFixture(t)
	f.put("appliances/web/port", "80")
	agent := f.newToken(api.TokenRequest{Name: "web-fleet", Appliance: "web"})
	key := "k0123456789abcdef0123456789abcdef"
	f.must(f.doToken(agent, "POST", "/v1/appliances/web/enroll", `{"instance":"vm-0"}`, api.HeaderEnrollKey, key), 201, nil) // its answer lost
	var st api.RolloutStatus
	f.must(f.do("PUT", "/v1/kv/appliances/web/port?canary=100%25&manual", "8080"), http.StatusAccepted, &st)
	f.s.enrollRetryAge = 0 // as if the agent asked again a minute later
	var again api.Enrolled
	f.must(f.doToken(agent, "POST", "/v1/appliances/web/enroll", `{"instance":"vm-0"}`, api.HeaderEnrollKey, key), 201, &again)
	var v api.View
	f.must(f.doToken(again.Token, "GET", "/v1/appliances/web", "", api.HeaderInstance, "vm-0"), 200, &v)
	if v.Keys["port"] != "8080" || v.Rollout != st.ID {
		t.Fatalf("the drawn instance's view, with the token it got asking again: %+v", v)
	}
	rep, _ := json.Marshal(api.Report{Instance: "vm-0", Revision: v.Revision, Applied: v.Revision, Rollout: v.Rollout})
	f.must(f.doToken(again.Token, "POST", "/v1/appliances/web/report", string(rep), "Content-Type", "application/json"), 200, nil)
	waitFor(t, "the candidate's report counted", func() bool {
		got := rolloutStatus(t, f)
		return len(got.Instances) == 1 && got.Instances[0].State == "applied"
	})
}
