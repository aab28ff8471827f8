package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/server/rollout"
	"github.com/shoelace-dev/shoelace/server/store"
)

// instancePrefix is where agents' reports live among the system keys:
// instances/<appliance>/<instance>.
const instancePrefix = "instances/"

// Timings of instance reports.
const (
	// instanceExpiry is how long a silent instance stays listed; older reports are removed.
	instanceExpiry = 7 * 24 * time.Hour
	// instanceSweep is how often a replica removes expired records (and learns how many
	// records each token has).
	instanceSweep = 10 * time.Minute
)

// reporter writes agents' reports to the store in the background, at most once a minute per
// instance unless what it applied changed, so that view requests never wait for it. It caps
// the records of each token: a report of one more instance than max is not recorded.
type reporter struct {
	mu      sync.Mutex
	written map[string]reported
	swept   time.Time
	window  time.Duration // reportWindow; tests make it longer
	refresh time.Duration // how often an unchanged report is written again (reportRefresh)

	// pending holds the reports queued for writing, the latest of each instance (by record
	// key, appliance/instance), and order their keys as they were first queued: the writer
	// takes them oldest first. A report of an instance already queued takes its place, so a
	// flood of reports of a few instances (or a fleet reporting together) waits as one report
	// per instance: none crowds out another's. wake tells the writer that there are some.
	pending map[string]*pendingReport
	order   []string
	wake    chan struct{}

	// every is the least time between two writes of one instance's record (reportEvery;
	// tests change it), and took when the writer last took a report of each instance (by
	// record key): a report that comes sooner waits in later, the latest of the instance
	// taking its place, until its time is up. urgent is, by instance, the rollout whose
	// candidate it reported applied first, which was queued without waiting.
	every  time.Duration
	took   map[string]time.Time
	later  map[string]*pendingReport
	urgent map[string]string

	// max caps the records per token. owner (appliance/instance → token) and held (records
	// per token) are what this replica knows of the records: read from the store by each
	// sweep, and kept up to date by note in between (records another replica writes meanwhile
	// count from the next sweep on).
	max   int
	owner map[string]string
	held  map[string]int
	// failed holds the instances whose failure is recorded: by this replica (failureNoted),
	// or by any, as the store's watch and reloads tell (failureSeen, loadFailures).
	failed map[string]bool
	// wrote is when this replica last recorded a failure of an instance (failureNoted), and
	// paced the latest failure write of an instance it recorded one of less than failureEvery
	// ago, which a timer makes once the time is up (paceFailure); nil when a report without
	// failure dropped it, the timer still under way.
	wrote map[string]time.Time
	paced map[string]func()
	// failureBytes is the budget of failure records' bytes this replica writes for the
	// instances of one agent token together (see failureBudget).
	failureBytes *limiterSet
	// cleanAt is when this replica last took a report without failure of an instance (by
	// appliance/instance, an hour at most): a failure record written after it of a failure
	// reported before it, by another replica whose write waited for its budget, is older than
	// the instance's state (see staleFailure).
	cleanAt map[string]cleanReport
}

// cleanReport is a report without failure this replica took: when, and the enrollment of the
// token that made it (a failure of another holder of the name is not older than its state).
type cleanReport struct {
	at     time.Time
	holder string
}

// failureRecord is what a failure record holds: the instance's report with its failure, and
// when the replica took it, to the nanosecond (the report's last_seen is to the second), so
// that a replica that took a later report without failure knows the record is stale.
type failureRecord struct {
	api.Instance
	ReportedAt int64  `json:"reported_ns,omitempty"`
	Holder     string `json:"holder,omitempty"` // holderOf the instance token that reported it
}

// holderOf names the token record of p, an instance token, as read: another enrollment of the
// same name is another record.
func holderOf(p *principal) string {
	h := sha256.Sum256(p.record)
	return hex.EncodeToString(h[:8])
}

type reported struct {
	applied int64
	rollout string
	at      time.Time
	token   string     // a report of another token is written again: its write may be guarded out
	by      *principal // and so is one of another holder of the instance token's name
}

// pendingReport is a report queued for writing, made by by; candidate is the rollout whose
// candidate it says was applied, as drawn into its cohort, while the rollout ran as the replica
// knew it when it took the report ("" for none, and for a rollout that had ended: see
// takeReport), kept with the revision it said was applied
// (candidateApplied) when a later report replaces it in a batch (see reportBatcher.add and
// lateApplied). A report made with an instance
// token is written only while the store still holds exactly the token record by was read from
// (principal.record), so that a report of a token replaced meanwhile (the instance enrolled
// again: taken over, or forgotten and enrolled) never overwrites the new holder's record,
// whichever replica took it and however late.
type pendingReport struct {
	in        api.Instance
	by        *principal
	candidate string
	// candidateApplied is the revision the report of candidate said was applied: a later report
	// may say less (a view read with X-Shoelace-Instance and no X-Shoelace-Applied says 0).
	candidateApplied int64
	// unjudged says that in's applied revision is above the replica's and that the store could
	// not be asked whether it is above the store's too: the writer asks (judgeReports).
	unjudged bool
}

func newReporter(max int, refresh time.Duration) *reporter {
	return &reporter{written: map[string]reported{}, window: reportWindow, refresh: refresh, pending: map[string]*pendingReport{}, wake: make(chan struct{}, 1),
		every: reportEvery, took: map[string]time.Time{}, later: map[string]*pendingReport{}, urgent: map[string]string{},
		max: max, owner: map[string]string{}, held: map[string]int{}, failureBytes: newLimiterSet(failureBudget, failureBudgetBurst)}
}

// reportEvery is the least time between two writes of one instance's record by a replica: the
// reports that come meanwhile are not written but the latest, once the time is up. Before, an
// instance token that alternated its X-Shoelace-Applied between two revisions on requests made as
// fast as its rate limit let it had its record written at every report window (ten a second),
// each write a revision that etcd keeps until it compacts, and a holder of a fleet's agent token
// could enroll --max-instances instances doing so. The first report of a running rollout's
// candidate by an instance of its cohort does not wait: the rollout's gate waits for it.
const reportEvery = time.Second

// reportRefresh is how often an unchanged report is written again (its last_seen) when an
// instance counts as part of the fleet while seen within stale (--instance-stale): a twelfth of
// it, at least a minute and at most five.
//
// Each write of a record stays in etcd's history until the compaction (an hour for the
// embedded etcd): written every minute, 12,000 agents' records added 250 MB an hour to the
// database with nothing changed; every five minutes (the default, --instance-stale 1h), 50 MB.
func reportRefresh(stale time.Duration) time.Duration {
	return min(max(stale/12, time.Minute), 5*time.Minute)
}

// note queues in, made by by (see pendingReport), for writing when it says something new. It
// reports false, and records nothing, when in is an instance its token has no record of and
// the token has max records. A report of another holder of the instance's token name (the
// instance enrolled again) is written even when it says what the last one said.
// It runs inside every long-poll that carries a report (as the agents' do), whose stack it
// must not deepen: in is not copied, and its rare paths are not inlined.
func (r *reporter) note(in *api.Instance, by *principal, candidate string) bool {
	return r.noteAs(in, by, candidate, false, "")
}

// noteAs is note of a report that is unjudged (see pendingReport) or not; urgent, when not "",
// is the running rollout whose candidate the report says its instance, drawn into the cohort,
// applied: the first such report of the instance is written without waiting for reportEvery.
func (r *reporter) noteAs(in *api.Instance, by *principal, candidate string, unjudged bool, urgent string) bool {
	key := in.Appliance + "/" + in.Instance
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.owner[key] != in.Token && r.held[in.Token] >= r.max {
		return false
	}
	if now := in.LastSeen; now.Sub(r.swept) > time.Hour {
		r.sweepLocked(now)
	}
	if w, ok := r.written[key]; ok && w.applied == in.Applied && w.rollout == in.Rollout && w.token == in.Token &&
		w.by == by && in.LastSeen.Sub(w.at) < r.refresh {
		return true
	}
	r.queueLocked(key, in, by, candidate, unjudged, urgent)
	return true
}

// maxPendingReports bounds the instances whose reports wait to be written (about 300 bytes
// each): past it a report of one more instance is not queued (the next request reports again).
// Each token's instance records are capped (--max-instances), so only many tokens reach it.
const maxPendingReports = 1 << 17

// queueLocked queues in, made by by, for writing, in the place of a report of the same
// instance still queued; r.mu must be held.
//
// Before, reports waited in a channel of 1024: a fleet of 12,000 agents reporting a shared/
// change together filled it within a second, and the rest were dropped, though POST …/report
// answered 200 (agents following a stream report only then: 411 of 2,000 were recorded), and
// one token's flood of reports could keep every other agent's out.
//
//go:noinline
func (r *reporter) queueLocked(key string, in *api.Instance, by *principal, candidate string, unjudged bool, urgent string) {
	// Kept by pointer and filled in place: a long-poll that carries a report calls this before
	// it waits, and a pendingReport on its stack (two, with the one it replaces) grew every
	// waiting long-poll's stack (TestLongPoll_StackStaysSmall).
	if urgent != "" && r.urgent[key] == urgent {
		urgent = "" // its first report of the candidate went without waiting
	}
	if old := r.pending[key]; old != nil {
		old.replaceBy(in, by, candidate, unjudged)
	} else if old := r.later[key]; old != nil {
		old.replaceBy(in, by, candidate, unjudged)
		if urgent == "" {
			r.noteWrittenLocked(key, in, by)
			return // written when its time is up
		}
		delete(r.later, key) // its timer finds it gone
		r.order = append(r.order, key)
		r.pending[key] = old
	} else {
		if len(r.pending)+len(r.later) >= maxPendingReports {
			return // the next request reports again
		}
		p := &pendingReport{in: *in, by: by, candidate: candidate, candidateApplied: in.Applied, unjudged: unjudged}
		if urgent == "" && r.deferLocked(key, p) {
			r.noteWrittenLocked(key, in, by)
			return
		}
		r.order = append(r.order, key)
		r.pending[key] = p
	}
	if urgent != "" {
		r.urgent[key] = urgent
	}
	r.noteWrittenLocked(key, in, by)
	select {
	case r.wake <- struct{}{}:
	default: // the writer was told already
	}
}

// replaceBy makes p the report in, made by by, keeping the candidate p said was applied when in
// says none.
func (p *pendingReport) replaceBy(in *api.Instance, by *principal, candidate string, unjudged bool) {
	applied := in.Applied
	if candidate == "" {
		// the candidate was applied, whatever came next
		candidate, applied = p.candidate, p.candidateApplied
	}
	p.in, p.by, p.candidate, p.candidateApplied, p.unjudged = *in, by, candidate, applied, unjudged
}

// noteWrittenLocked records in as what is written (or queued to be) of key; r.mu is held.
func (r *reporter) noteWrittenLocked(key string, in *api.Instance, by *principal) {
	r.written[key] = reported{applied: in.Applied, rollout: in.Rollout, at: in.LastSeen, token: in.Token, by: by}
	r.ownLocked(key, in.Token)
}

// deferLocked keeps p, a report of key, in later when the writer took one of key less than
// r.every ago, and has it queued once the time is up (the latest of key by then: later reports
// take its place); it reports whether it did. r.mu is held.
//
//go:noinline
func (r *reporter) deferLocked(key string, p *pendingReport) bool {
	at, ok := r.took[key]
	if !ok {
		return false
	}
	wait := r.every - time.Since(at)
	if wait <= 0 {
		return false
	}
	r.later[key] = p
	time.AfterFunc(wait, func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.later[key] != p {
			return // queued already, or let go
		}
		delete(r.later, key)
		r.order = append(r.order, key)
		r.pending[key] = p
		select {
		case r.wake <- struct{}{}:
		default:
		}
	})
	return true
}

// release queues the reports waiting in later at once (the server stops: flushReports).
func (r *reporter) release() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for key, p := range r.later {
		r.order = append(r.order, key)
		r.pending[key] = p
	}
	clear(r.later)
}

// take moves up to reportBatch queued reports, the oldest first, into b (reset first), and
// says how many.
func (r *reporter) take(b *reportBatcher) int {
	b.reset()
	r.mu.Lock()
	defer r.mu.Unlock()
	n := min(len(r.order), reportBatch)
	now := time.Now()
	for _, key := range r.order[:n] {
		b.add(r.pending[key])
		delete(r.pending, key)
		r.took[key] = now
	}
	clear(r.order[:n])
	r.order = r.order[n:]
	if len(r.order) == 0 {
		r.order = r.order[:0:0] // let a burst's array go
	}
	return n
}

// requeue puts back reports that could not be written, before those queued since (they are
// older), except those of an instance whose later report is queued, which wins (keeping the
// candidate, as queueLocked does). Past maxPendingReports a report is let go: its instance
// reports again with its next request.
func (r *reporter) requeue(reports []pendingReport) {
	r.mu.Lock()
	defer r.mu.Unlock()
	front := make([]string, 0, len(reports))
	for i := range reports {
		p := &reports[i]
		key := p.in.Appliance + "/" + p.in.Instance
		later := r.pending[key]
		if later == nil {
			later = r.later[key] // written when its time is up
		}
		if later != nil {
			if later.candidate == "" {
				later.candidate, later.candidateApplied = p.candidate, p.candidateApplied
			}
			continue
		}
		if len(r.pending)+len(r.later) >= maxPendingReports {
			delete(r.written, key)
			continue
		}
		kept := *p
		r.pending[key] = &kept
		front = append(front, key)
	}
	r.order = append(front, r.order...)
}

// queued says how many reports wait to be written.
func (r *reporter) queued() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.order)
}

// sweepLocked forgets what was written over an hour before now; r.mu must be held.
//
//go:noinline
func (r *reporter) sweepLocked(now time.Time) {
	for k, w := range r.written {
		if now.Sub(w.at) > time.Hour {
			delete(r.written, k)
		}
	}
	for k, c := range r.cleanAt {
		if now.Sub(c.at) > time.Hour {
			delete(r.cleanAt, k)
		}
	}
	for k, at := range r.took {
		if time.Since(at) > r.every {
			delete(r.took, k)
		}
	}
	for k := range r.urgent {
		if _, ok := r.written[k]; !ok {
			delete(r.urgent, k)
		}
	}
	r.swept = now
}

// ownLocked counts the record key as token's; r.mu must be held.
func (r *reporter) ownLocked(key, token string) {
	prev, ok := r.owner[key]
	if ok && prev == token {
		return
	}
	if ok {
		if r.held[prev]--; r.held[prev] <= 0 {
			delete(r.held, prev)
		}
	}
	r.owner[key] = token
	r.held[token]++
}

// runInstanceSweep removes expired instance records, and reads how many each token has, at
// start and then every instanceSweep, until ctx ends.
func (s *Server) runInstanceSweep(ctx context.Context) {
	for {
		next := instanceSweep
		if err := s.sweepInstances(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			s.log.Warn("sweep instance records", "err", err)
			next = 30 * time.Second
		}
		sleep(ctx, jitter(next))
		if ctx.Err() != nil {
			return
		}
	}
}

// sweepInstances reads every instance record: those silent for instanceExpiry are removed,
// the others make the reporter's count of records per token.
func (s *Server) sweepInstances(ctx context.Context) error {
	r := s.reports
	start := time.Now()
	m, _, err := s.st.SysList(ctx, instancePrefix)
	if err != nil {
		return fmt.Errorf("read instance records: %w", err)
	}
	owner := make(map[string]string, len(m))
	var expired []string
	enrolled := map[string]bool{}
	now := time.Now()
	for k, v := range m {
		var in api.Instance
		if err := json.Unmarshal(v, &in); err != nil {
			continue
		}
		if now.Sub(in.LastSeen) > instanceExpiry {
			expired = append(expired, k)
			if in.Enrolled {
				enrolled[k] = true
			}
			continue
		}
		owner[strings.TrimPrefix(k, instancePrefix)] = in.Token
	}
	r.mu.Lock()
	// A report queued shortly before the read may not be written yet: keep what note counted
	// for it, and do not remove its record.
	queued := func(k string) bool {
		w, ok := r.written[k]
		return ok && start.Sub(w.at) < reportPending
	}
	for k, t := range r.owner {
		if queued(k) {
			owner[k] = t
		}
	}
	expired = slices.DeleteFunc(expired, func(k string) bool { return queued(strings.TrimPrefix(k, instancePrefix)) })
	r.owner = owner
	r.held = make(map[string]int)
	for _, t := range owner {
		r.held[t]++
	}
	r.mu.Unlock()
	for _, k := range expired {
		if err := s.removeInstance(ctx, k, enrolled[k]); err != nil {
			return fmt.Errorf("remove expired instance record: %w", err)
		}
	}
	if len(expired) > 0 {
		s.log.Info("removed expired instance records", "records", len(expired))
	}
	return nil
}

// removeInstance removes the expired instance record key, and the instance token of an enrolled
// one with it: a VM silent that long is gone, and its token must not outlive it.
func (s *Server) removeInstance(ctx context.Context, key string, enrolled bool) error {
	if !enrolled {
		if _, err := s.st.SysDelete(ctx, key); err != nil && !errors.Is(err, api.ErrNotFound) {
			return err
		}
		return nil
	}
	app, inst, _ := strings.Cut(strings.TrimPrefix(key, instancePrefix), "/")
	name := instanceTokenName(app, inst)
	rev, err := s.st.SysApply(ctx, nil, nil, []string{key, tokenPrefix + name, instanceErrorKey(app, inst)})
	if err != nil {
		return err
	}
	s.auth.remove(name, rev)
	s.hub.revoke(name)
	return nil
}

// reportPending bounds how long a queued report takes to be written (its window, then a write
// of at most 10 s), with room to spare.
const reportPending = time.Minute

// reportBatch is the most reports written in one transaction: a change of shared/ moves the
// applied revision of every agent at once, and their reports arrive together.
const reportBatch = 256

// reportWindow is how long the reporter collects reports before it writes them: during a stream
// of changes every agent's applied revision moves with each one, and writing each report at once
// cost one etcd write per change (as many as the pipeline's own) for no reader's benefit.
const reportWindow = 100 * time.Millisecond

// runReporter writes queued reports until ctx ends: those that arrive within reportWindow of the
// first go into one transaction (up to reportBatch; more wait for the next), the latest report
// of an instance winning.
func (s *Server) runReporter(ctx context.Context) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.runInstanceSweep(ctx)
	}()
	var b reportBatcher
	for {
		select {
		case <-ctx.Done():
			s.flushReports(ctx, &b)
			return
		case <-s.reports.wake:
		}
		if s.reports.queued() < reportBatch {
			window := time.NewTimer(s.reports.window)
			select {
			case <-window.C:
			case <-ctx.Done():
				window.Stop()
				s.flushReports(ctx, &b)
				return
			}
		}
		for failed := 0; ctx.Err() == nil && s.reports.take(&b) > 0; {
			if s.writeReports(ctx, &b) == nil {
				failed = 0
				continue
			}
			// Logged, and put back: tried again after a pause, from 1 s doubling to 30 s.
			failed++
			sleep(ctx, min(time.Second<<min(failed-1, 5), 30*time.Second))
		}
	}
}

// writeReports writes the batch b, judging its unjudged reports first; when that fails, its
// reports are queued again (the caller pauses before it takes them), and the error is returned.
//
// Before, a batch that failed (etcd busy or away for a moment) was dropped, for its instances
// to report again with their next request: an agent that follows a stream reports only when
// it applies a change, so its record stayed behind, and a rollout waiting on it halted at its
// deadline.
func (s *Server) writeReports(ctx context.Context, b *reportBatcher) error {
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err := s.judgeReports(wctx, b)
	if err == nil && b.len() > 0 {
		err = s.putReports(wctx, b.puts())
	}
	if err == nil {
		s.lateApplied(wctx, b.reports)
	}
	if err != nil {
		// Put back also when the server stops meanwhile: flushReports writes them then.
		if ctx.Err() == nil {
			s.log.Warn("record instance reports: they are tried again", "reports", b.len(), "err", err)
		}
		s.reports.requeue(b.reports)
	}
	return err
}

// judgeReports leaves out of b the reports that takeReport could not judge and whose applied
// revision is above the store's, asking the store once for them all.
func (s *Server) judgeReports(ctx context.Context, b *reportBatcher) error {
	if !slices.ContainsFunc(b.reports, func(p pendingReport) bool { return p.unjudged }) {
		return nil
	}
	rev, err := s.st.Revision(ctx)
	if err != nil {
		return fmt.Errorf("judge reports applied above the replica's revision: %w", err)
	}
	b.keep(func(p *pendingReport) bool {
		if !p.unjudged || p.in.Applied <= rev {
			p.unjudged = false
			return true
		}
		s.warnAboveStore(&p.in, rev)
		return false
	})
	return nil
}

// reportFlushWait bounds the writes of the reports queued when the server stops.
const reportFlushWait = 2 * time.Second

// flushReports writes, as the server stops (ctx ended), the reports still queued, in batches
// (through b): each was answered 200, and an agent reports again only with its next request, so
// its record would stay at what it applied before (and a rollout's gate wait for it) until
// then. It gives up after reportFlushWait (a store that is away).
func (s *Server) flushReports(ctx context.Context, b *reportBatcher) {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), reportFlushWait)
	defer cancel()
	s.reports.release() // their time is not up: written now all the same
	for s.reports.take(b) > 0 {
		if s.writeReports(wctx, b) != nil {
			return // logged; their agents report again to the replica they reach next
		}
	}
}

// lateApplied gives the rollouts whose candidate reports (just written) say was applied the
// instances that their end, if they ended meanwhile, did not count (see countLate). Only
// reports taken while the rollout ran have a candidate (see takeReport). It reads the store
// only for a batch with such reports: those of a rollout's cohort.
func (s *Server) lateApplied(ctx context.Context, reports []pendingReport) {
	var late map[[2]string]map[string]api.Instance // appliance, rollout → reports by instance
	for i := range reports {
		p := &reports[i]
		if p.candidate == "" {
			continue
		}
		if late == nil {
			late = map[[2]string]map[string]api.Instance{}
		}
		k := [2]string{p.in.Appliance, p.candidate}
		if late[k] == nil {
			late[k] = map[string]api.Instance{}
		}
		in := p.in
		// A later report of the batch may have replaced it.
		in.Rollout, in.Applied = p.candidate, p.candidateApplied
		late[k][in.Instance] = in
	}
	for k, m := range late {
		s.countLate(ctx, k[0], k[1], m)
	}
}

// putReports writes a batch of reports; one that an external etcd refuses as too large (its
// --max-txn-ops is 128 by default, under reportBatch's puts) is written in halves, so that a
// fleet reporting together is not refused batch after batch for good.
func (s *Server) putReports(ctx context.Context, puts []store.SysPutIf) error {
	_, err := s.st.SysPutEach(ctx, puts)
	var e *api.Error
	if err == nil || len(puts) < 2 || !errors.As(err, &e) || e.Code != api.CodeTooLarge {
		return err
	}
	half := len(puts) / 2
	if err := s.putReports(ctx, puts[:half]); err != nil {
		return err
	}
	return s.putReports(ctx, puts[half:])
}

// reportBatcher makes the puts of a batch of reports. Its index, its reports, its puts and the
// reports' JSON are kept from one batch to the next: made anew for each, they were about a
// kilobyte of garbage per report (a map of reports grown up to 256, each report of 208 bytes on
// the heap of its own, as a map keeps values over 128 bytes; a JSON slice each), and 10,000
// agents connecting at once report together, while their long-polls open (BENCHMARKS.md,
// fan-out memory per waiter).
type reportBatcher struct {
	at      map[string]int  // record key → index in reports
	keys    []string        // record keys, by index
	reports []pendingReport // the later report of an instance wins
	ps      []store.SysPutIf
	values  bytes.Buffer
	enc     *json.Encoder
}

func (b *reportBatcher) reset() {
	clear(b.at)
	clear(b.keys)
	b.keys = b.keys[:0]
	clear(b.reports)
	b.reports = b.reports[:0]
	clear(b.ps)
	b.ps = b.ps[:0]
	b.values.Reset()
}

func (b *reportBatcher) add(p *pendingReport) {
	if b.at == nil {
		b.at = make(map[string]int)
	}
	k := instancePrefix + p.in.Appliance + "/" + p.in.Instance
	if i, ok := b.at[k]; ok {
		candidate, applied := b.reports[i].candidate, b.reports[i].candidateApplied
		b.reports[i] = *p
		if p.candidate == "" {
			// the candidate was applied, whatever came next
			b.reports[i].candidate, b.reports[i].candidateApplied = candidate, applied
		}
		return
	}
	b.at[k] = len(b.reports)
	b.keys = append(b.keys, k)
	b.reports = append(b.reports, *p)
}

func (b *reportBatcher) len() int { return len(b.reports) }

// keep leaves in b the reports that ok says to keep, in their order.
func (b *reportBatcher) keep(ok func(*pendingReport) bool) {
	n := 0
	clear(b.at)
	for i := range b.reports {
		if ok(&b.reports[i]) {
			b.reports[n], b.keys[n] = b.reports[i], b.keys[i]
			b.at[b.keys[n]] = n
			n++
		}
	}
	clear(b.reports[n:])
	clear(b.keys[n:])
	b.reports, b.keys = b.reports[:n], b.keys[:n]
}

// puts are the batch's writes, valid until the next reset. A report is written only while the
// instance is enrolled as it was when taken: a report of its instance token while the store
// holds that very token's record (not another holder's, of the same name), any other while no
// instance token exists (enrollment or forget may have come in between).
func (b *reportBatcher) puts() []store.SysPutIf {
	if b.enc == nil {
		b.enc = json.NewEncoder(&b.values) // as json.Marshal, with a newline after each value
	}
	for i := range b.reports {
		p := &b.reports[i]
		start := b.values.Len()
		_ = b.enc.Encode(&p.in)
		// The slice stays valid if values grows meanwhile (it keeps the older array).
		v := b.values.Bytes()[start : b.values.Len()-1]
		put := store.SysPutIf{Key: b.keys[i], Value: v, Guard: tokenPrefix + instanceTokenName(p.in.Appliance, p.in.Instance)}
		if p.in.Enrolled {
			put.Is = heldRecord(p.by)
		}
		b.ps = append(b.ps, put)
	}
	return b.ps
}

// agentVersion is the version in the User-Agent "shoelace-agent/VERSION" that the agent sends
// with every request, or "": a record written from a long-poll's report carries it, as one
// written from POST …/report does (else the console's Agent column went blank each time a
// long-poll's report refreshed the record).
func agentVersion(r *http.Request) string {
	v, ok := strings.CutPrefix(r.Header.Get("User-Agent"), "shoelace-agent/")
	if !ok || len(v) > 128 {
		return ""
	}
	if i := strings.IndexByte(v, ' '); i >= 0 {
		v = v[:i]
	}
	return versionText(v)
}

// agentReport reads an agent's X-Shoelace-Instance and X-Shoelace-Applied, if sent.
func agentReport(r *http.Request, name string) (*api.Instance, error) {
	if err := atMostOne(r, api.HeaderApplied, api.HeaderRollout); err != nil {
		return nil, err
	}
	inst := r.Header.Get(api.HeaderInstance)
	applied := r.Header.Get(api.HeaderApplied)
	if inst == "" {
		if applied != "" {
			return nil, api.Errorf(api.CodeInvalidRequest, "header %s needs %s", api.HeaderApplied, api.HeaderInstance)
		}
		return nil, nil
	}
	if err := validInstanceHeader(inst); err != nil {
		return nil, err
	}
	in := &api.Instance{Appliance: name, Instance: inst, LastSeen: time.Now().UTC().Truncate(time.Second), Remote: clientIP(r),
		Rollout: r.Header.Get(api.HeaderRollout), Version: agentVersion(r)}
	if len(in.Rollout) > 64 || !rollout.ValidID(in.Rollout) {
		return nil, api.Errorf(api.CodeInvalidRequest, "header %s must be a rollout id as a view gives it (digits, a-f and -, at most 64 bytes), not %s", api.HeaderRollout, shorten(in.Rollout))
	}
	principalOf(r).reportAs(in)
	if applied != "" {
		n, err := strconv.ParseInt(applied, 10, 64)
		if err != nil || n < 0 || applied[0] < '0' || applied[0] > '9' { // digits only: no sign
			return nil, api.Errorf(api.CodeInvalidRequest, "header %s must be a revision (an integer >= 0), not %s", api.HeaderApplied, shorten(applied))
		}
		in.Applied = n
	}
	return in, nil
}

// takeReport records an agent's report, unless its applied revision is above the store's: the
// replica's own revision may lag behind the store, so the store is asked before the report is
// ignored. A report of an enrolled instance made with another token than its instance token is
// ignored too. A report ignored or refused by the cap never fails the request. p made it: a
// report of an instance token is written only while the store holds that token's record.
//
// It runs inside every long-poll that carries a report (as the agents' do): its rare paths are
// functions of their own, not inlined, so that its frame does not deepen every open long-poll's
// stack.
func (s *Server) takeReport(ctx context.Context, in *api.Instance, p *principal, candidate string) {
	unjudged := false
	if cur := s.hub.current(); in.Applied > cur {
		switch s.judgeReport(ctx, in, cur) {
		case reportAbove:
			return
		case reportUnjudged:
			unjudged = true
		}
	}
	if !in.Enrolled && s.auth.enrolled(in.Appliance, in.Instance) {
		s.reportIgnored(in, "ignoring a report of an enrolled instance not made with its instance token")
		return
	}
	// Only a report of a candidate that this replica still gave the instance counts for its
	// rollout, once written (see lateApplied): one taken after the rollout ended (an agent
	// whose reload of the candidate was still running at an abort) did not apply it for the
	// rollout, which had sent its cohort back to the live view by then.
	awaited := s.awaitedCandidate(in, p, candidate)
	if !s.reports.noteAs(in, p, awaited, unjudged, awaited) {
		s.reportIgnored(in, "not recording an instance over its token's cap")
	}
}

// awaitedCandidate is candidate when in, a report made by p, says that its instance applied the
// candidate of candidate, the appliance's running rollout, as drawn into its cohort (the gate
// waits for it); else "".
//
//go:noinline
func (s *Server) awaitedCandidate(in *api.Instance, p *principal, candidate string) string {
	if candidate == "" || !in.Enrolled || p.instance != in.Instance {
		return ""
	}
	if rec := s.rollouts.get(in.Appliance); rec.Running() && rec.ID == candidate && rec.InCohort(in.Instance) && drawnHolder(rec, p) {
		return candidate
	}
	return ""
}

// What judgeReport says of a report applied above the replica's revision.
const (
	reportBelow    = iota // at or below the store's revision
	reportAbove           // above it: ignored
	reportUnjudged        // the store could not be asked: the writer asks (judgeReports)
)

// judgeReport says whether in was applied above the store's revision (warning, once per token
// and minute), asking the store when cur, this replica's, is below it. When the store cannot
// be asked in time (busy, or away), the report is queued all the same, for the writer to ask:
// ignored, it was lost for an agent that follows a stream, which reports only when it applies
// a change (66 of 12,000 agents during an enrollment storm).
//
//go:noinline
func (s *Server) judgeReport(ctx context.Context, in *api.Instance, cur int64) int {
	rev, err := s.aboveStore.revision(ctx, s.st.Revision, in.Applied)
	if err == nil && in.Applied > rev {
		// The store's revision known here may predate the write the agent applied (it was read
		// less than storeRevCheckEvery ago, and this replica's watch has not reached the write
		// yet): a real report was then ignored, and an agent that reported once and waits was
		// never counted by a rollout. Give the watch that long to reach it, then ask again.
		if s.hub.reaches(ctx, in.Applied, storeRevCheckEvery) {
			return reportBelow
		}
		rev, err = s.aboveStore.revision(ctx, s.st.Revision, in.Applied)
	}
	switch {
	case err != nil:
		return reportUnjudged
	case in.Applied > rev:
		s.warnAboveStore(in, max(rev, cur))
		return reportAbove
	}
	return reportBelow
}

// warnAboveStore logs that report in, applied above the store's revision rev, is ignored (one
// line per token and minute).
func (s *Server) warnAboveStore(in *api.Instance, rev int64) {
	if s.aboveStore.shouldWarn(in.Token, time.Now()) {
		s.log.Warn("ignoring instance reports applied above the store's revision (one line per token and minute)", "appliance", in.Appliance,
			"instance", shorten(in.Instance), "token", in.Token, "applied", in.Applied, "revision", rev)
	}
}

// reportIgnored logs, at debug level, why report in was not recorded.
//
//go:noinline
func (s *Server) reportIgnored(in *api.Instance, why string) {
	s.log.Debug(why, "appliance", in.Appliance, "instance", shorten(in.Instance), "token", in.Token, "max_instances", s.cfg.MaxInstances)
}

// lostRevision is a 410 compacted error when a restore lost rev (see store.LostRange), ending
// with then (what to do): the state there was never in this store, and the releases and
// agents' reports past it are of the history after the restore, not of a write at rev.
func (s *Server) lostRevision(ctx context.Context, rev int64, then string) error {
	l, lost, err := s.st.Lost(ctx, rev)
	if err != nil || !lost {
		return err
	}
	return api.Errorf(api.CodeCompacted, "revision %d was lost by a restore: the store was restored on %s from a snapshot at revision %d, and revisions %d to %d (the writes after the snapshot, made before the restore) are not in it; %s",
		rev, l.Time.Format(time.RFC3339), l.Snapshot, l.Snapshot+1, l.Restored, then)
}

func (s *Server) handleInstances(w http.ResponseWriter, r *http.Request) error {
	q, err := query(r, "revision")
	if err != nil {
		return err
	}
	name := r.PathValue("name")
	if err := api.ValidateSegment("appliance name", name); err != nil {
		return err
	}
	var want int64 // the revision appliance wait asks about: one a restore lost is 410
	if q.Has("revision") {
		if want, err = strconv.ParseInt(q.Get("revision"), 10, 64); err != nil || want <= 0 {
			return api.Errorf(api.CodeInvalidRequest, "revision %s: a revision is a positive number", shorten(q.Get("revision")))
		}
	}
	// Every agent's address and token name: for operators (a read grant on the appliance),
	// not for the agents, whose token reads the view only.
	if err := principalOf(r).mayRead(api.ApplianceRoot(name)); err != nil {
		return forbidden("token %s may not list the instances of %s: that needs a read grant on %s/ (agent tokens have none)",
			shorten(principalOf(r).name), shorten(name), api.ApplianceRoot(name))
	}
	ctx, cancel := s.opCtx(r)
	defer cancel()
	if want > 0 {
		if err := s.lostRevision(ctx, want, "write it again"); err != nil {
			return err
		}
	}
	m, rev, err := s.instanceReports(ctx, name)
	if err != nil {
		return err
	}
	if len(m) == 0 {
		if err := s.applianceUnknown(ctx, name, nil); err != nil {
			return err
		}
	}
	out := api.Instances{Appliance: name, Instances: []api.Instance{}}
	now := time.Now()
	for n, in := range m {
		if now.Sub(in.LastSeen) > instanceExpiry {
			_ = s.removeInstance(ctx, instancePrefix+name+"/"+n, in.Enrolled)
			continue
		}
		out.Instances = append(out.Instances, in)
	}
	slices.SortFunc(out.Instances, func(a, b api.Instance) int { return strings.Compare(a.Instance, b.Instance) })
	return writeJSON(w, http.StatusOK, rev, out)
}

// storeRevCheck answers "is this revision at or below the store's?" for reports whose applied
// revision is above this replica's (its watch may lag): the store is asked at most once per
// storeRevCheckEvery, so that forged reports cannot turn into a stream of store reads, and
// the warning about them is logged once per token and minute.
type storeRevCheck struct {
	mu     sync.Mutex
	rev    int64     // the store's revision when last read
	asked  time.Time // when the store was last asked
	err    error     // why it did not answer then; nil when it did
	warned map[string]time.Time
}

const storeRevCheckEvery = time.Second

// storeRevCheckWait bounds one read of the store's revision for revision. A report it cannot
// judge is queued for the writer to judge, and the requests that carry reports wait for it (a long-poll before its
// wait begins): a frozen etcd answers only at the store's request timeout.
const storeRevCheckWait = time.Second

// revision returns a store revision recent enough to judge applied: the one last read, if it
// covers applied or was read within storeRevCheckEvery, else a fresh one from read. When the
// store did not answer within storeRevCheckWait, the error stands for storeRevCheckEvery too:
// the requests that waited meanwhile (the lock is held across the read) do not each ask again,
// one after another (five long-polls reporting while etcd was frozen were answered 10 s apart).
func (c *storeRevCheck) revision(ctx context.Context, read func(context.Context) (int64, error), applied int64) (int64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if applied <= c.rev {
		return c.rev, nil
	}
	if time.Since(c.asked) < storeRevCheckEvery {
		return c.rev, c.err
	}
	rctx, cancel := context.WithTimeout(ctx, storeRevCheckWait)
	defer cancel()
	rev, err := read(rctx)
	if err != nil {
		if ctx.Err() == nil { // the store's failure, not this request's client gone
			c.asked, c.err = time.Now(), err
		}
		return c.rev, err
	}
	c.rev, c.asked, c.err = rev, time.Now(), nil
	return rev, nil
}

// shouldWarn says whether to log an ignored report of token now (once a minute per token).
func (c *storeRevCheck) shouldWarn(token string, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.warned == nil || len(c.warned) > 10000 {
		c.warned = map[string]time.Time{}
	}
	if now.Sub(c.warned[token]) < time.Minute {
		return false
	}
	c.warned[token] = now
	return true
}

// failureNoted remembers that this replica recorded a failure of instance key
// (appliance/instance), so that the instance's next report without one clears it.
func (r *reporter) failureNoted(key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failed == nil {
		r.failed = map[string]bool{}
	}
	r.failed[key] = true
	if r.wrote == nil {
		r.wrote = map[string]time.Time{}
	}
	r.wrote[key] = time.Now()
}

// failureEvery is how often at most a replica writes the failure record of one instance (but
// for the failure that halts a rollout; the latest of those reported meanwhile is written when
// the time is up): each write is a revision that etcd keeps until it compacts, and an instance
// reporting failures at its rate limit, each with another text, wrote 100 a second of up to
// maxReportError bytes.
const failureEvery = time.Second

// failureBudget is how many bytes of failure records a replica writes a second, at most, for
// the instances of one agent token together (the instance tokens it enrolled; those an admin
// enrolled, per appliance), after a burst of failureBudgetBurst. One instance is paced by
// failureEvery, but one holder of the fleet's token can enroll --max-instances of them: 300
// instance tokens reporting a new failure of 2 KB each second filled a 32 MiB etcd quota
// (NOSPACE: every write refused) in 20 s, and 20,000 would fill the default 2 GiB in minutes,
// each write kept until the compaction. At 32 KiB/s, an hour of it is 115 MB a replica; a
// fleet that fails at once has its first megabyte of failures (thousands of instances)
// recorded at once and the others within minutes. A failure that halts a rollout is written
// at once, out of the budget.
const (
	failureBudget      = 32 << 10
	failureBudgetBurst = 1 << 20
)

// paceFailure defers write, the recording of a failure of key (size bytes, for the instances
// of owner), when this replica recorded one less than failureEvery ago, or when owner's
// failures spent their budget (failureBudget): it is made once the time is up, unless a later
// failure of key took its place, or a report without failure cleared key meanwhile. It reports
// whether write was deferred (else the caller makes it now).
func (r *reporter) paceFailure(key, owner string, size int, write func()) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.paced[key]; ok {
		// The later failure is written in its place, in its time. A timer of key still under
		// way (its failure cleared since) takes it too: a new one would take another share of
		// owner's budget at each failure of an instance alternating failures with reports
		// without one, the budget's debt (and the timers) growing without bound.
		r.paced[key] = write
		return true
	}
	now := time.Now()
	var wait time.Duration
	if at, ok := r.wrote[key]; ok {
		wait = failureEvery - now.Sub(at)
	}
	wait = max(wait, r.failureBytes.reserve(owner, size, now))
	if wait <= 0 {
		return false
	}
	if r.paced == nil {
		r.paced = map[string]func(){}
	}
	time.AfterFunc(wait, func() {
		r.mu.Lock()
		w := r.paced[key]
		delete(r.paced, key)
		r.mu.Unlock()
		if w != nil {
			w()
		}
	})
	r.paced[key] = write
	return true
}

// unpace drops the failure of key waiting to be written (see unpaceLocked).
func (r *reporter) unpace(key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.unpaceLocked(key)
}

// unpaceLocked drops the failure of key waiting to be written, keeping its timer's place (see
// paceFailure). r.mu is held.
func (r *reporter) unpaceLocked(key string) {
	if _, ok := r.paced[key]; ok {
		r.paced[key] = nil
	}
}

// cleanTaken remembers that this replica took a report without failure of instance key now,
// made by holder (holderOf).
func (r *reporter) cleanTaken(key string, now time.Time, holder string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cleanAt == nil {
		r.cleanAt = map[string]cleanReport{}
	}
	r.cleanAt[key] = cleanReport{at: now, holder: holder}
}

// staleFailure reports whether the failure record data of instance key, which the store's
// watch brought, holds a failure reported before a report without failure that this replica
// took: another replica took the failure and wrote it later (its budget made it wait), after
// this replica's report without failure, which found no record to clear, had passed.
func (r *reporter) staleFailure(key string, data []byte) bool {
	var rec failureRecord
	if json.Unmarshal(data, &rec) != nil || rec.ReportedAt == 0 || rec.Holder == "" {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.cleanAt[key]
	// Of the same holder only: a replica behind may take a report of a token replaced since
	// (the name enrolled again), which says nothing of the new holder's failures.
	return ok && c.holder == rec.Holder && c.at.UnixNano() > rec.ReportedAt
}

// failureSeen records what the store's watch says of the failure record of instance key: put
// (by any replica) or deleted.
func (r *reporter) failureSeen(key string, there bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !there {
		// Cleared (by a report without failure, here or through another replica): a failure
		// waiting to be written would bring back one older than that report.
		delete(r.failed, key)
		r.unpaceLocked(key)
		delete(r.wrote, key)
		return
	}
	if r.failed == nil {
		r.failed = map[string]bool{}
	}
	r.failed[key] = true
}

// loadFailures makes the failure records in m (system keys, a reload's; those under
// reportErrorPrefix) the failures known to this replica.
func (r *reporter) loadFailures(m map[string][]byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failed = map[string]bool{}
	for k := range m {
		if key, ok := strings.CutPrefix(k, reportErrorPrefix); ok {
			r.failed[key] = true
		}
	}
}

// failureCleared reports whether a failure of key is recorded, as this replica knows (its
// own, and those of every replica through the store's watch and reloads), and forgets it.
func (r *reporter) failureCleared(key string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.unpaceLocked(key)
	delete(r.wrote, key)
	if !r.failed[key] {
		return false
	}
	delete(r.failed, key)
	return true
}
