package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/client"
	"github.com/shoelace-dev/shoelace/server/rollout"
)

// rolloutFlags are the flags of a write that may start a rollout instead of changing every
// instance at once (appliance apply and rollback, kv put, txn).
func rolloutFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "canary", Usage: "start a staged rollout: the `SHARE` of the appliance's enrolled instances (10% or 0.1) that get the change first; the live keys change only when it is promoted (for a shared/ key: one rollout per appliance with enrolled instances, and shared/ changes when all are promoted)"},
		&cli.StringFlag{Name: "step", Usage: "with --canary: the `SHARE` of instances added at each step after the canary (default: all the rest at once)"},
		&cli.DurationFlag{Name: "bake", Usage: "with --canary: how long (`D`, such as 5m) each cohort must run the change without a failure before the next step"},
		&cli.DurationFlag{Name: "deadline", Value: 30 * time.Minute, Usage: "with --canary: halt when a cohort has not applied the change within `D`"},
		&cli.BoolFlag{Name: "manual", Usage: "with --canary: wait for shoelace appliance rollout promote at each step"},
		forceFlag(),
	}
}

// forceFlag lets a plain write abort the appliance's rollout in progress.
func forceFlag() cli.Flag {
	return &cli.BoolFlag{Name: "force", Usage: "abort the rollout in progress, then write (without it such a write is refused, exit 7); when the rollout belongs to a shared rollout group, or the key is a shared/ key a group changes, the whole group is aborted"}
}

// rolloutQuery turns the rollout flags of c into the write's query parameters.
func rolloutQuery(c *cli.Context) url.Values {
	q := url.Values{}
	if v := c.String("canary"); v != "" {
		q.Set("canary", v)
		if v := c.String("step"); v != "" {
			q.Set("step", v)
		}
		if c.IsSet("bake") {
			q.Set("bake", c.Duration("bake").String())
		}
		if c.IsSet("deadline") {
			q.Set("deadline", c.Duration("deadline").String())
		}
		if c.Bool("manual") {
			q.Set("manual", "true")
		}
	}
	if c.Bool("force") {
		q.Set("force", "true")
	}
	return q
}

// checkRolloutFlags refuses strategy flags without --canary, and --canary with --force.
func checkRolloutFlags(c *cli.Context) error {
	if c.String("canary") == "" {
		for _, f := range []string{"step", "bake", "deadline", "manual"} {
			if c.IsSet(f) {
				return usagef("%s--%s needs --canary (the share of instances that get the change first)", errPrefix(c), f)
			}
		}
		return nil
	}
	if c.Bool("force") {
		return usagef("%s--force aborts a rollout for a plain write; a write with --canary starts one: give one of them", errPrefix(c))
	}
	// The server checks them too; a mistyped flag is a usage error here (exit 2), not a refusal.
	for _, f := range []string{"canary", "step"} {
		if v := c.String(f); c.IsSet(f) {
			if _, err := rollout.ParseShare(f, v); err != nil {
				return usagef("%s--%s: %v", errPrefix(c), f, err)
			}
		}
	}
	if d := c.Duration("bake"); d < 0 {
		return usagef("%s--bake %s: must not be negative", errPrefix(c), d)
	}
	if d := c.Duration("deadline"); d <= 0 {
		return usagef("%s--deadline %s: must be above 0 (a silent canary must not stall a rollout for ever)", errPrefix(c), d)
	}
	return nil
}

// printRolloutStarted tells that a write, answered at revision rev (the rollout's start),
// started a rollout of appliance name instead of changing the live keys.
func (e *cliEnv) printRolloutStarted(s *session, name string, rev int64) error {
	st, _, err := s.client.Rollout(s.ctx, name)
	if err != nil {
		return err
	}
	if s.json {
		return printJSON(e.stdout, st)
	}
	if st.State != api.RolloutRunning {
		// It ended (a canary that failed at once, an abort) before this asked: say so, and
		// print the write's revision, not the end's.
		fmt.Fprintf(e.stderr, "rollout %s of %s started and has %s already: %s; see shoelace appliance rollout status %s\n",
			st.ID, name, st.State, cmp.Or(st.Reason, "promoted"), name)
	} else {
		fmt.Fprintf(e.stderr, "rollout %s of %s started: %d of %d instances get the change first (%s); follow it with: shoelace appliance rollout status %s\n",
			st.ID, name, len(st.Cohort), len(st.Instances), strings.Join(st.Cohort, ", "), name)
	}
	return printRevision(e.stdout, false, rev)
}

// printCanaryWrite tells what a kv put or txn of appliance name's keys sent with --canary did:
// started a rollout, or, when it changed nothing, wrote nothing and started none.
func (e *cliEnv) printCanaryWrite(s *session, c *cli.Context, name string, res api.WriteResult) error {
	if !res.Unchanged {
		return e.printRolloutStarted(s, name, res.Revision)
	}
	return e.printUnchanged(s, res, "appliance "+name+" already holds these values", noRollout(c))
}

// printUnchanged tells that a write changed nothing (held: what held its values already):
// nothing written, no release recorded (and, for one sent with --canary, noRollout says no
// rollout started). It prints the revision, or res with --output json.
func (e *cliEnv) printUnchanged(s *session, res api.WriteResult, held, noRollout string) error {
	if s.json {
		return printJSON(e.stdout, res)
	}
	fmt.Fprintf(e.stderr, "%s: nothing written, no release recorded%s\n", held, noRollout)
	return printRevision(e.stdout, false, res.Revision)
}

// printSharedRolloutStarted tells that a change to shared/ started a group of rollouts, one
// per appliance with enrolled instances, instead of changing the live keys.
func (e *cliEnv) printSharedRolloutStarted(s *session, g client.SharedCanaryResult) error {
	if g.Unchanged {
		// shared/ held the change already: no group, nothing written.
		return e.printUnchanged(s, api.WriteResult{Revision: g.Revision, Unchanged: true},
			"shared/ already holds these values", ", no rollout started")
	}
	if s.json {
		return printJSON(e.stdout, g.SharedRolloutStatus)
	}
	var names []string
	for _, st := range g.Rollouts {
		names = append(names, st.Appliance)
		fmt.Fprintf(e.stderr, "rollout %s of %s started: %d of %d instances get the change first (%s)\n",
			st.ID, st.Appliance, len(st.Cohort), len(st.Instances), strings.Join(st.Cohort, ", "))
	}
	on := strings.Join(names, ", ")
	if len(names) < g.Appliances {
		on = fmt.Sprintf("%d appliances (%d of them shown to this token)", g.Appliances, len(names))
	}
	fmt.Fprintf(e.stderr, "shared rollout group %s started on %s: shared/ changes when every one of them is promoted, and no appliance gets it if one halts; follow each with: shoelace appliance rollout status NAME\n",
		g.Group, on)
	return printRevision(e.stdout, false, g.Revision)
}

func rolloutCommand(e *cliEnv) *cli.Command {
	sub := func(name, usage, description string, action cli.ActionFunc, flags ...cli.Flag) *cli.Command {
		return &cli.Command{Name: name, Usage: usage, ArgsUsage: "NAME", Action: action, Flags: flags,
			Description: description + "\n\nEXAMPLES:\n   shoelace appliance rollout " + name + " web-frontend"}
	}
	stepFlag := &cli.IntFlag{Name: "step", Usage: "promote only if the rollout is still at step `N`, as rollout status prints it (1 = the canary); exit 4 when it has moved on"}
	idFlag := func(action string) cli.Flag {
		return &cli.StringFlag{Name: "rollout", Usage: action + " only if the running rollout is `ID`, as rollout status prints it; exit 4 when another runs"}
	}
	return &cli.Command{
		Name:      "rollout",
		Usage:     "follow, promote or abort an appliance's staged rollout",
		UsageText: "shoelace appliance rollout status|promote|abort NAME [flags]",
		Description: `A write with --canary (appliance apply, appliance rollback, kv put, txn) starts a rollout: the
appliance's live keys stay as they are, a share of its enrolled instances (in an order drawn
from their names, so a VM keeps its place) gets the new keys first, then more at each --step
once every instance of the cohort has applied them for --bake without a failure. A failed
render, check, reload or health command on any of them, or a cohort that has not applied the
change within --deadline, halts the rollout: those instances go back to the live keys (and
their agents restore their previous files). The last step writes the change to the live keys
as a release.

kv put shared/KEY VALUE --canary starts one rollout per appliance with enrolled instances, all
of one group (status shows it): an appliance done with its last step waits for the others, and
shared/KEY is written when all are done; a halt or abort of any ends every one of them.

promote and abort exit 4 when no rollout of the appliance runs, and 3 when the server holds
nothing of it (no key, release, instance, schema or rollout: a mistyped name); status exits 3
when the appliance never had a rollout.

EXAMPLES:
   shoelace appliance apply web -f web.yaml --canary 10% --step 25% --bake 5m
   shoelace appliance rollout status web
   shoelace appliance rollout promote web     # the next step now (manual rollouts wait for it)
   shoelace appliance rollout abort web       # every instance back on the live keys`,
		Subcommands: []*cli.Command{
			sub("status", "print the appliance's current or last rollout: state, step, cohort, each instance",
				`Prints the running rollout of NAME, or its last one: its state, step and cohort, then each
instance drawn, with its state and error. With --output json, the rollout as the API answers it.
Exit 3 when the appliance never had a rollout.`, e.rolloutStatus),
			sub("promote", "move a running rollout to its next step now, without waiting for the bake",
				`Moves the running rollout of NAME to its next step at once, without waiting for the cohort's
bake (a --manual rollout waits for it at every step); after the last step the change is written
to the live keys. Prints the rollout once it has taken the step (within a few seconds); when
the cohort has not all applied the change yet, the step waits for it, and stderr says so.
With --step N, only if the rollout is still at step N (as rollout status prints it) and no
promote of that step was taken yet: a promote sent as a step ends would otherwise skip the next
step's bake. With --rollout ID, only if ID is the rollout running: after the rollout you looked
at ended and another started, the other is not promoted (past its canary's bake) by mistake.
Exit 4 when no rollout of NAME runs, or (--step) it is at another step or that step's promote was
taken already, or (--rollout) another rollout runs.`, e.rolloutAction("promote"), stepFlag, idFlag("promote")),
			sub("abort", "end a running rollout: every instance goes back to the live keys",
				`Ends the running rollout of NAME: nothing is written to the live keys, and every instance that
had the change goes back to them (their agents restore the previous files). For a rollout of a
shared rollout group, the whole group ends. With --rollout ID, only if ID is the rollout
running. Exit 4 when no rollout of NAME runs, or (--rollout) another one runs.`, e.rolloutAction("abort"), idFlag("abort")),
		},
	}
}

func (e *cliEnv) rolloutStatus(c *cli.Context) error {
	name, s, err := e.connectAppliance(c)
	if err != nil {
		return err
	}
	defer s.cancel()
	st, _, err := s.client.Rollout(s.ctx, name)
	if err != nil {
		return err
	}
	if s.json {
		return printJSON(e.stdout, st)
	}
	return printRollout(e.stdout, st)
}

func (e *cliEnv) rolloutAction(action string) cli.ActionFunc {
	return func(c *cli.Context) error {
		name, s, err := e.connectAppliance(c)
		if err != nil {
			return err
		}
		defer s.cancel()
		act := api.RolloutAction{Action: action, Rollout: c.String("rollout")}
		// The server checks it too; a mistyped or unset ID is a usage error here (exit 2), and
		// an empty one would drop the guard it was given for.
		if c.IsSet("rollout") && (act.Rollout == "" || !rollout.ValidID(act.Rollout)) {
			return usagef("%s--rollout %q: must be a rollout id as rollout status prints it (digits, a-f and -)", errPrefix(c), act.Rollout)
		}
		if c.IsSet("step") {
			n := c.Int("step")
			if n < 1 {
				return usagef("%s--step %d: must be a step as rollout status prints it (1 = the canary)", errPrefix(c), n)
			}
			n-- // the API counts from 0 (the canary)
			act.Step = &n
		}
		st, err := s.client.RolloutActionIf(s.ctx, name, act)
		if err != nil {
			return err
		}
		// (A rollout of a group that passed its last step waits for the others: no step to take.)
		asked := action == "promote" && st.State == api.RolloutRunning && !st.GroupReady
		if asked {
			// The replica moving the rollouts takes the step within a moment: the answer
			// shows the rollout before it. Print it once it moved (a short while at most).
			st, asked = e.afterPromote(s, name, st)
		}
		if s.json {
			return printJSON(e.stdout, st)
		}
		if asked {
			fmt.Fprintf(e.stderr, "promote of rollout %s of %s recorded: its next step is taken once every instance of the cohort has applied the change\n", st.ID, name)
			return printRolloutAs(e.stdout, st, false)
		}
		return printRollout(e.stdout, st)
	}
}

// afterPromote reads rollout st of appliance name, just promoted, until it took its next step,
// ended or, in a group, passed its last step (for up to 5 s): the rollout then, and whether it
// still waits for the step.
func (e *cliEnv) afterPromote(s *session, name string, st api.RolloutStatus) (api.RolloutStatus, bool) {
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); {
		select {
		case <-time.After(100 * time.Millisecond):
		case <-s.ctx.Done():
			return st, true
		}
		now, _, err := s.client.Rollout(s.ctx, name)
		if err != nil || now.ID != st.ID {
			return st, true
		}
		if now.State != api.RolloutRunning || now.Step != st.Step || now.GroupReady {
			return now, false
		}
		st = now
	}
	return st, true
}

// printRollout prints a rollout's status for people.
func printRollout(w io.Writer, st api.RolloutStatus) error {
	return printRolloutAs(w, st, true)
}

// printRolloutAs is printRollout; hint says, of a --manual rollout whose cohort applied the
// change, that it waits for a promote (not after one was just asked for).
func printRolloutAs(w io.Writer, st api.RolloutStatus, hint bool) error {
	fmt.Fprintf(w, "rollout %s of %s: %s", st.ID, st.Appliance, st.State)
	ended := st.State == api.RolloutHalted || st.State == api.RolloutAborted
	if ended {
		fmt.Fprint(w, ", its cohort is back on the live view")
	}
	if st.State == api.RolloutRunning {
		fmt.Fprintf(w, ", step %d of %d (%s)", st.Step+1, len(st.Steps), st.Progress())
		if st.BakedSince != nil {
			fmt.Fprintf(w, ", baking since %s", st.BakedSince.Local().Format(time.TimeOnly))
		}
		if hint && st.WaitsForPromote() {
			fmt.Fprintf(w, ", waiting for shoelace appliance rollout promote %s", st.Appliance)
		}
	}
	fmt.Fprintln(w)
	if st.Group != "" {
		keys := strings.Join(st.Shared, ", ")
		if keys == "" {
			keys = "this token may not read"
		}
		fmt.Fprintf(w, "  shared rollout group %s of shared/ keys %s", st.Group, keys)
		if st.GroupReady {
			fmt.Fprint(w, ": every step passed, waiting for the other appliances of the group")
		}
		fmt.Fprintln(w)
	}
	if st.Reason != "" {
		fmt.Fprintf(w, "  reason: %s\n", oneLine(st.Reason))
	}
	strat := st.Strategy.Shares() + fmt.Sprintf(", bake %s, deadline %s", time.Duration(st.Strategy.Bake), time.Duration(st.Strategy.Deadline))
	if st.Strategy.Manual {
		strat += ", manual"
	}
	fmt.Fprintf(w, "  strategy: %s\n  started: %s by %s (%s)", strat, st.Started.Local().Format(time.DateTime), orDash(st.Token), orDash(st.Kind))
	if st.Message != "" {
		fmt.Fprintf(w, ": %s", oneLine(st.Message))
	}
	fmt.Fprintln(w)
	for _, in := range st.Instances {
		cohort, state := api.CohortName(in.Cohort, "-"), api.ShownInstanceState(st.State, in.State)
		line := fmt.Sprintf("  %-24s %-8s %-11s applied %d", in.Instance, cohort, state, in.Applied)
		switch {
		case in.Error != "" && in.Error == st.Reason:
			line += "  (the reason above)"
		case in.Error != "":
			line += "  error: " + oneLine(in.Error)
		case st.State == api.RolloutPromoted && in.State == "pending":
			// Nothing holds it back, as nothing waits for it: the promotion made the change
			// the live tree, and its agent has not reported applying it yet.
			line += "  (gets the change with the live view; not reported yet)"
		}
		fmt.Fprintln(w, line)
	}
	return nil
}

// waitingFor says what appliance wait waits for while rollout st runs.
func waitingFor(st api.RolloutStatus) string {
	if st.WaitsForPromote() {
		return "waiting for shoelace appliance rollout promote " + st.Appliance
	}
	return "waiting"
}

// errRolloutEnded is how appliance wait reports a rollout that halted or was aborted (exit 7).
func rolloutEnded(st api.RolloutStatus) error {
	return &exitCodeError{code: exitUnknown, err: fmt.Errorf("appliance wait %s: rollout %s %s: %s", st.Appliance, st.ID, st.State, orDash(oneLine(st.Reason)))}
}

// lastChange reports whether the rollout st, ended, is the last change of appliance name: its
// start (halted, aborted) or its promotion is the appliance's newest release. A pipeline that
// writes with --canary and then runs appliance wait without --revision gets the end of its
// rollout even when it came before the wait asked.
func (e *cliEnv) lastChange(ctx context.Context, s *session, name string, st api.RolloutStatus, ask time.Duration) bool {
	// A rollout of a shared rollout group started and ended with releases of shared/.
	actx, cancel := askCtx(ctx, ask)
	h, err := s.client.ApplianceReleases(actx, name, 1, 0, st.Group != "")
	cancel()
	if err != nil || len(h.Releases) == 0 {
		return false
	}
	last := h.Releases[0]
	return (last.Kind == api.KindRollout && last.Rollout == st.ID) || (st.Group != "" && last.Kind == api.KindRollout && last.Rollout == st.Group) ||
		(st.Release > 0 && last.Revision == st.Release)
}

// startedBefore reports whether the ended rollout st of appliance name started before revision
// rev: its start release (kind rollout, naming it or its group) is older than rev. The record's
// own revision does not tell: its end, and a report racing the end, write it after the start,
// and a write made after the end may print that very revision (an apply that changed nothing
// prints the view's last change, which the end is). When the releases do not tell (not kept,
// not readable), the record's revision decides, as it did.
func (e *cliEnv) startedBefore(ctx context.Context, s *session, name string, st api.RolloutStatus, rev int64, ask time.Duration) bool {
	if st.Revision < rev {
		return true
	}
	id := cmp.Or(st.Group, st.ID)
	before := st.Revision + 1 // the start is at or before the record's last write
	for range 10 {
		actx, cancel := askCtx(ctx, ask)
		h, err := s.client.ApplianceReleases(actx, name, 100, before, st.Group != "")
		cancel()
		if err != nil {
			return false
		}
		for _, r := range h.Releases {
			if r.Kind == api.KindRollout && r.Rollout == id {
				return r.Revision < rev
			}
			if r.Revision < rev {
				return true // every release from rev on was seen: the start is older
			}
		}
		if h.Next == 0 || len(h.Releases) == 0 {
			return false
		}
		before = h.Next
	}
	return false
}

// askCtx bounds one request of appliance wait by --timeout (ask; 0: never), as its help says:
// the wait as a whole has no deadline of the session's, and asks again until --for ends, so a
// server that takes the connection and never answers must not hold it past them.
func askCtx(parent context.Context, ask time.Duration) (context.Context, context.CancelFunc) {
	if ask > 0 {
		return context.WithTimeout(parent, ask)
	}
	return parent, func() {}
}

// waitRollout follows appliance name's rollout started at or after revision rev (when rev is 0,
// the running one, or the ended one that is the appliance's last change) until it ends: nil when promoted, rolloutEnded when halted or aborted.
// It reports false when there is no such rollout (the plain wait applies).
func (e *cliEnv) waitRollout(ctx context.Context, s *session, name string, rev int64, every, ask time.Duration, deadline time.Time) (bool, error) {
	said := time.Now()
	for seen := false; ; seen = true {
		actx, cancel := askCtx(ctx, ask)
		st, _, err := s.client.Rollout(actx, name)
		cancel()
		if errors.Is(err, api.ErrNotFound) {
			return false, nil
		}
		if err != nil && !seen && rev > 0 {
			return false, nil // the plain wait asks again, and says so
		}
		if err == nil {
			switch {
			case st.State == api.RolloutRunning && (rev == 0 || seen):
				// The one this wait follows: without --revision any running rollout, with
				// one the rollout found at the first ask to have started at or after it.
			case rev > 0 && e.startedBefore(ctx, s, name, st, rev, ask):
				return false, nil // an older rollout: not the one this wait is about
			case rev == 0 && !seen && !e.lastChange(ctx, s, name, st, ask):
				return false, nil // the appliance was written since: not the one this wait is about
			}
			switch st.State {
			case api.RolloutPromoted:
				if s.json {
					return true, printJSON(e.stdout, st)
				}
				_, err := fmt.Fprintf(e.stdout, "rollout %s of %s promoted to all %d instances (revision %d)\n", st.ID, name, len(st.Instances), st.Revision)
				return true, err
			case api.RolloutHalted, api.RolloutAborted:
				if s.json {
					_ = printJSON(e.stdout, st)
				}
				return true, rolloutEnded(st)
			}
			if now := time.Now(); now.Sub(said) >= waitProgressEvery {
				fmt.Fprintf(e.stderr, "appliance wait %s: rollout %s step %d of %d, %s; %s\n",
					name, st.ID, st.Step+1, len(st.Steps), st.Progress(), waitingFor(st))
				said = now
			}
		} else if exitCode(err) != exitUnavailable {
			return true, err
		}
		if !time.Now().Before(deadline) {
			if err != nil {
				return true, fmt.Errorf("appliance wait %s: the server still fails: %w", name, err)
			}
			if st.WaitsForPromote() {
				return true, fmt.Errorf("appliance wait %s: the rollout has not ended after the time given with --for: it is --manual, %s", name, waitingFor(st))
			}
			return true, fmt.Errorf("appliance wait %s: the rollout has not ended after the time given with --for", name)
		}
		if err := pauseUntil(ctx, every, deadline); err != nil {
			return true, err
		}
	}
}
