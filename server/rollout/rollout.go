// Package rollout holds what a staged rollout is and how it moves: its record (kept by the
// server in etcd), the order in which an appliance's instances receive a candidate, the cohort
// sizes of each step, and the gate that decides, from the instances' reports, whether a step
// bakes, advances, or halts. It does no I/O: the server stores the record, serves the candidate
// view to the cohort and applies the decisions (server/rollouts.go).
package rollout

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// Keys of the rollouts among the server's system keys.
const (
	// Prefix holds each appliance's current or last rollout: Prefix+<appliance>.
	Prefix = "rollouts/"
	// ActivePrefix+<appliance> exists while that appliance's rollout runs: every plain write to
	// the appliance's keys is guarded on its absence.
	ActivePrefix = "rollout-active/"
	// GroupKey holds the id of the shared rollout group that runs (one at a time), and
	// LockedPrefix+<key> (a shared/ key) exists while that group changes the key: every plain
	// write of the key is guarded on its absence.
	GroupKey     = "rollout-group"
	LockedPrefix = "rollout-locked/"
)

// DefaultDeadline is how long a cohort may take to report the candidate before the rollout halts.
const DefaultDeadline = 30 * time.Minute

// Record is a rollout as stored in etcd (JSON under Prefix+<appliance>).
type Record struct {
	ID        string              `json:"id"`
	Appliance string              `json:"appliance"`
	State     string              `json:"state"`
	Strategy  api.RolloutStrategy `json:"strategy"`
	// Candidate is the appliance's own tree (relative to appliances/<name>/) that the rollout
	// brings; Base the revision at which its instances were read to be drawn (see Drawn).
	Candidate map[string]string `json:"candidate"`
	Base      int64             `json:"base"`
	// Instances are the instances drawn at the start, in rollout order; Steps the cumulative
	// cohort sizes (the last is len(Instances)); Step the current one.
	Instances   []string  `json:"instances"`
	Steps       []int     `json:"steps"`
	Step        int       `json:"step"`
	Started     time.Time `json:"started"`
	StepStarted time.Time `json:"step_started"`
	// Ready says that the step's promote was asked for (manual rollouts) before the cohort baked.
	Promote  bool       `json:"promote,omitempty"`
	Ended    *time.Time `json:"ended,omitempty"`
	Reason   string     `json:"reason,omitempty"`
	Instance string     `json:"instance,omitempty"`
	Release  int64      `json:"release,omitempty"`
	Message  string     `json:"message,omitempty"`
	Source   string     `json:"source,omitempty"`
	Token    string     `json:"token,omitempty"`
	Kind     string     `json:"kind,omitempty"`
	// RollbackTo is, for a rollback rolled out, the revision it restores.
	RollbackTo int64 `json:"rollback_to,omitempty"`
	// Group is, for a change to shared/ rolled out (one rollout per appliance, all of one
	// group), the group's id; Shared that change. Candidate is then the appliance's own tree
	// as it was when the group started (the rollout holds it so). Ready says that the
	// rollout has passed its last step and waits for the group's others.
	Group  string        `json:"group,omitempty"`
	Shared *SharedChange `json:"shared,omitempty"`
	Ready  bool          `json:"ready,omitempty"`
	// Cause is, for a rollout of a group ended because another appliance's rollout of the
	// group halted or was aborted, that appliance: its Reason carries the other's reason,
	// which only readers of that appliance are shown.
	Cause string `json:"cause,omitempty"`
	// AppliedBy are, for a rollout that halted or was aborted, the instances of its cohort
	// that had applied the candidate when it ended: their agents go back to the live view,
	// and their reports then no longer say so.
	AppliedBy []string `json:"applied_by,omitempty"`
}

// End ends r in state (halted or aborted) at now for reason, naming instance, and keeps
// which instances of its cohort had applied the candidate, from their reports.
func (r *Record) End(state, reason, instance string, now time.Time, reports map[string]api.Instance) {
	r.State, r.Reason, r.Instance, r.Ended = state, reason, instance, &now
	r.AppliedBy = nil
	r.AddApplied(reports)
}

// AddApplied adds to AppliedBy the instances of r's cohort that reports say applied the
// candidate and that it does not hold yet, and reports whether it added any. A report may
// reach the store after the reports were read for End (taken by a replica before the end,
// and written after it): the caller gives only such reports, never one taken after the end.
// Only a rollout that halted or was aborted keeps AppliedBy.
func (r *Record) AddApplied(reports map[string]api.Instance) bool {
	if r.State != api.RolloutHalted && r.State != api.RolloutAborted {
		return false
	}
	added := false
	for _, name := range r.Cohort() {
		if in, ok := reports[name]; ok && r.applied(in, 1) && !slices.Contains(r.AppliedBy, name) {
			r.AppliedBy = append(r.AppliedBy, name)
			added = true
		}
	}
	return added
}

// SharedChange is a change to shared/ that a group of rollouts brings: keys put (with their
// values) and keys deleted, relative to shared/.
type SharedChange struct {
	Puts    map[string]string `json:"puts,omitempty"`
	Deletes []string          `json:"deletes,omitempty"`
}

// Apply returns shared (the live shared/ tree, relative keys) as the change leaves it; shared
// itself is not changed.
func (c *SharedChange) Apply(shared map[string]string) map[string]string {
	out := make(map[string]string, len(shared)+len(c.Puts))
	for k, v := range shared {
		out[k] = v
	}
	for _, k := range c.Deletes {
		delete(out, k)
	}
	for k, v := range c.Puts {
		out[k] = v
	}
	return out
}

// Value returns key's value in shared/ as the change leaves it, given its live value (v, ok).
func (c *SharedChange) Value(key, v string, ok bool) (string, bool) {
	if c == nil {
		return v, ok
	}
	if nv, put := c.Puts[key]; put {
		return nv, true
	}
	if slices.Contains(c.Deletes, key) {
		return "", false
	}
	return v, ok
}

// Keys returns the keys the change puts or deletes (relative to shared/), sorted.
func (c *SharedChange) Keys() []string {
	if c == nil {
		return nil
	}
	out := slices.Clone(c.Deletes)
	for k := range c.Puts {
		out = append(out, k)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Running reports whether the rollout still runs.
func (r *Record) Running() bool { return r != nil && r.State == api.RolloutRunning }

// Cohort returns the instances that have the candidate at the current step.
func (r *Record) Cohort() []string {
	if len(r.Steps) == 0 {
		return nil
	}
	return r.Instances[:r.Steps[min(r.Step, len(r.Steps)-1)]]
}

// InCohort reports whether instance has the candidate now: the rollout runs and the instance
// is among the current cohort.
func (r *Record) InCohort(instance string) bool {
	return r.Running() && instance != "" && slices.Contains(r.Cohort(), instance)
}

// cohortOf returns the step that brought instance the candidate, or -1.
func (r *Record) cohortOf(instance string) int {
	i := slices.Index(r.Instances, instance)
	if i < 0 {
		return -1
	}
	for s, n := range r.Steps {
		if i < n {
			return s
		}
	}
	return -1
}

// Order returns names in rollout order: sorted by a hash of each name, so that an instance
// keeps its place (and so its cohort) across restarts whatever else joins or leaves.
func Order(names []string) []string {
	out := slices.Clone(names)
	h := func(s string) uint64 {
		sum := sha256.Sum256([]byte(s))
		return binary.BigEndian.Uint64(sum[:8])
	}
	slices.SortFunc(out, func(a, b string) int {
		ha, hb := h(a), h(b)
		switch {
		case ha < hb:
			return -1
		case ha > hb:
			return 1
		}
		return strings.Compare(a, b)
	})
	return out
}

// Steps returns the cumulative cohort sizes for n instances: ⌈canary × n⌉ (at least one) first,
// then ⌈step × n⌉ more at each step (all the rest at once when step is 0), ending at n.
func Steps(n int, canary, step float64) []int {
	if n <= 0 {
		return nil
	}
	size := func(share float64) int {
		// A share such as 0.1 × 30 must give 3, not 4: drop the float noise before rounding up.
		return max(1, int(math.Ceil(share*float64(n)-1e-9)))
	}
	out := []int{min(n, size(canary))}
	for out[len(out)-1] < n {
		next := n
		if step > 0 {
			next = min(n, out[len(out)-1]+size(step))
		}
		out = append(out, next)
	}
	return out
}

// ValidID reports whether id ("" for none) is made like the ids rollouts get (the server's
// releaseIDFor): digits, lowercase hex and '-'.
func ValidID(id string) bool {
	for _, c := range []byte(id) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || c == '-') {
			return false
		}
	}
	return true
}

// ParseShare reads a share of the fleet: "10%", "0.1" or "1" (all); it must be in (0, 100%].
func ParseShare(what, s string) (float64, error) {
	t := strings.TrimSpace(s)
	pct := strings.HasSuffix(t, "%")
	t = strings.TrimSuffix(t, "%")
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || math.IsNaN(f) {
		return 0, fmt.Errorf("%s must be a share of the instances such as 10%% or 0.1, not %q", what, s)
	}
	if pct {
		f /= 100
	}
	if f <= 0 || f > 1 {
		return 0, fmt.Errorf("%s %q is not a share in (0%%, 100%%]", what, s)
	}
	return f, nil
}

// Decision is what the gate decided for a running rollout.
type Decision struct {
	Action Action
	// Reason says why (a halt names the instance and its error).
	Reason   string
	Instance string
	// BakedSince is when the cohort was first seen all applied (kept by the caller between
	// evaluations; zero while it is not).
	BakedSince time.Time
}

// Action is a gate's outcome.
type Action int

const (
	Wait    Action = iota // nothing to do yet
	Advance               // the next step (or, at the last, promote)
	Halt                  // a failure or a deadline: the cohort goes back to the live view
)

// Counts reports whether in is a report the gate may count: one of the enrolled instance,
// enrolled when the rollout drew its instances. An instance enrolled since (its name taken over
// once stale, or freed with forget and enrolled again) is not the instance that was drawn; nor
// is a report made without an instance token.
func (r *Record) Counts(in api.Instance) bool {
	return in.Enrolled && in.EnrolledAt != nil && r.Drawn(in.EnrolledRevision, *in.EnrolledAt)
}

// Drawn reports whether an instance enrolled at revision rev (0: not known), at time at, was
// enrolled when r drew its instances, as they were at revision Base. Revisions decide: the
// replicas' clocks may differ, and an instance enrolled again just after the start, through a
// replica whose clock is behind, had a time before it. The time decides only for an enrollment
// whose revision is not known (a record of an older server).
func (r *Record) Drawn(rev int64, at time.Time) bool {
	if rev > 0 && r.Base > 0 {
		return rev <= r.Base
	}
	return !at.After(r.Started)
}

// applied reports whether in has reported the rollout's candidate as applied at or after the
// current step began (rev), without a failure of it.
func (r *Record) applied(in api.Instance, rev int64) bool {
	return r.Counts(in) && in.Rollout == r.ID && in.Applied >= rev && in.ErrorRollout != r.ID
}

// Evaluate decides, from the instances' reports (by name), what the rollout at record revision
// rev (the revision the current step began at) does now. bakedSince is what the previous
// evaluation returned. Only reports that Counts are looked at. Any instance that reports a failure of this rollout halts it; a cohort
// that has not all reported the candidate within the deadline halts it; a cohort all applied
// for the bake time advances it (for manual rollouts only once promote was asked for).
func (r *Record) Evaluate(reports map[string]api.Instance, rev int64, bakedSince, now time.Time) Decision {
	for _, name := range r.Cohort() {
		if in, ok := reports[name]; ok && r.Counts(in) && in.ErrorRollout == r.ID && in.Error != "" {
			return Decision{Action: Halt, Instance: name,
				Reason: FailureReason(name, in.ErrorRevision, in.ErrorStage, in.Error)}
		}
	}
	var missing []string
	for _, name := range r.Cohort() {
		if in, ok := reports[name]; !ok || !r.applied(in, rev) {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		if d := time.Duration(r.Strategy.Deadline); d > 0 && now.Sub(r.StepStarted) >= d {
			return Decision{Action: Halt, Instance: missing[0],
				Reason: fmt.Sprintf("instance %s has not reported the candidate within the deadline of %s (%d of the cohort of %d have not)", missing[0], d, len(missing), len(r.Cohort()))}
		}
		return Decision{Action: Wait, Reason: fmt.Sprintf("waiting for %d of %d instances to apply the candidate", len(missing), len(r.Cohort()))}
	}
	if bakedSince.IsZero() {
		bakedSince = now
	}
	bake := time.Duration(r.Strategy.Bake)
	if now.Sub(bakedSince) < bake && !r.Promote {
		return Decision{Action: Wait, BakedSince: bakedSince, Reason: fmt.Sprintf("baking until %s", bakedSince.Add(bake).UTC().Format(time.RFC3339))}
	}
	if r.Strategy.Manual && !r.Promote {
		return Decision{Action: Wait, BakedSince: bakedSince, Reason: "baked: waiting for `shoelace appliance rollout promote`"}
	}
	return Decision{Action: Advance, BakedSince: bakedSince}
}

// FailureReason is why a rollout halts when instance failed its candidate at revision rev, in
// stage ("" when not reported), with error err.
func FailureReason(instance string, rev int64, stage, err string) string {
	return fmt.Sprintf("instance %s failed the candidate at revision %d (%s): %s", instance, rev, cmp.Or(stage, "stage not reported"), err)
}

// Status is the record as GET .../rollout answers it, with each instance's state from reports.
func (r *Record) Status(reports map[string]api.Instance, rev int64, bakedSince time.Time) api.RolloutStatus {
	st := api.RolloutStatus{Appliance: r.Appliance, ID: r.ID, State: r.State, Strategy: r.Strategy, Step: r.Step,
		Steps: r.Steps, Cohort: r.Cohort(), Started: r.Started, StepStarted: r.StepStarted, Ended: r.Ended,
		Reason: r.Reason, Instance: r.Instance, Revision: rev, Release: r.Release, Message: r.Message, Source: r.Source,
		Token: r.Token, Kind: r.Kind, Instances: []api.RolloutInstance{}, Group: r.Group, Shared: r.Shared.Keys(),
		GroupReady: r.Ready && r.Running()}
	if st.Cohort == nil {
		st.Cohort = []string{}
	}
	if !bakedSince.IsZero() && r.Running() {
		st.BakedSince = &bakedSince
	}
	cohort := r.Cohort()
	for _, name := range r.Instances {
		ri := api.RolloutInstance{Instance: name, Cohort: r.cohortOf(name), State: "waiting"}
		in, seen := reports[name]
		if seen = seen && r.Counts(in); seen {
			ri.Applied = in.Applied
			t := in.LastSeen
			ri.LastSeen = &t
			if in.ErrorRollout == r.ID {
				ri.Error = in.Error
			}
		}
		if ri.Error == "" && r.State == api.RolloutHalted && name == r.Instance {
			// Its agent reports its next good pass on the live view, which clears the
			// failure record: the halt keeps what it failed with.
			ri.Error = r.Reason
		}
		switch {
		case ri.Error != "":
			ri.State = "failed"
		case !slices.Contains(cohort, name) && r.State != api.RolloutPromoted:
			// Not drawn (yet): it stays waiting. Once promoted, the candidate is the live tree,
			// which every instance gets: applied or pending as below.
		case seen && r.Running() && r.applied(in, 1):
			// As the gates judge it (Evaluate): rev is the record's revision, which a
			// promote or a step rewrites without changing what the instance applied.
			ri.State = "applied"
		case slices.Contains(r.AppliedBy, name):
			// Halted or aborted: it had applied the candidate, and is back on the live view.
			// Only AppliedBy says so: a report of the candidate taken after the end (its reload
			// was still running) did not apply it for the rollout, though the instance's
			// record says what it applied until it reports the live view.
			ri.State = "applied"
		case seen && r.State == api.RolloutPromoted && r.applied(in, 1):
			// Promoted: it applied the candidate, which the promotion made the live tree (the
			// gates took no step without it). Its report is of the candidate until its agent's
			// next pass, at a revision before the promotion's (rev): counted from rev, as
			// before, every instance of a rollout promoted by hand showed pending, and one
			// whose agent stopped since stayed so.
			ri.State = "applied"
		case seen && r.State == api.RolloutPromoted && in.Applied >= rev:
			// Promoted (rev is the promotion's revision): the candidate is the live tree now,
			// which the instance reports applied without the rollout's id: it stays applied.
			ri.State = "applied"
		default:
			// Running: of the cohort, it has not applied the candidate yet. Promoted: it
			// reported neither the candidate nor the live tree since the promotion, which
			// brings it the promoted tree with its live view.
			ri.State = "pending"
		}
		if !slices.Contains(cohort, name) && ri.State == "waiting" {
			ri.Cohort = r.cohortOf(name)
		}
		st.Instances = append(st.Instances, ri)
	}
	return st
}
