package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// A --manual rollout whose cohort has applied the change waits for a promote by hand: rollout
// status and appliance wait say so, naming the command, and rollout promote does not print the
// step it was asked to leave as if nothing had happened. Before, status showed only "baking
// since …", and appliance wait printed "…applied it; waiting" until --for ended (exit 1, "the
// rollout has not ended"), never saying what it waited for.
func TestE2E_ManualRolloutSaysItWaitsForPromote(t *testing.T) {
	s := freshServer(t)
	c := newCLI(t, s)
	const name = "manual-wait"
	c.ok("kv", "put", "appliances/"+name+"/port", "80")
	tokens := map[string]string{}
	for _, vm := range []string{"vm-1", "vm-2"} {
		en, err := adminClient(t, s).Enroll(context.Background(), name, vm, "")
		if err != nil {
			t.Fatal(err)
		}
		tokens[vm] = en.Token
	}
	time.Sleep(10 * time.Millisecond) // enrolled before the rollout starts, by the server's clock
	c.ok("kv", "put", "appliances/"+name+"/port", "81", "--canary", "50%", "--manual")
	var st api.RolloutStatus
	if err := json.Unmarshal([]byte(c.ok("appliance", "rollout", "status", name, "-o", "json")), &st); err != nil || len(st.Cohort) != 1 {
		t.Fatalf("rollout status: %+v %v", st, err)
	}
	canary := st.Cohort[0]

	v := applyCandidate(t, s, name, canary, tokens[canary])
	if v.Keys["port"] != "81" {
		t.Fatalf("%s's view is not the candidate: %+v", canary, v)
	}
	want := "waiting for shoelace appliance rollout promote " + name
	deadline := time.Now().Add(30 * time.Second)
	for out := ""; !strings.Contains(out, want); out = c.ok("appliance", "rollout", "status", name) {
		if time.Now().After(deadline) {
			t.Fatalf("rollout status of a manual rollout whose cohort applied the change does not say %q:\n%s", want, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	w := c.run("appliance", "wait", name, "--for", "2s", "--interval", "100ms")
	if w.code != exitError || !strings.Contains(w.stderr, want) {
		t.Fatalf("appliance wait of a manual rollout waiting for its promote: %s; want exit 1 saying %q", w, want)
	}
	// The promote prints the step it took: step 2 of 2, whose new instance has not applied the
	// change yet (stderr says what the step waits for), not step 1 waiting for a promote.
	// Pinned to another rollout (one that ended, say), the promote is refused: exit 4.
	other := c.run("appliance", "rollout", "promote", name, "--rollout", "0123-ab")
	if other.code != exitConflict || !strings.Contains(other.stderr, "not rollout 0123-ab") {
		t.Fatalf("rollout promote --rollout of another rollout: %s; want exit 4 naming it", other)
	}
	if other := c.run("appliance", "rollout", "abort", name, "--rollout", "0123-ab"); other.code != exitConflict {
		t.Fatalf("rollout abort --rollout of another rollout: %s; want exit 4", other)
	}
	p := c.run("appliance", "rollout", "promote", name, "--rollout", st.ID)
	if p.code != 0 || strings.Contains(p.stdout+p.stderr, want) || !strings.Contains(p.stdout, "running, step 2 of 2") {
		t.Fatalf("rollout promote: %s; want the rollout at step 2", p)
	}
	if out := c.ok("kv", "get", "appliances/"+name+"/port"); out != "80" {
		t.Fatalf("port after the promote to the second step: %q", out)
	}
	// The same promote, of the step it has left, sent again with --step: refused (exit 4), where
	// it promoted the last step without its bake.
	again := c.run("appliance", "rollout", "promote", name, "--step", "1")
	if again.code != exitConflict || !strings.Contains(again.stderr, "at step 2 of 2, not rollout "+st.ID+" at step 1") {
		t.Fatalf("rollout promote --step 1 of a rollout at step 2: %s; want exit 4 saying it moved on", again)
	}
	if bad := c.run("appliance", "rollout", "promote", name, "--step", "0"); bad.code != exitUsage {
		t.Fatalf("rollout promote --step 0: %s; want exit 2 (steps count from 1)", bad)
	}
	if st := c.ok("appliance", "rollout", "status", name); !strings.Contains(st, "running, step 2 of 2") {
		t.Fatalf("a refused promote moved the rollout:\n%s", st)
	}
}

// applyCandidate reads appliance name's view as its instance's agent does (instance token tok),
// checks that it is a rollout's candidate, and reports it applied; it returns the view.
func applyCandidate(t *testing.T, s *testServer, name, instance, tok string) api.View {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, s.url()+"/v1/appliances/"+name, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set(api.HeaderInstance, instance)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var v api.View
	err = json.NewDecoder(resp.Body).Decode(&v)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || v.Rollout == "" {
		t.Fatalf("%s's view of %s: %s %v %+v, want a rollout's candidate", instance, name, resp.Status, err, v)
	}
	rep, err := json.Marshal(api.Report{Instance: instance, Revision: v.Revision, Applied: v.Revision, Rollout: v.Rollout})
	if err != nil {
		t.Fatal(err)
	}
	req, err = http.NewRequest(http.MethodPost, s.url()+"/v1/appliances/"+name+"/report", strings.NewReader(string(rep)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("%s's report: %s", instance, resp.Status)
	}
	return v
}

// rollout promote of a --manual rollout of a shared rollout group at its last step prints it
// waiting for the other appliances of the group, and says nothing of a step to come: there is
// none. (It said, after five seconds, that the promote was recorded and that the next step
// waited for the cohort to apply the change, which it had.)
func TestE2E_PromoteToTheEndOfAGroupSaysItWaitsForTheOthers(t *testing.T) {
	s := freshServer(t)
	c := newCLI(t, s)
	tokens := map[string]string{}
	for _, app := range []string{"group-a", "group-b"} {
		c.ok("kv", "put", "appliances/"+app+"/port", "80")
		en, err := adminClient(t, s).Enroll(context.Background(), app, "vm-1", "")
		if err != nil {
			t.Fatal(err)
		}
		tokens[app] = en.Token
	}
	time.Sleep(10 * time.Millisecond) // enrolled before the rollout starts, by the server's clock
	c.ok("kv", "put", "shared/ntp", "pool.example", "--canary", "100%", "--manual")
	applyCandidate(t, s, "group-a", "vm-1", tokens["group-a"])
	deadline := time.Now().Add(30 * time.Second)
	for out := ""; !strings.Contains(out, "waiting for shoelace appliance rollout promote group-a"); out = c.ok("appliance", "rollout", "status", "group-a") {
		if time.Now().After(deadline) {
			t.Fatalf("group-a's canary applied the change, but its rollout does not wait for a promote:\n%s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	p := c.run("appliance", "rollout", "promote", "group-a")
	if p.code != 0 || !strings.Contains(p.stdout, "waiting for the other appliances of the group") || strings.Contains(p.stderr, "next step") {
		t.Fatalf("rollout promote of group-a's last step: %s; want it waiting for the other appliances", p)
	}
}
