package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// Group commit of writes.
//
// Each write is one etcd transaction, and under many concurrent writers much of etcd's work per
// write is not the write's own puts but the request around them: the raft proposal and its WAL
// entry, the apply's scaffolding and the wait for it (and, with an external etcd, the gRPC call).
// Writes therefore go through a batcher: while a batch is in flight, the writes that arrive
// queue, and the next batch carries them all as one etcd transaction whose ops are the writes'
// own transactions, nested, under no guard. Each nested transaction decides its guards for
// itself, so every write succeeds or fails alone, exactly as it would have on its own; the
// writes of a batch share one revision (as the keys of one transaction do). A write that comes
// while nothing is in flight goes at once, on its own goroutine: one writer waits for nobody.
//
// Nested transactions are evaluated against the store as it was before the batch, and their ops
// then run one after the other, so two writes go into one batch only when neither writes what
// the other reads, compares or writes: they could then not tell that they shared a batch. Nor
// do two writes to one appliance, or one to shared/ or other keys and any other write, share
// one: a revision's difference of an appliance's view is then one release's. A write that
// conflicts with one queued is sent alone, at once, beside the batches: many concurrent writes
// to one appliance go as they would without batching.
//
// A batch that etcd refuses whole (its size, a duplicate key this check missed) was not
// applied: its writes are sent again each on its own. A write whose caller gives up while it is
// queued is taken out, never to be sent; once a batch took it, it waits for the batch's answer
// (a batch ends by the latest deadline of its writes), which says whether its request left
// (see withSent).

// maxBatch bounds the writes of one batch (etcd's default --max-txn-ops is 128). A batch's
// request is kept under a quarter of etcd's request limit by an estimate of its bytes; a write
// bigger than that goes alone.
const (
	maxBatch     = 128
	batchDivisor = 4
	// etcdDefaultRequestBytes is etcd's default --max-request-bytes, for an external etcd.
	etcdDefaultRequestBytes = 1536 * 1024
)

// txnFunc sends one transaction, setting sent once its request has left (see withSent).
type txnFunc func(ctx context.Context, sent *atomic.Bool, t *txnSpec) (*clientv3.TxnResponse, error)

// txnSpec is a transaction as the store sends it: If(cmps), Then(nested…, then…), Else(els).
// nested are transactions first in Then (a batch's writes, a write under its release's guards),
// kept as they are: made ops with clientv3.OpTxn, every compare in them was copied with
// proto.Clone (2.5% of the server's CPU under 64 writers). They become ops only for client/v3
// (thenOps), for an external etcd; the embedded one gets the request built from them.
type txnSpec struct {
	cmps      []clientv3.Cmp
	nested    []*txnSpec
	then, els []clientv3.Op
	// raw are the last ops of Then, built as etcd takes them (see SysPutEach).
	raw []*pb.RequestOp
}

// thenOps is t's Then as client/v3's ops.
func (t *txnSpec) thenOps() []clientv3.Op {
	if len(t.nested) == 0 && len(t.raw) == 0 {
		return t.then
	}
	ops := make([]clientv3.Op, 0, len(t.nested)+len(t.then)+len(t.raw))
	for _, n := range t.nested {
		ops = append(ops, clientv3.OpTxn(n.cmps, n.thenOps(), n.els))
	}
	ops = append(ops, t.then...)
	for _, r := range t.raw {
		ops = append(ops, clientOp(r))
	}
	return ops
}

// batchWrite is one write waiting in a batcher.
type batchWrite struct {
	ctx           context.Context
	sent          *atomic.Bool
	spec          *txnSpec
	size          int
	writes, reads []span
	taken         bool // by a batch (under the batcher's mu)
	resp          *clientv3.TxnResponse
	err           error
	done          chan struct{}
	// The first spans of reads and writes, in the write's own allocation: a put reads 5 (its
	// guards and its Else's read) and writes 3 (its key, its release record, its scope), and
	// appending them one by one grew the slices four times.
	readBuf  [8]span
	writeBuf [4]span
}

// span is a key or a range of keys as etcd gives them: end "" is the key alone, "\x00" every key
// from key on, else the keys in [key, end).
type span struct{ key, end string }

// contains reports whether range a (end not "") holds key k.
func (a span) contains(k string) bool {
	return a.key <= k && (a.end == "\x00" || k < a.end)
}

// overlaps reports whether ranges a and b (ends not "") share a key.
func (a span) overlaps(b span) bool {
	return (b.end == "\x00" || a.key < b.end) && (a.end == "\x00" || b.key < a.end)
}

// spans is a set of spans. A batch's writes are mostly single keys and whole subtrees (an
// appliance's scope, a prefix ending in "/"), and its reads those and ranges within one
// subtree (a transaction's keys read back as one range): all are found by map lookups of a
// key's subtrees, so that checking a write against a full queue does not scan it (scanning
// took 6% of the server's CPU under 64 writers of 10-op transactions). Other ranges are few,
// and scanned.
type spans struct {
	keys map[string]struct{}
	// trees holds the subtrees (by their prefix); under every subtree that holds a key or a
	// subtree of the set (its own prefix included).
	trees, under map[string]struct{}
	// ranges holds the other ranges by the longest subtree that holds each one whole (""
	// for none, see commonTree); rangeUnder every subtree that holds one of those subtrees.
	ranges     map[string][]span
	rangeUnder map[string]struct{}
}

// reset empties s, keeping its maps unless a large write made them large (clearing a map
// costs in proportion to its size).
func (s *spans) reset() {
	for _, m := range []*map[string]struct{}{&s.keys, &s.trees, &s.under, &s.rangeUnder} {
		if len(*m) > 1024 {
			*m = nil
		}
		clear(*m)
	}
	if len(s.ranges) > 1024 {
		s.ranges = nil
	}
	clear(s.ranges)
}

// commonTree is the longest prefix ending in "/" of every key in range sp (end not ""), or ""
// when there is none: both ends start with it, so every key between them does.
func commonTree(sp span) string {
	if sp.end == "\x00" {
		return ""
	}
	n := 0
	for n < len(sp.key) && n < len(sp.end) && sp.key[n] == sp.end[n] {
		n++
	}
	return sp.key[:strings.LastIndexByte(sp.key[:n], '/')+1]
}

// treeOf reports whether sp is the subtree of a prefix ending in "/": [p, p with its last
// byte incremented).
func treeOf(sp span) bool {
	n := len(sp.key)
	return n > 0 && sp.key[n-1] == '/' && len(sp.end) == n && sp.end[n-1] == '0' && sp.end[:n-1] == sp.key[:n-1]
}

// eachTree calls f with every prefix of k that ends in "/", shortest first, until f says stop.
func eachTree(k string, f func(p string) bool) bool {
	for i := 0; i < len(k); i++ {
		if k[i] == '/' && f(k[:i+1]) {
			return true
		}
	}
	return false
}

func (s *spans) add(sp span) {
	switch {
	case sp.end == "":
		if s.keys == nil {
			s.keys = map[string]struct{}{}
		}
		s.keys[sp.key] = struct{}{}
	case treeOf(sp):
		if s.trees == nil {
			s.trees = map[string]struct{}{}
		}
		s.trees[sp.key] = struct{}{}
	default:
		p := commonTree(sp)
		if s.ranges == nil {
			s.ranges = map[string][]span{}
			s.rangeUnder = map[string]struct{}{}
		}
		s.ranges[p] = append(s.ranges[p], sp)
		addTrees(s.rangeUnder, p)
		return
	}
	if s.under == nil {
		s.under = map[string]struct{}{}
	}
	addTrees(s.under, sp.key)
}

// addTrees adds to set every prefix of k that ends in "/". Longest first: once one is in
// set, so are the shorter ones (they went in with it).
func addTrees(set map[string]struct{}, k string) {
	for i := len(k) - 1; i >= 0; i-- {
		if k[i] != '/' {
			continue
		}
		if _, ok := set[k[:i+1]]; ok {
			return
		}
		set[k[:i+1]] = struct{}{}
	}
}

// inTree reports whether a subtree of the set holds k (a key, or a subtree's prefix).
func (s *spans) inTree(k string) bool {
	return len(s.trees) > 0 && eachTree(k, func(p string) bool {
		_, ok := s.trees[p]
		return ok
	})
}

// meets reports whether sp shares a key with s.
func (s *spans) meets(sp span) bool {
	region := sp.key // what holds every key of sp: the key, the subtree, or commonTree
	switch {
	case sp.end == "":
		if _, ok := s.keys[sp.key]; ok || s.inTree(sp.key) {
			return true
		}
	case treeOf(sp):
		if _, ok := s.under[sp.key]; ok || s.inTree(sp.key) {
			return true
		}
	default:
		region = commonTree(sp)
		// A key or subtree of s in sp is under region, or a subtree of s holds region.
		if _, ok := s.under[region]; ok || region == "" || s.inTree(region) {
			for k := range s.keys {
				if sp.contains(k) {
					return true
				}
			}
			for p := range s.trees {
				if sp.overlaps(span{p, p[:len(p)-1] + "0"}) {
					return true
				}
			}
		}
	}
	return s.rangesMeet(sp, region)
}

// rangesMeet reports whether one of s's ranges shares a key with sp, every key of which is
// under region (a subtree, or the key sp itself).
func (s *spans) rangesMeet(sp span, region string) bool {
	if len(s.ranges) == 0 {
		return false
	}
	hit := func(rs []span) bool {
		for _, r := range rs {
			if sp.end == "" && r.contains(sp.key) || sp.end != "" && r.overlaps(sp) {
				return true
			}
		}
		return false
	}
	_, below := s.rangeUnder[region]
	if region == "" || sp.end != "" && below {
		// Ranges within sp's region, or sp without one: look at all.
		for _, rs := range s.ranges {
			if hit(rs) {
				return true
			}
		}
		return false
	}
	// Else only a range held by a subtree that holds sp's region can meet it.
	return hit(s.ranges[""]) || eachTree(region, func(p string) bool { return hit(s.ranges[p]) })
}

// batcher gathers concurrent writes into batches (see above).
type batcher struct {
	send txnFunc

	// Under mu: the most writes and estimated bytes of a batch. An etcd configured with a
	// smaller --max-txn-ops or --max-request-bytes than the defaults halves them when it
	// refuses a batch for it.
	maxWrites, maxBytes int

	mu       sync.Mutex
	queue    []*batchWrite
	inFlight bool
	// qWritten and qRead are what the queued writes write and read; tWritten and tRead are
	// take's (kept to reuse their maps).
	qWritten, qRead, tWritten, tRead spans
	refused                          int // batches etcd refused whole (their writes then went alone)
}

// newBatcher returns a batcher that sends through send to an etcd whose request limit is
// requestBytes (0: etcd's default).
func newBatcher(send txnFunc, requestBytes int) *batcher {
	if requestBytes <= 0 {
		requestBytes = etcdDefaultRequestBytes
	}
	return &batcher{send: send, maxWrites: maxBatch, maxBytes: requestBytes / batchDivisor}
}

// txn commits one write's transaction, in a batch with others when they come together, and
// answers as a transaction of its own would.
//
// scopes are ranges the write counts as writing besides its ops (see Store.scopes).
func (b *batcher) txn(ctx context.Context, sent *atomic.Bool, scopes []span, t *txnSpec) (*clientv3.TxnResponse, error) {
	b.mu.Lock()
	if !b.inFlight {
		return b.lone(ctx, sent, t)
	}
	b.mu.Unlock()
	w := &batchWrite{ctx: ctx, sent: sent, spec: t, done: make(chan struct{})}
	w.reads, w.writes = w.readBuf[:0], w.writeBuf[:0]
	w.size = footprint(w, t)
	w.writes = append(w.writes, scopes...)
	b.mu.Lock()
	switch {
	case !b.inFlight: // the batch in flight ended meanwhile
		return b.lone(ctx, sent, t)
	case w.size > b.maxBytes || conflicts(&b.qWritten, &b.qRead, w):
		// Too big for a batch, or it could not share the next one: alone, at once (many
		// concurrent writes to one appliance go as they would without batches).
		b.mu.Unlock()
		return b.send(ctx, sent, t)
	}
	b.queue = append(b.queue, w)
	w.addTo(&b.qWritten, &b.qRead)
	b.mu.Unlock()
	select {
	case <-w.done:
	case <-ctx.Done():
		b.mu.Lock()
		if !w.taken {
			b.queue = slices.DeleteFunc(b.queue, func(o *batchWrite) bool { return o == w })
			b.queued()
			b.mu.Unlock()
			return nil, ctx.Err()
		}
		b.mu.Unlock()
		// On its way: its batch answers by the latest deadline of its writes, and tells
		// whether it left.
		<-w.done
	}
	return w.resp, w.err
}

// lone sends a write that found no batch in flight (b.mu held; lone unlocks it) at once, on its
// own goroutine: the writes that come meanwhile queue behind it, and go as batches when it is
// done.
func (b *batcher) lone(ctx context.Context, sent *atomic.Bool, t *txnSpec) (*clientv3.TxnResponse, error) {
	b.inFlight = true
	b.mu.Unlock()
	resp, err := b.send(ctx, sent, t)
	if b.more() {
		go b.run()
	}
	return resp, err
}

// run sends batches while writes are queued.
func (b *batcher) run() {
	for b.next() {
	}
}

// next sends the next batch, and reports whether writes queued meanwhile (else none is in
// flight any more).
func (b *batcher) next() bool {
	b.mu.Lock()
	batch, alone := b.take()
	b.mu.Unlock()
	for _, w := range alone {
		go b.commit([]*batchWrite{w})
	}
	if len(batch) > 0 {
		b.commit(batch)
	}
	return b.more()
}

// more reports whether writes queued while a batch was in flight; else none is in flight any
// more.
func (b *batcher) more() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.queue) == 0 {
		b.inFlight = false
		return false
	}
	return true
}

// take removes from the queue the writes of the next batch, oldest first, and those to be sent
// alone at once: those that conflict with one of them (none, as txn queues none such), and those
// bigger than a batch may be now (queued before etcd refused a batch for its size: else they
// would wait for a batch that never takes them).
func (b *batcher) take() (batch, alone []*batchWrite) {
	written, read := &b.tWritten, &b.tRead
	written.reset()
	read.reset()
	rest := b.queue[:0]
	bytes := 0
	for _, w := range b.queue {
		if w.size > b.maxBytes {
			w.taken = true
			alone = append(alone, w)
			continue
		}
		if len(batch) >= b.maxWrites || bytes+w.size > b.maxBytes {
			rest = append(rest, w)
			continue
		}
		if conflicts(written, read, w) {
			w.taken = true
			alone = append(alone, w)
			continue
		}
		batch = append(batch, w)
		w.taken = true
		bytes += w.size
		w.addTo(written, read)
	}
	clear(b.queue[len(rest):])
	b.queue = rest
	b.queued()
	return batch, alone
}

// queued sets qWritten and qRead from the queue.
func (b *batcher) queued() {
	b.qWritten.reset()
	b.qRead.reset()
	for _, w := range b.queue {
		w.addTo(&b.qWritten, &b.qRead)
	}
}

// addTo adds what w writes and reads to written and read.
func (w *batchWrite) addTo(written, read *spans) {
	for _, sp := range w.writes {
		written.add(sp)
	}
	for _, sp := range w.reads {
		read.add(sp)
	}
}

// conflicts reports whether w writes what a write of the batch wrote or read, or reads what
// one wrote.
func conflicts(written, read *spans, w *batchWrite) bool {
	for _, sp := range w.writes {
		if written.meets(sp) || read.meets(sp) {
			return true
		}
	}
	for _, sp := range w.reads {
		if written.meets(sp) {
			return true
		}
	}
	return false
}

// commit sends batch: alone as it is, or as one transaction of nested ones.
func (b *batcher) commit(batch []*batchWrite) {
	if len(batch) == 1 {
		w := batch[0]
		w.resp, w.err = b.send(w.ctx, w.sent, w.spec)
		close(w.done)
		return
	}
	all := &txnSpec{nested: make([]*txnSpec, len(batch))}
	var earliest, latest time.Time
	for i, w := range batch {
		all.nested[i] = w.spec
		if d, ok := w.ctx.Deadline(); ok {
			if d.After(latest) {
				latest = d
			}
			if earliest.IsZero() || d.Before(earliest) {
				earliest = d
			}
		}
	}
	// The batch is everyone's: it is not cancelled with any one caller, and runs until the
	// latest of their deadlines once its request has left. Until then it ends at the earliest:
	// while etcd cannot be reached the request waits for a connection, and a write whose
	// deadline passed would wait for another's (up to a request timeout more); unsent, nothing
	// was applied, and the writes go on their own below.
	var ctx context.Context
	var cancel context.CancelFunc
	if latest.IsZero() {
		ctx, cancel = context.WithCancel(context.Background())
	} else {
		ctx, cancel = context.WithDeadline(context.Background(), latest)
	}
	var sent atomic.Bool
	if earliest.Before(latest) {
		unsent := time.AfterFunc(time.Until(earliest), func() {
			if !sent.Load() {
				cancel()
			}
		})
		defer unsent.Stop()
	}
	resp, err := b.send(ctx, &sent, all)
	cancel()
	if err != nil && (!sent.Load() || refusedUnapplied(err)) {
		// Not applied: each on its own, where a write's own refusal is its, and at once, so
		// that none waits for another's connection or deadline.
		b.mu.Lock()
		b.refused++
		switch {
		case errors.Is(err, rpctypes.ErrTooManyOps):
			b.maxWrites = max(len(batch)/2, 2)
		case errors.Is(err, rpctypes.ErrRequestTooLarge):
			b.maxBytes = max(b.maxBytes/2, 1024)
		}
		b.mu.Unlock()
		var wg sync.WaitGroup
		for _, w := range batch {
			wg.Add(1)
			go func() {
				defer wg.Done()
				w.resp, w.err = b.send(w.ctx, w.sent, w.spec)
				close(w.done)
			}()
		}
		wg.Wait()
		return
	}
	for i, w := range batch {
		w.sent.Store(true)
		if err != nil {
			w.err = err
		} else {
			inner := resp.Responses[i].GetResponseTxn()
			w.resp = &clientv3.TxnResponse{Header: resp.Header, Succeeded: inner.GetSucceeded(), Responses: inner.GetResponses()}
		}
		close(w.done)
	}
}

// footprint adds t's spans to w's (what its ops write; what its guards and reads look at) and
// returns an estimate of its request's bytes.
func footprint(w *batchWrite, t *txnSpec) int {
	size := 0
	for _, c := range t.cmps {
		w.reads = append(w.reads, span{unsafeString(c.KeyBytes()), unsafeString(c.GetCompare().GetRangeEnd())})
		size += len(c.KeyBytes()) + len(c.GetCompare().GetRangeEnd()) + len(c.ValueBytes()) + 16
	}
	for _, n := range t.nested {
		size += footprint(w, n) + 16
	}
	return size + opsFootprint(w, t.then) + opsFootprint(w, t.els) + rawFootprint(w, t.raw)
}

// unsafeString is b as a string, without a copy: for bytes that nothing changes while the
// string is in use. A queued write's spans are made so of its request's keys and range ends,
// which nothing changes once made (client/v3 and this package make them from strings, and etcd
// only reads a request), and which live as long as the spans that name them: copied, they were
// about eight strings per put. A release record's buffer is handed so to OpPut, which copies it.
func unsafeString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// rawFootprint is opsFootprint of ops built as etcd takes them.
func rawFootprint(w *batchWrite, ops []*pb.RequestOp) int {
	size := 0
	for _, op := range ops {
		switch r := op.Request.(type) {
		case *pb.RequestOp_RequestPut:
			k := unsafeString(r.RequestPut.Key)
			w.writes = append(w.writes, span{key: k})
			size += len(k) + len(r.RequestPut.Value) + 16
		case *pb.RequestOp_RequestTxn:
			t := r.RequestTxn
			for _, c := range t.Compare {
				w.reads = append(w.reads, span{unsafeString(c.Key), unsafeString(c.RangeEnd)})
				size += len(c.Key) + len(c.RangeEnd) + len(c.GetValue()) + 16
			}
			size += rawFootprint(w, t.Success) + rawFootprint(w, t.Failure) + 16
		default:
			panic(fmt.Sprintf("rawFootprint: %T", r))
		}
	}
	return size
}

func opsFootprint(w *batchWrite, ops []clientv3.Op) int {
	size := 0
	for _, op := range ops {
		s := span{unsafeString(op.KeyBytes()), unsafeString(op.RangeBytes())}
		size += len(s.key) + len(s.end) + len(op.ValueBytes()) + 16
		switch {
		case op.IsTxn():
			cmps, then, els := op.Txn()
			size += footprint(w, &txnSpec{cmps: cmps, then: then, els: els})
		case op.IsPut() || op.IsDelete():
			w.writes = append(w.writes, s)
		default:
			w.reads = append(w.reads, s)
		}
	}
	return size
}

// scopes returns, for a write to the KV space that does eff, the ranges of the release scopes
// it touches: each appliance's subtree; all of the KV space for a key of shared/ (in every
// appliance's view) or another key.
func (s *Store) scopes(eff *effect) []span {
	if eff == nil {
		return nil
	}
	var out []span
	add := func(prefix string) {
		for _, sp := range out {
			if sp.key == prefix {
				return
			}
		}
		out = append(out, span{prefix, clientv3.GetPrefixRangeEnd(prefix)})
	}
	each := func(k string) {
		key := strings.TrimSuffix(strings.TrimPrefix(k, s.kvRoot), "/")
		name, ok := api.ApplianceOf(key)
		if !ok {
			add(s.kvRoot) // shared/ is in every appliance's view
			return
		}
		// The appliance's prefix is mostly the beginning of k itself: no string to make.
		if n := len(s.kvRoot) + len(api.AppliancesPrefix) + len(name) + 2; len(k) >= n && k[n-1] == '/' && strings.HasPrefix(k, s.kvRoot) {
			add(k[:n])
		} else {
			add(s.kvRoot + api.ApplianceRoot(name) + "/")
		}
	}
	for _, kv := range eff.puts {
		each(kv.key)
	}
	for _, k := range eff.dels {
		each(k)
	}
	for _, p := range eff.prefixes {
		each(p)
	}
	return out
}
