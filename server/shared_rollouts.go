package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/server/rollout"
	"github.com/shoelace-dev/shoelace/server/store"
)

// Shared rollout groups: a change to shared/ written with ?canary.
//
// Such a write starts one rollout per appliance that has instances to draw, all of one group
// (the records' Group), in one transaction that also locks the shared/ keys the change touches
// (rollout.LockedPrefix) and records the group as the one running (rollout.GroupKey). Each
// rollout draws its cohorts and moves through its steps as an appliance's own rollout does;
// its cohort sees shared/ as the change leaves it, overlaid by the appliance's own tree (held
// as it was at the start, as any rollout holds it). A rollout that passed its last step is
// Ready and waits; when every rollout of the group is, one transaction writes the change to the
// live shared/ tree (one release), ends every rollout of the group as promoted and frees the
// keys. A halt or an abort of any of them ends them all (one transaction): no shared/ key is
// written, every cohort goes back to the live view.

// sharedChangeOf returns the change to shared/ that ops make when every op is under shared/
// (ok false when none is; an error when some are and others are not, or an op cannot be
// rolled out).
func sharedChangeOf(ops []api.Op) (c *rollout.SharedChange, ok bool, err error) {
	shared := 0
	for _, op := range ops {
		if api.Under(op.Key, api.SharedPrefix) || op.Key == api.SharedPrefix && op.Recurse {
			shared++
		}
	}
	if shared == 0 {
		return nil, false, nil
	}
	if shared != len(ops) {
		return nil, false, api.Errorf(api.CodeInvalidRequest, "a write with canary changes either the keys of one appliance or keys of shared/, not both")
	}
	c = &rollout.SharedChange{Puts: map[string]string{}}
	for _, op := range ops {
		rel, ok := strings.CutPrefix(op.Key, api.SharedPrefix+"/")
		if !ok || op.Recurse {
			return nil, false, api.Errorf(api.CodeInvalidRequest, "a change to shared/ with canary puts or deletes single keys; %s is a recursive delete: name its keys, or write it without canary", api.KeyText(op.Key))
		}
		_, put := c.Puts[rel]
		if put || slices.Contains(c.Deletes, rel) {
			// Its promotion is one transaction, which may touch a key only once.
			return nil, false, api.Errorf(api.CodeInvalidRequest, "invalid transaction: it touches key %s twice; a transaction may touch a key only once", api.KeyText(op.Key))
		}
		if op.Op == api.OpPut {
			c.Puts[rel] = op.Value
		} else {
			c.Deletes = append(c.Deletes, rel)
		}
	}
	slices.Sort(c.Deletes)
	return c, true, nil
}

// sharedHolds reports whether shared/, read at revision read, holds change already: every key
// it puts holds that value, every key it deletes is absent. rev is then the newest mod_revision
// under it; shared/'s last change is the later of it and a deletion the hub saw by read (see
// startSharedRollout), which every appliance's agents report, or pass, once they have their view.
func (s *Server) sharedHolds(ctx context.Context, change *rollout.SharedChange) (rev, read int64, held bool, err error) {
	kvs, read, err := s.st.List(ctx, api.SharedPrefix, false)
	if err != nil {
		return 0, 0, false, err
	}
	have := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		// The listing holds the key "shared" itself too, which is in no view, and not
		// shared/shared.
		if rel, ok := strings.CutPrefix(kv.Key, api.SharedPrefix+"/"); ok {
			have[rel] = kv.Value
			rev = max(rev, kv.ModRevision)
		}
	}
	for k, v := range change.Puts {
		if old, ok := have[k]; !ok || old != v {
			return 0, 0, false, nil
		}
	}
	for _, k := range change.Deletes {
		if _, ok := have[k]; ok {
			return 0, 0, false, nil
		}
	}
	return max(rev, 1), read, true, nil
}

// groupRunning is the refusal of a canary of shared/ while a shared rollout group runs (one at
// a time), as this replica knows the rollouts; nil when none runs.
func (s *Server) groupRunning() error {
	for _, n := range s.rollouts.running() {
		if cur := s.rollouts.get(n); cur != nil && cur.Group != "" {
			return store.GroupInProgress(cur.Group)
		}
	}
	return nil
}

// startSharedRollout starts the shared rollout group of change, for the write of kind that r
// makes with strategy strat.
func (s *Server) startSharedRollout(ctx context.Context, w http.ResponseWriter, r *http.Request, change *rollout.SharedChange, strat *api.RolloutStrategy, kind string) error {
	if rev, read, held, err := s.sharedHolds(ctx, change); err != nil {
		return err
	} else if held {
		// A change that shared/ holds already starts no group and writes nothing, as an apply
		// that changes nothing: refused only as another canary of shared/ is, while a group runs.
		// Answered once the handler has returned, as the apply is (see unchangedLater).
		if err := s.groupRunning(); err != nil {
			return err
		}
		return &unchangedLater{app: "", checked: read, rev: rev, op: kind, keys: lockedKeys(change)}
	}
	names, _, err := s.st.Appliances(ctx)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	group := releaseIDFor(now)
	records := map[string][]byte{}
	recs := map[string]*rollout.Record{}
	for _, name := range names {
		inst, base, err := s.enrolledInstances(ctx, name)
		if err != nil {
			return err
		}
		if len(inst) == 0 {
			continue // it gets the change when the group is promoted
		}
		own, err := s.ownTree(ctx, name)
		if err != nil {
			return err
		}
		if len(own) == 0 {
			continue // deleted meanwhile
		}
		ordered := rollout.Order(inst)
		rec := rollout.Record{ID: releaseIDFor(now), Appliance: name, State: api.RolloutRunning, Strategy: *strat, Candidate: own, Base: base,
			Instances: ordered, Steps: rollout.Steps(len(ordered), strat.Canary, strat.Step), Started: now, StepStarted: now,
			Message: r.Header.Get(api.HeaderMessage), Source: r.Header.Get(api.HeaderSource), Token: info(r).token, Kind: kind,
			Group: group, Shared: change}
		data, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		records[name], recs[name] = data, &rec
	}
	if len(records) == 0 {
		return s.noSharedCohort(ctx, r, names)
	}
	locked := lockedKeys(change)
	p := principalOf(r)
	if err := s.groupRunning(); err != nil {
		return err
	}
	for _, n := range slices.Sorted(maps.Keys(recs)) {
		if cur := s.rollouts.get(n); cur.Running() {
			if p.mayRead(api.ApplianceRoot(n)) == nil {
				return store.RolloutInProgress(n)
			}
			return api.Errorf(api.CodeRolloutInProgress, "an appliance this change would go to has a rollout in progress (one at a time per appliance): write again when it ends")
		}
	}
	if limit := s.st.MaxRequestBytes(); limit > 0 {
		// The promotion writes every record again, and the change too: a group that starts
		// just under the request size limit could never be promoted, after every canary.
		if n := promotionBytes(records, change); n > limit {
			return api.Errorf(api.CodeTooLarge, "the promotion of this shared rollout group (%d appliances, each rollout's record holding the change) would write about %d bytes in one transaction, over the embedded etcd's request size limit of %d bytes: change less at a time",
				len(records), n, limit)
		}
	}
	if testHookSharedStart != nil {
		testHookSharedStart()
	}
	live := map[string]bool{} // the keys of the change that exist (the release tells created from changed)
	for _, k := range change.Keys() {
		_, _, err := s.st.Get(ctx, api.SharedPrefix+"/"+k)
		if err != nil && !errors.Is(err, api.ErrNotFound) {
			return err
		}
		live[k] = err == nil
	}
	rev, err := s.st.StartSharedRollout(ctx, group, records, locked, sharedRolloutRelease(group, recs, change, live, now, r))
	setIndex(w, rev)
	if err != nil {
		return err
	}
	apps := slices.Sorted(maps.Keys(recs))
	for _, n := range apps {
		s.rollouts.set(n, recs[n], rev)
	}
	for _, n := range apps {
		if err := s.catchUpCandidate(ctx, n, recs[n]); err != nil {
			s.log.Warn("shared rollout: the candidate of an appliance written to as the group started is not caught up", "appliance", n, "group", group, "err", err)
		}
	}
	s.audit(r, "rollout-start", locked, rev)
	s.log.Info("shared rollout group started", "group", group, "appliances", apps, "keys", len(locked), "kind", kind)
	// The rollouts of the appliances the writer may read (the others' instances are not its to see).
	out := api.SharedRolloutStatus{Group: group, State: api.RolloutRunning, Revision: rev, Shared: change.Keys(), Appliances: len(apps), Rollouts: []api.RolloutStatus{}}
	for _, n := range apps {
		if p.mayRead(api.ApplianceRoot(n)) == nil {
			out.Rollouts = append(out.Rollouts, recs[n].Status(nil, rev, time.Time{}))
		}
	}
	return writeJSON(w, http.StatusAccepted, rev, out)
}

// promotionBytes is about the size of the request that promotes a group of records (by
// appliance) bringing change: the records again, the change's puts, and room for the release
// record, the guards and the locks.
func promotionBytes(records map[string][]byte, change *rollout.SharedChange) int {
	n := 64 << 10
	for name, data := range records {
		n += len(data) + len(name) + 256
	}
	for k, v := range change.Puts {
		n += len(api.SharedPrefix) + len(k) + len(v) + 64
	}
	return n
}

// testHookSharedStart runs, when set (tests), between the reads of a shared rollout group's
// start and its transaction.
var testHookSharedStart func()

// catchUpCandidate makes the candidate of rec, appliance name's rollout of a group that just
// started, the appliance's own tree as the start left it: a plain write of the appliance
// committed between the read of its tree and the start is not undone for its cohort (its
// rollout-active key keeps the tree so from the start on).
func (s *Server) catchUpCandidate(ctx context.Context, name string, rec *rollout.Record) error {
	own, err := s.ownTree(ctx, name)
	if err != nil || maps.Equal(own, rec.Candidate) {
		return err
	}
	return s.setCandidate(ctx, name, rec.ID, own)
}

// setCandidate makes cand the candidate of appliance name's rollout id while it runs.
func (s *Server) setCandidate(ctx context.Context, name, id string, cand map[string]string) error {
	for try := 0; ; try++ {
		cur, rev, err := s.readRollout(ctx, name)
		if err != nil {
			return err
		}
		if cur.ID != id || !cur.Running() {
			return nil
		}
		cur.Candidate = cand
		data, _ := json.Marshal(cur)
		nrev, err := s.st.UpdateRollout(ctx, name, data, rev, true)
		if errors.Is(err, api.ErrConflict) && try < 5 {
			continue
		}
		if err != nil {
			return err
		}
		s.rollouts.set(name, &cur, nrev)
		return nil
	}
}

// sharedRolloutRelease is the release record of a group's start: kind rollout, the shared/
// keys the change would create, change and delete, and the appliances it goes to first.
func sharedRolloutRelease(group string, recs map[string]*rollout.Record, c *rollout.SharedChange, live map[string]bool, now time.Time, r *http.Request) api.Release {
	ch := api.ReleaseChange{Scope: api.ScopeShared}
	for _, k := range c.Deletes {
		if live[k] {
			ch.Deleted = append(ch.Deleted, api.SharedPrefix+"/"+k)
		}
	}
	for k := range c.Puts {
		if live[k] {
			ch.Changed = append(ch.Changed, api.SharedPrefix+"/"+k)
		} else {
			ch.Created = append(ch.Created, api.SharedPrefix+"/"+k)
		}
	}
	slices.Sort(ch.Created)
	slices.Sort(ch.Changed)
	ch.CreatedCount, ch.ChangedCount, ch.DeletedCount = len(ch.Created), len(ch.Changed), len(ch.Deleted)
	ch.Created = ch.Created[:min(len(ch.Created), api.MaxReleaseNames)]
	ch.Changed = ch.Changed[:min(len(ch.Changed), api.MaxReleaseNames)]
	ch.Deleted = ch.Deleted[:min(len(ch.Deleted), api.MaxReleaseNames)]
	var st api.RolloutStrategy
	for _, rec := range recs {
		st = rec.Strategy
		break
	}
	msg := fmt.Sprintf("shared rollout group %s started on %s: %s", group, appliancesText(len(recs)), st.Shares())
	if m := r.Header.Get(api.HeaderMessage); m != "" {
		msg += ": " + m
	}
	return api.Release{ID: group, Time: now, Token: info(r).token, Remote: r.RemoteAddr, Message: cut(msg, 4096), Source: r.Header.Get(api.HeaderSource),
		Kind: api.KindRollout, Rollout: group, Changes: []api.ReleaseChange{ch}}
}

// groupReady reports whether every running rollout of group that this replica knows of has
// passed its last step.
func (rs *rolloutSet) groupReady(group string) bool {
	rs.mu.RLock()
	defer rs.mu.RUnlock()
	for _, r := range rs.m {
		if r.Group == group && r.Running() && !r.Ready {
			return false
		}
	}
	return true
}

// groupRecords reads the rollout records of shared rollout group group from the store, by
// appliance, with the mod_revision each was read at.
func (s *Server) groupRecords(ctx context.Context, group string) (map[string]rollout.Record, map[string]int64, error) {
	m, _, err := s.st.SysList(ctx, rollout.Prefix)
	if err != nil {
		return nil, nil, err
	}
	recs, revs := map[string]rollout.Record{}, map[string]int64{}
	for k, v := range m {
		name, ok := strings.CutPrefix(k, rollout.Prefix)
		if !ok {
			continue
		}
		var peek struct {
			Group string `json:"group"`
		}
		if json.Unmarshal(v, &peek) != nil || peek.Group != group {
			continue
		}
		rec, rev, err := s.readRollout(ctx, name)
		if err != nil {
			return nil, nil, err
		}
		if rec.Group == group {
			recs[name], revs[name] = rec, rev
		}
	}
	return recs, revs, nil
}

// lockedKeys are the shared/ keys (KV names) that change locks.
func lockedKeys(c *rollout.SharedChange) []string {
	var out []string
	for _, k := range c.Keys() {
		out = append(out, api.SharedPrefix+"/"+k)
	}
	return out
}

// endGroup ends every running rollout of shared rollout group group in state (halted or
// aborted): the one of appliance first (when not "") for reason, naming instance, the others
// because of it. One transaction; no shared/ key is written. It answers first's status.
func (s *Server) endGroup(ctx context.Context, group, first, state, reason, instance string) (api.RolloutStatus, error) {
	for try := 0; ; try++ {
		recs, revs, err := s.groupRecords(ctx, group)
		if err != nil {
			return api.RolloutStatus{}, err
		}
		var change *rollout.SharedChange
		running := false
		for _, rec := range recs {
			running = running || rec.Running()
			if change == nil {
				change = rec.Shared
			}
		}
		if !running {
			if rec, ok := recs[first]; ok {
				return rec.Status(nil, revs[first], time.Time{}), errRolloutNotRunning
			}
			// The records have all ended: free what a crash between may have left.
			if change != nil {
				_, err = s.st.EndGroup(ctx, group, nil, lockedKeys(change))
			}
			return api.RolloutStatus{}, errors.Join(errRolloutNotRunning, err)
		}
		now := time.Now().UTC()
		out := map[string]store.GroupRecord{}
		ended := map[string]*rollout.Record{}
		for name, rec := range recs {
			if !rec.Running() {
				continue
			}
			rec.Ready, rec.Promote = false, false
			if name == first || first == "" {
				rec.End(state, reason, instance, now, s.endReports(ctx, name))
			} else {
				rec.End(state, fmt.Sprintf("the shared rollout group %s ended: %s", group, reason), "", now, s.endReports(ctx, name))
				rec.Cause = first
			}
			data, _ := json.Marshal(rec)
			out[name] = store.GroupRecord{Record: data, Cas: revs[name]}
			ended[name] = &rec
		}
		nrev, err := s.st.EndGroup(ctx, group, out, lockedKeys(change))
		if errors.Is(err, api.ErrConflict) && try < 5 {
			continue
		}
		if err != nil {
			return api.RolloutStatus{}, err
		}
		for name, rec := range ended {
			s.rollouts.set(name, rec, nrev)
		}
		s.log.Warn("shared rollout group ended", "group", group, "state", state, "reason", reason)
		for name, rec := range ended {
			s.countLate(ctx, name, rec.ID, s.reportsAtEnd(ctx, name, nrev))
		}
		if rec, ok := ended[first]; ok {
			return rec.Status(nil, nrev, time.Time{}), nil
		}
		for _, rec := range ended {
			return rec.Status(nil, nrev, time.Time{}), nil
		}
	}
}

// groupStepDone marks appliance name's rollout of a group (rec at record revision rev) as past
// its last step, and promotes the group when all of its rollouts are.
func (s *Server) groupStepDone(ctx context.Context, name string, rec rollout.Record, rev int64) error {
	if s.writable() != nil {
		return nil // held as stepRollout holds a step: the group's promotion writes shared/
	}
	if !rec.Ready {
		rec.Ready, rec.Promote = true, false
		out, _ := json.Marshal(rec)
		nrev, err := s.st.UpdateRollout(ctx, name, out, rev, true)
		if err != nil {
			return err
		}
		s.rollouts.set(name, &rec, nrev)
		s.log.Info("shared rollout ready", "appliance", name, "rollout", rec.ID, "group", rec.Group)
	}
	// What this replica knows first: the store is read only once the others look ready.
	if !s.rollouts.groupReady(rec.Group) {
		return nil
	}
	recs, revs, err := s.groupRecords(ctx, rec.Group)
	if err != nil {
		return err
	}
	for _, r := range recs {
		if !r.Running() || !r.Ready {
			return nil // still on its way; or ended, and then endGroup ends the others
		}
	}
	return s.promoteGroup(ctx, rec.Group, recs, revs)
}

// promoteGroup writes the group's change to the live shared/ tree, as one release, in one
// transaction with the final records of all its rollouts.
func (s *Server) promoteGroup(ctx context.Context, group string, recs map[string]rollout.Record, revs map[string]int64) error {
	now := time.Now().UTC()
	var first rollout.Record
	for _, n := range slices.Sorted(maps.Keys(recs)) {
		first = recs[n]
		break
	}
	change := first.Shared
	out := map[string]store.GroupRecord{}
	final := map[string]rollout.Record{}
	for name, rec := range recs {
		rec.State, rec.Ended, rec.Promote = api.RolloutPromoted, &now, false
		data, _ := json.Marshal(rec)
		out[name] = store.GroupRecord{Record: data, Cas: revs[name]}
		final[name] = rec
	}
	var ops []api.Op
	for _, k := range slices.Sorted(maps.Keys(change.Puts)) {
		ops = append(ops, api.Op{Op: api.OpPut, Key: api.SharedPrefix + "/" + k, Value: change.Puts[k]})
	}
	for _, k := range change.Deletes {
		ops = append(ops, api.Op{Op: api.OpDelete, Key: api.SharedPrefix + "/" + k})
	}
	kind := first.Kind
	if kind != api.KindPut {
		kind = api.KindTxn
	}
	msg := fmt.Sprintf("shared rollout group %s promoted on %s", group, appliancesText(len(recs)))
	if first.Message != "" {
		msg += ": " + first.Message
	}
	ri := store.ReleaseInfo{Token: first.Token, Remote: "rollout group " + group, Message: cut(msg, 4096), Source: first.Source, Kind: kind}
	wctx := store.WithGroupPromotion(store.WithRelease(ctx, ri), group, out, lockedKeys(change))
	lrev, err := s.st.Txn(wctx, api.Txn{Ops: ops})
	if ae := (*api.Error)(nil); errors.As(err, &ae) && (ae.Code == api.CodeInvalidRequest || ae.Code == api.CodeInvalidKey || ae.Code == api.CodeTooLarge || ae.Code == api.CodeValueTooLarge) {
		// Refused as it is, it would be refused at every tick: the group must not hold the
		// keys and appliances until someone aborts it.
		if _, err := s.endGroup(ctx, group, "", api.RolloutHalted, "the change cannot be written to shared/: "+ae.Message, ""); err != nil && !errors.Is(err, errRolloutNotRunning) {
			return err
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("promote shared rollout group %s: %w", group, err)
	}
	s.kickPruner()
	for name, rec := range final {
		s.rollouts.set(name, &rec, lrev)
	}
	s.auditLine(ctx, auditWho{token: first.Token, message: ri.Message, source: first.Source}, "rollout-promote", lockedKeys(change), lrev, slog.String("rollout_group", group))
	s.log.Info("shared rollout group promoted", "group", group, "revision", lrev)
	return nil
}

// abortGroupForForce ends the running shared rollout group when a plain write sent with force
// touches a key it changes (ops) or an appliance of it (names).
func (s *Server) abortGroupForForce(ctx context.Context, r *http.Request, ops []api.Op) error {
	data, _, err := s.st.SysGet(ctx, rollout.GroupKey)
	if errors.Is(err, api.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	group := string(data)
	recs, _, err := s.groupRecords(ctx, group)
	if err != nil {
		return err
	}
	var change *rollout.SharedChange
	for _, rec := range recs {
		change = rec.Shared
		break
	}
	touches := change == nil // records gone: the group key is left over; clear it
	for _, op := range ops {
		for _, k := range lockedKeys(change) {
			touches = touches || op.Key == k || op.Recurse && api.Under(k, op.Key)
		}
	}
	if !touches {
		return nil
	}
	if _, err := s.endGroup(ctx, group, "", api.RolloutAborted, fmt.Sprintf("aborted by a write with force (token %s)", info(r).token), ""); err != nil && !errors.Is(err, errRolloutNotRunning) {
		return err
	}
	return nil
}

// appliancesText is "1 appliance" or "N appliances".
func appliancesText(n int) string {
	if n == 1 {
		return "1 appliance"
	}
	return fmt.Sprintf("%d appliances", n)
}

// shownStatus is st, a rollout's status, as principal p may see it (cause: the record's Cause): the reason of a rollout that
// another appliance's rollout of its group ended names that appliance, its instance and its
// error, which a token that may not read that appliance is not shown; nor are the names of
// shared/ keys it may not read.
func shownStatus(st api.RolloutStatus, cause string, p *principal) api.RolloutStatus {
	if cause != "" && p.mayRead(api.ApplianceRoot(cause)) != nil {
		st.Reason = fmt.Sprintf("the shared rollout group %s ended: the rollout of another appliance of the group was %s (its reason is shown to the readers of that appliance)", st.Group, st.State)
	}
	// The shared/ keys of the change that p may read (a reader of the appliance alone reads none).
	st.Shared = slices.DeleteFunc(st.Shared, func(k string) bool { return p.mayRead(api.SharedPrefix+"/"+k) != nil })
	return st
}

// noSharedCohort is the refusal of a canary of shared/ that found no appliance to draw instances
// from; names are the appliances with keys of their own. When instances that could be drawn are
// enrolled under names without keys of their own (which have no view, and so take no part),
// it says so, naming those the token may read: "no appliance has an enrolled instance" said
// the opposite of what the instance list shows.
func (s *Server) noSharedCohort(ctx context.Context, r *http.Request, names []string) error {
	m, _, err := s.st.SysList(ctx, instancePrefix)
	if err != nil {
		return err
	}
	now := time.Now()
	var keyless, shown []string
	p := principalOf(r)
	for app, insts := range instancesOf(m) {
		if slices.Contains(names, app) {
			continue
		}
		for _, in := range insts {
			if s.drawable(in, now) {
				keyless = append(keyless, app)
				if p.mayRead(api.ApplianceRoot(app)) == nil {
					shown = append(shown, app)
				}
				break
			}
		}
	}
	if len(keyless) == 0 {
		return api.Errorf(api.CodeConflict, "no appliance has an enrolled instance seen in the last %s: a canary of shared/ needs at least one (agents enroll when `shoelace-agent run` starts); write without canary to change every instance at once",
			s.cfg.instanceStale())
	}
	which := fmt.Sprintf("%d appliance(s)", len(keyless))
	if len(shown) == len(keyless) {
		slices.Sort(shown)
		which = strings.Join(shown, ", ")
	}
	return api.Errorf(api.CodeConflict, "no appliance with keys of its own has an enrolled instance seen in the last %s: a canary of shared/ is drawn from those only; "+
		"the enrolled instances are of %s, without keys of their own, which have no view (an appliance exists while it has a key of its own) and take no part; "+
		"give an appliance a key of its own, or write without canary to change every instance at once",
		s.cfg.instanceStale(), which)
}
