package store

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// How a write learns its outcome.
//
// A write whose connection broke after the request was sent, or whose try timed out, may have
// been applied, or may even be applied later (by a frozen member that resumes). Each write is
// therefore one etcd transaction guarded on the absence of a marker: a key of its own under
// <root>req/. A write that records a release (see release.go) leaves that key absent; its
// release record, a key of its own put by the same transaction, tells that it applied. Other
// writes create the marker themselves, attached to a lease so that etcd drops it after
// markerTTL. After such a failure, fence settles the write: it creates the marker, with another
// value, if it is still absent, and in the same transaction reads what tells that the write
// applied. From then on the write's guard fails: it was applied before the fence (its release
// record exists, or the marker holds the write's value, at the write's revision), or it never
// will be. A write whose request never left this process (no request message was handed to a
// connection) was not applied either, whatever the error says. Only when neither can be told
// is the answer api.CodeOutcomeUnknown.
//
// A write with a release thus adds one compare of an absent key to its transaction, and no key:
// markers of every write, all on one lease, made etcd's work per write larger, and the lease's
// expiry a deletion as large as the writes of half an hour.
const (
	markerTTL = time.Hour
	// markerRenew is how long one lease serves new markers; each then lives 30 to 60 minutes.
	markerRenew = 30 * time.Minute
	// Marker values: the write's own, and a fence's.
	markerWritten = "w"
	markerFenced  = "f"
)

// markerLease is the lease new write markers are attached to.
type markerLease struct {
	mu      sync.Mutex
	id      clientv3.LeaseID
	granted time.Time
}

// markerLease returns the lease for new markers, granting a new one every markerRenew; 0 when
// none can be had (the write then goes without a marker). A grant goes within ctx(), the
// call's context, made only then.
func (s *Store) markerLease(ctx func() context.Context) clientv3.LeaseID {
	l := &s.lease
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.id != 0 && time.Since(l.granted) < markerRenew {
		return l.id
	}
	start := time.Now()
	gctx, cancel := context.WithTimeout(ctx(), s.cfg.AttemptTimeout)
	resp, err := s.cli.Grant(gctx, int64(markerTTL/time.Second))
	cancel()
	if err != nil {
		if l.id != 0 && time.Since(l.granted) < markerTTL-markerRenew/2 {
			return l.id // the old one still outlives any write that uses it now
		}
		return 0
	}
	l.id, l.granted = resp.ID, start
	return l.id
}

// dropLease forgets id (etcd said it does not exist: expired, revoked, or a restored store).
func (s *Store) dropLease(id clientv3.LeaseID) {
	s.lease.mu.Lock()
	if s.lease.id == id {
		s.lease.id = 0
	}
	s.lease.mu.Unlock()
}

// written is the outcome of a write that commit ran.
type written struct {
	rev       int64
	succeeded bool
	// resp is etcd's answer; nil when fence learnt that the write was applied (the guards held:
	// succeeded is true, and the responses of the ops are not known).
	resp *clientv3.TxnResponse
	// unchanged: the write changed no key and wrote nothing (its guards held); rev is then
	// that of the keys as they are (see kept).
	unchanged bool
}

// marker is what a write adds to its transaction (see above): a guard and an op, both empty
// when the write goes without a marker. A nested transaction that writes adds them too.
type marker struct {
	cmps []clientv3.Cmp
	ops  []clientv3.Op
}

// txnParts is a write's transaction with its marker added.
type txnParts func(m marker) (cmps []clientv3.Cmp, then, els []clientv3.Op)

// plainTxn is the write If(cmps).Then(then).Else(els), the marker added to the guards and to
// the ops of Then.
func plainTxn(cmps []clientv3.Cmp, then, els []clientv3.Op) txnParts {
	return func(m marker) ([]clientv3.Cmp, []clientv3.Op, []clientv3.Op) {
		return joined(cmps, m.cmps), joined(then, m.ops), els
	}
}

// joined is a followed by b, in an array of their exact length when b adds anything; a's array
// is never written to (parts runs again at every try), nor by an append to the result.
// clientv3.Op is 248 bytes: append's growth to twice a transaction's ops was a tenth of a 10-op
// transaction's garbage.
func joined[T any](a, b []T) []T {
	if len(b) == 0 {
		return slices.Clip(a)
	}
	return slices.Concat(a, b)
}

// commit runs one write, whose transaction parts makes, with a marker (see above), trying again
// while RequestTimeout allows when a try was not applied. Errors are as etcdErr's, except that
// a write that may have been applied is api.CodeOutcomeUnknown.
//
// With eff, and a ctx from WithRelease, the write also records its release (see release.go).
func (s *Store) commit(ctx context.Context, op string, eff *effect, parts txnParts) (written, error) {
	return s.commitRaw(ctx, op, eff, parts, nil)
}

// commitRaw is commit whose transaction's Then ends with raw, ops built as etcd takes them.
func (s *Store) commitRaw(ctx context.Context, op string, eff *effect, parts txnParts, raw []*pb.RequestOp) (written, error) {
	d := s.callDeadline(ctx)
	defer d.stop()
	leaseMissing, stale := 0, 0
	var fresh *touched // the touched keys as the last try's Else read them
	scopes := s.scopes(eff)
	for try := 0; ; try++ {
		// The first try's reads bound themselves (by RequestTimeout, microseconds after the
		// call's deadline was set); the tries after it go within the call's context.
		wctx := ctx
		if try > 0 {
			wctx = d.context()
		}
		rel, err := s.prepareRelease(wctx, eff, fresh)
		if err != nil {
			return written{}, fmt.Errorf("%s: %w", op, err)
		}
		fresh = nil
		// A write that changes no key (every put holds its value already, nothing to delete)
		// writes nothing: its transaction only checks its guards, the touched keys' too.
		keep := rel != nil && rel.unchanged
		var lease clientv3.LeaseID
		if !keep {
			lease = s.markerLease(d.context)
		}
		mk := ""
		var m marker
		if lease != 0 {
			mk = s.reqRoot + newID()
			m.cmps = []clientv3.Cmp{compare(clientv3.CreateRevision(mk), "=", 0)}
			if rel == nil {
				m.ops = []clientv3.Op{clientv3.OpPut(mk, markerWritten, clientv3.WithLease(lease))}
			}
		}
		if rel != nil {
			// The release is put wherever the marker is: exactly when the write applies. Its
			// ops as they are (the marker's are none): parts only reads them, and appends to
			// a clipped slice do not write into its array.
			m.ops = slices.Clip(rel.ops)
		}
		c, t, e := parts(m)
		switch {
		case keep:
			// Nor the ops that guards add (a tree version), which go with a change. Ops in
			// the Else (a recursive delete's nested one) run only where the touched keys are
			// not as read: never, while the release's guards hold.
			t, raw = nil, nil
		case rel != nil && len(rel.same) > 0 && !eff.promotes:
			// A promotion (eff.promotes) puts every key it names, as it did before.
			t = withoutPuts(t, rel.same)
		}
		var spec *txnSpec
		flat := rel != nil && rel.flattens(c, e)
		switch {
		case flat:
			spec = &txnSpec{cmps: joined(rel.guards, c), then: t, els: joined(rel.reads, e), raw: raw}
		case rel != nil:
			spec = &txnSpec{cmps: rel.guards, nested: []*txnSpec{{cmps: c, then: t, els: e, raw: raw}}, els: rel.reads}
		default:
			spec = &txnSpec{cmps: c, then: t, els: e, raw: raw}
		}
		actx, acancel := d.attempt(try)
		var sent atomic.Bool
		var resp *clientv3.TxnResponse
		if keep {
			resp, err = s.sendTxn(actx, &sent, spec) // a read: no batch to share a revision
		} else {
			resp, err = s.batch.txn(actx, &sent, scopes, spec)
		}
		acancel()
		if err == nil && rel != nil {
			guarded, ok := resp, resp.Succeeded
			if flat && !resp.Succeeded {
				// The Else read the touched keys, then ran the write's own Else: the release's
				// guards held when the keys are as it saw them (the write's own guards failed).
				n := len(rel.reads)
				guarded = &clientv3.TxnResponse{Header: resp.Header, Responses: resp.Responses[:n]}
				ok = rel.held(readTouched(rel.exact, rel.prefixes, guarded.Responses, resp.Header.Revision))
				resp = &clientv3.TxnResponse{Header: resp.Header, Responses: resp.Responses[n:]}
			}
			if !ok {
				// A touched key is not as the release saw it: nothing was applied, and the
				// Else read the keys again. Retry with that at once; pause from the second
				// stale try on (another writer keeps changing them).
				fresh = s.stale(rel, guarded)
				if stale++; stale >= staleTries {
					return written{}, api.Errorf(api.CodeConflict, "%s: the keys it touches kept changing during %d attempts", op, staleTries)
				}
				if stale > 1 {
					pause(d.context())
				}
				continue
			}
			if !flat {
				inner := resp.Responses[0].GetResponseTxn()
				resp = &clientv3.TxnResponse{Header: resp.Header, Succeeded: inner.Succeeded, Responses: inner.Responses}
			}
			if keep {
				s.appliedRelease(rel, eff, false, resp.Header.Revision) // the keys as read
				return kept(rel, eff, resp), nil
			}
			s.appliedRelease(rel, eff, resp.Succeeded, resp.Header.Revision)
		} else if rel != nil {
			// Applied or not, maybe later: what the keys hold is not known here.
			s.priors.forget(rel.exact)
			s.priors.forgetUnder(rel.prefixes)
		}
		if err == nil {
			return written{rev: resp.Header.Revision, succeeded: resp.Succeeded, resp: resp}, nil
		}
		if errors.Is(ctx.Err(), context.Canceled) {
			// The caller went away: nobody reads the answer, whatever it is.
			return written{}, fmt.Errorf("%s: %w", op, ctx.Err())
		}
		if keep {
			// Nothing to apply, so nothing applied, whatever the error.
			if retryable(err) && d.context().Err() == nil {
				pause(d.context())
				continue
			}
			return written{}, s.notApplied(op, err)
		}
		if lease != 0 && errors.Is(err, rpctypes.ErrLeaseNotFound) && leaseMissing < 2 {
			leaseMissing++
			s.dropLease(lease)
			// Refused whole: nothing was applied. The store may have been replaced, which
			// makes the prior cache's revisions meaningless.
			s.priors.clear()
			continue
		}
		if !sent.Load() || refusedUnapplied(err) {
			if retryable(err) && d.context().Err() == nil {
				pause(d.context())
				continue
			}
			return written{}, s.notApplied(op, err)
		}
		if mk == "" || ctx.Err() != nil {
			return written{}, outcomeUnknown(op, err)
		}
		proof := ""
		if rel != nil {
			proof = rel.key
		}
		// The fence goes within the call's deadline, as the tries did, but has one try's time
		// at least: a write sent at the end of its call is still settled when etcd answers.
		fctx, fcancel := context.WithDeadline(ctx, later(d.deadline, time.Now().Add(s.cfg.AttemptTimeout)))
		rev, applied, ferr := s.fence(fctx, mk, lease, proof)
		fcancel()
		switch {
		case ferr != nil:
			s.log.Warn("settle a write whose answer was lost", "op", op, "err", err.Error(), "fence_err", ferr.Error())
			return written{}, outcomeUnknown(op, err)
		case applied:
			s.log.Info("a write whose answer was lost was applied", "op", op, "revision", rev, "err", err.Error())
			return written{rev: rev, succeeded: true}, nil
		}
		// Not applied, and now never will be: try again while there is time.
		if d.context().Err() != nil {
			return written{}, s.notApplied(op, err)
		}
		pause(d.context())
	}
}

// withoutPuts returns ops without the puts of keys in same, in a new array (parts runs again at
// every try: its arrays are never written to).
func withoutPuts(ops []clientv3.Op, same map[string]bool) []clientv3.Op {
	out := make([]clientv3.Op, 0, len(ops))
	for _, op := range ops {
		if !op.IsPut() || !same[string(op.KeyBytes())] {
			out = append(out, op)
		}
	}
	return out
}

// kept is the outcome of a write that changed no key, as its check answered (resp, the write's
// own if the release's guards held): not applied when the write's own guards failed. Its
// revision is the newest mod_revision among the keys it puts, which the key's readers (the
// agents of its appliances) have seen once they hold its value; or, without one (deletes of
// absent keys only), the store's.
func kept(rel *pendingRelease, eff *effect, resp *clientv3.TxnResponse) written {
	if !resp.Succeeded {
		return written{rev: resp.Header.Revision, resp: resp}
	}
	rev := int64(0)
	for _, p := range eff.puts {
		rev = max(rev, rel.state.at(p.key).mod)
	}
	if rev == 0 {
		rev = resp.Header.Revision
	}
	return written{rev: rev, succeeded: true, resp: resp, unchanged: true}
}

// sendTxn sends one write's transaction (or a batch's, see batch.go): in process to an
// embedded etcd, else through the gRPC client, setting sent once the request has left.
func (s *Store) sendTxn(ctx context.Context, sent *atomic.Bool, t *txnSpec) (*clientv3.TxnResponse, error) {
	if s.local == nil {
		// Built here and sent as it is: client/v3 copies each compare (proto.Clone, by
		// reflection) two or three times on the way, a third of the garbage of a batch of
		// agents' reports, whose every put has its own guard.
		if req, ok := specRequest(t); ok {
			resp, err := s.remoteKV.Txn(withSent(ctx, sent), req, s.remoteOpts...)
			if err != nil {
				return nil, clientv3.ContextError(ctx, err)
			}
			return (*clientv3.TxnResponse)(resp), nil
		}
		return s.cli.Txn(withSent(ctx, sent)).If(t.cmps...).Then(t.thenOps()...).Else(t.els...).Commit()
	}
	// In process: the server has the request as soon as it is called.
	sent.Store(true)
	start := time.Now()
	resp, err := s.local.txn(ctx, t)
	s.observe("KV/Txn", err, time.Since(start))
	if err == nil {
		s.sawRevision(resp.Header.Revision)
	}
	return resp, err
}

// attemptCtx bounds try number n (from 0) of a call: AttemptTimeout, doubled at each try.
func (s *Store) attemptCtx(ctx context.Context, n int) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.attemptTimeout(n))
}

func (s *Store) attemptTimeout(n int) time.Duration { return s.cfg.AttemptTimeout << min(n, 6) }

// callDeadline is the deadline of a call that may try several times: RequestTimeout from its
// start, as opCtx would bound it, but with the context (and its timer) made only when the call
// needs one beyond a try's own: to pause, to try again, or to tell whether time is left. A
// try's context is bounded by the earlier of the try's deadline and the call's; most writes
// apply at their first try, and made three contexts each (the server's, this one, the try's),
// a timer and a propagation of cancellation each: ~4% of the server's CPU and 5% of its
// allocations under 64 writers.
type callDeadline struct {
	parent   context.Context
	deadline time.Time
	s        *Store
	ctx      context.Context // nil until context is called
	cancel   context.CancelFunc
}

func (s *Store) callDeadline(ctx context.Context) callDeadline {
	return callDeadline{parent: ctx, deadline: time.Now().Add(s.cfg.RequestTimeout), s: s}
}

// context is the call's context: parent's, ending at the call's deadline.
func (d *callDeadline) context() context.Context {
	if d.ctx == nil {
		d.ctx, d.cancel = context.WithDeadline(d.parent, d.deadline)
	}
	return d.ctx
}

// attempt bounds try number n (see attemptCtx) within the call: by the earlier of the try's
// deadline and the call's, under context() once it was made, else under the caller's context
// (without making context()).
func (d *callDeadline) attempt(n int) (context.Context, context.CancelFunc) {
	parent := d.parent
	if d.ctx != nil {
		parent = d.ctx
	}
	end := time.Now().Add(d.s.attemptTimeout(n))
	if d.deadline.Before(end) {
		end = d.deadline
	}
	return context.WithDeadline(parent, end)
}

// stop releases the call's context, if it was made.
func (d *callDeadline) stop() {
	if d.cancel != nil {
		d.cancel()
	}
}

// later is the later of a and b.
func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// pause waits a little before another try.
func pause(ctx context.Context) {
	t := time.NewTimer(time.Duration(20+rand.IntN(80)) * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// fence settles a write whose marker is mk (see above): applied (at rev) or not, in which case
// it never will be. proof is the key that the write created when it applied (its release
// record), or "" when the marker itself holds the write's value. It tries until ctx ends.
func (s *Store) fence(ctx context.Context, mk string, lease clientv3.LeaseID, proof string) (rev int64, applied bool, err error) {
	fenced := clientv3.OpPut(mk, markerFenced, clientv3.WithLease(lease))
	then, els := []clientv3.Op{fenced}, []clientv3.Op{clientv3.OpGet(mk)}
	if proof != "" {
		read := clientv3.OpGet(proof, clientv3.WithKeysOnly())
		then, els = []clientv3.Op{fenced, read}, []clientv3.Op{read}
	}
	for try := 0; ; try++ {
		actx, acancel := s.attemptCtx(ctx, try)
		resp, err := s.cli.Txn(actx).
			If(compare(clientv3.CreateRevision(mk), "=", 0)).
			Then(then...).
			Else(els...).
			Commit()
		acancel()
		if err == nil {
			if proof != "" {
				// The marker is there now: the write applied before it, or never will.
				kvs := resp.Responses[len(resp.Responses)-1].GetResponseRange().GetKvs()
				if len(kvs) == 1 {
					return kvs[0].ModRevision, true, nil
				}
				return 0, false, nil
			}
			if resp.Succeeded {
				return 0, false, nil
			}
			kvs := resp.Responses[0].GetResponseRange().GetKvs()
			if len(kvs) == 1 && string(kvs[0].Value) == markerWritten {
				return kvs[0].ModRevision, true, nil
			}
			return 0, false, nil // an earlier try of this fence created it
		}
		if !retryable(err) && !errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
			return 0, false, s.etcdErr(ctx, "settle the write", err)
		}
		pause(ctx)
	}
}

// refusedUnapplied reports whether err is an answer etcd gives only to a request it did not
// apply and never will: refused before it was proposed, or rejected whole when applied. Lost
// connections, timeouts, a member stopping or a leader failing are not: the request may have
// been, or may yet be, applied.
func refusedUnapplied(err error) bool {
	for _, e := range []error{rpctypes.ErrNoLeader, rpctypes.ErrNotLeader, rpctypes.ErrTooManyRequests,
		rpctypes.ErrNotCapable, rpctypes.ErrUnhealthy, rpctypes.ErrRequestTooLarge, rpctypes.ErrTooManyOps,
		rpctypes.ErrLeaseNotFound, rpctypes.ErrNoSpace} {
		if errors.Is(err, e) {
			return true
		}
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return false
	}
	var code codes.Code
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		code = ee.Code()
	} else if st, ok := status.FromError(err); ok {
		code = st.Code()
		if code == codes.Unknown && strings.Contains(st.Message(), "proposal dropped") {
			return true // raft refused to propose it (no leader)
		}
	} else {
		return false
	}
	switch code {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.Unknown, codes.Internal, codes.Aborted, codes.DataLoss:
		return false
	}
	// InvalidArgument, FailedPrecondition, OutOfRange, PermissionDenied, ResourceExhausted, …:
	// the request was checked and refused.
	return true
}

// retryable reports whether a write that was not applied may be tried again at once: the
// cluster was away, busy or electing, not the request refused.
func retryable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true // the try's own deadline; the caller's is checked apart
	}
	_, ok := transient(err)
	return ok
}

// notApplied is the error of a write etcd did not apply.
func (s *Store) notApplied(op string, err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return api.Errorf(api.CodeUnavailable, "%s: etcd did not answer in time (%s); the write was not applied: retry", op, strings.Join(s.cli.Endpoints(), ","))
	}
	if msg, ok := transient(err); ok {
		return api.Errorf(api.CodeUnavailable, "%s: etcd unavailable (%s); the write was not applied: retry", op, msg)
	}
	return s.etcdErr(context.Background(), op, err)
}

// outcomeUnknown is the error of a write that etcd may or may not have applied.
func outcomeUnknown(op string, err error) error {
	msg := err.Error()
	if errors.Is(err, context.DeadlineExceeded) {
		msg = "no answer in time"
	} else if m, ok := transient(err); ok {
		msg = m
	}
	return api.Errorf(api.CodeOutcomeUnknown, "%s: etcd did not confirm the write (%s); the outcome is unknown: check, then retry", op, msg)
}

// sentKey marks a call's ctx with a flag that sentTracker sets once a request message of the
// call was handed to a connection.
type sentKey struct{}

func withSent(ctx context.Context, sent *atomic.Bool) context.Context {
	return context.WithValue(ctx, sentKey{}, sent)
}

// sentTracker is a gRPC stats handler that tells whether a call's request left: gRPC reports a
// client's OutPayload only after the message was queued on a connection's stream. It also
// tells connEnds of the client's connections that end (see ErrReconnected).
type sentTracker struct {
	connEnds *connEnds
}

func (sentTracker) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }

func (sentTracker) HandleRPC(ctx context.Context, st stats.RPCStats) {
	if p, ok := st.(*stats.OutPayload); ok && p.Client {
		if sent, ok := ctx.Value(sentKey{}).(*atomic.Bool); ok {
			sent.Store(true)
		}
	}
}

func (sentTracker) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }

func (t sentTracker) HandleConn(_ context.Context, st stats.ConnStats) {
	if _, ok := st.(*stats.ConnEnd); ok && t.connEnds != nil {
		t.connEnds.end()
	}
}

// connEnds tells watches that a connection of the client to etcd ended (see ErrReconnected).
type connEnds struct {
	mu    sync.Mutex
	ended chan struct{} // closed at the next end; nil until someone waits for it
}

// next returns a channel that is closed when a connection ends after this call.
func (c *connEnds) next() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended == nil {
		c.ended = make(chan struct{})
	}
	return c.ended
}

func (c *connEnds) end() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended != nil {
		close(c.ended)
		c.ended = nil
	}
}

// retryReads bounds each try of a read (a Range, or a Txn of Ranges only) by the try's timeout
// (see attemptCtx) and tries again while the call's ctx allows: the balancer sends the next try
// to the next member, so a frozen member costs one try. Other calls pass through.
func (s *Store) retryReads(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if !isRead(req) {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	for try := 0; ; try++ {
		actx, cancel := s.attemptCtx(ctx, try)
		err := invoker(actx, method, req, reply, cc, opts...)
		timedOut := actx.Err() != nil
		cancel()
		if err == nil || ctx.Err() != nil || !timedOut {
			return err
		}
	}
}

// isRead reports whether req is an etcd request that reads only.
func isRead(req any) bool {
	switch r := req.(type) {
	case *pb.RangeRequest:
		return true
	case *pb.TxnRequest:
		for _, ops := range [][]*pb.RequestOp{r.Success, r.Failure} {
			for _, op := range ops {
				if op.GetRequestRange() == nil {
					return false
				}
			}
		}
		return true
	}
	return false
}
