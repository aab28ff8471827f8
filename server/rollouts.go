package server

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/server/rollout"
	"github.com/shoelace-dev/shoelace/server/store"
)

// Staged rollouts (server/rollout holds the record and the gate).
//
// A write with ?canary= does not change the live tree: it stores a rollout record (with the
// candidate tree) under sys/rollouts/<name> and marks the rollout active. Every replica keeps
// the records in memory from its watch; a long-poll of an instance in the current cohort is
// answered with shared/ + the candidate, the others with the live view. One replica at a time
// (elected through etcd) moves the running rollouts: it reads the instances' reports, lets a
// cohort bake, advances a step, halts, or promotes the candidate to the live tree in one
// transaction. A failure report of the candidate halts the rollout at once on the replica that
// took it. Every change of a record is compare-and-swap on its mod_revision.

// rolloutTick is how often the elected replica looks at the running rollouts.
const rolloutTick = 250 * time.Millisecond

// reportErrorPrefix holds the last failure each instance reported (POST .../report), apart from
// its record under instances/ that long-polls refresh: reportErrorPrefix<appliance>/<instance>.
const reportErrorPrefix = "instance-errors/"

// rolloutSet is what this replica knows of the rollouts, from its watch.
type rolloutSet struct {
	mu sync.RWMutex
	m  map[string]*rollout.Record // by appliance
	// at is the revision of the record m holds of each appliance (or of its deletion), and
	// floor that of the last load: a record written here is set once its write returns, which
	// can be after the watch brought a later one (another write, here or elsewhere); it must
	// not take that one's place.
	at    map[string]int64
	floor int64
	// baked is, on the elected replica, when each running rollout's cohort was first seen
	// all applied (by rollout id); a new leader lets the cohort bake again.
	baked map[string]time.Time
	// leading is set while this replica is the one that moves the rollouts.
	leading atomic.Bool
	// read is, on the elected replica, each running rollout's reports as last read for its
	// gate, and when (by rollout id); readCost is what gateCost gives for them all.
	read     map[string]gateRead
	readCost int
}

type gateRead struct {
	at      time.Time
	reports map[string]api.Instance
}

// gateReadEvery is how long the gate of a rollout goes on with the reports it read, when the
// gates of all the running rollouts cost n (gateCost): every tick up to 500, then one tick more
// per 500, so that a large fleet (or made-up instance names of an appliance token), or a shared
// rollout group over many appliances, cannot make the elected replica read megabytes of
// records, or hundreds of appliances' records, four times a second for the whole rollout: the
// gates read at most about 500 records, and 10 appliances' records, a tick together. A failure
// report halts a rollout at once anyway, on the replica that takes it.
func gateReadEvery(n int) time.Duration {
	return rolloutTick * time.Duration(1+n/500)
}

// gateCost is what one read of a gate's n instance records counts for gateReadEvery: the
// records and their instance tokens' (read with them for the revisions of their enrollments),
// and a read of etcd (two: the rollout's record is read with them, see stepRollout).
func gateCost(n int) int { return 2*n + 50 }

// readGateReports is instanceReports for the gate; tests replace it to watch the reads.
var readGateReports = (*Server).instanceReports

// gateReports returns the reports the gate of rollout id of appliance name judges by: those
// read last, or, when they are gateReadEvery old or fresh is asked for, read now (fresh).
func (s *Server) gateReports(ctx context.Context, name, id string, fresh bool) (map[string]api.Instance, bool, error) {
	now := time.Now()
	if last, ok := s.rollouts.lastGateRead(id, now); ok && !fresh {
		return last, false, nil
	}
	reports, _, err := readGateReports(s, ctx, name)
	if err != nil {
		return nil, false, err
	}
	s.rollouts.mu.Lock()
	if s.rollouts.read == nil {
		s.rollouts.read = map[string]gateRead{}
	}
	if last, ok := s.rollouts.read[id]; ok {
		s.rollouts.readCost -= gateCost(len(last.reports))
	}
	s.rollouts.read[id] = gateRead{at: now, reports: reports}
	s.rollouts.readCost += gateCost(len(reports))
	s.rollouts.mu.Unlock()
	return reports, true, nil
}

// lastGateRead returns the reports the gate of rollout id read last, unless they are due to be
// read again at now (gateReadEvery of what all the gates read).
func (rs *rolloutSet) lastGateRead(id string, now time.Time) (map[string]api.Instance, bool) {
	rs.mu.RLock()
	defer rs.mu.RUnlock()
	last, ok := rs.read[id]
	if !ok || now.Sub(last.at) >= gateReadEvery(rs.readCost) {
		return nil, false
	}
	return last.reports, true
}

// forgetGates drops what the gates read for rollouts that no longer run.
func (rs *rolloutSet) forgetGates() {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	running := map[string]bool{}
	for _, r := range rs.m {
		if r.Running() {
			running[r.ID] = true
		}
	}
	for id, last := range rs.read {
		if !running[id] {
			rs.readCost -= gateCost(len(last.reports))
			delete(rs.read, id)
		}
	}
}

func (rs *rolloutSet) get(name string) *rollout.Record {
	rs.mu.RLock()
	defer rs.mu.RUnlock()
	return rs.m[name]
}

// running lists the appliances whose rollout runs.
func (rs *rolloutSet) running() []string {
	rs.mu.RLock()
	defer rs.mu.RUnlock()
	var out []string
	for n, r := range rs.m {
		if r.Running() {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// set records appliance name's rollout record as written at revision rev, by a watch event or
// a write of this replica (nil: none), unless a later one is known.
func (rs *rolloutSet) set(name string, rec *rollout.Record, rev int64) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rev < rs.floor || rev < rs.at[name] {
		return
	}
	if rs.m == nil {
		rs.m, rs.at = map[string]*rollout.Record{}, map[string]int64{}
	}
	rs.at[name] = rev
	if rec == nil {
		delete(rs.m, name)
		return
	}
	rs.m[name] = rec
}

// replace makes recs, read at revision rev, all that is known, and returns what was.
func (rs *rolloutSet) replace(recs map[string]*rollout.Record, rev int64) map[string]*rollout.Record {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	old := rs.m
	rs.m, rs.at, rs.floor = recs, map[string]int64{}, rev
	return old
}

// load replaces what is known with the records of m (system keys under rollout.Prefix), read
// at revision rev.
func (s *Server) loadRollouts(m map[string][]byte, rev int64) {
	recs := map[string]*rollout.Record{}
	for k, v := range m {
		name, ok := strings.CutPrefix(k, rollout.Prefix)
		if !ok {
			continue
		}
		var rec rollout.Record
		if err := json.Unmarshal(v, &rec); err != nil {
			s.log.Warn("unreadable rollout record", "appliance", name, "err", err)
			continue
		}
		recs[name] = &rec
	}
	old := s.rollouts.replace(recs, rev)
	for name := range recs {
		if !sameRollout(old[name], recs[name]) {
			s.hub.touch(name, s.hub.current())
		}
	}
}

func sameRollout(a, b *rollout.Record) bool {
	return a != nil && b != nil && a.ID == b.ID && a.State == b.State && a.Step == b.Step
}

// rolloutChanged applies a watch event of appliance name's rollout record, then wakes the
// appliance's long-polls: the cohort's view changed (the record is known before they wake).
func (s *Server) rolloutChanged(name string, c store.SysChange, rev int64) {
	if c.Deleted {
		s.rollouts.set(name, nil, rev)
	} else {
		var rec rollout.Record
		if err := json.Unmarshal(c.Value, &rec); err != nil {
			s.log.Warn("unreadable rollout record", "appliance", name, "err", err)
			return
		}
		s.rollouts.set(name, &rec, rev)
	}
	s.hub.touch(name, rev)
}

// candidateFor returns the running rollout whose cohort holds the instance whose instance token
// p is, or nil. Only the instance itself gets the candidate: the fleet's appliance token (which
// anyone on any VM may hold) naming a cohort's instance in X-Shoelace-Instance gets the live
// view, and so does every other token, the token of a name enrolled again since the rollout
// started (taken over once stale, or forgotten and enrolled again) too: the gates do not count
// its reports (Record.Counts), so neither its failure nor its silence is the drawn instance's.
func (s *Server) candidateFor(name string, p *principal) *rollout.Record {
	if rec := s.rollouts.get(name); p.instance != "" && rec.InCohort(p.instance) && drawnHolder(rec, p) {
		return rec
	}
	return nil
}

// candidateCheckWait bounds how long candidateStill waits for this replica to handle the
// system keys up to a candidate view's revision: the hub handles them as it applies the watch
// event, within milliseconds of the mirror or a fresh read seeing the revision.
const candidateCheckWait = 2 * time.Second

// candidateStill reports whether rec is still the rollout whose candidate p's instance gets
// once this replica has handled the system keys up to rev, the revision of the candidate view
// about to be answered. A view read at a revision past them (a fresh read of the store, or the
// mirror ahead of the hub by one event) may be of a store where the rollout has ended (an abort
// through another replica): the candidate answered so, at the end's revision, stayed the
// agent's, as its next long-poll, from that revision, was not woken by the end. It is an
// unavailable error (retry) when the replica does not reach rev in time.
//
//go:noinline
func (s *Server) candidateStill(ctx context.Context, name string, p *principal, rec *rollout.Record, rev int64) (bool, error) {
	if s.hub.current() < rev && !s.hub.reaches(ctx, rev, candidateCheckWait) {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		e := api.Errorf(api.CodeUnavailable, "this replica has not yet handled revision %d of the store, whose view of appliance %s it read; retry", rev, name)
		e.RetryAfter = 1
		return false, e
	}
	now := s.candidateFor(name, p)
	return now != nil && now.ID == rec.ID, nil
}

// drawnHolder reports whether p, an instance token of an instance of rec, is the token the
// instance had when rec drew it: enrolled then, as Record.Counts asks of its reports.
func drawnHolder(rec *rollout.Record, p *principal) bool {
	return rec.Drawn(p.enrolledRev, p.enrolled)
}

// rolloutsKnown is an unavailable error while this replica's records of the store (tokens,
// settings, rollouts) may lack changes its watch lost to a compaction and are not read again:
// a rollout ended among them would still give its cohort the candidate.
func (s *Server) rolloutsKnown() error {
	if !s.fresh.reach.stale() {
		return nil
	}
	e := api.Errorf(api.CodeUnavailable, "this replica has not read the store's rollouts again since its watch lost changes (history compacted while it could not watch); retry")
	e.RetryAfter = 2
	return e
}

// rolloutParams reads a write's rollout query parameters: canary (a share) and with it step,
// bake, deadline, manual. It returns nil when the write has no canary, and force, which lets a
// plain write abort a rollout in progress.
func rolloutParams(q url.Values) (st *api.RolloutStrategy, force bool, err error) {
	if force, err = flag(q, "force"); err != nil {
		return nil, false, err
	}
	if !q.Has("canary") {
		for _, p := range []string{"step", "bake", "deadline", "manual"} {
			if q.Has(p) {
				return nil, false, api.Errorf(api.CodeInvalidRequest, "query parameter %s needs canary (the share of instances that get the change first)", p)
			}
		}
		return nil, force, nil
	}
	if force {
		return nil, false, api.Errorf(api.CodeInvalidRequest, "force aborts the rollout in progress for a plain write; a write with canary starts a rollout and cannot take force")
	}
	st = &api.RolloutStrategy{Deadline: api.Duration(rollout.DefaultDeadline)}
	bad := func(err error) error { return api.Errorf(api.CodeInvalidRequest, "%s", err.Error()) }
	if st.Canary, err = rollout.ParseShare("canary", q.Get("canary")); err != nil {
		return nil, false, bad(err)
	}
	if q.Has("step") {
		if st.Step, err = rollout.ParseShare("step", q.Get("step")); err != nil {
			return nil, false, bad(err)
		}
	}
	for _, d := range []struct {
		name string
		to   *api.Duration
	}{{"bake", &st.Bake}, {"deadline", &st.Deadline}} {
		if !q.Has(d.name) {
			continue
		}
		v, err := time.ParseDuration(q.Get(d.name))
		if err != nil || v < 0 || v > 30*24*time.Hour {
			return nil, false, api.Errorf(api.CodeInvalidRequest, "query parameter %s must be a duration such as 5m, between 0 and 720h, not %s", d.name, shorten(q.Get(d.name)))
		}
		*d.to = api.Duration(v)
	}
	if st.Deadline == 0 {
		return nil, false, api.Errorf(api.CodeInvalidRequest, "query parameter deadline must be above 0: a silent canary must not stall a rollout for ever")
	}
	if st.Manual, err = flag(q, "manual"); err != nil {
		return nil, false, err
	}
	return st, false, nil
}

// rolloutQuery are the query parameters rolloutParams reads, for query's allow-list.
var rolloutQuery = []string{"canary", "step", "bake", "deadline", "manual", "force"}

// abortForForce ends appliance name's running rollout, if any, for a plain write sent with
// force (the write itself follows, guarded as usual).
func (s *Server) abortForForce(ctx context.Context, r *http.Request, names ...string) error {
	for _, name := range names {
		if rec := s.rollouts.get(name); rec.Running() || s.rolloutActive(ctx, name) {
			if _, err := s.endRollout(ctx, name, "", api.RolloutAborted, fmt.Sprintf("aborted by a write with force (token %s)", info(r).token), ""); err != nil && !errors.Is(err, errRolloutNotRunning) {
				return err
			}
		}
	}
	return nil
}

// rolloutActive reads whether appliance name's rollout runs, from the store.
func (s *Server) rolloutActive(ctx context.Context, name string) bool {
	_, _, err := s.st.SysGet(ctx, rollout.ActivePrefix+name)
	return err == nil
}

// startRollout creates appliance name's rollout of candidate (the appliance's whole own tree
// as the write would leave it), for the write of kind that r makes.
//
// edit, when not nil, makes the candidate from the live tree (a kv write or txn's edits): a
// plain write of the appliance committed between the read of live and the start is then kept
// in the candidate (its rollout-active key keeps the tree so from the start on), not undone
// by the promotion.
func (s *Server) startRollout(ctx context.Context, w http.ResponseWriter, r *http.Request, name string, live, candidate map[string]string, strat *api.RolloutStrategy, kind string, rollbackTo int64, edit func(map[string]string) map[string]string) error {
	if len(candidate) == 0 {
		return api.Errorf(api.CodeInvalidRequest, "the rollout would leave appliance %q without keys: an appliance without keys has no view to roll out; delete it without canary", name)
	}
	if err := s.st.CheckTree(ctx, name, candidate); err != nil {
		return err
	}
	names, base, err := s.enrolledInstances(ctx, name)
	if err != nil {
		return err
	}
	if len(names) == 0 {
		return api.Errorf(api.CodeConflict, "appliance %q has no enrolled instance seen in the last %s: a canary needs at least one (agents enroll when `shoelace-agent run` starts); write without canary to change every instance at once",
			name, s.cfg.instanceStale())
	}
	now := time.Now().UTC()
	ordered := rollout.Order(names)
	rec := rollout.Record{ID: releaseIDFor(now), Appliance: name, State: api.RolloutRunning, Strategy: *strat, Candidate: candidate, Base: base,
		Instances: ordered, Steps: rollout.Steps(len(ordered), strat.Canary, strat.Step), Started: now, StepStarted: now,
		Message: r.Header.Get(api.HeaderMessage), Source: r.Header.Get(api.HeaderSource), Token: info(r).token, Kind: kind, RollbackTo: rollbackTo}
	data, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if testHookRolloutStart != nil {
		testHookRolloutStart()
	}
	rev, err := s.st.StartRollout(ctx, name, data, rolloutRelease(&rec, live, r.RemoteAddr))
	setIndex(w, rev)
	if err != nil {
		return err
	}
	s.rollouts.set(name, &rec, rev)
	if edit != nil {
		if own, err := s.ownTree(ctx, name); err != nil {
			s.log.Warn("rollout: could not read the tree as the rollout started", "appliance", name, "err", err)
		} else if !maps.Equal(own, live) {
			if err := s.setCandidate(ctx, name, rec.ID, edit(own)); err != nil {
				s.log.Warn("rollout: the candidate of an appliance written to as the rollout started is not caught up", "appliance", name, "err", err)
			}
		}
	}
	s.audit(r, "rollout-start", []string{api.ApplianceRoot(name)}, rev)
	s.log.Info("rollout started", "appliance", name, "rollout", rec.ID, "instances", len(ordered), "steps", rec.Steps, "kind", kind)
	return writeJSON(w, http.StatusAccepted, rev, rec.Status(nil, rev, time.Time{}))
}

// testHookRolloutStart runs, when set (tests), between the reads of a rollout's start and its
// transaction.
var testHookRolloutStart func()

// releaseIDFor names a rollout like a release: sortable by time, unique.
func releaseIDFor(t time.Time) string { return store.NewReleaseID(t) }

// enrolledInstances lists appliance name's instances that may join a rollout: enrolled, and
// seen within --instance-stale.
func (s *Server) enrolledInstances(ctx context.Context, name string) ([]string, int64, error) {
	reports, rev, err := s.instanceReports(ctx, name)
	if err != nil {
		return nil, 0, err
	}
	now := time.Now()
	var out []string
	for n, in := range reports {
		if s.drawable(in, now) {
			out = append(out, n)
		}
	}
	return out, rev, nil
}

// drawable reports whether instance in may join a rollout starting at now: enrolled, and seen
// within --instance-stale.
// An instance whose enrollment's revision is known was enrolled before the read that found it;
// only one without is judged by the time (which another replica's clock wrote).
func (s *Server) drawable(in api.Instance, now time.Time) bool {
	return in.Enrolled && in.EnrolledAt != nil && (in.EnrolledRevision > 0 || in.EnrolledAt.Before(now)) && now.Sub(in.LastSeen) <= s.cfg.instanceStale()
}

// instanceReports reads appliance name's instance records with their last reported failure.
func (s *Server) instanceReports(ctx context.Context, name string) (map[string]api.Instance, int64, error) {
	return s.instanceReportsAt(ctx, name, 0)
}

// instanceReportsAt is instanceReports at revision rev (0: now). With them it reads the records
// of the appliance's instance tokens, and gives each enrolled instance the revision of its
// enrollment (EnrolledRevision), which a rollout's cohort is judged by.
func (s *Server) instanceReportsAt(ctx context.Context, name string, rev int64) (map[string]api.Instance, int64, error) {
	tokens := tokenPrefix + instanceTokenName(name, "")
	// An appliance name has no ':': the span holds the instance tokens of name alone.
	span := store.SysSpan{From: tokens, To: tokens[:len(tokens)-1] + ";"}
	m, read, err := s.st.SysListRevs(ctx, rev, []string{instancePrefix + name + "/", reportErrorPrefix + name + "/"}, span)
	if err != nil {
		return nil, 0, err
	}
	records := make(map[string][]byte, len(m))
	for k, v := range m {
		if !strings.HasPrefix(k, tokenPrefix) {
			records[k] = v.Data
		}
	}
	out := instancesOf(records)[name]
	if out == nil {
		out = map[string]api.Instance{}
	}
	for n, in := range out {
		if in.Enrolled && in.EnrolledAt != nil {
			if tok, ok := m[tokenPrefix+in.Token]; ok && in.Token == instanceTokenName(name, n) {
				in.EnrolledRevision = enrollmentRevision(tok, *in.EnrolledAt)
				out[n] = in
			}
		}
	}
	return out, read, nil
}

// enrollmentRevision is the revision of the enrollment that instance token record tok (as read,
// with its mod_revision) stands for, when that is the enrollment of time at (the instance
// record's: both are written together); else 0.
func enrollmentRevision(tok store.SysValue, at time.Time) int64 {
	var rec tokenRecord
	if json.Unmarshal(tok.Data, &rec) != nil {
		return 0
	}
	rec.rev = tok.Rev
	if !rec.enrolledAt().Equal(at) {
		return 0
	}
	return rec.enrolledRevision()
}

// instancesOf sorts the instance records and failure reports of m (system keys under
// instancePrefix and reportErrorPrefix, of one appliance or all) by appliance and instance, each
// record with its last reported failure.
func instancesOf(m map[string][]byte) map[string]map[string]api.Instance {
	out := map[string]map[string]api.Instance{}
	errs := map[[2]string]api.Instance{}
	for k, v := range m {
		var in api.Instance
		if json.Unmarshal(v, &in) != nil {
			continue
		}
		if rest, ok := strings.CutPrefix(k, instancePrefix); ok {
			if app, n, ok := strings.Cut(rest, "/"); ok {
				if out[app] == nil {
					out[app] = map[string]api.Instance{}
				}
				out[app][n] = in
			}
		} else if rest, ok := strings.CutPrefix(k, reportErrorPrefix); ok {
			if app, n, ok := strings.Cut(rest, "/"); ok {
				errs[[2]string{app, n}] = in
			}
		}
	}
	for k, e := range errs {
		if in, ok := out[k[0]][k[1]]; ok && (e.Token == in.Token || !in.Enrolled) {
			in.Error, in.ErrorRevision, in.ErrorStage, in.ErrorRollout = e.Error, e.ErrorRevision, e.ErrorStage, e.ErrorRollout
			out[k[0]][k[1]] = in
		}
	}
	return out
}

var errRolloutNotRunning = errors.New("no rollout runs")

// readRollout reads appliance name's rollout record from the store, with its mod_revision;
// a 404 naming the appliance when it never had one.
func (s *Server) readRollout(ctx context.Context, name string) (rollout.Record, int64, error) {
	var rec rollout.Record
	data, rev, err := s.st.SysGet(ctx, rollout.Prefix+name)
	if errors.Is(err, api.ErrNotFound) {
		return rec, 0, api.Errorf(api.CodeNotFound, "appliance %q has had no rollout", name)
	}
	if err != nil {
		return rec, 0, err
	}
	if err := json.Unmarshal(data, &rec); err != nil {
		return rec, 0, fmt.Errorf("read the rollout of %s: %w", name, err)
	}
	return rec, rev, nil
}

// endRollout ends appliance name's running rollout (id, when not "", must be its id) in state
// (halted or aborted) for reason; the cohort goes back to the live view.
func (s *Server) endRollout(ctx context.Context, name, id, state, reason, instance string) (api.RolloutStatus, error) {
	for try := 0; ; try++ {
		rec, rev, err := s.readRollout(ctx, name)
		if errors.Is(err, api.ErrNotFound) {
			return api.RolloutStatus{}, errRolloutNotRunning
		}
		if err != nil {
			return api.RolloutStatus{}, err
		}
		if !rec.Running() || (id != "" && rec.ID != id) {
			return rec.Status(nil, rev, time.Time{}), errRolloutNotRunning
		}
		if rec.Group != "" {
			// A rollout of a shared change ends with its whole group.
			reason = fmt.Sprintf("appliance %s: %s", name, reason)
			return s.endGroup(ctx, rec.Group, name, state, reason, instance)
		}
		rec.End(state, reason, instance, time.Now().UTC(), s.endReports(ctx, name))
		if s.endHook != nil {
			s.endHook(name, false)
		}
		out, _ := json.Marshal(rec)
		nrev, err := s.st.UpdateRollout(ctx, name, out, rev, false)
		if errors.Is(err, api.ErrConflict) && try < 5 {
			continue
		}
		if err != nil {
			return api.RolloutStatus{}, err
		}
		s.rollouts.set(name, &rec, nrev)
		s.log.Warn("rollout ended", "appliance", name, "rollout", rec.ID, "state", state, "reason", reason)
		if s.endHook != nil {
			s.endHook(name, true)
		}
		s.countLate(ctx, name, rec.ID, s.reportsAtEnd(ctx, name, nrev))
		return rec.Status(nil, nrev, time.Time{}), nil
	}
}

// countLate adds to the AppliedBy of appliance name's rollout id, once it has ended, the
// instances that reports (by instance) say applied its candidate and that its end did not
// count: their reports, taken before the end, reached the store after the end read them.
// An end calls it with the reports as they were at its write (reportsAtEnd), and the reporter
// after writing reports of a candidate applied, taken while the rollout ran (see takeReport);
// between them, no report is missed, and none taken after the end is counted.
// Errors are logged: the end stands, and its status shows such an instance pending.
func (s *Server) countLate(ctx context.Context, name, id string, reports map[string]api.Instance) {
	if reports == nil {
		return
	}
	for try := 0; try < 5; try++ {
		rec, rev, err := s.readRollout(ctx, name)
		if errors.Is(err, api.ErrNotFound) {
			return
		}
		if err == nil && (rec.ID != id || rec.Running()) {
			return
		}
		if err != nil {
			s.log.Warn("rollout ended: instances that applied it meanwhile not counted", "appliance", name, "rollout", id, "error", err.Error())
			return
		}
		if !rec.AddApplied(reports) {
			return
		}
		out, _ := json.Marshal(rec)
		nrev, err := s.st.UpdateRollout(ctx, name, out, rev, false)
		if errors.Is(err, api.ErrConflict) {
			continue
		}
		if err != nil {
			s.log.Warn("rollout ended: instances that applied it meanwhile not counted", "appliance", name, "rollout", id, "error", err.Error())
			return
		}
		s.rollouts.set(name, &rec, nrev)
		s.log.Info("rollout ended: instances counted that applied it meanwhile", "appliance", name, "rollout", id, "applied_by", len(rec.AppliedBy))
		return
	}
}

// reportsAtEnd are appliance name's instance reports as they were when its rollout's end was
// written, at revision rev, for countLate: each report written before the end, those written
// after endReports read them too. The reports as they are by then would miss an instance that
// went back to the live view meanwhile and reported it: its report of the candidate had found
// the rollout running (the reporter did not count it), and the live view's no longer says the
// candidate was applied; and the reports as they are by then may hold one taken after the
// end, which does not count. nil (countLate counts none) when rev cannot be read: the reports
// written between endReports and the end are then not counted, and show pending.
func (s *Server) reportsAtEnd(ctx context.Context, name string, rev int64) map[string]api.Instance {
	out, _, err := s.instanceReportsAt(ctx, name, rev)
	if err != nil {
		s.log.Warn("rollout ended: the reports at its end cannot be read; the instances that applied it meanwhile are not counted", "appliance", name, "revision", rev, "error", err.Error())
		return nil
	}
	return out
}

// endReports are appliance name's instance reports as a rollout of it ends, to keep which
// instances of its cohort had applied the candidate; none when they cannot be read (the end
// goes on: its status then shows those instances pending).
func (s *Server) endReports(ctx context.Context, name string) map[string]api.Instance {
	reports, _, err := s.instanceReports(ctx, name)
	if err != nil {
		s.log.Warn("rollout ends without knowing which instances applied it", "appliance", name, "error", err.Error())
	}
	return reports
}

// runRollouts moves the running rollouts while this replica is the elected one, until ctx ends.
func (s *Server) runRollouts(ctx context.Context) {
	s.st.Lead(ctx, "rollouts", s.self.ID, func(ctx context.Context) {
		s.log.Info("leading the rollouts")
		s.rollouts.leading.Store(true)
		defer s.rollouts.leading.Store(false)
		t := time.NewTicker(rolloutTick)
		defer t.Stop()
		for {
			for _, name := range s.rollouts.running() {
				if err := s.stepRollout(ctx, name); err != nil && ctx.Err() == nil {
					s.log.Warn("rollout step", "appliance", name, "err", err)
				}
			}
			s.rollouts.forgetGates()
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}, s.log)
}

// readStepRecord is readRollout for stepRollout; tests replace it to count the reads.
var readStepRecord = (*Server).readRollout

// idleStep reports whether appliance name's rollout has nothing to do at this tick, as this
// replica's watch knows its record, judged on the reports its gate read last while they are
// not due to be read again: it waits for its cohort or bakes. Such a tick reads nothing from
// the store (every tick read every running rollout's record: a shared rollout group over 200
// appliances was 800 reads of etcd a second for as long as it ran). A tick that may act (a
// step, a halt, a promotion, a group ready) reads the record and the reports first, as before.
func (s *Server) idleStep(name string) bool {
	known := s.rollouts.get(name)
	if !known.Running() {
		return false
	}
	now := time.Now().UTC()
	reports, ok := s.rollouts.lastGateRead(known.ID, now)
	if !ok {
		return false
	}
	s.rollouts.mu.RLock()
	baked := s.rollouts.baked[known.ID]
	s.rollouts.mu.RUnlock()
	d := known.Evaluate(reports, 1, baked, now)
	if d.Action != rollout.Wait || known.Ready && known.Group != "" && s.rollouts.groupReady(known.Group) {
		// A step or a promotion that maintenance holds (see stepRollout) is nothing to do
		// either, until the reports are due to be read again.
		return d.Action != rollout.Halt && s.writable() != nil
	}
	s.rollouts.mu.Lock()
	if d.BakedSince.IsZero() {
		delete(s.rollouts.baked, known.ID)
	} else {
		if s.rollouts.baked == nil {
			s.rollouts.baked = map[string]time.Time{}
		}
		s.rollouts.baked[known.ID] = d.BakedSince
	}
	s.rollouts.mu.Unlock()
	return true
}

// stepRollout evaluates appliance name's running rollout once and acts on the decision.
func (s *Server) stepRollout(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if s.idleStep(name) {
		return nil
	}
	rec, rev, err := readStepRecord(s, ctx, name)
	if err != nil {
		return err
	}
	if !rec.Running() {
		return nil
	}
	reports, fresh, err := s.gateReports(ctx, name, rec.ID, false)
	if err != nil {
		return err
	}
	s.rollouts.mu.Lock()
	if s.rollouts.baked == nil {
		s.rollouts.baked = map[string]time.Time{}
	}
	baked := s.rollouts.baked[rec.ID]
	s.rollouts.mu.Unlock()
	now := time.Now().UTC()
	d := rec.Evaluate(reports, 1, baked, now)
	if d.Action != rollout.Wait && !fresh {
		// Act only on what the instances say now.
		if reports, _, err = s.gateReports(ctx, name, rec.ID, true); err != nil {
			return err
		}
		d = rec.Evaluate(reports, 1, baked, now)
	}
	setBaked := func(t time.Time) {
		s.rollouts.mu.Lock()
		if t.IsZero() {
			delete(s.rollouts.baked, rec.ID)
		} else {
			s.rollouts.baked[rec.ID] = t
		}
		s.rollouts.mu.Unlock()
	}
	switch d.Action {
	case rollout.Wait:
		setBaked(d.BakedSince)
		if rec.Ready && rec.Group != "" {
			// Passed its last step (a manual one waits for no promote again): the group may
			// be all ready now, also after a leader went away between the last two.
			return s.groupStepDone(ctx, name, rec, rev)
		}
		return nil
	case rollout.Halt:
		setBaked(time.Time{})
		_, err := s.endRollout(ctx, name, rec.ID, api.RolloutHalted, d.Reason, d.Instance)
		if errors.Is(err, errRolloutNotRunning) {
			return nil
		}
		return err
	}
	if s.writable() != nil {
		// Maintenance (or a disk short of space) holds what writes: the next step, which a
		// promote by hand would take and which is refused meanwhile, and the promotion, which
		// writes the live keys. Halts go on; the step is taken once writes are.
		return nil
	}
	setBaked(time.Time{})
	if rec.Step+1 < len(rec.Steps) {
		rec.Step++
		rec.StepStarted, rec.Promote = now, false
		out, _ := json.Marshal(rec)
		nrev, err := s.st.UpdateRollout(ctx, name, out, rev, true)
		if err != nil {
			return err
		}
		s.rollouts.set(name, &rec, nrev)
		s.log.Info("rollout advanced", "appliance", name, "rollout", rec.ID, "step", rec.Step, "cohort", rec.Steps[rec.Step], "of", len(rec.Instances))
		return nil
	}
	if rec.Group != "" {
		return s.groupStepDone(ctx, name, rec, rev)
	}
	err = s.promote(ctx, name, rec, rev)
	if ae := (*api.Error)(nil); errors.As(err, &ae) && ae.Code == api.CodeSchemaViolation {
		// A schema set since the rollout started refuses the candidate: trying again every
		// tick would hold the appliance's writes until someone aborts.
		if _, err := s.endRollout(ctx, name, rec.ID, api.RolloutHalted, "the candidate breaks the appliance's schema as it is now: "+ae.Message, ""); err != nil && !errors.Is(err, errRolloutNotRunning) {
			return err
		}
		return nil
	}
	return err
}

// promote writes the rollout's candidate to the live tree, as a release, in one transaction
// with the rollout's final record.
func (s *Server) promote(ctx context.Context, name string, rec rollout.Record, rev int64) error {
	now := time.Now().UTC()
	rec.State, rec.Ended, rec.Promote = api.RolloutPromoted, &now, false
	out, _ := json.Marshal(rec)
	kind := api.KindApply
	msg := fmt.Sprintf("rollout %s promoted", rec.ID)
	if rec.Kind == api.KindRollback {
		kind = api.KindRollback
		msg = fmt.Sprintf("rollback of %s to revision %d, by rollout %s", name, rec.RollbackTo, rec.ID)
	}
	if rec.Message != "" {
		msg += ": " + rec.Message
	}
	ri := store.ReleaseInfo{Token: rec.Token, Remote: "rollout " + rec.ID, Message: msg, Source: rec.Source, Kind: kind, Appliance: name, RollbackTo: rec.RollbackTo}
	if s.sealer != nil {
		ri.Seal = s.sealer.seal
	}
	wctx := store.WithPromotion(store.WithRelease(ctx, ri), name, out, rev)
	lrev, err := s.st.Apply(wctx, name, maps.Clone(rec.Candidate), -1)
	if err != nil {
		return fmt.Errorf("promote rollout %s: %w", rec.ID, err)
	}
	s.kickPruner()
	s.rollouts.set(name, &rec, lrev)
	s.auditLine(ctx, auditWho{token: rec.Token, message: msg, source: rec.Source}, "rollout-promote", []string{api.ApplianceRoot(name)}, lrev, slog.String("rollout", rec.ID))
	s.log.Info("rollout promoted", "appliance", name, "rollout", rec.ID, "revision", lrev)
	return nil
}

func (s *Server) handleGetRollout(w http.ResponseWriter, r *http.Request) error {
	if _, err := query(r); err != nil {
		return err
	}
	name := r.PathValue("name")
	if err := api.ValidateSegment("appliance name", name); err != nil {
		return err
	}
	if err := principalOf(r).mayRead(api.ApplianceRoot(name)); err != nil {
		return forbidden("token %s may not read the rollout of %s: that needs a read grant on %s/", shorten(principalOf(r).name), shorten(name), api.ApplianceRoot(name))
	}
	ctx, cancel := s.opCtx(r)
	defer cancel()
	st, rev, err := s.rolloutStatus(ctx, name, principalOf(r))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, rev, st)
}

// rolloutStatus is appliance name's current or last rollout as p is shown it, with each
// instance's state from its reports, and the revision the reports were read at (after the
// record's: the answer's X-Shoelace-Index, as every answer's is the revision read at).
func (s *Server) rolloutStatus(ctx context.Context, name string, p *principal) (api.RolloutStatus, int64, error) {
	rec, rev, err := s.readRollout(ctx, name)
	if err != nil {
		return api.RolloutStatus{}, 0, err
	}
	reports, read, err := s.instanceReports(ctx, name)
	if err != nil {
		return api.RolloutStatus{}, 0, err
	}
	s.rollouts.mu.RLock()
	baked := s.rollouts.baked[rec.ID]
	s.rollouts.mu.RUnlock()
	st := shownStatus(rec.Status(reports, rev, baked), rec.Cause, p)
	if rec.State == api.RolloutPromoted {
		st.Release = rev
	}
	return st, max(rev, read), nil
}

// actionAnswer is the answer to a promote or abort that left st: the rollout as a status
// request shows it, each instance with the state its reports give, for a token that may read
// them (st itself was made without them: every instance pending, nothing applied).
func (s *Server) actionAnswer(ctx context.Context, name string, st api.RolloutStatus, p *principal) api.RolloutStatus {
	if p.mayRead(api.ApplianceRoot(name)) != nil {
		return st
	}
	now, _, err := s.rolloutStatus(ctx, name, p)
	if err != nil || now.ID != st.ID {
		return st
	}
	return now
}

func (s *Server) handlePostRollout(w http.ResponseWriter, r *http.Request) error {
	if _, err := query(r); err != nil {
		return err
	}
	name := r.PathValue("name")
	if err := api.ValidateSegment("appliance name", name); err != nil {
		return err
	}
	if err := principalOf(r).mayWrite(api.ApplianceRoot(name)); err != nil {
		return err
	}
	if err := s.writable(); err != nil {
		return err
	}
	if err := jsonContent(r); err != nil {
		return err
	}
	data, err := readBody(w, r, 4096, func() error {
		return api.Errorf(api.CodeBodyTooLarge, "rollout action body is over the limit of 4096 bytes")
	})
	if err != nil {
		return err
	}
	var act api.RolloutAction
	if err := strictJSON(data, &act); err != nil {
		return err
	}
	if act.Step != nil && (act.Action != "promote" || *act.Step < 0) {
		return api.Errorf(api.CodeInvalidRequest, "a rollout action's step is a promote's, of the step it promotes (0 = the canary, as the rollout's status counts)")
	}
	if !rollout.ValidID(act.Rollout) {
		return api.Errorf(api.CodeInvalidRequest, "a rollout action's rollout must be a rollout id as a status gives it (digits, a-f and -), not %s", shorten(act.Rollout))
	}
	ctx, cancel := s.opCtx(r)
	defer cancel()
	switch act.Action {
	case "abort":
		st, err := s.endRollout(ctx, name, act.Rollout, api.RolloutAborted, fmt.Sprintf("aborted by token %s", info(r).token), "")
		if errors.Is(err, errRolloutNotRunning) {
			if act.Rollout != "" && st.State == api.RolloutRunning {
				return staleRolloutAction(name, st.ID, st.Step, len(st.Steps), act) // another one runs
			}
			return s.noRollout(ctx, name, "abort")
		}
		if err != nil {
			return err
		}
		s.audit(r, "rollout-abort", []string{api.ApplianceRoot(name)}, st.Revision)
		return writeJSON(w, http.StatusOK, st.Revision, s.actionAnswer(ctx, name, shownStatus(st, "", principalOf(r)), principalOf(r)))
	case "promote":
		for try := 0; ; try++ {
			rec, rev, err := s.readRollout(ctx, name)
			if errors.Is(err, api.ErrNotFound) {
				return s.noRollout(ctx, name, "promote")
			}
			if err != nil {
				return err
			}
			if !rec.Running() {
				return api.Errorf(api.CodeConflict, "the rollout %s of appliance %q is %s: nothing to promote", rec.ID, name, rec.State)
			}
			if act.Rollout != "" && act.Rollout != rec.ID || act.Step != nil && *act.Step != rec.Step {
				return staleRolloutAction(name, rec.ID, rec.Step, len(rec.Steps), act)
			}
			if act.Step != nil && rec.Promote {
				// A second form of the same step (two tabs, a button pressed twice): the first
				// was taken, and the step waits for its cohort.
				return api.Errorf(api.CodeConflict, "the promote of rollout %s of appliance %q at step %d of %d was taken already: it moves on once every instance of its cohort has applied the candidate; nothing to do",
					rec.ID, name, rec.Step+1, len(rec.Steps))
			}
			rec.Promote = true
			out, _ := json.Marshal(rec)
			nrev, err := s.st.UpdateRollout(ctx, name, out, rev, true)
			if errors.Is(err, api.ErrConflict) && try < 5 {
				continue
			}
			if err != nil {
				return err
			}
			s.rollouts.set(name, &rec, nrev)
			s.audit(r, "rollout-promote", []string{api.ApplianceRoot(name)}, nrev)
			return writeJSON(w, http.StatusOK, nrev, s.actionAnswer(ctx, name, shownStatus(rec.Status(nil, nrev, time.Time{}), rec.Cause, principalOf(r)), principalOf(r)))
		}
	}
	return api.Errorf(api.CodeInvalidRequest, "rollout action must be \"promote\" or \"abort\", not %s", shorten(act.Action))
}

// staleRolloutAction refuses act, which names another rollout or step than rec, the running
// rollout of appliance name: the rollout moved on since its sender saw it (a promote of a step
// that has ended would skip the next one's bake).
func staleRolloutAction(name, id string, step, steps int, act api.RolloutAction) error {
	saw := "rollout " + cmp.Or(act.Rollout, id)
	if act.Step != nil {
		saw += fmt.Sprintf(" at step %d", uint64(*act.Step)+1) // not negative (refused); MaxInt does not wrap
	}
	return api.Errorf(api.CodeConflict, "the rollout of appliance %q is now rollout %s at step %d of %d, not %s: nothing to %s; look at it again (rollout status)",
		name, id, step+1, steps, saw, act.Action)
}

// noRollout is the answer to a promote or abort (action) of appliance name when no rollout of it
// runs: 409, or 404 when the store holds nothing of the appliance (a mistyped name).
func (s *Server) noRollout(ctx context.Context, name, action string) error {
	if err := s.applianceUnknown(ctx, name, nil); err != nil {
		return err
	}
	return api.Errorf(api.CodeConflict, "appliance %q has no rollout running: nothing to %s", name, action)
}

// Limits of a report's text fields.
const (
	maxReportError    = 2048
	maxReportTemplate = 512
)

// handleReport takes an agent's report of its last pass: what it applied (as long-polls say),
// and the failure it met, kept apart under reportErrorPrefix. A failure of a running rollout's
// candidate, reported by the enrolled instance itself, halts the rollout at once.
func (s *Server) handleReport(w http.ResponseWriter, r *http.Request) error {
	if _, err := query(r); err != nil {
		return err
	}
	name := r.PathValue("name")
	if err := api.ValidateSegment("appliance name", name); err != nil {
		return err
	}
	p := principalOf(r)
	if p.appliance != name {
		// A report stands for a VM of the appliance: only its agent token and the instance
		// tokens it enrolled make one. A read grant on the view (or admin) is no agent's, and
		// its reports listed made-up instances as applied.
		return forbidden("token %s may not report for appliance %s: reports are made with the appliance's agent token or an instance token", shorten(p.name), shorten(name))
	}
	if err := jsonContent(r); err != nil {
		return err
	}
	data, err := readBody(w, r, 16<<10, func() error { return api.Errorf(api.CodeBodyTooLarge, "report body is over the limit of 16 KiB") })
	if err != nil {
		return err
	}
	var rep api.Report
	if err := strictJSON(data, &rep); err != nil {
		return err
	}
	if err := validInstanceName("instance name", rep.Instance); err != nil {
		return err
	}
	if h := r.Header.Get(api.HeaderInstance); h != "" && h != rep.Instance {
		if p.instance != "" {
			// The header, if sent, said the token's instance (authentication checked it), else
			// authentication set it so: the request may have named none.
			return api.Errorf(api.CodeInvalidRequest, "the report's instance %s is not %s, the instance token %s is bound to", shorten(rep.Instance), shorten(p.instance), shorten(p.name))
		}
		return api.Errorf(api.CodeInvalidRequest, "the report's instance %s is not the request's %s %s", shorten(rep.Instance), api.HeaderInstance, shorten(h))
	}
	if rep.Applied < 0 || rep.Revision < 0 {
		return api.Errorf(api.CodeInvalidRequest, "a report's revisions must not be negative")
	}
	switch rep.Stage {
	case "", api.StageRender, api.StageCheck, api.StageCommand, api.StageHealth:
	default:
		return api.Errorf(api.CodeInvalidRequest, "a report's stage must be render, check, command or health, not %s", shorten(rep.Stage))
	}
	if len(rep.Rollout) > 64 || len(rep.Version) > 128 || len(rep.Template) > maxReportTemplate {
		return api.Errorf(api.CodeInvalidRequest, "a report's rollout, version or template is too long")
	}
	if !rollout.ValidID(rep.Rollout) {
		return api.Errorf(api.CodeInvalidRequest, "a report's rollout must be a rollout id as a view gives it (digits, a-f and -), not %s", shorten(rep.Rollout))
	}
	// The agent's words end up in rollout status and appliance wait, read in terminals: a
	// failure is kept (it halts a rollout), its control characters are not.
	rep.Error, rep.Template, rep.Version = cut(api.RedactSecrets(showable(rep.Error)), maxReportError), showable(rep.Template), versionText(rep.Version)
	now := time.Now().UTC().Truncate(time.Second)
	// An instance token replaced since it was read (its instance enrolled again) is told so,
	// as its next request would be; the report's writes are guarded anyway (see heldGuard).
	if err := s.auth.replacedAnswer(p); err != nil {
		return err
	}
	appliedRollout, err := reportAppliedRollout(r, rep)
	if err != nil {
		return err
	}
	in := api.Instance{Appliance: name, Instance: rep.Instance, Applied: rep.Applied, LastSeen: now, Remote: clientIP(r),
		Rollout: appliedRollout, Version: rep.Version}
	p.reportAs(&in)
	candidate := appliedRollout // its candidate applied: the pass left no failure
	if rep.Error != "" {
		candidate = ""
	}
	s.takeReport(r.Context(), &in, p, candidate)
	ctx, cancel := s.opCtx(r)
	defer cancel()
	if err := s.recordFailure(ctx, name, rep, in, p); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, s.hub.current(), struct{}{})
}

// reportAppliedRollout is the rollout whose candidate a report's applied revision was of ("" for
// the live view): the X-Shoelace-Rollout sent beside an X-Shoelace-Applied that says the body's
// applied revision, as a long-poll carries them. An older agent sends neither, and its report's
// rollout (the view's) is taken: after a failed pass, that is not always what it applied (the
// candidate of a rollout halted since was recorded as a revision of the live view).
func reportAppliedRollout(r *http.Request, rep api.Report) (string, error) {
	if err := atMostOne(r, api.HeaderApplied, api.HeaderRollout); err != nil {
		return "", err
	}
	h := r.Header.Get(api.HeaderApplied)
	if h == "" {
		if r.Header.Get(api.HeaderRollout) != "" {
			return "", api.Errorf(api.CodeInvalidRequest, "header %s needs %s", api.HeaderRollout, api.HeaderApplied)
		}
		return rep.Rollout, nil
	}
	if h != strconv.FormatInt(rep.Applied, 10) {
		return "", api.Errorf(api.CodeInvalidRequest, "header %s %s is not the report's applied revision %d", api.HeaderApplied, shorten(h), rep.Applied)
	}
	id := r.Header.Get(api.HeaderRollout)
	if len(id) > 64 || !rollout.ValidID(id) {
		return "", api.Errorf(api.CodeInvalidRequest, "header %s must be a rollout id as a view gives it (digits, a-f and -, at most 64 bytes), not %s", api.HeaderRollout, shorten(id))
	}
	return id, nil
}

// recordFailure keeps (or clears) the failure an enrolled instance reported with its instance
// token p, and halts the rollout whose candidate failed. Failures only gate rollouts, which count
// enrolled instances only; reports of other tokens keep no failure (they could name any instance).
// Its writes are guarded on p's token record: a token replaced meanwhile neither clears nor
// records a failure of the instance's new holder, nor halts a rollout for it (401).
func (s *Server) recordFailure(ctx context.Context, name string, rep api.Report, in api.Instance, p *principal) error {
	if !in.Enrolled {
		return nil
	}
	key := instanceErrorKey(name, rep.Instance)
	if rep.Error == "" {
		s.reports.cleanTaken(name+"/"+rep.Instance, time.Now(), holderOf(p))
		if s.reports.failureCleared(name + "/" + rep.Instance) {
			if _, err := s.st.SysApply(ctx, []store.SysGuard{heldGuard(p)}, nil, []string{key}); err != nil {
				s.reports.failureNoted(name + "/" + rep.Instance) // still there, for the holder's next report
				return s.heldRefusal(p, err)
			}
		}
		return nil
	}
	in.Error, in.ErrorRevision, in.ErrorStage, in.ErrorRollout = rep.Error, rep.Revision, rep.Stage, rep.Rollout
	if rep.Template != "" {
		in.Error = rep.Template + ": " + rep.Error
	}
	rec := s.rollouts.get(name)
	// A failure of the candidate by an instance drawn (enrolled before it started) halts the
	// rollout: it is written at once. Another is written once a failureEvery at most.
	halts := rec.Running() && rep.Rollout == rec.ID && slices.Contains(rec.Cohort(), rep.Instance) && rec.Counts(in)
	data, _ := json.Marshal(failureRecord{Instance: in, ReportedAt: time.Now().UnixNano(), Holder: holderOf(p)})
	write := func(ctx context.Context) error {
		if _, err := s.st.SysApply(ctx, []store.SysGuard{heldGuard(p)}, map[string][]byte{key: data}, nil); err != nil {
			return s.heldRefusal(p, err)
		}
		s.reports.failureNoted(name + "/" + rep.Instance)
		return nil
	}
	owner := p.parent
	if owner == "" {
		owner = "appliance " + name // enrolled by an admin
	}
	if halts {
		// Written now: a failure of the instance still waiting for its time (see paceFailure)
		// is older, and must not take this one's place when its time comes.
		s.reports.unpace(name + "/" + rep.Instance)
	}
	if !halts && s.reports.paceFailure(name+"/"+rep.Instance, owner, len(data), func() {
		ctx, cancel := context.WithTimeout(s.ctx, opTimeout)
		defer cancel()
		if err := write(ctx); err != nil && s.ctx.Err() == nil {
			s.log.Warn("record an instance's failure", "appliance", name, "instance", shorten(rep.Instance), "err", err.Error())
		}
	}) {
		return nil
	}
	if err := write(ctx); err != nil || !halts {
		return err
	}
	// The instance's own record, not the appliance's every one: a failure storm of a large fleet
	// must not read them all for each report.
	data, _, err := s.st.SysGet(ctx, instancePrefix+name+"/"+rep.Instance)
	if errors.Is(err, api.ErrNotFound) {
		return nil // the elected replica judges it from the records
	}
	if err != nil {
		return err
	}
	var known api.Instance
	if json.Unmarshal(data, &known) != nil || !known.Enrolled || known.Token != in.Token {
		return nil
	}
	reason := rollout.FailureReason(rep.Instance, rep.Revision, rep.Stage, in.Error)
	if _, err := s.endRollout(ctx, name, rec.ID, api.RolloutHalted, reason, rep.Instance); err != nil && !errors.Is(err, errRolloutNotRunning) {
		return err
	}
	return nil
}

// showable replaces in s what a terminal would act on rather than show: control characters
// (C0 but newline and tab, DEL, C1 such as the CSI of escape sequences) and bidi controls.
func showable(s string) string {
	return strings.Map(func(c rune) rune {
		if c != '\n' && c != '\t' && unicode.IsControl(c) || unicode.Is(unicode.Bidi_Control, c) {
			return utf8.RuneError
		}
		return c
	}, s)
}

// versionText is an agent's version as an instance's record keeps it, shown to every read token
// and in the console: one line (a newline or tab replaced too) without what may be a token's
// secret ("sl_…"), which a version is never.
func versionText(v string) string {
	return api.RedactSecrets(strings.Map(func(c rune) rune {
		if c == '\n' || c == '\t' {
			return utf8.RuneError
		}
		return c
	}, showable(v)))
}

// instanceStale is InstanceStale, or its default when unset.
func (c Config) instanceStale() time.Duration {
	if c.InstanceStale > 0 {
		return c.InstanceStale
	}
	return DefaultInstanceStale
}

// rolloutOf returns the one appliance whose own keys every op touches, for a kv write or txn
// sent with canary: a rollout changes one appliance's tree.
func rolloutOf(ops []api.Op) (string, error) {
	name := ""
	for _, op := range ops {
		n, ok := api.ApplianceOf(op.Key)
		if !ok || op.Key == api.ApplianceRoot(n) {
			return "", api.Errorf(api.CodeInvalidRequest, "a write with canary changes the keys of one appliance (appliances/NAME/…) or keys of shared/ (shared/…); %s is neither: other keys go to every instance at once, so write them without canary", api.KeyText(op.Key))
		}
		if name != "" && n != name {
			return "", api.Errorf(api.CodeInvalidRequest, "a write with canary changes the keys of one appliance, not of both %s and %s", name, n)
		}
		name = n
	}
	if name == "" {
		return "", api.Errorf(api.CodeInvalidRequest, "a write with canary needs at least one key of an appliance")
	}
	return name, nil
}

// errPlainWrite tells a write handler to go on with its plain write.
var errPlainWrite = errors.New("plain write")

// rolloutWrite starts a rollout for a kv write or txn of ops sent with canary (strat), or,
// sent with force, aborts the rollouts of the appliances ops touch; errPlainWrite when the
// handler's own write follows. sh is the request's share of the bodyBudget (nil: none), which
// the live tree read for a rollout joins.
func (s *Server) rolloutWrite(ctx context.Context, w http.ResponseWriter, r *http.Request, strat *api.RolloutStrategy, force bool, ops []api.Op, kind string, sh *share) error {
	if force {
		var names []string
		for _, op := range ops {
			if n, ok := api.ApplianceOf(op.Key); ok && !slices.Contains(names, n) {
				names = append(names, n)
			}
			if op.Key == api.AppliancesPrefix && op.Recurse {
				names = append(names, s.rollouts.running()...)
			}
		}
		if err := s.abortForForce(ctx, r, names...); err != nil {
			return err
		}
	}
	if force {
		if err := s.abortGroupForForce(ctx, r, ops); err != nil {
			return err
		}
	}
	if strat == nil {
		return errPlainWrite
	}
	if change, ok, err := sharedChangeOf(ops); err != nil {
		return err
	} else if ok {
		return s.startSharedRollout(ctx, w, r, change, strat, kind)
	}
	name, err := rolloutOf(ops)
	if err != nil {
		return err
	}
	// The candidate is the tree as the write would leave it: a write the store refuses (a key
	// put twice, a put of a key the write deletes) is refused with canary too, not staged with
	// an order of its ops the plain write never applies.
	if err := store.CheckTxn(api.Txn{Ops: ops}); err != nil {
		return err
	}
	if sh == nil {
		sh = &share{b: s.bodyBudget}
		defer sh.release()
	}
	kvs, read, err := s.applyBase(ctx, name, -1, sh, "write with canary to appliance "+strconv.Quote(name), "a rollout's record holds it whole")
	if err != nil {
		return err
	}
	live := treeOf(name, kvs)
	puts := map[string]string{}
	var dels []api.Op
	for _, op := range ops {
		if op.Op == api.OpPut {
			puts[op.Key] = op.Value
		} else {
			dels = append(dels, op)
		}
	}
	edit := func(live map[string]string) map[string]string {
		cand := maps.Clone(live)
		store.EditTree(cand, name, puts, dels)
		return cand
	}
	if cand := edit(live); len(live) == 0 || !maps.Equal(live, cand) {
		return s.startRollout(ctx, w, r, name, live, cand, strat, kind, 0, edit)
	}
	// A write that changes nothing starts no rollout, as an apply with canary starts none: it
	// is answered as an unchanged apply of the live tree, guarded on the read (a change since
	// is 409, never a write of these keys without a rollout).
	res, err := s.applyTree(ctx, w, r, kind, name, 0, live, read)
	if err != nil {
		return err
	}
	keys := make([]string, 0, len(ops))
	for _, op := range ops {
		keys = append(keys, op.Key)
	}
	if res.Unchanged {
		// Answered once the handler has returned: its body's share of the budget given back and
		// its values no longer held through the wait for the hub (see unchangedLater).
		return s.unchanged(name, res, kind, keys, "")
	}
	s.audit(r, kind, keys, res.Revision)
	return writeJSON(w, http.StatusOK, res.Revision, api.WriteResult{Revision: res.Revision})
}

// rolloutRelease is the release record of rec's start: kind rollout, its message saying so, and
// as changes the names of the keys the candidate would create, change and delete in live, the
// appliance's own tree as the rollout starts (the rollout guard keeps it so until it ends).
func rolloutRelease(rec *rollout.Record, live map[string]string, remote string) api.Release {
	root := api.ApplianceRoot(rec.Appliance) + "/"
	ch := api.ReleaseChange{Scope: api.ScopeAppliance, Appliance: rec.Appliance}
	for k := range live {
		if _, ok := rec.Candidate[k]; !ok {
			ch.Deleted = append(ch.Deleted, root+k)
		}
	}
	for k, v := range rec.Candidate {
		switch old, ok := live[k]; {
		case !ok:
			ch.Created = append(ch.Created, root+k)
		case old != v:
			ch.Changed = append(ch.Changed, root+k)
		}
	}
	for _, l := range []*[]string{&ch.Created, &ch.Changed, &ch.Deleted} {
		slices.Sort(*l)
	}
	ch.CreatedCount, ch.ChangedCount, ch.DeletedCount = len(ch.Created), len(ch.Changed), len(ch.Deleted)
	ch.Created = ch.Created[:min(len(ch.Created), api.MaxReleaseNames)]
	ch.Changed = ch.Changed[:min(len(ch.Changed), api.MaxReleaseNames)]
	ch.Deleted = ch.Deleted[:min(len(ch.Deleted), api.MaxReleaseNames)]
	msg := fmt.Sprintf("rollout %s started: %s", rec.ID, rec.Strategy.Shares())
	if rec.Message != "" {
		msg += ": " + rec.Message
	}
	return api.Release{ID: rec.ID, Time: rec.Started, Token: rec.Token, Remote: remote, Message: cut(msg, 4096), Source: rec.Source,
		Kind: api.KindRollout, RollbackTo: rec.RollbackTo, Rollout: rec.ID, Changes: []api.ReleaseChange{ch}}
}
