package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/client"
)

// streamRetry is how long the poller uses plain long-polls after the server refused a stream
// (an older server) or the stream's lines did not come through (a proxy that buffers answers)
// before it tries a stream again.
var streamRetry = 10 * time.Minute

// poller is the goroutine that follows the view: it sends views on updates and learns what
// to report from acks. Both hold the latest value only.
type poller struct {
	updates chan fetched
	acks    chan ack
	// refetch says the token changed: the view is asked whole again, the request waiting cut.
	refetch chan struct{}
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// ack replaces the ack the poller has not taken yet (the loop is the only sender).
func (p *poller) ack(k ack) {
	for {
		select {
		case p.acks <- k:
			return
		default:
			select {
			case <-p.acks:
			default:
			}
		}
	}
}

// answer is one long-poll's outcome.
type answer struct {
	v    *api.View
	meta client.Meta
	err  error
}

// follow is the state of one poller: where it follows the view from and how.
type follow struct {
	a         *Agent
	p         *poller
	c         *client.Client
	appliance string
	instance  string
	// idx and store are the revision and store of base, the view the agent holds (the last
	// one sent on updates; nil when it has none); deltas apply to it.
	idx   int64
	store string
	base  *api.View
	// cur is what the requests' X-Shoelace-Applied and X-Shoelace-Rollout say.
	cur ack
	// reset is owed to the next view sent: the store changed.
	reset bool
	// noStreamUntil is when a stream is tried again after one failed (zero: now); noDelta
	// leaves deltas out of the long-polls until then (the server refused the stream's query).
	noStreamUntil time.Time
	noDelta       bool

	failures, quick int
	// refused says the last failure was the server's refusal of the token (401): the refusals
	// in a row count for the backoff, not the failures of a server away before them.
	refused bool
	// storeChanges counts the answers in a row that only said the store changed (newStore),
	// last logged at warn at storeWarned.
	storeChanges int
	storeWarned  time.Time
	lastMsg      string // the failure last logged at warn
	lastWarned   time.Time
}

// poll follows the view from base (the view at idx of store; nil for none) until ctx ends,
// sending every new view to p.updates, replacing one that was not taken yet. It prefers a
// streaming long-poll with deltas (`?index=R&stream&delta`: one line per change on one
// response); when the server refuses it or its lines do not come through, it uses plain
// long-polls (each with delta) and tries the stream again after streamRetry. It retries
// failures with capped exponential backoff and jitter, honouring Retry-After.
//
// The agent reports what it applied by its reports (report.go); the requests carry it too
// (X-Shoelace-Applied, as of when they are sent: a stream's once, at its start). A plain
// long-poll waits for the loop's ack of its view before asking again. Until the server has
// taken a report (an older server takes none), a new ack also cuts a waiting long-poll short,
// so that the server learns it at once.
func (a *Agent) poll(ctx context.Context, p *poller, c *client.Client, appliance, instance string, idx int64, store string, base *api.View, cur ack) {
	f := &follow{a: a, p: p, c: c, appliance: appliance, instance: instance, idx: idx, store: store, base: base, cur: cur}
	for ctx.Err() == nil {
		select {
		case f.cur = <-p.acks:
		default:
		}
		select {
		case <-p.refetch:
			// The server serves the view by the token (a rollout's cohort is drawn by instance
			// token), and the one now carried may get another view at the same revision: a
			// long-poll from the view held would wait for the next change.
			f.a.log.Debug("the token changed: asking for the whole view again", "index", f.idx)
			f.idx, f.base = 0, nil
		default:
		}
		if !time.Now().Before(f.noStreamUntil) {
			f.noDelta = false
			f.stream(ctx)
			continue
		}
		f.longPoll(ctx)
	}
}

// query is the request of the view from where f is.
func (f *follow) query() client.Poll {
	q := client.Poll{Index: f.idx, Wait: DefaultPollWait, Store: f.store, Instance: f.instance, Applied: f.cur.applied, Rollout: f.cur.rollout}
	if f.base != nil && !f.noDelta {
		q.Delta, q.Base = true, f.base
	}
	return q
}

// stream follows the view on one streaming long-poll until it ends.
func (f *follow) stream(ctx context.Context) {
	asked := time.Now()
	views := 0
	cctx, cancel := f.cutOnRefetch(ctx)
	defer cancel()
	meta, err := f.c.StreamView(cctx, f.appliance, f.query(), func(v *api.View, m client.Meta) error {
		views++
		f.reachable()
		return f.deliver(cctx, v, m, "stream")
	})
	if ctx.Err() != nil {
		return
	}
	if tokenRefused(err) {
		f.failed(ctx, err, meta) // not cctx: the refusal cut it
		return
	}
	ctx = cctx
	if errors.Is(err, client.ErrNoStream) {
		var ae *api.Error
		refused := errors.As(err, &ae) && ae.Status == http.StatusBadRequest
		f.noStreamUntil, f.noDelta = time.Now().Add(streamRetry), refused
		f.a.log.Info("streaming long-poll unavailable: using plain long-polls", "error", err.Error(), "retry_stream_in", streamRetry.String())
		return
	}
	if errors.Is(err, errBadView) {
		sleep(ctx, backoff(f.failures, 0))
		return
	}
	if err != nil {
		f.failed(ctx, err, meta)
		return
	}
	f.reachable()
	f.a.log.Debug("stream ended: following on", "views", views, "index", meta.Index)
	if meta.Index > f.idx && f.store == meta.Store {
		f.idx = meta.Index // heartbeats: nothing changed for this view up to there
	}
	if meta.Status == http.StatusNotModified && f.newStore(ctx, meta) {
		return
	}
	// A stream that ended within a second, with views or none, is paced like a quick 304: a
	// server whose every stream is one delta that does not apply (then read whole) or one view
	// was asked again at once, thousands of times a second.
	f.tooQuick(ctx, asked)
}

// longPoll makes one plain long-poll.
func (f *follow) longPoll(ctx context.Context) {
	reported := f.a.reportsTaken.Load()
	cctx, stopCut := f.cutOnRefetch(ctx)
	defer stopCut()
	rctx, cancel := context.WithTimeout(cctx, DefaultPollWait+20*time.Second)
	defer cancel()
	asked := time.Now()
	answers := make(chan answer, 1)
	go func(q client.Poll) {
		v, meta, err := f.c.WatchView(rctx, f.appliance, q)
		answers <- answer{v, meta, err}
	}(f.query())
	var ans answer
	reasked := false
	acks := f.p.acks
	if reported {
		acks = nil // the reports tell the server: the request is not cut short for them
	}
waiting:
	for {
		select {
		case ans = <-answers:
			break waiting
		case k := <-acks:
			if k != f.cur {
				f.cur, reasked = k, true
				cancel() // a view already on its way still comes as the answer
			}
		}
	}
	cancel()
	if ctx.Err() != nil {
		return
	}
	v, meta, err := ans.v, ans.meta, ans.err
	if err != nil && (reasked || cctx.Err() != nil) && !tokenRefused(err) {
		return
	}
	if err != nil {
		var ae *api.Error
		if errors.As(err, &ae) && ae.Status == http.StatusBadRequest && !f.noDelta && f.base != nil {
			// A server that does not know delta: ask for whole views.
			f.noDelta = true
			f.a.log.Info("the server refused a delta long-poll: asking for whole views", "error", err.Error())
			return
		}
		f.failed(ctx, err, meta)
		return
	}
	f.reachable()
	if v == nil { // 304: nothing changed while we waited
		if f.newStore(ctx, meta) {
			return
		}
		// A 304 long before the wait (a draining server, a proxy with a short timeout)
		// must not turn into a busy loop.
		f.tooQuick(ctx, asked)
		return
	}
	if err := f.deliver(ctx, v, meta, "long-poll"); err != nil {
		sleep(ctx, backoff(f.failures, 0))
		return
	}
	// Wait for the loop's ack of the view (bounded: it may be running a slow command) before
	// asking again: the next request then reports what it applied, and it is not made while
	// the view is rendered (asking at once, measured, made changes a few ms apart slower).
	t := time.NewTimer(ackWait)
	defer t.Stop()
	select {
	case f.cur = <-f.p.acks:
	case <-t.C:
	case <-ctx.Done():
	}
}

// cutOnRefetch returns a context of ctx that ends when the token changes (p.refetch), leaving
// the signal for poll, which then asks the whole view again.
func (f *follow) cutOnRefetch(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-f.p.refetch:
			askAgain(f.p.refetch)
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// tokenRefused says whether err is the server's refusal of the token a request carried (401):
// the refusal changes the token (the enroller drops it), which cuts the request (cutOnRefetch),
// but it is a failure all the same, which the next request waits a backoff step after. Taken
// for a cut, it was not: a server (or a man in the middle) that refuses every instance token it
// enrolls had the agent enroll and ask again hundreds of times a second.
func tokenRefused(err error) bool {
	var ae *api.Error
	return errors.As(err, &ae) && ae.HTTPStatus() == http.StatusUnauthorized
}

// askAgain signals ch (a poller's refetch) unless a signal waits already.
func askAgain(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// errBadView ends a stream whose view the agent does not take.
var errBadView = errors.New("server sent an empty view, another appliance's or an invalid key")

// checkKeys returns the error of a key of keys that breaks the key rules (DESIGN.md, "Key
// space"): no server sends one, and a view holding one would reach the templates and make the
// cache, which LoadCache judges by the same rules, unusable when it is needed.
func checkKeys(keys map[string]string) error {
	for k := range keys {
		if err := api.ValidateKey(k); err != nil {
			return err
		}
	}
	return nil
}

// checkSize returns the error of a view that no server sends: a negative revision, or over
// client.MaxAnswerEntries keys, which deltas could add up to though each answer is bounded (the
// client refuses such a delta before it builds the view, ErrViewTooLarge: this is the check
// behind it).
func checkSize(v *api.View) error {
	if v.Revision < 0 {
		return fmt.Errorf("revision %d", v.Revision)
	}
	if len(v.Keys) > client.MaxAnswerEntries {
		return fmt.Errorf("%d keys, over the client's bound of %d (client.MaxAnswerEntries)", len(v.Keys), client.MaxAnswerEntries)
	}
	return nil
}

// checkRollout returns the error of a view's rollout id that no server makes: over 256 bytes,
// or with a byte outside printable ASCII, which the next long-poll could not carry back in
// X-Shoelace-Rollout (Go's client refuses such a header: every request would fail).
func checkRollout(id string) error {
	if len(id) > 256 {
		return fmt.Errorf("rollout id of %d bytes", len(id))
	}
	if i := unprintable(id); i >= 0 {
		return fmt.Errorf("rollout id %q holds byte 0x%02x", id, id[i])
	}
	return nil
}

// deliver sends v to the loop, unless it is empty, another appliance's or holds a key that
// breaks the key rules (then it counts a failure and returns errBadView: the caller waits a
// backoff step). A view no newer than the one held (same store) is sent, then paced like a
// quick 304: a server answers one such view once (its store went back, its index is ahead),
// and one that answers every long-poll or stream line with one (the same view again, or views
// going back) was asked or read at once, thousands of times a second.
func (f *follow) deliver(ctx context.Context, v *api.View, meta client.Meta, by string) error {
	if len(v.Keys) == 0 || (v.Appliance != "" && v.Appliance != f.appliance) {
		f.failures++
		f.a.log.Error("server sent an empty view or another appliance's; keeping files", "revision", v.Revision, "appliance", v.Appliance)
		return errBadView
	}
	// A view made of a delta holds the checked keys of the view before and those the delta
	// set, which applying it checked: a one-key change to a 10,000-key view is not 10,000
	// checks (2.3 ms).
	if !meta.Delta {
		if err := checkKeys(v.Keys); err != nil {
			f.failures++
			f.a.log.Error("server sent a view holding a key that breaks the key rules; keeping files", "revision", v.Revision, "error", err.Error())
			return errBadView
		}
	}
	if err := checkSize(v); err != nil {
		f.failures++
		f.a.log.Error("server sent a view that no server sends; keeping files", "revision", v.Revision, "error", err.Error())
		return errBadView
	}
	if err := checkRollout(v.Rollout); err != nil {
		f.failures++
		f.a.log.Error("server sent a view whose rollout id cannot be sent back; keeping files", "revision", v.Revision, "error", err.Error())
		return errBadView
	}
	rev := v.Revision
	if rev == 0 {
		rev = meta.Index
	}
	newStore := f.store != "" && meta.Store != "" && meta.Store != f.store
	if newStore {
		f.reset = true
		f.storeChanges++
	} else {
		f.storeChanges = 0
	}
	stale := f.base != nil && meta.Store == f.store && rev <= f.idx
	f.a.log.Debug("new view", "revision", rev, "by", by, "no_newer", stale)
	f.idx, f.store = rev, meta.Store
	f.base = &api.View{Appliance: f.appliance, Revision: rev, Keys: v.Keys, Rollout: v.Rollout}
	u := fetched{view: &view{Store: meta.Store, Revision: rev, Keys: v.Keys, Rollout: v.Rollout}, reset: f.reset}
	f.reset = false
	select {
	case f.p.updates <- u:
	default:
		// The loop has not taken the previous view: replace it, keeping a reset.
		select {
		case old := <-f.p.updates:
			u.reset = u.reset || old.reset
		default:
		}
		f.p.updates <- u
	}
	switch {
	case newStore:
		f.storeAgain(ctx, meta.Store, "the server answered with another store again; its view is rendered")
	case stale:
		f.paceQuick(ctx)
	default:
		f.quick = 0
	}
	return nil
}

// newStore handles a 304 of another store: everything is read again, at once the first time.
// A server answers the read from revision 0 with the view; one that answers it with another
// store again, and again, is paced by the backoff, not asked again at once.
func (f *follow) newStore(ctx context.Context, meta client.Meta) bool {
	if f.store == "" || meta.Store == "" || meta.Store == f.store {
		return false
	}
	f.idx, f.store, f.base, f.reset = 0, meta.Store, nil, true
	f.storeChanges++
	f.storeAgain(ctx, meta.Store, "the server answered with another store again, without a view; keeping files")
	return true
}

// storeAgain paces the answers of another store from the second in a row (f.storeChanges),
// logging msg: a store change is followed at once, one right after another after the backoff.
func (f *follow) storeAgain(ctx context.Context, store, msg string) {
	if f.storeChanges < 2 {
		return
	}
	d := backoff(f.storeChanges-1, 0)
	level := slog.LevelDebug
	if f.storeChanges == 2 || time.Since(f.storeWarned) >= failureLogEvery {
		level, f.storeWarned = slog.LevelWarn, time.Now()
	}
	f.a.log.Log(ctx, level, msg, "store", store, "changes", f.storeChanges, "retry_in_ms", d.Milliseconds())
	sleep(ctx, d)
}

// tooQuick pauses when an answer without a view came long before the wait.
func (f *follow) tooQuick(ctx context.Context, asked time.Time) {
	if time.Since(asked) >= time.Second {
		f.quick = 0
		return
	}
	f.paceQuick(ctx)
}

// paceQuick waits the next backoff step of the answers that came too quick in a row (f.quick).
func (f *follow) paceQuick(ctx context.Context) {
	f.quick++
	sleep(ctx, backoff(f.quick, 0))
}

// reachable notes that the server answered.
func (f *follow) reachable() {
	f.refused = false
	if f.failures > 0 {
		f.a.log.Info("server reachable again", "after_failures", f.failures)
		f.failures, f.lastMsg = 0, ""
	}
}

// failed logs a failed request and waits before the next one. A refusal of the token is an
// answer: the failures before it (the server away, as while a store is restored) end there,
// and the refusals in a row count. An agent whose instance token a restored store does not
// know, refused as it came back, waited the backoff of the outage (up to 15 s) before it asked
// for its view with the token of its new enrollment, keeping files of the lost history.
func (f *follow) failed(ctx context.Context, err error, meta client.Meta) {
	if refused := tokenRefused(err); refused != f.refused {
		if refused {
			f.reachable()
		}
		f.refused = refused
	}
	f.failures++
	f.a.metrics.pollErrors.Add(1)
	msg, ra := describeFetchError(err)
	if ra == 0 {
		ra = meta.RetryAfter
	}
	d := backoff(f.failures, ra)
	// One line per kind of failure, then one a minute while it lasts (each retry at debug).
	level := slog.LevelDebug
	if msg != f.lastMsg || time.Since(f.lastWarned) >= failureLogEvery {
		level, f.lastMsg, f.lastWarned = slog.LevelWarn, msg, time.Now()
	}
	f.a.log.Log(ctx, level, msg, "error", err.Error(), "retry_in_ms", d.Milliseconds(), "failures", f.failures)
	sleep(ctx, d)
}

// backoff is the delay after n consecutive failures: exponential from backoffMin, capped at
// backoffMax, with jitter in [d/2, d]; a server's Retry-After (capped) wins when longer.
func backoff(n int, retryAfter time.Duration) time.Duration {
	d := backoffMin
	for i := 1; i < n && d < backoffMax; i++ {
		d *= 2
	}
	d = min(d, backoffMax)
	d = d/2 + rand.N(d/2+1)
	if retryAfter > d {
		d = min(retryAfter, retryAfterMax)
	}
	return d
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
