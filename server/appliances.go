package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/server/rollout"
	"github.com/shoelace-dev/shoelace/server/store"
)

// drainJitter spreads the 304s answered to open long-polls when the server shuts down.
const drainJitter = 1500 * time.Millisecond

// viewChangedWait bounds how long an unchanged apply waits for the hub to see the revision it
// was checked at (it usually has: the check writes nothing); past it the answer's revision is
// that of the view's keys alone.
const viewChangedWait = 2 * time.Second

func (s *Server) handleAppliances(w http.ResponseWriter, r *http.Request) error {
	if _, err := query(r); err != nil {
		return err
	}
	ctx, cancel := s.opCtx(r)
	defer cancel()
	names, rev, err := s.st.Appliances(ctx)
	setIndex(w, rev)
	if err != nil {
		return err
	}
	p := principalOf(r)
	out := api.Appliances{Appliances: []string{}}
	for _, n := range names {
		if p.maySeeAppliance(n) {
			out.Appliances = append(out.Appliances, n)
		}
	}
	return writeJSON(w, http.StatusOK, rev, out)
}

// parseWait parses a long-poll's wait=: a Go duration ("55s") or plain seconds ("55", "1.5").
func parseWait(s string, max time.Duration) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		f, ferr := strconv.ParseFloat(s, 64)
		if ferr != nil || f != f {
			return 0, api.Errorf(api.CodeInvalidRequest, "query parameter wait must be a duration such as 55s or a number of seconds, not %s", shorten(s))
		}
		if f > max.Seconds() {
			return 0, api.Errorf(api.CodeInvalidRequest, "query parameter wait %s is over the maximum of %s", shorten(s), max)
		}
		d = time.Duration(f * float64(time.Second))
	}
	if d < 0 {
		return 0, api.Errorf(api.CodeInvalidRequest, "query parameter wait must not be negative (%s)", shorten(s))
	}
	if d > max {
		return 0, api.Errorf(api.CodeInvalidRequest, "query parameter wait %s is over the maximum of %s", shorten(s), max)
	}
	return d, nil
}

func (s *Server) handleGetAppliance(w http.ResponseWriter, r *http.Request) error {
	var pr pollReq
	if err := s.pollRequest(r, &pr); err != nil {
		return err
	}
	report, err := agentReport(r, pr.name)
	if err != nil {
		return err
	}
	if p := principalOf(r); report != nil && p.appliance == pr.name {
		// Only an agent's report is taken (see handleReport): a read grant reads the view.
		s.takeReport(r.Context(), report, p, report.Rollout) // what it applied, as it says
	}
	if pr.index < 0 {
		return s.answerView(w, r, pr.name)
	}
	extendWrite(w, pr.wait+drainJitter+opTimeout)
	if pr.o.stream {
		return s.streamView(w, r, &pr)
	}
	return s.longPoll(w, r, &pr)
}

// pollReq is what a GET of an appliance's view asks: appliance name's view, at index (-1:
// none, else a long-poll or a stream), how long to wait, and its opt-ins.
type pollReq struct {
	name  string
	index int64
	wait  time.Duration
	o     pollOpts
}

// pollRequest reads a GET of an appliance's view into pr and checks it. Its own function, not
// inlined, so that its locals take no room in the frame of handleGetAppliance, on the stack
// of every open long-poll; and it returns before the agent's report is taken, whose calls go
// deepest before the long-poll waits (a goroutine stack that grows past 4 KiB once stays at
// 8 KiB for as long as its long-poll is open).
//
//go:noinline
func (s *Server) pollRequest(r *http.Request, pr *pollReq) error {
	q, ok := plainPollQuery(r.URL.RawQuery)
	if !ok {
		vals, err := query(r, pollParamNames[:]...)
		if err != nil {
			return err
		}
		q = pollQueryOf(vals)
	}
	pr.name = r.PathValue("name")
	if err := api.ValidateSegment("appliance name", pr.name); err != nil {
		return err
	}
	var err error
	if pr.index, err = revValue("index", q[pollIndex]); err != nil {
		return err
	}
	if pr.o, err = pollParams(q, pr.index); err != nil {
		return err
	}
	pr.wait = s.cfg.DefaultWait
	if pr.o.stream {
		pr.wait = s.cfg.MaxWait // a stream answers every change: it may stay open as long as allowed
	}
	if q[pollWait].set {
		if pr.index < 0 {
			return api.Errorf(api.CodeInvalidRequest, "query parameter wait needs index")
		}
		if pr.wait, err = parseWait(q[pollWait].v, s.cfg.MaxWait); err != nil {
			return err
		}
	}
	return principalOf(r).mayReadView(pr.name)
}

// The query parameters of a GET of an appliance's view, in pollQuery.
const (
	pollIndex = iota
	pollWait
	pollStream
	pollDelta
	pollBaseRollout
)

var pollParamNames = [...]string{"index", "wait", "stream", "delta", "base_rollout"}

// pollQuery holds the query parameters of a GET of an appliance's view, by pollIndex….
type pollQuery [len(pollParamNames)]queryParam

// queryParam is one query parameter's value, and whether it was given.
type queryParam struct {
	v   string
	set bool
}

// plainPollQuery reads raw, a GET of an appliance's view's query, without url.ParseQuery when
// it is plain: only this route's parameters, each at most once, nothing escaped (no %, + or
// ;). It reports false otherwise, for query to read it (and refuse what it refuses) as every
// route does. Every agent's long-poll has such a query; url.ParseQuery's map and value slices,
// and query's list of the allowed names, were about 500 bytes of garbage for each of them.
func plainPollQuery(raw string) (q pollQuery, ok bool) {
	if strings.ContainsAny(raw, "%+;") {
		return q, false
	}
	for raw != "" {
		var kv string
		kv, raw, _ = strings.Cut(raw, "&")
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		i := slices.Index(pollParamNames[:], k)
		if i < 0 || q[i].set {
			return q, false
		}
		q[i] = queryParam{v: v, set: true}
	}
	return q, true
}

// pollQueryOf is the pollQuery of vals, checked by query.
func pollQueryOf(vals url.Values) pollQuery {
	var q pollQuery
	for i, name := range pollParamNames {
		if vs, ok := vals[name]; ok && len(vs) > 0 {
			q[i] = queryParam{v: vs[0], set: true}
		}
	}
	return q
}

// answerView answers appliance name's view as it is now (no index: no long-poll). Its own
// function, not inlined: its locals (two views) would otherwise take room in the frame of
// handleGetAppliance, on the stack of every open long-poll.
//
//go:noinline
func (s *Server) answerView(w http.ResponseWriter, r *http.Request, name string) error {
	ctx, cancel := s.opCtx(r)
	defer cancel()
	// One read of the store shared by the requests that arrive together (see freshFlight).
	f := s.hub.freshFlight(name)
	v, body, err := f.wait(ctx)
	setIndex(w, v.Revision)
	if err != nil {
		return err
	}
	if rec := s.candidateFor(name, principalOf(r)); rec != nil {
		if err := s.rolloutsKnown(); err != nil {
			return err
		}
		cf := s.hub.candidateFlight(name, rec, v.Revision)
		cv, body, err := cf.wait(ctx)
		if err != nil {
			return err
		}
		if still, err := s.candidateStill(ctx, name, principalOf(r), rec, cv.Revision); err != nil {
			return err
		} else if !still {
			return s.answerView(w, r, name) // the rollout ended at or before cv.Revision
		}
		setIndex(w, cv.Revision)
		return writeBody(w, r, body, &cf.gz)
	}
	release, err := holdAnswer(w, len(body))
	if err != nil {
		return err
	}
	defer release()
	return writeBody(w, r, body, &f.gz)
}

// pollOpts are what a long-poll opted in to.
type pollOpts struct {
	stream bool // answer every change on one response (stream.go)
	delta  bool // answer the difference from the view at index when smaller
	// baseRollout is the rollout whose candidate the client's view at index is ("": live).
	baseRollout string
}

// pollParams reads a long-poll's opt-ins: stream, delta and base_rollout.
func pollParams(q pollQuery, index int64) (pollOpts, error) {
	var o pollOpts
	var err error
	if o.stream, err = flagValue("stream", q[pollStream]); err != nil {
		return o, err
	}
	if o.delta, err = flagValue("delta", q[pollDelta]); err != nil {
		return o, err
	}
	o.baseRollout = q[pollBaseRollout].v
	switch {
	case index < 0 && (o.stream || o.delta):
		return o, api.Errorf(api.CodeInvalidRequest, "query parameters stream and delta need index (the revision of the view the client has)")
	case q[pollBaseRollout].set && !o.delta:
		return o, api.Errorf(api.CodeInvalidRequest, "query parameter base_rollout needs delta")
	case len(o.baseRollout) > 64 || !rollout.ValidID(o.baseRollout):
		return o, api.Errorf(api.CodeInvalidRequest, "query parameter base_rollout must be a rollout id as a view gives it (digits, a-f and -, at most 64 bytes), not %s", shorten(o.baseRollout))
	}
	return o, nil
}

// answer is the body of one view answer: the full view, or a delta.
type answer struct {
	rev     int64 // the view's revision
	rollout string
	body    []byte
	gz      *gzipped
}

// changed returns what a long-poll (or a stream's line) woken by wk answers: the view the
// principal gets (a running rollout's candidate for an instance of its cohort, the live view
// otherwise), or, with o.delta, its difference from the view at index when the hub can make
// it and it is smaller. Both are made once and shared by every long-poll that answers them.
// p is the request's principal (principalOf, looked up once: a context walk over cold memory
// for each of 10,000 woken long-polls).
func (s *Server) changed(ctx context.Context, p *principal, name string, index int64, o pollOpts, wk wake) (answer, error) {
	rec := s.candidateFor(name, p)
	if rec != nil {
		if err := s.rolloutsKnown(); err != nil {
			return answer{}, err
		}
	}
	if o.delta && wk.known {
		if from, ok := s.baseSide(name, p, o.baseRollout); ok {
			if f := s.hub.delta(name, index, from, sideOf(rec), wk.rev); f.body != nil {
				if rec != nil {
					if still, err := s.candidateStill(ctx, name, p, rec, f.at); err != nil {
						return answer{}, err
					} else if !still {
						return s.changed(ctx, p, name, index, o, wk)
					}
				}
				return answer{rev: f.at, rollout: sideOf(rec).id, body: f.body, gz: &f.gz}, nil
			}
		}
	}
	f := s.hub.viewFlight(name, wk.rev, wk.known)
	v, body, err := f.wait(ctx)
	if err != nil {
		return answer{}, err
	}
	// An instance of a running rollout's cohort gets the candidate (while the appliance
	// exists: a deleted appliance is 404 to every instance).
	if rec != nil {
		f = s.hub.candidateFlight(name, rec, v.Revision)
		if v, body, err = f.wait(ctx); err != nil {
			return answer{}, err
		}
		if still, err := s.candidateStill(ctx, name, p, rec, v.Revision); err != nil {
			return answer{}, err
		} else if !still {
			return s.changed(ctx, p, name, index, o, wk)
		}
	}
	return answer{rev: v.Revision, rollout: v.Rollout, body: body, gz: &f.gz}, nil
}

// baseSide is the tree of the view a delta's client has: the live view, or the candidate of
// rollout id when that is appliance name's rollout and p's instance is in its cohort, p being
// the token it was drawn with (running or not: an aborted rollout's canaries come back from the
// candidate). ok false otherwise: answer
// the full view. A client outside the cohort cannot have the candidate, and a delta from it
// would name the candidate's keys (its unset) and which keys it changes.
func (s *Server) baseSide(name string, p *principal, id string) (side, bool) {
	if id == "" {
		return side{}, true
	}
	if rec := s.rollouts.get(name); rec != nil && rec.ID == id && p.instance != "" && slices.Contains(rec.Cohort(), p.instance) && drawnHolder(rec, p) {
		return sideOf(rec), true
	}
	return side{}, false
}

// longPoll answers the view of pr.name once it changed after pr.index, or 304 when pr.wait
// expires.
func (s *Server) longPoll(w http.ResponseWriter, r *http.Request, pr *pollReq) error {
	ctx := r.Context()
	p := principalOf(r)
	var wk wake
	if id, cur := r.Header.Get(api.HeaderStore), s.st.ID(); id != "" && cur != "" && id != cur {
		// The agent's index belongs to another store (replaced or restored): answer at once.
		wk = wake{kind: wakeChanged, rev: s.hub.current()}
	} else {
		var err error
		if wk, err = s.hub.wait(ctx, pr.name, pr.index, p.name, instanceOf(r), revocationOf(r), jitter(pr.wait)); err != nil {
			return err
		}
	}
	// The store id may have changed while the request waited.
	w.Header().Set(api.HeaderStore, s.st.ID())
	switch wk.kind {
	case wakeChanged:
		return s.answerChanged(ctx, p, pr.name, pr.index, pr.o, wk)
	case wakeRevoked:
		return api.Errorf(api.CodeUnauthorized, "token revoked")
	case wakeDrain:
		sleep(ctx, time.Duration(rand.Int64N(int64(drainJitter))))
	}
	// The store is at least at the index the client saw, even while this replica's watch lags
	// behind it: a 304 never sends a client back to an older index.
	setIndex(w, max(wk.rev, pr.index))
	w.WriteHeader(http.StatusNotModified)
	return nil
}

// answerChanged is a woken long-poll's answer (see changed), for apiHandler to write. Not
// inlined, as answerView.
//
//go:noinline
func (s *Server) answerChanged(ctx context.Context, p *principal, name string, index int64, o pollOpts, wk wake) error {
	a, err := s.changed(ctx, p, name, index, o, wk)
	if err != nil {
		return err
	}
	return &answerLater{rev: a.rev, body: a.body, gz: a.gz}
}

func (s *Server) handlePutAppliance(w http.ResponseWriter, r *http.Request) error {
	q, err := query(r, append([]string{"cas", "dry_run"}, rolloutQuery...)...)
	if err != nil {
		return err
	}
	strat, force, err := rolloutParams(q)
	if err != nil {
		return err
	}
	cas, err := revParam(q, "cas")
	if err != nil {
		return err
	}
	dry, err := flag(q, "dry_run")
	if err != nil {
		return err
	}
	if dry && q.Has("cas") {
		return api.Errorf(api.CodeInvalidRequest, "dry_run answers with the revision it read: give that as cas to the apply itself, not to the dry run")
	}
	if dry && strat != nil {
		// Its plan would be the plain apply's: a canary apply changes no live key, and may be
		// refused (no enrolled instance, a rollout running) where the plan said nothing.
		return api.Errorf(api.CodeInvalidRequest, "dry_run starts no rollout: it answers what an apply would change in the live keys, which an apply with canary leaves until its rollout is promoted; ask the dry run without canary (its changes are the rollout's), then apply with canary")
	}
	name := r.PathValue("name")
	if err := api.ValidateSegment("appliance name", name); err != nil {
		return err
	}
	p := principalOf(r)
	if err := p.mayWrite(api.ApplianceRoot(name)); err != nil {
		return err
	}
	if !dry {
		if err := s.writable(); err != nil {
			return err
		}
	}
	kind, rollbackTo := api.KindApply, int64(0)
	if v := r.Header.Get(api.HeaderRollback); v != "" {
		if rollbackTo, err = strconv.ParseInt(v, 10, 64); err != nil || rollbackTo <= 0 {
			return api.Errorf(api.CodeInvalidRequest, "header %s must be the revision the rollback restores, not %s", api.HeaderRollback, shorten(v))
		}
		kind = api.KindRollback
	}
	var keys map[string]string
	var sh *share // the request's share of the bodyBudget: its body's, or its trees'
	read := kind == api.KindRollback && r.ContentLength == 0
	if read {
		// A rollback without a body restores the tree at rollbackTo as the server reads it
		// (see rollbackTree): a tree made of single puts may be larger than an apply body may
		// be, and sent as one it was refused (413) though its write, which puts only the keys
		// that differ, fits etcd's limits.
		rctx, rcancel := s.opCtx(r)
		defer rcancel()
		sh = s.bodyBudget.shareOf(r)
		defer sh.release()
		if keys, err = s.rollbackTree(rctx, r, name, rollbackTo, sh); err != nil {
			return err
		}
	} else {
		media := mediaType(r)
		limit := s.cfg.maxBodyBytes()
		if sh, err = s.bodyBudget.take(r, limit); err != nil {
			return err
		}
		defer sh.release()
		var watch func(io.Reader) error
		if isJSONMedia(media) {
			watch = countJSONKeys(s.cfg.MaxTxnOps) // refused as soon as its keys pass the limit
		}
		data, err := readBodyWatched(w, r, limit, func() error {
			return api.Errorf(api.CodeBodyTooLarge, "apply body is over the limit of %s", s.cfg.bodyLimit())
		}, watch)
		if err != nil {
			return err
		}
		release := func() {}
		if isYAMLMedia(media) {
			// Given back once the body is parsed, which is what it bounds: held until the
			// handler returned, it was held through the wait for the live tree's share of the
			// body budget (a dry run, a write with canary), while a large YAML apply that held
			// its body's share waited for it.
			if release, err = s.yamlBudget.take(r, len(data)); err != nil {
				return err
			}
		}
		keys, err = applyBody(data, media, name, s.cfg.MaxValueBytes, s.cfg.MaxTxnOps)
		release()
		if err != nil {
			return err
		}
	}
	ctx, cancel := s.opCtx(r)
	defer cancel()
	if kind == api.KindRollback && !read { // rollbackTree checked them
		if err := s.rollbackNotAhead(ctx, rollbackTo); err != nil {
			return err
		}
		// A revision a restore lost is no state of the store's history either: its keys, read
		// before the restore, are an apply, not a rollback to it.
		if err := s.lostRevision(ctx, rollbackTo, "a rollback names a revision of the store's history; nothing was written: apply the keys without "+api.HeaderRollback+", or roll back to a revision the store has"); err != nil {
			return err
		}
	}
	if dry {
		if err := s.checkSchema(ctx, name, keys); err != nil {
			return err
		}
		return s.planApply(ctx, w, name, keys, sh)
	}
	if strat != nil {
		// The rollout starts only from the state the caller read (a rollback reads it): its
		// cas is refused as the apply's would be (a key changed or deleted since, 409; a
		// revision ahead of the store, 400).
		kvs, read, err := s.applyBase(ctx, name, cas, sh, "write with canary to appliance "+strconv.Quote(name), "a rollout's record holds it whole")
		if err != nil {
			return err
		}
		if live := treeOf(name, kvs); !maps.Equal(live, keys) {
			err := s.startRollout(ctx, w, r, name, live, keys, strat, kind, rollbackTo, nil)
			if e := (*api.Error)(nil); kind == api.KindRollback && errors.As(err, &e) && e.Code == api.CodeTooLarge {
				// The rollout's record holds the whole tree, not the change a live rollback
				// writes: say why it cannot start, as the live rollback's refusal does.
				return api.Errorf(api.CodeTooLarge, "rollback of appliance %q to revision %d with canary: the rollout's record holds the whole tree it restores (%d keys, its candidate), which is more than one etcd transaction may carry, and a rollout starts in one transaction; nothing was written. Roll back without canary (its transaction carries only the keys that differ from the live tree), or raise the etcd limit it met (its --max-request-bytes or --max-txn-ops; the embedded etcd's grow with --max-value-bytes): %s",
					name, rollbackTo, len(keys), e.Message)
			}
			return err
		}
		// An apply that changes nothing writes nothing, with canary too: no rollout of the
		// live tree (whose cohort would re-render for nothing and whose other writes would wait
		// for it), answered as the plain apply is. Guarded on the read: a change since is 409,
		// never a write of these keys without a rollout.
		cas = read
	}
	if force {
		if err := s.abortForForce(ctx, r, name); err != nil {
			return err
		}
	}
	res, err := s.applyTree(ctx, w, r, kind, name, rollbackTo, keys, cas)
	if e := (*api.Error)(nil); kind == api.KindRollback && errors.As(err, &e) && e.Code == api.CodeTooLarge {
		// etcd refused the transaction whole: say why a rollback cannot go in parts.
		return api.Errorf(api.CodeTooLarge, "rollback of appliance %q to revision %d: its changes (the keys that differ from the live tree) are more than one etcd transaction may carry, and a rollback is one transaction, so that agents never see half of it; nothing was written. Raise the etcd limit it met (its --max-request-bytes or --max-txn-ops; the embedded etcd's grow with --max-value-bytes), or restore the keys in steps of your own, not atomic (appliance diff, kv put): %s",
			name, rollbackTo, e.Message)
	}
	if err != nil {
		return err
	}
	if res.Unchanged {
		return s.unchanged(name, res, kind, slices.Collect(maps.Keys(keys)), api.ApplianceRoot(name)+"/")
	}
	list := make([]string, 0, len(keys))
	root := api.ApplianceRoot(name) + "/"
	for k := range keys {
		list = append(list, root+k)
	}
	slices.Sort(list)
	if len(res.Deleted) > 0 {
		// The keys of the appliance the apply left out are gone: the trail names them too.
		s.audit(r, kind, list, res.Revision, slog.Any("deleted", redactKeys(res.Deleted)))
	} else {
		s.audit(r, kind, list, res.Revision)
	}
	return writeJSON(w, http.StatusOK, res.Revision, api.WriteResult{Revision: res.Revision})
}

// planApply answers an apply's dry run: what applying keys to appliance name would put, change
// and delete in the store as it is now. Nothing is written and nothing is audited. The live
// tree is read within the request's share of the bodyBudget, sh, as a write with canary reads
// it: read whole in no budget, small dry runs at once to an appliance of large values, which
// write nothing and may be sent again at will, held the tree each.
func (s *Server) planApply(ctx context.Context, w http.ResponseWriter, name string, keys map[string]string, sh *share) error {
	root := api.ApplianceRoot(name)
	cur, rev, err := s.applyBase(ctx, name, -1, sh, "dry run of an apply to appliance "+strconv.Quote(name), "a dry run compares it whole")
	if err != nil {
		return err
	}
	plan := api.ApplyPlan{Revision: rev, DryRun: true, Put: []string{}, Changed: []string{}, Deleted: []string{},
		Old: map[string]string{}, New: map[string]string{}}
	shown := func(key, v string) string {
		if api.IsSecret(key) {
			return api.MaskedSecret
		}
		return v
	}
	have := make(map[string]string, len(cur))
	for _, kv := range cur {
		rel, ok := strings.CutPrefix(kv.Key, root+"/")
		if !ok {
			continue // the key named as the root itself: not the appliance's, nor the apply's
		}
		have[kv.Key] = kv.Value
		if _, keep := keys[rel]; !keep {
			plan.Deleted = append(plan.Deleted, kv.Key)
			plan.Old[kv.Key] = shown(kv.Key, kv.Value)
		}
	}
	for k, v := range keys {
		full := root + "/" + k
		switch old, ok := have[full]; {
		case !ok:
			plan.Put = append(plan.Put, full)
			plan.New[full] = shown(full, v)
		case old != v:
			plan.Changed = append(plan.Changed, full)
			plan.Old[full], plan.New[full] = shown(full, old), shown(full, v)
		default:
			plan.Unchanged++
		}
	}
	slices.Sort(plan.Put)
	slices.Sort(plan.Changed)
	slices.Sort(plan.Deleted)
	// The answer shows the old values: as large as the tree. Written within the share, it
	// held it as long as a client took to read it (no write timeout bounds that), so that
	// dry runs whose answers were not read held the budget for good. The budget of answers
	// counts the answer; the share goes back before it is written.
	sh.release()
	return writeJSON(w, http.StatusOK, rev, plan)
}

// applianceUnknown is the 404 of a read about appliance name when the store holds nothing of
// it: no key of its own, no release that changed it, no instance record, no schema and no
// rollout record. Such a name is mistyped, and an empty answer (no releases, no agents) would
// pass for an appliance that has none yet. nil when it has any of them. rels are the releases
// when the caller has read them (nil: read here, when nothing else is found).
func (s *Server) applianceUnknown(ctx context.Context, name string, rels []api.Release) error {
	held, err := s.st.Holds(ctx, api.ApplianceRoot(name), instancePrefix+name+"/", reportErrorPrefix+name+"/", store.SchemaPrefix+name, rollout.Prefix+name)
	if err != nil || held {
		return err
	}
	if rels == nil {
		if rels, _, err = s.st.Releases(ctx); err != nil {
			return err
		}
	}
	if slices.ContainsFunc(rels, func(r api.Release) bool { return r.Touches(name, false) }) {
		return nil
	}
	return api.Errorf(api.CodeNotFound, "appliance %q not found: it has no keys, releases, instances, schema or rollout", name)
}

// ownTree reads appliance name's own keys as they are now, relative to appliances/<name>/.
func (s *Server) ownTree(ctx context.Context, name string) (map[string]string, error) {
	kvs, _, err := s.st.List(ctx, api.ApplianceRoot(name), false)
	if err != nil {
		return nil, err
	}
	return treeOf(name, kvs), nil
}

// treeOf is appliance name's own tree from its keys as List reads them.
func treeOf(name string, kvs []api.KV) map[string]string {
	root := api.ApplianceRoot(name) + "/"
	tree := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		if rel, ok := strings.CutPrefix(kv.Key, root); ok {
			tree[rel] = kv.Value
		}
	}
	return tree
}

// rollbackNotAhead refuses a rollback to a revision ahead of the store: a release naming a
// revision the store never had would say it restored a state that never was (the cas of an
// apply ahead of the store is refused alike).
func (s *Server) rollbackNotAhead(ctx context.Context, rollbackTo int64) error {
	cur, err := s.st.Revision(ctx)
	if err != nil {
		return err
	}
	if rollbackTo > cur {
		return api.Errorf(api.CodeInvalidRequest, "header %s: revision %d is ahead of the store (at revision %d): a rollback restores a revision the store has had",
			api.HeaderRollback, rollbackTo, cur)
	}
	return nil
}

// rollbackTree is the appliance's own tree at rollbackTo, for a rollback sent without a body:
// read as GET …/at/R reads it (from etcd's history, or once compacted from the release copies;
// a revision a restore lost is 410), by a caller who may read it, in one of the replica's
// slots of reads of a past revision. The apply of it puts only the keys that differ from the
// live tree, in one transaction: its size is that of the change, not of the tree, and a change
// over etcd's limits is refused whole (413, nothing written).
//
// The tree is held until the apply is done, and its bytes count against the replica's
// bodyBudget, as an apply body's do: read whole, a tree of ten thousand values of a MiB (or
// several rollbacks of large trees at once) took the replica's memory, where GET …/at/R reads
// it a page at a time. Its share joins the request's, sh, which its handler gives back; a tree
// larger than the whole budget cannot be rolled back in one transaction here (413, nothing
// written).
func (s *Server) rollbackTree(ctx context.Context, r *http.Request, name string, rollbackTo int64, sh *share) (keys map[string]string, err error) {
	if err := principalOf(r).mayRead(api.ApplianceRoot(name)); err != nil {
		return nil, err
	}
	if err := s.rollbackNotAhead(ctx, rollbackTo); err != nil {
		return nil, err
	}
	if err := s.lostRevision(ctx, rollbackTo, "its keys then cannot be restored (a rollback to the snapshot's revision restores what the store holds of that time)"); err != nil {
		return nil, err
	}
	done, err := s.historySlot(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	var counted int64 // the tree's part of sh
	keys = map[string]string{}
	add := func(kvs []api.KV) error {
		if len(keys)+len(kvs) > s.cfg.MaxTxnOps {
			return api.Errorf(api.CodeTooLarge, "rollback of appliance %q: its tree at revision %d has more than the %d keys an apply may have: it cannot be restored in one transaction, and a rollback is one; nothing was written",
				name, rollbackTo, s.cfg.MaxTxnOps)
		}
		var n int64
		for _, kv := range kvs {
			n += int64(len(kv.Key) + len(kv.Value))
		}
		if err := s.bodyBudget.hold(ctx, &sh.held, n, func() string {
			return fmt.Sprintf("rollback of appliance %q: its tree at revision %d is larger than the %d bytes a replica holds of apply bodies at once: it cannot be restored in one transaction here, and a rollback is one; nothing was written", name, rollbackTo, s.bodyBudget.size())
		}); err != nil {
			return err
		}
		counted += n
		for _, kv := range kvs {
			keys[kv.Key] = kv.Value
		}
		return nil
	}
	_, err = s.st.ApplianceAtPaged(ctx, name, rollbackTo, func(kvs []api.KV, _ int64, _ bool) error { return add(kvs) })
	if err != nil && api.AsError(err).Code == api.CodeCompacted {
		// Compacted from the first page, or meanwhile: the pages read so far go, with their
		// share, and the release copies give the tree.
		sh.give(counted)
		counted = 0
		keys = map[string]string{}
		var old map[string]string
		if old, _, err = s.applianceFromReleases(ctx, name, rollbackTo); err == nil {
			kvs := make([]api.KV, 0, len(old))
			for k, v := range old {
				kvs = append(kvs, api.KV{Key: k, Value: v})
			}
			err = add(kvs)
		}
	}
	if err != nil {
		sh.give(counted)
		if code := api.AsError(err).Code; code == api.CodeNotFound || code == api.CodeCompacted {
			if uerr := s.applianceUnknown(ctx, name, nil); uerr != nil {
				return nil, uerr
			}
		}
		return nil, err
	}
	return keys, nil
}

// applyBase is Store.ApplyBase for a write with canary, whose rollout starts from the live tree
// read whole (its record holds it), and for an apply's dry run, which compares it whole: a tree
// of largeBody and more is held within the replica's bodyBudget as it is read, as a rollback's
// tree at its revision is (read in no budget, canary writes or dry runs at once to an appliance
// of large values held its tree each). Its share joins the request's, sh, which the handler
// gives back once it is done; a tree larger than the whole budget (with the body's share) is
// 413, its message naming the request (what, with the appliance) and why it needs the tree
// whole.
//
// A share the budget cannot give at once is not waited for with the pages read so far: they
// are let go, the share (what they took, at least) is waited for as hold waits, holding
// nothing of the tree, and the tree is read again within it. Waited for with its pages held,
// as many requests as were sent at once held a page or more each, uncounted (a rollback's
// tree waits so in one of historyReadsAtOnce slots; these have none). One wait in all: a share
// still short after it (the tree grew) is 503 as a wait that ran out.
func (s *Server) applyBase(ctx context.Context, name string, cas int64, sh *share, what, why string) (kvs []api.KV, read int64, err error) {
	tooLarge := func() string {
		return fmt.Sprintf("%s: its live tree is larger than the %d bytes a replica holds of apply bodies and trees at once, and %s; nothing was written", what, s.bodyBudget.size(), why)
	}
	var tree int64 // the tree's part of sh
	for waited := false; ; waited = true {
		var seen int64
		short := false
		kvs, read, err = s.st.ApplyBase(ctx, name, cas, func(page []api.KV) error {
			for _, kv := range page {
				seen += int64(len(kv.Key) + len(kv.Value))
			}
			if seen < largeBody || seen <= tree {
				return nil
			}
			if sh.held+seen-tree > s.bodyBudget.size() {
				return api.Errorf(api.CodeTooLarge, "%s", tooLarge())
			}
			if !s.bodyBudget.sem.TryAcquire(seen - tree) {
				short = true
				return errShortShare
			}
			sh.held += seen - tree
			tree = seen
			return nil
		})
		if !short {
			break
		}
		kvs = nil
		if waited {
			e := api.Errorf(api.CodeUnavailable, "this replica is reading other large bodies or trees (up to %d bytes at once); nothing was written: retry", s.bodyBudget.size())
			e.RetryAfter = 1
			return nil, read, e
		}
		before := sh.held
		if err := s.bodyBudget.hold(ctx, &sh.held, seen-tree, tooLarge); err != nil {
			return nil, read, err
		}
		tree += sh.held - before
	}
	if err != nil {
		return nil, read, err
	}
	return kvs, read, nil
}

// errShortShare ends applyBase's read of a tree whose share the budget cannot give at once.
var errShortShare = errors.New("the body budget's share is short")

// applyTree makes appliance name's own keys keys (guarded on cas, as Store.ApplyTree) as a
// release of kind, and sets the answer's index to the write's revision. A tree that was already
// in place is answered by its handler's unchanged, once the handler has returned.
func (s *Server) applyTree(ctx context.Context, w http.ResponseWriter, r *http.Request, kind, name string, rollbackTo int64, keys map[string]string, cas int64) (store.Applied, error) {
	res, err := s.st.ApplyTree(s.releaseCtx(ctx, r, kind, name, rollbackTo), name, keys, cas)
	if !res.Unchanged {
		setIndex(w, res.Revision)
	}
	return res, err
}

// unchangedLater is the answer of a write that changed nothing, returned by its handler rather
// than written from it (see answerUnchanged): its index is the revision its agents report once
// they have the view, for which it waits up to viewChangedWait for the hub (a deletion after
// the newest mod_revision of the keys it checked is known to the hub only). Waited for in the
// handler, the wait held the request's shares of the body budget and its body (the values it
// carried): for up to 2 s each, rollbacks and writes that needed the budget waited for it, or
// were refused 503. Returned, the handler's deferred releases give the shares back and nothing
// holds its values; what it keeps are the names of the keys, for its audit line.
type unchangedLater struct {
	app     string // the appliance whose view's change it waits for ("" for shared/)
	checked int64  // the revision the write was checked at, which the hub must see
	rev     int64  // the answer's revision at least
	op      string
	keys    []string // the audit line's keys, each after root; sorted when root is not ""
	root    string
}

func (*unchangedLater) Error() string { return "answer not written" }

// unchanged is the answer of appliance name's write of kind that res found in place already,
// for the keys its audit line names (each after root).
func (s *Server) unchanged(name string, res store.Applied, op string, keys []string, root string) *unchangedLater {
	return &unchangedLater{app: name, checked: res.Checked, rev: res.Revision, op: op, keys: keys, root: root}
}

// answerUnchanged writes u, the answer of r's write that changed nothing, once the hub has seen
// the revision it was checked at or viewChangedWait has passed, and its audit line.
func (s *Server) answerUnchanged(w http.ResponseWriter, r *http.Request, u *unchangedLater) error {
	ctx, cancel := s.opCtx(r)
	defer cancel()
	rev := max(u.rev, s.hub.viewChanged(ctx, u.app, u.checked, viewChangedWait))
	keys := u.keys
	if u.root != "" {
		for i, k := range keys {
			keys[i] = u.root + k
		}
		slices.Sort(keys)
	}
	setIndex(w, rev)
	s.audit(r, u.op, keys, rev, slog.Bool("unchanged", true))
	return writeJSON(w, http.StatusOK, rev, api.WriteResult{Revision: rev, Unchanged: true})
}
