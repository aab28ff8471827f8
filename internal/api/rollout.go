package api

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"
)

// Rollouts, reports and enrollment: how a change reaches a share of an appliance's fleet first.
const (
	// HeaderRollout names the rollout a view belongs to: the server sends it with a candidate
	// view (and as View.Rollout); an agent sends it back with X-Shoelace-Applied when the
	// revision it applied was of that rollout's candidate.
	HeaderRollout = "X-Shoelace-Rollout"
)

// Rollout states. Halted and aborted are final, like promoted: the next write with a canary
// starts a new rollout.
const (
	RolloutRunning  = "running"
	RolloutHalted   = "halted"
	RolloutPromoted = "promoted"
	RolloutAborted  = "aborted"
)

// CodeRolloutInProgress refuses a plain write to an appliance while a rollout of it runs.
const CodeRolloutInProgress = "rollout_in_progress"

// Report is the body of POST /v1/appliances/{name}/report: what an agent's last pass did with
// the view at Revision. Applied is the last revision at which every template was in place
// (as X-Shoelace-Applied says); Rollout names the rollout of the view it rendered ("" for the
// live view). Error, when set, says why the pass at Revision failed: a render, a check, or a
// reload or health command (Stage names which: render, check, command, health).
type Report struct {
	Instance string `json:"instance"`
	Revision int64  `json:"revision"`
	Applied  int64  `json:"applied"`
	Rollout  string `json:"rollout,omitempty"`
	Error    string `json:"error,omitempty"`
	Stage    string `json:"stage,omitempty"`
	Template string `json:"template,omitempty"`
	Version  string `json:"version,omitempty"` // the agent's version
	// AppliedRollout names the rollout whose candidate Applied was of ("" for the live view):
	// after a failed pass it is not Rollout, the rollout of the view that failed. It goes as
	// X-Shoelace-Rollout beside X-Shoelace-Applied, as a long-poll's do, not in the body: an
	// older server refuses a body with a field it does not know, and ignores the headers.
	AppliedRollout string `json:"-"`
}

// Report stages.
const (
	StageRender  = "render"
	StageCheck   = "check"
	StageCommand = "command"
	StageHealth  = "health"
)

// Enroll is the body of POST /v1/appliances/{name}/enroll (with the appliance's agent token):
// it obtains a token bound to one instance of the appliance.
type Enroll struct {
	Instance string `json:"instance"`
}

// Enrolled answers an enrollment: the instance token, shown only this once.
type Enrolled struct {
	Appliance string    `json:"appliance"`
	Instance  string    `json:"instance"`
	Token     string    `json:"token"`
	Enrolled  time.Time `json:"enrolled"`
	// Store is the store id of the server that answered (its X-Shoelace-Store), not in the body.
	Store string `json:"-"`
}

// RolloutStrategy is how a rollout proceeds. Canary and Step are shares of the instances in
// (0, 1]; Step 0 means all the rest at once. Bake is how long a cohort must run the candidate
// without a failure before the next step; Deadline how long a cohort may take to report it.
type RolloutStrategy struct {
	Canary   float64  `json:"canary"`
	Step     float64  `json:"step,omitempty"`
	Bake     Duration `json:"bake"`
	Deadline Duration `json:"deadline"`
	Manual   bool     `json:"manual,omitempty"`
}

// Shares says the strategy's canary and step as percentages ("canary 7%, step 20%"), as
// operators wrote them: a share's float, 0.07 from 7%, times 100 is 7.000000000000001.
func (st RolloutStrategy) Shares() string {
	s := "canary " + Percent(st.Canary)
	if st.Step > 0 {
		s += ", step " + Percent(st.Step)
	}
	return s
}

// Percent writes share (1 = 100%) as a percentage to at most six decimals, without a float's
// artefacts of binary fractions: 0.07 is "7%", 0.29 "29%", 0.123456789 "12.345679%".
func Percent(share float64) string {
	return strconv.FormatFloat(math.Round(share*100e6)/1e6, 'f', -1, 64) + "%"
}

// Duration is a time.Duration that JSON writes as a Go duration string ("5m0s").
type Duration time.Duration

// RolloutInstance is one instance of a rollout as its status shows it.
type RolloutInstance struct {
	Instance string     `json:"instance"`
	Cohort   int        `json:"cohort"` // the step that brought it the candidate (0: the canary); -1: not yet
	State    string     `json:"state"`  // waiting (not in a cohort yet), pending, applied, failed
	Applied  int64      `json:"applied"`
	Error    string     `json:"error,omitempty"`
	LastSeen *time.Time `json:"last_seen,omitempty"`
}

// RolloutStatus answers GET /v1/appliances/{name}/rollout (404 when the appliance never had one).
type RolloutStatus struct {
	Appliance string          `json:"appliance"`
	ID        string          `json:"id"`
	State     string          `json:"state"`
	Strategy  RolloutStrategy `json:"strategy"`
	// Step is the current step (0: the canary) of Steps, the cumulative cohort sizes; Cohort
	// the instances that have the candidate now.
	Step        int               `json:"step"`
	Steps       []int             `json:"steps"`
	Cohort      []string          `json:"cohort"`
	Instances   []RolloutInstance `json:"instances"`
	Started     time.Time         `json:"started"`
	StepStarted time.Time         `json:"step_started"`
	// BakedSince is when every instance of the cohort had applied the candidate, while it bakes.
	BakedSince *time.Time `json:"baked_since,omitempty"`
	Ended      *time.Time `json:"ended,omitempty"`
	// Reason says why it halted or was aborted, naming the instance and its error.
	Reason   string `json:"reason,omitempty"`
	Instance string `json:"instance,omitempty"` // the instance that halted it
	// Revision is the revision at which the rollout record was last written; Release the
	// revision of the release that promoted it.
	Revision int64  `json:"revision"`
	Release  int64  `json:"release,omitempty"`
	Message  string `json:"message,omitempty"`
	Source   string `json:"source,omitempty"`
	Token    string `json:"token,omitempty"`
	Kind     string `json:"kind,omitempty"` // the write that started it: apply, put, txn, rollback
	// Group is, for a change to shared/ rolled out (--canary on shared/ keys), the id of the
	// group of rollouts (one per appliance) it belongs to; Shared the shared/ keys it puts or
	// deletes (relative to shared/). GroupReady says that this appliance has passed its last
	// step and waits for the others of the group: the change goes live when all have.
	Group      string   `json:"group,omitempty"`
	Shared     []string `json:"shared,omitempty"`
	GroupReady bool     `json:"group_ready,omitempty"`
}

// WaitsForPromote says whether rollout st, a manual one, waits for a promote by hand: it runs
// and every instance of its cohort has applied the change (rollout status and the console say so).
func (st RolloutStatus) WaitsForPromote() bool {
	if st.State != RolloutRunning || !st.Strategy.Manual || st.GroupReady || len(st.Cohort) == 0 {
		return false
	}
	applied := 0
	for _, in := range st.Instances {
		if slices.Contains(st.Cohort, in.Instance) && in.State == "applied" {
			applied++
		}
	}
	return applied == len(st.Cohort)
}

// Progress says how many of a running rollout's instances get the candidate (its cohort) and
// how many of those applied it.
func (st RolloutStatus) Progress() string {
	applied := 0
	for _, in := range st.Instances {
		if in.Cohort >= 0 && in.State == "applied" {
			applied++
		}
	}
	return fmt.Sprintf("%d of %d instances get the change, %d of them applied it", len(st.Cohort), len(st.Instances), applied)
}

// RolloutAction is the body of POST /v1/appliances/{name}/rollout: "promote" (the next step
// now, without waiting for the bake) or "abort" (the canaries go back to the live view).
// Rollout and Step, when set, are what the caller saw: the action is refused (409) when the
// running rollout is another one, or, for a promote, at another step (0 = the canary, as
// RolloutStatus.Step counts), so that a promote sent as a step ends does not skip the next
// step's bake.
type RolloutAction struct {
	Action  string `json:"action"`
	Rollout string `json:"rollout,omitempty"`
	Step    *int   `json:"step,omitempty"`
}

// MarshalJSON writes d as a Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return []byte(`"` + time.Duration(d).String() + `"`), nil
}

// UnmarshalJSON reads a Go duration string ("5m") or a number of nanoseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	s := string(b)
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		v, err := time.ParseDuration(s[1 : len(s)-1])
		if err != nil {
			return err
		}
		*d = Duration(v)
		return nil
	}
	var n int64
	for i, c := range s {
		if c < '0' || c > '9' || i > 18 {
			return Errorf(CodeInvalidBody, "a duration is a string such as \"5m\", not %.40s", s)
		}
		n = n*10 + int64(c-'0')
	}
	*d = Duration(n)
	return nil
}

// SharedRolloutStatus answers (202) a write of shared/ keys with canary: the group of
// rollouts it started, one per appliance with instances to draw (each followed as any
// rollout, GET /v1/appliances/{name}/rollout, whose Group is Group).
type SharedRolloutStatus struct {
	Group    string   `json:"group"`
	State    string   `json:"state"`
	Revision int64    `json:"revision"`
	Shared   []string `json:"shared"` // the shared/ keys it puts or deletes (relative)
	// Appliances is how many appliances have a rollout in the group; Rollouts those of them
	// the writer's token may read.
	Appliances int             `json:"appliances"`
	Rollouts   []RolloutStatus `json:"rollouts"`
}

// ShownInstanceState is an instance's state in a rollout whose state is rollout, as rollout
// status and the console show it: once the rollout halted or was aborted nothing waits for an
// instance any more, so pending is "not applied" and waiting "not reached".
func ShownInstanceState(rollout, state string) string {
	if rollout != RolloutHalted && rollout != RolloutAborted {
		return state
	}
	switch state {
	case "pending":
		return "not applied"
	case "waiting":
		return "not reached"
	}
	return state
}

// CohortName is the cohort of a rollout's instance as rollout status and the console show it,
// the steps counted from 1 as "step N of M" is: the canary, "step N", or none (in no cohort yet).
func CohortName(cohort int, none string) string {
	switch {
	case cohort == 0:
		return "canary"
	case cohort > 0:
		return "step " + strconv.Itoa(cohort+1)
	}
	return none
}
