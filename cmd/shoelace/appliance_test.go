package main

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
)

func TestRolloutState(t *testing.T) {
	at := func(d time.Duration) time.Time { return time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC).Add(d) }
	all := []api.Instance{
		{Instance: "new", Applied: 42, LastSeen: at(0)},
		{Instance: "late", Applied: 41, LastSeen: at(-time.Minute)},
		{Instance: "gone", Applied: 7, LastSeen: at(-time.Hour)}, // a VM that was deleted: not waited for
	}
	alive, behind := rolloutState(all, 42, 5*time.Minute)
	if len(alive) != 2 || alive[0].Instance != "new" || alive[1].Instance != "late" {
		t.Errorf("alive = %+v, want new and late", alive)
	}
	if len(behind) != 1 || behind[0].Instance != "late" {
		t.Errorf("behind = %+v, want late", behind)
	}
	if alive, behind := rolloutState(nil, 42, time.Minute); len(alive) != 0 || len(behind) != 0 {
		t.Errorf("no instances: %v %v", alive, behind)
	}
}

// A message in a history listing cannot move the table's columns or rows, nor send the terminal
// an escape sequence (C0 ESC or the C1 CSI), whatever an older server let into a record.
func TestOneLine_ControlCharacters(t *testing.T) {
	got := oneLine("a\tb\nc\x1b[31md\u009b1me\u202ef")
	if want := "a b c [31md 1me f"; got != want {
		t.Errorf("oneLine = %q, want %q", got, want)
	}
}

// A rollout's reason quotes an agent's error: rollout status and appliance wait print it on
// one line, without the escape sequences or bidi controls an agent (or an older server) let in.
func TestPrintRollout_ReasonShowable(t *testing.T) {
	st := api.RolloutStatus{Appliance: "web", ID: "r1", State: api.RolloutHalted,
		Reason: "instance vm-1 failed: \x1b]0;owned\x07\x1b[2J\u202eboom\nline 2"}
	var b strings.Builder
	if err := printRollout(&b, st); err != nil {
		t.Fatal(err)
	}
	for what, text := range map[string]string{"rollout status": b.String(), "appliance wait": rolloutEnded(st).Error()} {
		if strings.ContainsAny(text, "\x1b\x07\u202e") || !strings.Contains(text, "boom line 2") {
			t.Errorf("%s: %q", what, text)
		}
	}
}

// A mistyped strategy flag is a usage error (exit 2) before any request: no server answers here.
func TestRolloutFlagsChecked(t *testing.T) {
	for _, args := range []string{
		"kv put appliances/web/port 1 --canary 10",
		"kv put appliances/web/port 1 --canary abc",
		"kv put appliances/web/port 1 --canary 0%",
		"kv put appliances/web/port 1 --canary 10% --step 150%",
		"kv put appliances/web/port 1 --canary 10% --deadline 0s",
		"kv put appliances/web/port 1 --canary 10% --bake -1s",
		"kv put appliances/web/port 1 --step 20%",
		"appliance apply web -f x.yaml --canary 10% --force",
		"appliance rollback web --to previous --canary 1.5",
	} {
		var stdout, stderr strings.Builder
		err := run(context.Background(), append([]string{"shoelace", "--addr", "http://127.0.0.1:1", "--token", "x"}, strings.Fields(args)...), strings.NewReader(""), &stdout, &stderr)
		if code := exitCode(err); code != exitUsage {
			t.Errorf("shoelace %s: exit %d (%v), want %d", args, code, err, exitUsage)
		}
	}
	// Good flags get as far as the (absent) server.
	err := run(context.Background(), strings.Fields("shoelace --addr http://127.0.0.1:1 --token x kv put appliances/web/port 1 --canary 0.1 --step 25% --bake 5m --deadline 1h --manual"),
		strings.NewReader(""), io.Discard, io.Discard)
	if code := exitCode(err); code != exitUnavailable {
		t.Errorf("good rollout flags: exit %d (%v), want %d", code, err, exitUnavailable)
	}
}

// A running rollout's status says how many instances of the cohort applied the change, beside
// how many get it: before, "1 of 1 instances have the change" stood above the one instance
// listed pending, its applied revision the old one.
func TestPrintRollout_CohortApplied(t *testing.T) {
	st := api.RolloutStatus{Appliance: "web", ID: "r1", State: api.RolloutRunning, Step: 0, Steps: []int{2, 3},
		Cohort: []string{"vm-1", "vm-2"},
		Instances: []api.RolloutInstance{
			{Instance: "vm-1", Cohort: 0, State: "applied", Applied: 90},
			{Instance: "vm-2", Cohort: 0, State: "pending", Applied: 80},
			{Instance: "vm-3", Cohort: -1, State: "waiting", Applied: 80},
		}}
	var b strings.Builder
	if err := printRollout(&b, st); err != nil {
		t.Fatal(err)
	}
	first, _, _ := strings.Cut(b.String(), "\n")
	if want := "rollout r1 of web: running, step 1 of 2 (2 of 3 instances get the change, 1 of them applied it)"; first != want {
		t.Errorf("status line = %q, want %q", first, want)
	}
}

// A halted or aborted rollout's status says nothing waits any more: its cohort is back on the
// live view, an instance that had applied the candidate is listed applied, one that had not
// "not applied" (before: "pending", as if the ended rollout still waited for it).
func TestPrintRollout_Ended(t *testing.T) {
	st := api.RolloutStatus{Appliance: "web", ID: "r1", State: api.RolloutHalted, Steps: []int{2, 3},
		Cohort: []string{"vm-1", "vm-2"}, Reason: "instance vm-2 has not reported the candidate within the deadline of 5s",
		Instances: []api.RolloutInstance{
			{Instance: "vm-1", Cohort: 0, State: "applied", Applied: 57},
			{Instance: "vm-2", Cohort: 0, State: "pending", Applied: 50},
			{Instance: "vm-3", Cohort: -1, State: "waiting", Applied: 50},
		}}
	var b strings.Builder
	if err := printRollout(&b, st); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"rollout r1 of web: halted, its cohort is back on the live view\n",
		"  vm-1                     canary   applied     applied 57\n",
		"  vm-2                     canary   not applied applied 50\n",
		"  vm-3                     -        not reached applied 50\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "pending") || strings.Contains(out, "waiting") {
		t.Errorf("an ended rollout's status says something is still waited for:\n%s", out)
	}
}

// A promoted rollout's status lists applied the instances that applied the candidate (before
// the promotion or the live tree since), and says of one that reported neither that it gets
// the change with the live view: the rollout does not wait for it.
func TestPrintRollout_Promoted(t *testing.T) {
	st := api.RolloutStatus{Appliance: "web", ID: "r1", State: api.RolloutPromoted, Step: 1, Steps: []int{1, 2},
		Cohort: []string{"vm-1", "vm-2"},
		Instances: []api.RolloutInstance{
			{Instance: "vm-1", Cohort: 0, State: "applied", Applied: 57},
			{Instance: "vm-2", Cohort: 1, State: "pending", Applied: 50},
		}}
	var b strings.Builder
	if err := printRollout(&b, st); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"rollout r1 of web: promoted\n",
		"  vm-1                     canary   applied     applied 57\n",
		"  vm-2                     step 2   pending     applied 50  (gets the change with the live view; not reported yet)\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
}
