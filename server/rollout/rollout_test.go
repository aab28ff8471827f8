package rollout

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
)

func TestSteps(t *testing.T) {
	for _, c := range []struct {
		n            int
		canary, step float64
		want         []int
	}{
		{5, 0.2, 0.4, []int{1, 3, 5}},
		{5, 0.1, 0, []int{1, 5}},
		{10, 0.1, 0.25, []int{1, 4, 7, 10}},
		{30, 0.1, 0, []int{3, 30}},
		{1, 0.1, 0.5, []int{1}},
		{3, 1, 0, []int{3}},
		{0, 0.1, 0, nil},
	} {
		if got := Steps(c.n, c.canary, c.step); !slices.Equal(got, c.want) {
			t.Errorf("Steps(%d, %g, %g) = %v, want %v", c.n, c.canary, c.step, got, c.want)
		}
	}
}

func TestOrderIsStableAcrossMembership(t *testing.T) {
	var names []string
	for i := range 20 {
		names = append(names, fmt.Sprintf("vm-%d", i))
	}
	a := Order(names)
	b := Order(append(slices.Clone(names[5:]), names[:5]...))
	if !slices.Equal(a, b) {
		t.Fatalf("order depends on input order:\n%v\n%v", a, b)
	}
	// Removing one instance keeps the others in the same relative order.
	c := Order(names[1:])
	if want := slices.DeleteFunc(slices.Clone(a), func(s string) bool { return s == names[0] }); !slices.Equal(c, want) {
		t.Fatalf("order changed for the others when one left:\n%v\n%v", c, want)
	}
	if slices.Equal(a, names) {
		t.Fatalf("order is the names' own order, not a hash order")
	}
}

func TestParseShare(t *testing.T) {
	for in, want := range map[string]float64{"10%": 0.1, "0.25": 0.25, "100%": 1, "1": 1} {
		if got, err := ParseShare("--canary", in); err != nil || got != want {
			t.Errorf("ParseShare(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "0%", "-5%", "150%", "2", "ten", "NaN", "1 0%", "0.5abc", "10%%", "5%x", "Inf"} {
		if _, err := ParseShare("--canary", in); err == nil || !strings.Contains(err.Error(), "--canary") {
			t.Errorf("ParseShare(%q) = %v, want an error naming the flag", in, err)
		}
	}
}

func rec(n int) *Record {
	var names []string
	for i := range n {
		names = append(names, fmt.Sprintf("vm-%d", i))
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	return &Record{ID: "r1", State: api.RolloutRunning, Instances: names, Steps: Steps(n, 0.2, 0.4), Started: t0, StepStarted: t0,
		Strategy: api.RolloutStrategy{Canary: 0.2, Step: 0.4, Bake: api.Duration(2 * time.Second), Deadline: api.Duration(time.Minute)}}
}

// enrolled makes in a report of its instance token, enrolled before r started.
func enrolled(r *Record, in api.Instance) api.Instance {
	at := r.Started.Add(-time.Minute)
	in.Enrolled, in.EnrolledAt = true, &at
	return in
}

// Only reports of the instances drawn count: made with their instance token, enrolled before
// the rollout started. A name taken over (or forgotten and enrolled again) during the rollout,
// or a report without an instance token, neither advances nor halts it.
func TestEvaluate_CountsOnlyInstancesEnrolledBeforeStart(t *testing.T) {
	r := rec(5)
	r.Strategy.Bake = 0
	canary := r.Cohort()[0]
	later := r.Started.Add(time.Hour)
	applied := api.Instance{Instance: canary, Applied: 10, Rollout: "r1", Enrolled: true, EnrolledAt: &later}
	failed := api.Instance{Instance: canary, Rollout: "r1", Enrolled: true, EnrolledAt: &later, Error: "forged", ErrorRollout: "r1"}
	for what, in := range map[string]api.Instance{
		"applied, enrolled after the start": applied,
		"failed, enrolled after the start":  failed,
		"applied, not enrolled":             {Instance: canary, Applied: 10, Rollout: "r1"},
		"failed, not enrolled":              {Instance: canary, Rollout: "r1", Error: "forged", ErrorRollout: "r1"},
	} {
		d := r.Evaluate(map[string]api.Instance{canary: in}, 10, time.Time{}, r.StepStarted.Add(time.Second))
		if d.Action != Wait {
			t.Errorf("%s: %+v, want wait", what, d)
		}
		if st := r.Status(map[string]api.Instance{canary: in}, 10, time.Time{}); st.Instances[0].State != "pending" {
			t.Errorf("%s: status %+v, want pending", what, st.Instances[0])
		}
	}
	if d := r.Evaluate(map[string]api.Instance{canary: enrolled(r, applied)}, 10, time.Time{}, r.StepStarted.Add(time.Second)); d.Action != Advance {
		t.Errorf("applied by the instance drawn: %+v, want advance", d)
	}
}

func TestEvaluate(t *testing.T) {
	r := rec(5)
	t0 := r.StepStarted
	canary := r.Cohort()[0]
	reports := map[string]api.Instance{}
	if d := r.Evaluate(reports, 10, time.Time{}, t0.Add(time.Second)); d.Action != Wait {
		t.Fatalf("no report: %+v", d)
	}
	// Applied the live view at a later revision, not the candidate: not counted.
	reports[canary] = enrolled(r, api.Instance{Instance: canary, Applied: 12})
	if d := r.Evaluate(reports, 10, time.Time{}, t0.Add(time.Second)); d.Action != Wait || !d.BakedSince.IsZero() {
		t.Fatalf("a live-view report counted: %+v", d)
	}
	// Applied the candidate of an older step's revision: not counted either.
	reports[canary] = enrolled(r, api.Instance{Instance: canary, Applied: 9, Rollout: "r1"})
	if d := r.Evaluate(reports, 10, time.Time{}, t0.Add(time.Second)); d.Action != Wait || !d.BakedSince.IsZero() {
		t.Fatalf("an old report counted: %+v", d)
	}
	reports[canary] = enrolled(r, api.Instance{Instance: canary, Applied: 10, Rollout: "r1"})
	d := r.Evaluate(reports, 10, time.Time{}, t0.Add(time.Second))
	if d.Action != Wait || d.BakedSince.IsZero() {
		t.Fatalf("applied: want baking, got %+v", d)
	}
	if d2 := r.Evaluate(reports, 10, d.BakedSince, d.BakedSince.Add(2*time.Second)); d2.Action != Advance {
		t.Fatalf("baked: want advance, got %+v", d2)
	}
	r.Strategy.Manual = true
	if d2 := r.Evaluate(reports, 10, d.BakedSince, d.BakedSince.Add(2*time.Second)); d2.Action != Wait || !strings.Contains(d2.Reason, "promote") {
		t.Fatalf("manual: want wait for promote, got %+v", d2)
	}
	r.Promote = true
	if d2 := r.Evaluate(reports, 10, d.BakedSince, d.BakedSince); d2.Action != Advance {
		t.Fatalf("promoted by hand: want advance at once, got %+v", d2)
	}
	r.Promote, r.Strategy.Manual = false, false
	// A failure of this rollout halts, naming the instance and its error.
	reports[canary] = enrolled(r, api.Instance{Instance: canary, Applied: 8, Rollout: "r1", Error: "command exited with status 1", ErrorRollout: "r1", ErrorRevision: 10, ErrorStage: api.StageCommand})
	d = r.Evaluate(reports, 10, time.Time{}, t0.Add(time.Second))
	if d.Action != Halt || d.Instance != canary || !strings.Contains(d.Reason, "status 1") {
		t.Fatalf("failure: want halt naming %s, got %+v", canary, d)
	}
	// A silent canary past the deadline halts.
	delete(reports, canary)
	d = r.Evaluate(reports, 10, time.Time{}, t0.Add(time.Minute))
	if d.Action != Halt || d.Instance != canary || !strings.Contains(d.Reason, "deadline") {
		t.Fatalf("deadline: want halt, got %+v", d)
	}
}

func TestStatus(t *testing.T) {
	r := rec(5)
	c := r.Cohort()[0]
	st := r.Status(map[string]api.Instance{c: enrolled(r, api.Instance{Instance: c, Applied: 10, Rollout: "r1"})}, 10, time.Time{})
	if len(st.Instances) != 5 || st.Instances[0].State != "applied" || st.Instances[1].State != "waiting" || st.Instances[1].Cohort != 1 {
		t.Fatalf("status: %+v", st.Instances)
	}
	if r.InCohort(r.Instances[1]) || !r.InCohort(c) {
		t.Fatalf("cohort membership wrong")
	}
	r.State = api.RolloutHalted
	if r.InCohort(c) {
		t.Fatalf("a halted rollout still serves its candidate")
	}
	// Once halted, the instance that halted it shows failed, even after its agent, back on
	// the live view, reported a good pass (which clears its failure record).
	r.Instance, r.Reason = c, FailureReason(c, 11, api.StageCommand, "exited with status 1")
	st = r.Status(map[string]api.Instance{c: enrolled(r, api.Instance{Instance: c, Applied: 12})}, 13, time.Time{})
	if st.Instances[0].State != "failed" || st.Instances[0].Error != r.Reason {
		t.Fatalf("halted status: %+v", st.Instances[0])
	}
}

// Once aborted (or halted), an instance of the cohort is applied only when the end (or a
// report taken before it, counted since) put it in AppliedBy: its record saying the candidate,
// from a report taken after the end (its reload was still running), does not make it applied.
func TestStatus_AbortedCountsOnlyAppliedBy(t *testing.T) {
	r := rec(5)
	r.Steps = []int{2, 5}
	c := r.Cohort()
	r.State = api.RolloutAborted
	r.AppliedBy = []string{c[0]}
	st := r.Status(map[string]api.Instance{
		c[0]: enrolled(r, api.Instance{Instance: c[0], Applied: 12}),
		c[1]: enrolled(r, api.Instance{Instance: c[1], Applied: 11, Rollout: "r1"}),
	}, 13, time.Time{})
	if st.Instances[0].State != "applied" || st.Instances[1].State != "pending" {
		t.Fatalf("aborted status: %+v, want %s applied and %s pending", st.Instances, c[0], c[1])
	}
}

// Once promoted (rev is the promotion's revision), the candidate is the live tree, which agents
// report without the rollout's id: an instance of the cohort that reported the live tree at
// or after the promotion shows applied, and so does one whose report is still of the
// candidate, applied before the promotion (it showed pending); one that reported neither
// (nothing, or the live tree before the promotion) pending: its live view brings it the
// promoted tree.
func TestStatus_Promoted(t *testing.T) {
	r := rec(5)
	r.State, r.Step = api.RolloutPromoted, len(r.Steps)-1
	c := r.Cohort()
	if len(c) < 4 {
		t.Fatalf("cohort %v, want 4 or more", c)
	}
	st := r.Status(map[string]api.Instance{
		c[0]: enrolled(r, api.Instance{Instance: c[0], Applied: 20}),
		c[1]: enrolled(r, api.Instance{Instance: c[1], Applied: 19, Rollout: "r1"}),
		c[3]: enrolled(r, api.Instance{Instance: c[3], Applied: 15}),
	}, 20, time.Time{})
	want := map[string]string{c[0]: "applied", c[1]: "applied", c[2]: "pending", c[3]: "pending"}
	for _, ri := range st.Instances {
		if w, ok := want[ri.Instance]; ok && ri.State != w {
			t.Errorf("promoted rollout: %s is %q, want %q", ri.Instance, ri.State, w)
		}
	}
}

// An instance outside a promoted rollout's cohort gets the live tree, the candidate: it shows
// applied once it reported the promotion's revision, else pending; never a state DESIGN.md
// does not list for an instance.
func TestStatus_PromotedOutsideTheCohort(t *testing.T) {
	r := rec(5)
	r.State, r.Step = api.RolloutPromoted, 0
	out := r.Instances[len(r.Cohort()):]
	if len(out) < 2 {
		t.Fatalf("cohort %v leaves fewer than 2 of %v out", r.Cohort(), r.Instances)
	}
	st := r.Status(map[string]api.Instance{out[0]: enrolled(r, api.Instance{Instance: out[0], Applied: 20})}, 20, time.Time{})
	want := map[string]string{out[0]: "applied", out[1]: "pending"}
	for _, ri := range st.Instances {
		if w, ok := want[ri.Instance]; ok && ri.State != w {
			t.Errorf("instance %s outside the cohort: state %q, want %q", ri.Instance, ri.State, w)
		}
		if !slices.Contains([]string{"waiting", "pending", "applied", "failed"}, ri.State) {
			t.Errorf("instance %s: state %q is not one DESIGN.md lists", ri.Instance, ri.State)
		}
	}
}

// A shared change gives shared/ as it leaves it: puts win, deletes go, the rest stays; a nil
// change is no change.
func TestSharedChange(t *testing.T) {
	c := &SharedChange{Puts: map[string]string{"ntp": "new", "dns": "9.9.9.9"}, Deletes: []string{"old"}}
	live := map[string]string{"ntp": "pool", "old": "x", "keep": "k"}
	got := c.Apply(live)
	if len(got) != 3 || got["ntp"] != "new" || got["dns"] != "9.9.9.9" || got["keep"] != "k" {
		t.Fatalf("Apply: %v", got)
	}
	if live["ntp"] != "pool" || live["old"] != "x" {
		t.Fatalf("Apply changed its argument: %v", live)
	}
	for _, tc := range []struct {
		key, v string
		ok     bool
		want   string
		wantOK bool
	}{{"ntp", "pool", true, "new", true}, {"old", "x", true, "", false}, {"keep", "k", true, "k", true}, {"none", "", false, "", false}} {
		if v, ok := c.Value(tc.key, tc.v, tc.ok); v != tc.want || ok != tc.wantOK {
			t.Errorf("Value(%s) = %q %v", tc.key, v, ok)
		}
	}
	var none *SharedChange
	if v, ok := none.Value("ntp", "pool", true); v != "pool" || !ok || none.Keys() != nil {
		t.Fatal("a nil change changes something")
	}
	if k := c.Keys(); len(k) != 3 || k[0] != "dns" || k[1] != "ntp" || k[2] != "old" {
		t.Fatalf("Keys: %v", k)
	}
}
