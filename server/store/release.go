package store

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// Release records.
//
// A write made with a context from WithRelease records a release: a key of its own under
// <root>sys/releases/, put by the write's own transaction, next to its marker (see commit), so
// that a write that applies has exactly one record and a write that does not has none. The
// record's key is known before the commit (a time-ordered id), and its mod_revision is the
// write's revision, so the record does not need to hold the revision.
//
// The record names the keys created, changed and deleted. Telling those apart needs the state
// of the touched keys before the write, and the write is guarded on that state (an outer
// transaction whose only op is the write's own, nested): each exact key's mod_revision, and for
// a recursive delete "nothing under the prefix changed since it was read". When another writer
// got in between, the outer guard fails, nothing is applied, the outer transaction's Else reads
// the touched keys afresh, and commit builds the record again from that read and retries. This
// was chosen over classifying later from etcd's history (gone once compacted, which is when the
// record is needed) and over a second write after the commit with the prev_kv answers (a record
// that a crash between the two writes would leave wrong).
//
// Where the state comes from: the exact keys' from the store's prior cache (what this store
// last wrote or read of them, by mod_revision and a hash of the value) when it has them all,
// else from one read-only transaction of every touched range; a recursive delete's prefixes are
// always read. A stale cache entry (another replica wrote the key) only costs a failed guard,
// whose Else brings the fresh state: the guard, not the cache, makes the record right. Most
// writes thus cost one etcd request, not a read and then a write.
const (
	releasePrefix = "releases/"
	copyPrefix    = "release-copies/"
	// staleTries bounds the retries of a write whose state of the touched keys went stale.
	staleTries = 20
)

// ReleaseInfo is what the server tells a write about itself, for its release.
type ReleaseInfo struct {
	Token, Remote, Message, Source, Kind string
	// Appliance is, for an apply or rollback, the appliance whose whole tree the release copies.
	Appliance string
	// RollbackTo is the revision a rollback restored.
	RollbackTo int64
	// Seal encrypts a secret value for a copy; nil leaves secret values out (named in Omitted).
	Seal func(plain []byte) (keyID, sealed string, err error)
}

type releaseKey struct{}

// WithRelease returns ctx marked so that a user-key write made with it records a release.
func WithRelease(ctx context.Context, ri ReleaseInfo) context.Context {
	return context.WithValue(ctx, releaseKey{}, ri)
}

// effect is what a write will do to user keys (absolute names): keys put with their values
// (each once), keys deleted, and prefixes (ending in '/') whose subtree is deleted. tree, for an apply, is
// the appliance's whole tree as applied (relative names).
type effect struct {
	puts     []keyValue
	dels     []string
	prefixes []string
	tree     map[string]string
	// promotes: the write ends a rollout (its records are written with it), and is written
	// even when it changes no key.
	promotes bool
}

// exact returns the keys eff puts or deletes, sorted, each once.
func (eff *effect) exact() []string {
	keys := make([]string, 0, len(eff.puts)+len(eff.dels))
	for _, p := range eff.puts {
		keys = append(keys, p.key)
	}
	keys = append(keys, eff.dels...)
	slices.Sort(keys)
	return slices.Compact(keys)
}

// prior is a key's state before a write: its mod and create revisions (0 when absent) and
// the hash of its value.
type prior struct {
	mod, create int64
	sum         [sha256.Size]byte
}

func priorOf(kv *mvccpb.KeyValue) prior {
	return prior{mod: kv.ModRevision, create: kv.CreateRevision, sum: sha256.Sum256(kv.Value)}
}

// touched is the state of the keys a write touches: every exact key (keys, sorted, each once;
// state[i] is that of keys[i], mod 0 when absent), and the keys under each deleted prefix (with
// their create revisions) as read at rev. Slices, not a map: most writes touch one key, and a
// map of one (a group of eight slots) was ~570 bytes per write.
type touched struct {
	keys  []string
	state []prior
	under [][]keyCreated
	rev   int64 // the prefixes' read; 0 without prefixes
}

// newTouched is the state of keys (sorted, each once), every one absent until set.
func newTouched(keys []string) *touched {
	return &touched{keys: keys, state: make([]prior, len(keys))}
}

// at is the state of k, one of t's keys.
func (t *touched) at(k string) prior {
	if i, ok := slices.BinarySearch(t.keys, k); ok {
		return t.state[i]
	}
	return prior{}
}

// set makes p the state of k, one of t's keys.
func (t *touched) set(k string, p prior) {
	if i, ok := slices.BinarySearch(t.keys, k); ok {
		t.state[i] = p
	}
}

type keyCreated struct {
	key    string
	create int64
}

// touchedReads returns the ops that read what a write touches: the exact keys grouped by their
// parent, each group read as one range [first, last] (the keys between are read too, and
// ignored), then each deleted prefix, keys only.
func touchedReads(exact, prefixes []string) []clientv3.Op {
	var ops []clientv3.Op
	for i := 0; i < len(exact); {
		j := i
		for j+1 < len(exact) && parent(exact[j+1]) == parent(exact[i]) {
			j++
		}
		op := getOp
		op.WithKeyBytes([]byte(exact[i]))
		if i != j {
			op.WithRangeBytes([]byte(exact[j] + "\x00"))
		}
		ops = append(ops, op)
		i = j + 1
	}
	for _, p := range prefixes {
		ops = append(ops, clientv3.OpGet(p, clientv3.WithPrefix(), clientv3.WithKeysOnly()))
	}
	return ops
}

// getOp is clientv3.OpGet(""), from which touchedReads makes its reads by setting their keys
// (and a range's end), as OpGet(key) and OpGet(key, WithRange(end)) make them: OpGet makes and
// drops an Op of its own (248 bytes) to check its options, for every read of every write.
var getOp = clientv3.OpGet("")

// readTouched turns the answers to touchedReads(exact, prefixes), read at rev, into a touched.
func readTouched(exact, prefixes []string, resps []*pb.ResponseOp, rev int64) *touched {
	t := newTouched(exact)
	t.rev = rev
	nExact := len(resps) - len(prefixes)
	for _, r := range resps[:nExact] {
		for _, kv := range r.GetResponseRange().GetKvs() {
			// A key that is not one of exact was read only because it sorts between two
			// touched keys: set leaves it out.
			t.set(string(kv.Key), priorOf(kv))
		}
	}
	for _, r := range resps[nExact:] {
		var keys []keyCreated
		for _, kv := range r.GetResponseRange().GetKvs() {
			keys = append(keys, keyCreated{string(kv.Key), kv.CreateRevision})
		}
		t.under = append(t.under, keys)
	}
	return t
}

// pendingRelease is what a write's transaction gains for its release: guards for an outer
// transaction, ops next to the marker's, and the reads of the outer transaction's Else.
type pendingRelease struct {
	guards []clientv3.Cmp
	ops    []clientv3.Op
	reads  []clientv3.Op
	// exact and prefixes are what reads reads (see readTouched); state is what the guards hold.
	exact, prefixes []string
	state           *touched
	// key is the record's: a write that applied created it (see fence).
	key string
	// meta is what pruning needs of the record (its mod revision is the write's).
	meta releaseMeta
	// same are the keys put with the value they hold (not put again: see commitRaw);
	// unchanged says that the write changes no key at all, and writes nothing.
	same      map[string]bool
	unchanged bool
}

// flatMax bounds the compares, and the Else's ops, of a write whose release guards join its own
// transaction (see flattens): etcd's default --max-txn-ops, which an external etcd may keep.
const flatMax = 128

// flattens reports whether the write whose transaction has the compares cmps and the Else els
// takes p's guards into its own transaction (If(p.guards, cmps) Then(…) Else(p.reads, els))
// rather than nested in one of p's (If(p.guards) Then(Txn(If(cmps)…)) Else(p.reads)). etcd
// checks and applies each level of a nested transaction apart (its request check builds
// interval trees at each), and a lone put is the write most made. It does when p deletes
// no prefix (held tells the guards' outcome from the exact keys read) and both levels together
// stay within flatMax; a failed flat transaction runs both Elses, which is how held knows.
func (p *pendingRelease) flattens(cmps []clientv3.Cmp, els []clientv3.Op) bool {
	return len(p.prefixes) == 0 && len(p.guards)+len(cmps) <= flatMax && len(p.reads)+len(els) <= flatMax
}

// held reports whether p's guards hold for the touched keys as read (a write without prefixes:
// each exact key at the mod revision p saw, and a key p leaves as it is with its value).
func (p *pendingRelease) held(now *touched) bool {
	for _, k := range p.exact {
		if b, a := now.at(k), p.state.at(k); b.mod != a.mod || p.same[k] && b.sum != a.sum {
			return false
		}
	}
	return true
}

// prepareRelease builds the release of a write that does eff: the record, its guards, its ops.
// The state of the touched keys is fresh when given (the Else of a failed try), else from the
// prior cache and, for what it lacks, one read. nil when ctx asks for no release.
func (s *Store) prepareRelease(ctx context.Context, eff *effect, fresh *touched) (*pendingRelease, error) {
	ri, ok := ctx.Value(releaseKey{}).(ReleaseInfo)
	if !ok || eff == nil {
		return nil, nil
	}
	exact := eff.exact()
	reads := touchedReads(exact, eff.prefixes) // the ops are only read, here and in the Else
	st := fresh
	if st == nil {
		st = s.priors.lookup(exact)
	}
	if st == nil || len(eff.prefixes) > 0 && st.rev == 0 {
		resps, rev, err := s.readOnce(ctx, reads)
		if err != nil {
			return nil, s.etcdErr(ctx, "read the keys a write touches", err)
		}
		st = readTouched(exact, eff.prefixes, resps, rev)
		s.priors.store(st, rev)
	}

	p := &pendingRelease{exact: exact, prefixes: eff.prefixes, state: st, reads: reads}
	var changes releaseChanges
	note := func(abs string, list func(c *api.ReleaseChange) *[]string) {
		key := strings.TrimPrefix(abs, s.kvRoot)
		c := &changes.list[changes.of(key)]
		*list(c) = append(*list(c), key)
	}
	for _, k := range exact {
		p.guards = append(p.guards, compare(clientv3.ModRevision(k), "=", st.at(k).mod))
	}
	var same []keyValue
	for _, kv := range eff.puts {
		switch b := st.at(kv.key); {
		case b.mod == 0:
			note(kv.key, func(c *api.ReleaseChange) *[]string { return &c.Created })
		case b.sum != sha256.Sum256([]byte(kv.value)):
			note(kv.key, func(c *api.ReleaseChange) *[]string { return &c.Changed })
		default:
			if p.same == nil {
				p.same = map[string]bool{}
			}
			p.same[kv.key] = true
			same = append(same, kv)
		}
	}
	gone := map[string]bool{}
	for _, k := range eff.dels {
		if st.at(k).mod != 0 && !gone[k] {
			gone[k] = true
			note(k, func(c *api.ReleaseChange) *[]string { return &c.Deleted })
		}
	}
	perKey := 0
	for _, keys := range st.under {
		perKey += len(keys)
	}
	for i, pre := range eff.prefixes {
		// Nothing created or changed under it since the read, and nothing deleted (each key
		// read is still the same key).
		p.guards = append(p.guards, compare(clientv3.ModRevision(pre), "<", st.rev+1).WithPrefix())
		for _, kc := range st.under[i] {
			if perKey <= maxCreateGuards {
				p.guards = append(p.guards, compare(clientv3.CreateRevision(kc.key), "=", kc.create))
			}
			if !gone[kc.key] {
				gone[kc.key] = true
				note(kc.key, func(c *api.ReleaseChange) *[]string { return &c.Deleted })
			}
		}
	}

	// A key left as it is, is left so only while it holds the value: its mod_revision alone
	// (what the guards above compare) names a value within one store's history, and the state
	// may be the prior cache's of another (the endpoints moved, a restore took the revisions
	// back) until the replica learns it.
	slices.SortFunc(same, func(a, b keyValue) int { return strings.Compare(a.key, b.key) })
	for _, kv := range same {
		p.guards = append(p.guards, compare(clientv3.Value(kv.key), "=", kv.value))
	}
	if len(changes.list) == 0 && !eff.promotes {
		p.unchanged = true
		return p, nil // no record: nothing is written
	}

	now := time.Now().UTC()
	p.key = releaseKeyAt(s.sysRoot+releasePrefix, now)
	id := p.key[len(s.sysRoot+releasePrefix):]
	rec := api.Release{ID: id, Time: now, Token: ri.Token, Remote: ri.Remote, Message: ri.Message,
		Source: ri.Source, Kind: ri.Kind, RollbackTo: ri.RollbackTo, Changes: changes.list}
	if rec.Changes == nil {
		rec.Changes = []api.ReleaseChange{}
	}
	for i := range rec.Changes {
		c := &rec.Changes[i]
		c.CreatedCount, c.ChangedCount, c.DeletedCount = len(c.Created), len(c.Changed), len(c.Deleted)
		c.Created, c.Changed, c.Deleted = firstNames(c.Created), firstNames(c.Changed), firstNames(c.Deleted)
	}
	if len(rec.Changes) > 1 { // most writes touch one scope: nothing to sort, nor to box for sort.Slice
		sort.Slice(rec.Changes, func(i, j int) bool {
			a, b := rec.Changes[i], rec.Changes[j]
			return a.Scope+"/"+a.Appliance < b.Scope+"/"+b.Appliance
		})
	}
	if ri.Appliance != "" && eff.tree != nil {
		cp, err := copyOf(ri, eff.tree)
		if err != nil {
			return nil, err
		}
		data, err := json.Marshal(cp)
		if err != nil {
			return nil, fmt.Errorf("encode release copy: %w", err)
		}
		if limit := s.copyLimit(); len(data) > limit {
			// The copy shares the write's etcd request: past a third of its size limit, the
			// write goes without one rather than fail.
			rec.CopySkipped = fmt.Sprintf("the tree is %d bytes, over the copy limit of %d", len(data), limit)
		} else {
			rec.Copy, rec.CopyBytes = ri.Appliance, int64(len(data))
			p.ops = append(p.ops, clientv3.OpPut(s.sysRoot+copyPrefix+id, string(data)))
		}
	}
	buf := recordBufs.Get().(*[]byte)
	data, err := appendRelease((*buf)[:0], &rec)
	if err != nil {
		recordBufs.Put(buf)
		return nil, fmt.Errorf("encode release: %w", err)
	}
	// OpPut copies the value into the op it makes (string to []byte), so the buffer is free
	// again once it returns: the record is copied once, where string(data) copied it twice.
	p.ops = append(p.ops, clientv3.OpPut(p.key, unsafeString(data)))
	p.meta = metaOf(p.key, rec, len(data))
	if cap(data) <= maxRecordBuf {
		*buf = data
		recordBufs.Put(buf)
	}
	return p, nil
}

// recordBufs are buffers that release records are encoded into (see prepareRelease), kept
// while they are at most maxRecordBuf bytes (a record's names are bounded, but a message or
// a source may be long).
var recordBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

const maxRecordBuf = 16 << 10

// readOnce runs ops, all reads, at one revision: one range as it is, more as a transaction.
func (s *Store) readOnce(ctx context.Context, ops []clientv3.Op) ([]*pb.ResponseOp, int64, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	if len(ops) == 1 {
		resp, err := s.cli.Do(ctx, ops[0])
		if err != nil {
			return nil, 0, err
		}
		get := resp.Get()
		return []*pb.ResponseOp{{Response: &pb.ResponseOp_ResponseRange{ResponseRange: (*pb.RangeResponse)(get)}}}, get.Header.Revision, nil
	}
	resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return nil, 0, err
	}
	return resp.Responses, resp.Header.Revision, nil
}

// stale returns the fresh state of the keys p touches from the answer of a try whose guards
// failed (its Else read them), and keeps it in the prior cache.
func (s *Store) stale(p *pendingRelease, resp *clientv3.TxnResponse) *touched {
	st := readTouched(p.exact, p.prefixes, resp.Responses, resp.Header.Revision)
	s.priors.store(st, resp.Header.Revision)
	return st
}

// applied keeps in the prior cache what a write that p guarded left at rev: with its own
// guards held (ok), eff's puts and deletes; else the keys as p saw them, which its guards
// confirmed. Keys under a deleted prefix are forgotten either way (a recursive delete's nested
// transaction may have applied).
func (s *Store) appliedRelease(p *pendingRelease, eff *effect, ok bool, rev int64) {
	after := p.state // p's own (lookup and readTouched make a new one), and p is done
	if ok {
		for _, kv := range eff.puts {
			if p.same[kv.key] {
				continue // not put: it keeps its revisions
			}
			b := after.at(kv.key)
			create := b.create
			if b.mod == 0 {
				create = rev
			}
			after.set(kv.key, prior{mod: rev, create: create, sum: sha256.Sum256([]byte(kv.value))})
		}
		for _, k := range eff.dels {
			after.set(k, prior{})
		}
	}
	s.priors.store(after, rev)
	s.priors.forgetUnder(eff.prefixes)
	if ok {
		m := p.meta
		m.mod = rev
		s.metas.made(m)
	}
}

// priorCache is the prior cache (see "Release records"): what the keys written or read lately
// held, at the revision it was known at. It holds at most maxPriors keys.
type priorCache struct {
	mu sync.Mutex
	m  map[string]cachedPrior
}

type cachedPrior struct {
	prior
	at int64 // the revision the state was known at
}

// maxPriors bounds the prior cache: about 150 bytes a key, 15 MB.
const maxPriors = 100_000

// lookup returns the cached state of every key of exact; nil when one is missing.
func (c *priorCache) lookup(exact []string) *touched {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := newTouched(exact)
	for i, k := range exact {
		e, ok := c.m[k]
		if !ok {
			return nil
		}
		t.state[i] = e.prior
	}
	return t
}

// store keeps the state of t's keys known at revision at, unless newer state is kept already.
func (c *priorCache) store(t *touched, at int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[string]cachedPrior)
	}
	for i, k := range t.keys {
		p := t.state[i]
		if e, ok := c.m[k]; ok && e.at > at {
			continue
		}
		if len(c.m) >= maxPriors {
			// Forget an eighth, whichever map iteration gives first.
			n := maxPriors / 8
			for old := range c.m {
				if n--; n < 0 {
					break
				}
				delete(c.m, old)
			}
		}
		c.m[k] = cachedPrior{p, at}
	}
}

// forget drops keys (a write whose outcome is not known in detail).
func (c *priorCache) forget(keys []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range keys {
		delete(c.m, k)
	}
}

// forgetUnder drops the keys under prefixes.
func (c *priorCache) forgetUnder(prefixes []string) {
	if len(prefixes) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.m {
		for _, p := range prefixes {
			if strings.HasPrefix(k, p) {
				delete(c.m, k)
				break
			}
		}
	}
}

// clear drops everything (the store was replaced: its revisions say nothing about the cache's).
func (c *priorCache) clear() {
	c.mu.Lock()
	c.m = nil
	c.mu.Unlock()
}

// copyLimit bounds a release copy in bytes: a third of the embedded etcd's request size limit,
// or of an external cluster's default (1.5 MiB), whose own limit the store does not know.
func (s *Store) copyLimit() int {
	if s.copyLimitBytes > 0 {
		return s.copyLimitBytes
	}
	if s.etcdMaxRequestBytes > 0 {
		return s.etcdMaxRequestBytes / 3
	}
	return (3 << 20) / 2 / 3
}

// firstNames sorts names and keeps the first api.MaxReleaseNames.
func firstNames(names []string) []string {
	slices.Sort(names)
	return slices.Clip(names[:min(len(names), api.MaxReleaseNames)])
}

// maxCreateGuards bounds the per-key guards of recursive deletes: past it, only "nothing created
// or changed under the prefix since the read" guards them (a key another writer deleted in
// between is then listed as deleted by both), so that a delete of a large subtree stays within
// etcd's limit on a transaction's compares.
const maxCreateGuards = 1000

// parent is key up to its last '/'.
func parent(key string) string {
	return key[:strings.LastIndexByte(key, '/')+1]
}

// releaseChanges are a release's changes by scope, in the order their scopes came. Most writes
// touch one scope, found by a look at each; past releaseScopesScanned, a map indexes them. A
// map of the scopes and an entry made apart for each were ~500 bytes of every write.
type releaseChanges struct {
	list  []api.ReleaseChange
	index map[scopeID]int
}

type scopeID struct{ scope, appliance string }

const releaseScopesScanned = 8

// of returns the index in list of the change entry of key's scope, adding it.
func (rc *releaseChanges) of(key string) int {
	scope, name := api.ScopeOther, ""
	if rest, ok := strings.CutPrefix(key, api.AppliancesPrefix+"/"); ok {
		if n, _, under := strings.Cut(rest, "/"); under {
			scope, name = api.ScopeAppliance, n
		}
	} else if strings.HasPrefix(key, api.SharedPrefix+"/") {
		scope = api.ScopeShared
	}
	if rc.index != nil {
		if i, ok := rc.index[scopeID{scope, name}]; ok {
			return i
		}
	} else {
		for i := range rc.list {
			if c := &rc.list[i]; c.Scope == scope && c.Appliance == name {
				return i
			}
		}
	}
	rc.list = append(rc.list, api.ReleaseChange{Scope: scope, Appliance: name})
	switch n := len(rc.list); {
	case rc.index != nil:
		rc.index[scopeID{scope, name}] = n - 1
	case n > releaseScopesScanned:
		rc.index = make(map[scopeID]int, 2*n)
		for i, c := range rc.list {
			rc.index[scopeID{c.Scope, c.Appliance}] = i
		}
	}
	return len(rc.list) - 1
}

// copyOf is the copy of an appliance's tree kept with its release: secret values sealed, or
// left out without a sealer. Whether a key is secret is told by its whole name: every key of an
// appliance named "secrets" is.
func copyOf(ri ReleaseInfo, tree map[string]string) (api.ReleaseCopy, error) {
	cp := api.ReleaseCopy{Appliance: ri.Appliance, Keys: map[string]string{}}
	root := api.ApplianceRoot(ri.Appliance) + "/"
	for k, v := range tree {
		if !api.IsSecret(root + k) {
			cp.Keys[k] = v
			continue
		}
		if ri.Seal == nil {
			cp.Omitted = append(cp.Omitted, k)
			continue
		}
		id, sealed, err := ri.Seal([]byte(v))
		if err != nil {
			return cp, fmt.Errorf("seal a secret for the release copy: %w", err)
		}
		if cp.Sealed == nil {
			cp.Sealed = map[string]string{}
		}
		cp.Sealed[k], cp.KeyID = sealed, id
	}
	slices.Sort(cp.Omitted)
	return cp, nil
}

// releaseID is a new release's id: the time in unix nanoseconds, zero-padded so that ids sort
// by time, and a random suffix.
// NewReleaseID returns a new id of the kind releases have (sortable by t, unique).
func NewReleaseID(t time.Time) string { return releaseID(t) }

func releaseID(t time.Time) string { return releaseKeyAt("", t) }

// releaseKeyAt is prefix followed by a new release id of time t, as one string (the record's
// key, of which the id is the end).
func releaseKeyAt(prefix string, t time.Time) string {
	b := make([]byte, 0, len(prefix)+29)
	b = append(b, prefix...)
	ns := t.UnixNano()
	u := uint64(ns)
	if ns < 0 {
		// fmt's %020d of a negative number: '-', then the digits zero-padded to 19.
		b = append(b, '-')
		u = -u
	}
	var d [20]byte
	digits := strconv.AppendUint(d[:0], u, 10)
	for range len(prefix) + 20 - len(b) - len(digits) {
		b = append(b, '0')
	}
	b = append(b, digits...)
	b = append(b, '-')
	var x [8]byte
	hex := strconv.AppendUint(x[:0], uint64(rand.Uint32()), 16)
	for range 8 - len(hex) {
		b = append(b, '0')
	}
	b = append(b, hex...)
	return string(b)
}

// releaseTime reads the time back from a release id.
func releaseTime(id string) (time.Time, bool) {
	ns, _, _ := strings.Cut(id, "-")
	n, err := strconv.ParseInt(ns, 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(0, n), true
}

// Releases reads every release record, newest (highest revision) first, with the store's
// revision.
//
// The callers that ask together share one read that starts after they asked (at once when
// none is under way, else when the one under way ends), and its result: they must not change
// it. Each read holds every record, up to
// --release-max-bytes (256 MiB), decoded: a read token asking for key histories or release
// pages (whose answers are small, not counted as large answers) made each request read and
// decode them all, twenty at once twenty times. A read decodes only the records that came or
// changed since the last one (see readReleases).
func (s *Store) Releases(ctx context.Context) ([]api.Release, int64, error) {
	f := s.releases.join(s)
	select {
	case <-f.done:
		return f.out, f.rev, f.err
	case <-ctx.Done():
		return nil, 0, s.etcdErr(ctx, "read releases", ctx.Err())
	}
}

// releasesReads is the read of every release record under way, and the next one, which the
// callers that came after the one under way started wait for (or, when it fails, share its
// failure).
type releasesReads struct {
	mu        sync.Mutex
	cur, next *releasesRead
	// held is what the reads decoded, by key, which the next read reuses, and order the same
	// records newest first; out is the last read's answer, given again while nothing changed.
	// Used only by the read under way, and dropped (under mu, no read under way) once no read
	// came for releasesHeldIdle.
	held     map[string]*heldRelease
	order    []*heldRelease
	out      []api.Release
	lastRead time.Time
	idle     time.Duration // releasesHeldIdle; tests shorten it
	dropping *time.Timer
	decoded  atomic.Int64 // records decoded, for tests
}

// heldRelease is a record as a read decoded it, at its mod revision; bad when it could not be
// decoded (it is skipped, and warned about once).
type heldRelease struct {
	key string
	mod int64
	rel api.Release
	bad bool
}

// newer orders records newest first (records of one transaction by id, newest first).
func newer(a, b *heldRelease) int {
	return cmp.Or(cmp.Compare(b.mod, a.mod), cmp.Compare(b.rel.ID, a.rel.ID), cmp.Compare(b.key, a.key))
}

// releasesHeldIdle is how long the decoded records are kept after the last read. An operator
// paging through the console or histories reads them every few seconds; a server nobody
// browses does not hold them.
const releasesHeldIdle = 2 * time.Minute

type releasesRead struct {
	done chan struct{}
	out  []api.Release
	rev  int64
	err  error
}

// join returns the read a caller arriving now waits for: the next one, started at once when
// none is under way.
func (rr *releasesReads) join(s *Store) *releasesRead {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	if rr.next == nil {
		rr.next = &releasesRead{done: make(chan struct{})}
	}
	f := rr.next
	if rr.cur == nil {
		rr.startLocked(s)
	}
	return f
}

// startLocked starts the next read; rr.mu must be held.
func (rr *releasesReads) startLocked(s *Store) {
	f := rr.next
	rr.cur, rr.next = f, nil
	go func() {
		// Not a caller's context: the read is everyone's who joined it.
		ctx, cancel := s.opCtx(s.ctx)
		f.out, f.rev, f.err = s.readReleases(ctx, rr)
		cancel()
		close(f.done)
		rr.mu.Lock()
		rr.cur = nil
		rr.lastRead = time.Now()
		if n := rr.next; n != nil && f.err != nil {
			// Those who came while this read failed are answered its failure (etcd did not
			// answer while they waited either), not made to wait for a read of their own to
			// fail too: twice the request timeout while etcd did not answer.
			rr.next = nil
			n.err = f.err
			close(n.done)
		} else if n != nil {
			rr.startLocked(s)
		}
		rr.dropLaterLocked()
		rr.mu.Unlock()
	}()
}

// dropLaterLocked makes sure that the held records go once no read came for rr.idle; rr.mu
// must be held.
func (rr *releasesReads) dropLaterLocked() {
	idle := cmp.Or(rr.idle, releasesHeldIdle)
	if rr.dropping != nil || rr.held == nil {
		return
	}
	var drop func()
	drop = func() {
		rr.mu.Lock()
		defer rr.mu.Unlock()
		if wait := idle - time.Since(rr.lastRead); rr.cur != nil || wait > 0 {
			rr.dropping = time.AfterFunc(max(wait, idle/4), drop)
			return
		}
		rr.held, rr.order, rr.out, rr.dropping = nil, nil, nil, nil
	}
	rr.dropping = time.AfterFunc(idle, drop)
}

// readReleases is one read of every release record, newest first. It lists the records' keys
// and reads and decodes only those rr does not hold at the same mod revision: the console's
// pages and every history read all of them, and decoding 50,000 records took ~0.3 s, a
// listing of their keys ~0.03 s. A key and a mod revision name one record's content (ids are
// unique), in whatever store the endpoints lead to now, so a restore or another store cannot
// leave a record behind that is not there.
func (s *Store) readReleases(ctx context.Context, rr *releasesReads) ([]api.Release, int64, error) {
	list, read, err := s.readRecordsNotHeld(ctx, s.sysRoot+releasePrefix, func(key []byte, mod int64) bool {
		h, ok := rr.held[string(key)]
		return ok && h.mod == mod
	})
	if err != nil {
		return nil, 0, err
	}
	if rr.held == nil {
		rr.held = make(map[string]*heldRelease, len(list.Kvs))
	}
	fresh := make([]*heldRelease, 0, len(read))
	for _, kv := range read {
		h := &heldRelease{key: string(kv.Key), mod: kv.ModRevision}
		if err := json.Unmarshal(kv.Value, &h.rel); err != nil {
			s.log.Warn("skip an unreadable release record", "key", h.key, "err", err.Error())
			h.bad = true
		}
		h.rel.Revision = kv.ModRevision
		rr.decoded.Add(1)
		rr.held[h.key] = h
		fresh = append(fresh, h)
	}
	if len(rr.held) != len(list.Kvs) { // records went: keep those listed
		listed := make(map[string]bool, len(list.Kvs))
		for _, kv := range list.Kvs {
			listed[string(kv.Key)] = true
		}
		maps.DeleteFunc(rr.held, func(k string, _ *heldRelease) bool { return !listed[k] })
	} else if len(fresh) == 0 && rr.out != nil {
		return rr.out, list.Header.Revision, nil
	}
	// The records held before, less those rewritten or gone, merged with the fresh ones (mostly
	// all newer).
	slices.SortFunc(fresh, newer)
	order := make([]*heldRelease, 0, len(rr.held))
	old := rr.order
	for len(fresh) > 0 || len(old) > 0 {
		if len(old) > 0 && rr.held[old[0].key] != old[0] {
			old = old[1:]
		} else if len(old) == 0 || len(fresh) > 0 && newer(fresh[0], old[0]) < 0 {
			order, fresh = append(order, fresh[0]), fresh[1:]
		} else {
			order, old = append(order, old[0]), old[1:]
		}
	}
	out := make([]api.Release, 0, len(order))
	for _, h := range order {
		if !h.bad {
			out = append(out, h.rel)
		}
	}
	rr.order, rr.out = order, out
	return out, list.Header.Revision, nil
}

// readRecordsNotHeld lists the keys under prefix and reads, at the listing's revision, the
// records that held does not know at their mod revision. Records come sorted by key and ids by
// time, so the new ones are mostly one run at the end: one range from the first to the last of
// them. read holds the records of that range that held does not know.
func (s *Store) readRecordsNotHeld(ctx context.Context, prefix string, held func(key []byte, mod int64) bool) (list *clientv3.GetResponse, read []*mvccpb.KeyValue, err error) {
	list, err = s.cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, nil, s.etcdErr(ctx, "read releases", err)
	}
	var first, last []byte
	for _, kv := range list.Kvs {
		if held(kv.Key, kv.ModRevision) {
			continue
		}
		if first == nil {
			first = kv.Key
		}
		last = kv.Key
	}
	if first == nil {
		return list, nil, nil
	}
	resp, err := s.cli.Get(ctx, string(first), clientv3.WithRange(string(last)+"\x00"), clientv3.WithRev(list.Header.Revision))
	if err != nil {
		return nil, nil, s.etcdErr(ctx, "read releases", err)
	}
	read = slices.DeleteFunc(resp.Kvs, func(kv *mvccpb.KeyValue) bool { return held(kv.Key, kv.ModRevision) })
	return list, read, nil
}

// ReleaseCopy reads the copy of release id; api.ErrNotFound when it has none.
func (s *Store) ReleaseCopy(ctx context.Context, id string) (api.ReleaseCopy, error) {
	var cp api.ReleaseCopy
	data, _, err := s.SysGet(ctx, copyPrefix+id)
	if err != nil {
		return cp, err
	}
	if err := json.Unmarshal(data, &cp); err != nil {
		return cp, fmt.Errorf("decode release copy %s: %w", id, err)
	}
	return cp, nil
}

// Retention is what PruneReleases keeps: the newest Count releases of each scope (each
// appliance, shared/, other keys: a stream of writes to one appliance does not push another's
// history out), none older than MaxAge (0: no age limit), and, newest first, as many as fit in
// MaxBytes of records and copies (0: no byte limit). The newest release is always kept.
type Retention struct {
	Count    int
	MaxAge   time.Duration
	MaxBytes int64
}

// PruneReleases deletes the releases (and their copies) that ret does not keep, and returns how
// many went. It is not a write with a marker: deleting what is already gone is harmless, so a
// lost answer is simply tried again at the next pass.
//
// A pass lists the records only every few minutes (see releaseMetas) and decodes only the
// records it has not seen yet: the server prunes every few hundred writes, and listing or
// decoding every record each time cost a tenth of the server's CPU, and more as the records
// grew, under a stream of writes.
func (s *Store) PruneReleases(ctx context.Context, ret Retention, now time.Time) (int, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	metas, err := s.releaseMetas(ctx)
	if err != nil {
		return 0, err
	}
	slices.SortFunc(metas, func(a, b releaseMeta) int { return cmp.Compare(b.mod, a.mod) })
	var ops []clientv3.Op
	var gone []string // the records of ops
	pruned := 0
	var bytes int64
	perScope := map[string]int{} // releases kept so far, newest first, by scope
	prefix := s.sysRoot + releasePrefix
	for i, m := range metas {
		id := strings.TrimPrefix(m.key, prefix)
		bytes += m.bytes
		t, ok := releaseTime(id)
		old := ret.MaxAge > 0 && ok && now.Sub(t) > ret.MaxAge
		big := ret.MaxBytes > 0 && bytes > ret.MaxBytes
		within := false
		for _, sc := range m.scopes {
			if perScope[sc] < ret.Count {
				within = true
			}
			perScope[sc]++
		}
		if i == 0 || within && !old && !big {
			continue
		}
		ops = append(ops, clientv3.OpDelete(m.key))
		if !m.noCopy {
			ops = append(ops, clientv3.OpDelete(s.sysRoot+copyPrefix+id))
		}
		gone = append(gone, m.key)
		pruned++
		if len(ops) >= 100 {
			if _, err := s.writer().Txn(ctx).Then(ops...).Commit(); err != nil {
				return pruned, s.etcdErr(ctx, "prune releases", err)
			}
			s.metas.forget(gone)
			ops, gone = ops[:0], gone[:0]
		}
	}
	if len(ops) > 0 {
		if _, err := s.writer().Txn(ctx).Then(ops...).Commit(); err != nil {
			return pruned, s.etcdErr(ctx, "prune releases", err)
		}
		s.metas.forget(gone)
	}
	// What the pruner's next wake-up is measured by (kickPruner): the records kept, not those
	// this pass deleted.
	s.metas.known.Store(int64(len(metas) - pruned))
	return pruned, nil
}

// releaseMeta is what pruning needs of a release record.
type releaseMeta struct {
	key    string
	mod    int64
	scopes []string // a record without changes is a scope of its own, ""
	bytes  int64    // of the record and its copy
	// noCopy says that the record was read and keeps no copy (see ReleaseCopy).
	noCopy bool
}

// releaseMetas is one releaseMeta per release record: every record listed at most every
// releaseFullList (and the records not seen by an earlier listing, or changed since, read and
// decoded), and in between the records this replica made since.
//
// Passes come every few hundred writes, and a listing costs in proportion to every record and
// every record deleted since etcd's last compaction (a range visits them too): listing even
// the last minute's records each time took a fifth of the server's CPU under a stream of
// writes. So most passes read one key: records made by other replicas are counted from the
// next full listing on, which only makes a pass keep more, never delete what it should keep,
// and records pruned by other replicas are counted until then (what they make a pass delete
// is already gone or older than what it keeps).
//
// Records that went otherwise (the store restored from a snapshot, or replaced, under a
// running server) would be counted too, and make a pass delete what the retention keeps. So a
// pass lists every record when the newest record it knew is gone or changed (a restore took
// it, or another store holds the key space), or when this replica's writes jumped ahead by
// half of RestoreRevisionBump (a restore that bumped revisions, which may have taken records
// made since the last pass).
func (s *Store) releaseMetas(ctx context.Context) ([]releaseMeta, error) {
	c := &s.metas
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	full := c.m == nil || now.Sub(c.full) >= releaseFullList || c.jumped.Swap(false)
	if !full && c.newest.key != "" {
		resp, err := s.cli.Get(ctx, c.newest.key, clientv3.WithKeysOnly())
		if err != nil {
			return nil, s.etcdErr(ctx, "read releases", err)
		}
		full = len(resp.Kvs) == 0 || resp.Kvs[0].ModRevision != c.newest.mod
	}
	made := c.takeMade()
	if full {
		rev, err := s.listReleaseMetas(ctx, c)
		if err != nil {
			c.unTake(made)
			c.m = nil // whatever made this listing due, the next pass lists again
			return nil, err
		}
		c.full = now
		// Made before the listing's revision and not listed: gone already.
		made = slices.DeleteFunc(made, func(m releaseMeta) bool { return m.mod <= rev })
	}
	for _, m := range made {
		if old, ok := c.m[m.key]; !ok || old.mod < m.mod {
			c.m[m.key] = m
		}
	}
	c.reuse(made)
	// Not kept for the next pass: a slice of every record, live between passes, is more for
	// the collector to mark at each cycle than its allocation once a pass costs.
	out := make([]releaseMeta, 0, len(c.m))
	c.newest = releaseMeta{}
	for _, m := range c.m {
		out = append(out, m)
		if m.mod > c.newest.mod {
			c.newest = m
		}
	}
	c.known.Store(int64(len(out)))
	return out, nil
}

// KnownReleases is how many release records the last pruning pass knew, less those it deleted.
func (s *Store) KnownReleases() int64 { return s.metas.known.Load() }

// listReleaseMetas lists every release record into c.m (its lock held), decoding those it
// does not hold at the same mod revision, and returns the listing's revision.
func (s *Store) listReleaseMetas(ctx context.Context, c *releaseMetaCache) (int64, error) {
	list, kvs, err := s.readRecordsNotHeld(ctx, s.sysRoot+releasePrefix, func(key []byte, mod int64) bool {
		m, ok := c.m[string(key)]
		return ok && m.mod == mod
	})
	if err != nil {
		return 0, err
	}
	read := map[string]releaseMeta{}
	for _, kv := range kvs {
		var rec api.Release
		err := json.Unmarshal(kv.Value, &rec) // an unreadable record counts its own bytes
		m := metaOf(string(kv.Key), rec, len(kv.Value))
		m.mod, m.noCopy = kv.ModRevision, m.noCopy && err == nil
		read[m.key] = m
	}
	next := make(map[string]releaseMeta, len(list.Kvs))
	for _, kv := range list.Kvs {
		m, ok := read[string(kv.Key)]
		if !ok {
			if m, ok = c.m[string(kv.Key)]; !ok { // not in the read at the same revision: cannot be
				m = releaseMeta{key: string(kv.Key), mod: kv.ModRevision, scopes: []string{""}}
			}
		}
		next[m.key] = m
	}
	c.m = next
	return list.Header.Revision, nil
}

// metaOf is the releaseMeta of the record rec at key, size bytes long (its mod revision unset).
func metaOf(key string, rec api.Release, size int) releaseMeta {
	m := releaseMeta{key: key, bytes: int64(size) + rec.CopyBytes, noCopy: rec.Copy == ""}
	if len(rec.Changes) == 0 {
		m.scopes = []string{""}
		return m
	}
	m.scopes = make([]string, len(rec.Changes))
	for i, ch := range rec.Changes {
		m.scopes[i] = ch.Scope + "/" + ch.Appliance
	}
	return m
}

// releaseFullList is how often releaseMetas lists every record.
const releaseFullList = 5 * time.Minute

// maxMadeMetas bounds the records made since the last pass that the cache keeps apart (while
// passes fail); more wait for the next full listing.
const maxMadeMetas = 1 << 16

// releaseMetaCache keeps the releaseMetas of the records seen by earlier pruning passes, and
// of those this replica made since.
type releaseMetaCache struct {
	mu sync.Mutex
	m  map[string]releaseMeta
	// full is when the last full listing started.
	full time.Time
	// known is how many records the last pass knew, less those it deleted.
	known atomic.Int64
	// newest is the newest record the last pass knew (see releaseMetas).
	newest releaseMeta

	// newMu guards fresh, the records made since the last pass, and freshMod, the newest mod
	// revision of a record made: writes add to them without waiting for a pass that holds mu.
	newMu    sync.Mutex
	fresh    []releaseMeta
	freshMod int64
	// jumped says that a write's revision jumped ahead by half of RestoreRevisionBump.
	jumped atomic.Bool
	// spare is an empty fresh that a pass is done with, for the next (under newMu): fresh grew
	// from nothing to the records of a pass at every pass.
	spare []releaseMeta
}

// made notes a record this replica's write created.
func (c *releaseMetaCache) made(m releaseMeta) {
	c.newMu.Lock()
	if c.freshMod > 0 && m.mod-c.freshMod >= RestoreRevisionBump/2 {
		c.jumped.Store(true)
	}
	c.freshMod = max(c.freshMod, m.mod)
	if len(c.fresh) < maxMadeMetas {
		c.fresh = append(c.fresh, m)
	}
	c.newMu.Unlock()
}

// unTake puts back records taken by a pass that failed.
func (c *releaseMetaCache) unTake(ms []releaseMeta) {
	c.newMu.Lock()
	c.fresh = append(ms, c.fresh...)
	if len(c.fresh) > maxMadeMetas {
		c.fresh = c.fresh[:maxMadeMetas]
	}
	c.newMu.Unlock()
}

func (c *releaseMetaCache) takeMade() []releaseMeta {
	c.newMu.Lock()
	defer c.newMu.Unlock()
	out := c.fresh
	c.fresh, c.spare = c.spare, nil
	return out
}

// reuse keeps ms, records taken by a pass and now in c.m, for fresh to fill again.
func (c *releaseMetaCache) reuse(ms []releaseMeta) {
	if cap(ms) == 0 || cap(ms) > maxMadeMetas {
		return
	}
	clear(ms[:cap(ms)])
	c.newMu.Lock()
	if c.spare == nil {
		c.spare = ms[:0]
	}
	c.newMu.Unlock()
}

// forget drops keys (records a pass deleted) from the cache.
func (c *releaseMetaCache) forget(keys []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range keys {
		delete(c.m, k)
	}
}

// KeyVersions reads key's values back from its current one, newest first, while etcd's history
// has them: at most max, and only since the key was last created (an earlier life of a deleted
// key is not reachable by walking back). compacted says the walk met etcd's compaction.
func (s *Store) KeyVersions(ctx context.Context, key string, max, maxBytes int) (versions []api.KV, rev int64, compacted, cut bool, err error) {
	if err := api.ValidateKey(key); err != nil {
		return nil, 0, false, false, err
	}
	held := 0
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	k := s.kvRoot + key
	var at int64 // 0: now
	for len(versions) < max {
		opts := []clientv3.OpOption{}
		if at > 0 {
			opts = append(opts, clientv3.WithRev(at))
		}
		resp, err := s.cli.Get(ctx, k, opts...)
		if errors.Is(err, rpctypes.ErrCompacted) {
			return versions, rev, true, false, nil
		}
		if err != nil {
			return nil, 0, false, false, s.etcdErr(ctx, "read the history of "+key, err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		if len(resp.Kvs) == 0 {
			break
		}
		kv := resp.Kvs[0]
		versions = append(versions, s.toKV(kv, false))
		if kv.Version == 1 {
			break
		}
		if held += jsonLen(kv.Value); held >= maxBytes && len(versions) < max {
			return versions, rev, false, true, nil
		}
		at = kv.ModRevision - 1
	}
	return versions, rev, false, false, nil
}

// jsonLen is how many bytes b takes as a JSON string's content, as encoding/json writes it: a
// control character (but \n, \r, \t, \b, \f: two), <, >, &, U+2028, U+2029 and each byte of invalid UTF-8 six (\u003c,
// \ufffd), a quote or backslash two, the rest their own. The bound on a key's history counts
// these: 4 MiB of control characters are 24 MiB in the answer.
func jsonLen(b []byte) int {
	n := 0
	for i := 0; i < len(b); {
		c := b[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '\n' || c == '\r' || c == '\t' || c == '\b' || c == '\f':
				n += 2
			case c < 0x20 || c == '<' || c == '>' || c == '&':
				n += 6
			case c == '"' || c == '\\':
				n += 2
			default:
				n++
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(b[i:])
		switch {
		case r == utf8.RuneError && size == 1, r == '\u2028', r == '\u2029':
			n += 6
		default:
			n += size
		}
		i += size
	}
	return n
}
