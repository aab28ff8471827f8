package store

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// Revision returns the store's current revision.
func (s *Store) Revision(ctx context.Context) (int64, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.sysRoot+storeIDKey, clientv3.WithCountOnly())
	if err != nil {
		return 0, s.etcdErr(ctx, "read revision", err)
	}
	return resp.Header.Revision, nil
}

// Get reads one user key; api.ErrNotFound (with the revision read at) when absent.
func (s *Store) Get(ctx context.Context, key string) (api.KV, int64, error) {
	if err := api.ValidateKey(key); err != nil {
		return api.KV{}, 0, err
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.kvRoot+key)
	if err != nil {
		return api.KV{}, 0, s.etcdErr(ctx, "get "+key, err)
	}
	if len(resp.Kvs) == 0 {
		return api.KV{}, resp.Header.Revision, api.Errorf(api.CodeNotFound, "key %q not found", key)
	}
	return s.toKV(resp.Kvs[0], false), resp.Header.Revision, nil
}

func (s *Store) toKV(kv *mvccpb.KeyValue, keysOnly bool) api.KV {
	out := api.KV{
		Key:            strings.TrimPrefix(string(kv.Key), s.kvRoot),
		ModRevision:    kv.ModRevision,
		CreateRevision: kv.CreateRevision,
		Version:        kv.Version,
	}
	if !keysOnly {
		out.Value = string(kv.Value)
	}
	return out
}

// subtreeGets returns the etcd ops that read everything under prefix by whole segments, absolute
// prefix abs (without a trailing '/'): the key itself and its subtree.
func subtreeGets(abs string, opts ...clientv3.OpOption) []clientv3.Op {
	return []clientv3.Op{
		clientv3.OpGet(abs, opts...),
		clientv3.OpGet(abs+"/", append([]clientv3.OpOption{clientv3.WithPrefix()}, opts...)...),
	}
}

// List reads the keys under prefix by whole segments (prefix itself included; "" = every key),
// sorted, at one revision. With keysOnly, values are left empty.
func (s *Store) List(ctx context.Context, prefix string, keysOnly bool) ([]api.KV, int64, error) {
	p, err := api.ValidatePrefix(prefix)
	if err != nil {
		return nil, 0, err
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	var opts []clientv3.OpOption
	if keysOnly {
		opts = append(opts, clientv3.WithKeysOnly())
	}
	var ops []clientv3.Op
	if p == "" {
		ops = []clientv3.Op{clientv3.OpGet(s.kvRoot, append(opts, clientv3.WithPrefix())...)}
	} else {
		ops = subtreeGets(s.kvRoot+p, opts...)
	}
	resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return nil, 0, s.etcdErr(ctx, "list "+p, err)
	}
	var out []api.KV
	// Ranges come sorted and "p" sorts before "p/...", so concatenating keeps the order.
	for _, r := range resp.Responses {
		for _, kv := range r.GetResponseRange().Kvs {
			out = append(out, s.toKV(kv, keysOnly))
		}
	}
	return out, resp.Header.Revision, nil
}

// Pages of ListPaged: a page asks etcd for listPageFirst keys, then for as many as would
// make about listPageBytes of keys and values at the size of the page before (etcd bounds a
// range by its number of keys only), from 1 to listPageMax.
const (
	listPageFirst = 16
	listPageMax   = 4096
	listPageBytes = 1 << 20
)

// nextPage is where the page after kvs, read from key from asking for limit keys, starts, and
// how many keys to ask for then: as many as listPageBytes holds at kvs' bytes per key, at most
// listPageMax. more is etcd's answer's; there is a next page when it says so of a page with a
// key read.
func nextPage(kvs []*mvccpb.KeyValue, from string, limit int64, more bool) (string, int64, bool) {
	if !more || len(kvs) == 0 {
		return from, limit, false
	}
	bytes := 0
	for _, kv := range kvs {
		bytes += len(kv.Key) + len(kv.Value)
	}
	// The next page starts just after the last key read.
	return string(kvs[len(kvs)-1].Key) + "\x00", min(listPageMax, max(1, limit*listPageBytes/int64(max(bytes, 1)))), true
}

// ListPaged reads what List reads, in key order, a page at a time, every page at the
// revision of the first: page gets each page with that revision and whether more follow, and
// may end the read with an error, which ListPaged returns. A later page fails (an error
// wrapping ErrCompacted) when etcd compacted the revision meanwhile. It holds one page at a
// time: List holds etcd's answer and its copy whole, ten times the listing's size with its
// JSON when a server answers it.
func (s *Store) ListPaged(ctx context.Context, prefix string, keysOnly bool, page func(kvs []api.KV, rev int64, more bool) error) error {
	p, err := api.ValidatePrefix(prefix)
	if err != nil {
		return err
	}
	var opts []clientv3.OpOption
	if keysOnly {
		opts = append(opts, clientv3.WithKeysOnly())
	}
	// The range [from, end): the prefix's subtree; a prefix's own key is read with the
	// first page.
	from := s.kvRoot
	if p != "" {
		from = s.kvRoot + p + "/"
	}
	end := clientv3.GetPrefixRangeEnd(from)
	limit := int64(listPageFirst)
	var rev int64
	for first := true; ; first = false {
		var kvs []*mvccpb.KeyValue
		var more bool
		pageOpts := append([]clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(limit)}, opts...)
		cctx, cancel := s.opCtx(ctx)
		if first {
			ops := []clientv3.Op{clientv3.OpGet(from, pageOpts...)}
			if p != "" {
				ops = []clientv3.Op{clientv3.OpGet(s.kvRoot+p, opts...), ops[0]}
			}
			resp, err := s.cli.Txn(cctx).Then(ops...).Commit()
			cancel()
			if err != nil {
				return s.etcdErr(ctx, "list "+p, err)
			}
			rev = resp.Header.Revision
			for _, r := range resp.Responses {
				rr := r.GetResponseRange()
				kvs = append(kvs, rr.Kvs...)
				more = rr.More
			}
		} else {
			resp, err := s.cli.Get(cctx, from, append(pageOpts, clientv3.WithRev(rev))...)
			cancel()
			if errors.Is(err, rpctypes.ErrCompacted) {
				return fmt.Errorf("list %s: %w (revision %d, while reading it)", p, ErrCompacted, rev)
			}
			if err != nil {
				return s.etcdErr(ctx, "list "+p, err)
			}
			kvs, more = resp.Kvs, resp.More
		}
		out := make([]api.KV, 0, len(kvs))
		for _, kv := range kvs {
			out = append(out, s.toKV(kv, keysOnly))
		}
		from, limit, more = nextPage(kvs, from, limit, more)
		if err := page(out, rev, more); err != nil {
			return err
		}
		if !more {
			return nil
		}
	}
}

// Put writes key. cas < 0 writes unconditionally; cas >= 0 writes only if the key's mod_revision
// is cas (0: the key must not exist), else an api.ErrConflict error naming the key.
func (s *Store) Put(ctx context.Context, key, value string, cas int64) (int64, error) {
	res, err := s.PutResult(ctx, key, value, cas)
	return res.Revision, err
}

// PutResult is Put, and says whether the key held value already. A put that records a release
// (see WithRelease) then writes nothing (no revision, no release, nothing for the key's
// readers to fetch) and answers the key's mod_revision; its cas, the key's schema and a
// rollout running refuse it as they would the write.
func (s *Store) PutResult(ctx context.Context, key, value string, cas int64) (Applied, error) {
	if err := api.ValidateKey(key); err != nil {
		return Applied{}, err
	}
	w, err := s.put(ctx, s.kvRoot, key, value, cas)
	return Applied{Revision: w.rev, Unchanged: w.unchanged}, err
}

func (s *Store) put(ctx context.Context, root, key, value string, cas int64) (written, error) {
	k := root + key
	var cmps []clientv3.Cmp
	var els []clientv3.Op
	if cas >= 0 {
		cmps = []clientv3.Cmp{compare(clientv3.ModRevision(k), "=", cas)}
		els = []clientv3.Op{clientv3.OpGet(k, clientv3.WithKeysOnly())}
	}
	e := s.kvEdits(root, edits{puts: []keyValue{{key, value}}})
	var eff *effect
	if root == s.kvRoot {
		eff = &effect{puts: []keyValue{{k, value}}}
	}
	w, err := s.commitChecked(ctx, "put "+key, e, eff, plainTxn(cmps, []clientv3.Op{clientv3.OpPut(k, value)}, els))
	if err != nil {
		return written{}, err
	}
	if !w.succeeded {
		if cas < 0 {
			return w, fmt.Errorf("put %s: etcd did not apply an unconditional put", key)
		}
		return w, conflict(key, cas, modRevision(w.resp.Responses[0]))
	}
	return w, nil
}

func modRevision(r *pb.ResponseOp) int64 {
	kvs := r.GetResponseRange().GetKvs()
	if len(kvs) == 0 {
		return 0
	}
	return kvs[0].ModRevision
}

// conflict is the error of a failed compare-and-swap or guard on key.
func conflict(key string, want, got int64) error {
	switch {
	case want == 0:
		return api.Errorf(api.CodeConflict, "conflict on key %q: expected it not to exist, but it exists with mod_revision %d", key, got)
	case got == 0:
		return api.Errorf(api.CodeConflict, "conflict on key %q: expected mod_revision %d, but the key does not exist", key, want)
	default:
		return api.Errorf(api.CodeConflict, "conflict on key %q: expected mod_revision %d, found %d", key, want, got)
	}
}

// Delete deletes key, or with recurse every key under it by whole segments (key included).
// Nothing deleted is api.ErrNotFound. It returns the revision and how many keys went.
func (s *Store) Delete(ctx context.Context, key string, recurse bool) (rev, deleted int64, err error) {
	if key == "" {
		return 0, 0, api.Errorf(api.CodeInvalidKey, "invalid key: refusing to delete the root")
	}
	if err := api.ValidateKey(key); err != nil {
		return 0, 0, err
	}
	k := s.kvRoot + key
	exists := compare(clientv3.Version(k), ">", 0)
	parts := plainTxn([]clientv3.Cmp{exists}, []clientv3.Op{clientv3.OpDelete(k)}, nil)
	if recurse {
		// Guarded by "something to delete", so that a delete of nothing makes no revision: the
		// key itself (and its subtree), or else, in a nested transaction, its subtree alone.
		sub := clientv3.OpDelete(k+"/", clientv3.WithPrefix())
		subExists := compare(clientv3.Version(k+"/"), ">", 0).WithPrefix()
		parts = func(m marker) ([]clientv3.Cmp, []clientv3.Op, []clientv3.Op) {
			nested := clientv3.OpTxn(append([]clientv3.Cmp{subExists}, m.cmps...), append([]clientv3.Op{sub}, m.ops...), nil)
			return append([]clientv3.Cmp{exists}, m.cmps...), append([]clientv3.Op{clientv3.OpDelete(k), sub}, m.ops...), []clientv3.Op{nested}
		}
	}
	e := edits{dels: []api.Op{{Op: api.OpDelete, Key: key, Recurse: recurse}}}
	eff := &effect{dels: []string{k}}
	if recurse {
		eff.prefixes = []string{k + "/"}
	}
	w, err := s.commitChecked(ctx, "delete "+key, e, eff, parts)
	if err != nil {
		return 0, 0, err
	}
	switch {
	case w.resp == nil: // applied, as fence learnt: count what was there just before
		deleted = 1
		if recurse {
			deleted = s.countBefore(ctx, k, w.rev)
		}
	case w.succeeded:
		for _, r := range w.resp.Responses {
			deleted += r.GetResponseDeleteRange().GetDeleted()
		}
	case recurse:
		if nested := w.resp.Responses[0].GetResponseTxn(); nested.GetSucceeded() {
			for _, r := range nested.Responses {
				deleted += r.GetResponseDeleteRange().GetDeleted()
			}
		}
	}
	if deleted == 0 {
		if recurse {
			return w.rev, 0, api.Errorf(api.CodeNotFound, "no key %q or under %q found", key, key+"/")
		}
		return w.rev, 0, api.Errorf(api.CodeNotFound, "key %q not found", key)
	}
	return w.rev, deleted, nil
}

// countBefore counts key abs and its subtree as they were just before revision rev; when that
// cannot be read, 1 (the delete that asks was guarded on there being at least one).
func (s *Store) countBefore(ctx context.Context, abs string, rev int64) int64 {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	var n int64
	for _, op := range subtreeGets(abs, clientv3.WithCountOnly(), clientv3.WithRev(rev-1)) {
		resp, err := s.cli.Do(ctx, op)
		if err != nil {
			return 1
		}
		n += resp.Get().Count
	}
	return max(n, 1)
}

// Txn applies t's ops all or nothing, in one etcd transaction. A failed guard is an
// api.ErrConflict error naming the key; more ops than MaxTxnOps is an api.CodeTooLarge error.
//
// Ops take effect together, not one after the other, so a transaction may not touch one key
// twice: two puts of one key, or a put of a key that a delete of the same transaction covers,
// are refused with api.CodeInvalidRequest. A delete of an absent key is no error in a Txn.
func (s *Store) Txn(ctx context.Context, t api.Txn) (int64, error) {
	res, err := s.TxnResult(ctx, t)
	return res.Revision, err
}

// TxnResult is Txn, and says whether t changed no key: with a release (see WithRelease), a
// transaction whose puts all hold their values and whose deletes find nothing writes nothing,
// and answers the newest mod_revision of the keys it puts (the store's revision when it puts
// none); its guards refuse it as they would the write. Of a transaction that changes some
// keys, the puts of keys that hold their value already are left out (the keys keep their
// version), guarded on those keys as read.
func (s *Store) TxnResult(ctx context.Context, t api.Txn) (Applied, error) {
	if len(t.Ops) == 0 {
		return Applied{}, api.Errorf(api.CodeInvalidRequest, "invalid transaction: no ops")
	}
	if len(t.Ops) > s.cfg.MaxTxnOps {
		return Applied{}, tooManyOps("the transaction", len(t.Ops), s.cfg.MaxTxnOps)
	}
	if len(t.Guards) > s.cfg.MaxTxnOps {
		return Applied{}, api.Errorf(api.CodeTooLarge, "the transaction has %d guards, more than the limit of %d", len(t.Guards), s.cfg.MaxTxnOps)
	}
	if err := CheckTxn(t); err != nil {
		return Applied{}, err
	}
	var cmps []clientv3.Cmp
	var reads []clientv3.Op
	for _, g := range t.Guards {
		k := s.kvRoot + g.Key
		cmps = append(cmps, compare(clientv3.ModRevision(k), "=", g.ModRevision))
		reads = append(reads, clientv3.OpGet(k, clientv3.WithKeysOnly()))
	}
	n := len(t.Ops)
	for _, op := range t.Ops {
		if op.Recurse {
			n++
		}
	}
	ops := make([]clientv3.Op, 0, n)
	e := edits{puts: make([]keyValue, 0, len(t.Ops))}
	eff := &effect{puts: make([]keyValue, 0, len(t.Ops))}
	for _, op := range t.Ops {
		k := s.kvRoot + op.Key
		switch op.Op {
		case api.OpPut:
			ops = append(ops, clientv3.OpPut(k, op.Value))
			e.puts = append(e.puts, keyValue{op.Key, op.Value})
			eff.puts = append(eff.puts, keyValue{k, op.Value})
		case api.OpDelete:
			ops = append(ops, clientv3.OpDelete(k))
			e.dels = append(e.dels, op)
			eff.dels = append(eff.dels, k)
			if op.Recurse {
				ops = append(ops, clientv3.OpDelete(k+"/", clientv3.WithPrefix()))
				eff.prefixes = append(eff.prefixes, k+"/")
			}
		}
	}
	w, err := s.commitChecked(ctx, "transaction", e, eff, plainTxn(cmps, ops, reads))
	if err != nil {
		return Applied{}, err
	}
	res := Applied{Revision: w.rev, Unchanged: w.unchanged}
	if !w.succeeded {
		for i, g := range t.Guards {
			if got := modRevision(w.resp.Responses[i]); got != g.ModRevision {
				return res, conflict(g.Key, g.ModRevision, got)
			}
		}
		return res, api.Errorf(api.CodeConflict, "conflict: a guard of the transaction failed")
	}
	return res, nil
}

// CheckTxn re-checks what etcd would refuse with a vague message: unknown op kinds, bad keys,
// a key put twice, or a put under a delete of the same transaction. A transaction sent with
// canary is checked with it too, so that its rollout stages only a write the store takes.
func CheckTxn(t api.Txn) error {
	puts := make(map[string]int, len(t.Ops))
	for i, op := range t.Ops {
		switch op.Op {
		case api.OpPut, api.OpDelete:
		default:
			return api.Errorf(api.CodeInvalidRequest, "invalid transaction: op %d has kind %q; want %q or %q", i+1, op.Op, api.OpPut, api.OpDelete)
		}
		if err := api.ValidateKey(op.Key); err != nil {
			return api.Errorf(api.CodeInvalidKey, "invalid transaction: op %d: %s", i+1, err.Error())
		}
		if op.Op == api.OpPut {
			if j, dup := puts[op.Key]; dup {
				return api.Errorf(api.CodeInvalidRequest, "invalid transaction: ops %d and %d both put key %q", j+1, i+1, op.Key)
			}
			puts[op.Key] = i
		}
	}
	for i, op := range t.Ops {
		if op.Op != api.OpDelete {
			continue
		}
		for j, p := range t.Ops {
			if p.Op != api.OpPut {
				continue
			}
			if p.Key == op.Key || op.Recurse && api.Under(p.Key, op.Key) {
				return api.Errorf(api.CodeInvalidRequest, "invalid transaction: op %d puts key %q, which op %d deletes; a transaction may touch a key only once", j+1, p.Key, i+1)
			}
		}
	}
	for i, g := range t.Guards {
		if err := api.ValidateKey(g.Key); err != nil {
			return api.Errorf(api.CodeInvalidKey, "invalid transaction: guard %d: %s", i+1, err.Error())
		}
		if g.ModRevision < 0 {
			return api.Errorf(api.CodeInvalidRequest, "invalid transaction: guard %d on key %q has a negative mod_revision", i+1, g.Key)
		}
	}
	return nil
}

// Holds reports whether the store holds a user key under prefix (by whole segments, as List)
// or a system key under one of sysPrefixes (as SysList reads them), in one read. It reads
// at most one key name of each, whatever their number.
func (s *Store) Holds(ctx context.Context, prefix string, sysPrefixes ...string) (bool, error) {
	p, err := api.ValidatePrefix(prefix)
	if err != nil {
		return false, err
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	one := []clientv3.OpOption{clientv3.WithKeysOnly(), clientv3.WithLimit(1)}
	ops := subtreeGets(s.kvRoot+p, one...)
	for _, sp := range sysPrefixes {
		ops = append(ops, s.sysGets(sp, one...)...)
	}
	resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return false, s.etcdErr(ctx, "look under "+prefix, err)
	}
	for _, r := range resp.Responses {
		if len(r.GetResponseRange().Kvs) > 0 {
			return true, nil
		}
	}
	return false, nil
}

// Appliances lists the names of appliances that have at least one key, sorted.
func (s *Store) Appliances(ctx context.Context) ([]string, int64, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	root := s.kvRoot + api.AppliancesPrefix + "/"
	end := clientv3.GetPrefixRangeEnd(root)
	names := []string{}
	var rev int64
	// A page of keys at a time, all at the first page's revision, and past the rest of each
	// appliance's keys once its name is known: the whole subtree read at once, keys only, held
	// every key of every appliance (a million keys, ~100 MB) for a list of names, on a request
	// an agent's token may make.
	for from := root; ; {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithKeysOnly(), clientv3.WithLimit(appliancesPage)}
		if rev > 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := s.cli.Get(ctx, from, opts...)
		if err != nil {
			return nil, 0, s.etcdErr(ctx, "list appliances", err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		last := ""
		for _, kv := range resp.Kvs {
			rest := strings.TrimPrefix(string(kv.Key), root)
			name, _, under := strings.Cut(rest, "/")
			if !under || name == "" {
				continue // appliances/<name> itself is not a key of its own subtree
			}
			if len(names) == 0 || names[len(names)-1] != name {
				names = append(names, name)
			}
			last = name
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		// Past the last key read, and past the rest of the last name's subtree: a name that
		// sorts between (web-x, web.x before web/) came before it.
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
		if last != "" {
			from = max(from, clientv3.GetPrefixRangeEnd(root+last+"/"))
		}
	}
	// Keys come sorted, but "web-x/..." sorts between "web" and "web/..."; sort to be sure.
	sort.Strings(names)
	names = compactStrings(names)
	return names, rev, nil
}

// appliancesPage is how many keys Appliances asks etcd for at a time.
const appliancesPage = 256

func compactStrings(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// View reads appliance name's view at one revision. An appliance with no key of its own is
// api.ErrNotFound, with a message that says so. The returned View carries the revision read
// at (and the name) even with that error.
func (s *Store) View(ctx context.Context, name string) (api.View, error) {
	v, err := s.readView(ctx, name)
	return v, s.etcdErr(ctx, "view "+name, err)
}

// readView reads name's view in one transaction of two ranges (shared/ and the appliance's
// own), with opts added to both. Its Revision is the store's revision when read. Etcd's errors
// come back as they are, for the caller to map.
func (s *Store) readView(ctx context.Context, name string, opts ...clientv3.OpOption) (api.View, error) {
	v := api.View{Appliance: name}
	if err := api.ValidateSegment("appliance name", name); err != nil {
		return v, err
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	shared := s.kvRoot + api.SharedPrefix + "/"
	own := s.kvRoot + api.ApplianceRoot(name) + "/"
	opts = append([]clientv3.OpOption{clientv3.WithPrefix()}, opts...)
	resp, err := s.cli.Txn(ctx).Then(clientv3.OpGet(shared, opts...), clientv3.OpGet(own, opts...)).Commit()
	if err != nil {
		return v, err
	}
	v.Revision = resp.Header.Revision
	sharedKVs := resp.Responses[0].GetResponseRange().Kvs
	ownKVs := resp.Responses[1].GetResponseRange().Kvs
	if len(ownKVs) == 0 {
		return v, api.Errorf(api.CodeNotFound, "appliance %q has no keys (an appliance exists while it has at least one key of its own)", name)
	}
	v.Keys = make(map[string]string, len(sharedKVs)+len(ownKVs))
	for _, kv := range sharedKVs {
		v.Keys[strings.TrimPrefix(string(kv.Key), shared)] = string(kv.Value)
	}
	for _, kv := range ownKVs {
		v.Keys[strings.TrimPrefix(string(kv.Key), own)] = string(kv.Value)
	}
	return v, nil
}

// Apply replaces every key under appliances/<name>/ with keys (relative to that root) in one
// transaction. cas >= 0 guards it: no key of the appliance may have changed after cas.
//
// It reads the appliance's keys first (an apply that would change nothing writes nothing: see
// ApplyTree), then in one transaction guarded by "the appliance is still exactly as read" puts
// the keys whose value changes and deletes the runs of keys that go (a put and a delete of one
// transaction must not overlap in etcd), so the appliance ends exactly as given. A key created,
// changed or deleted concurrently makes it retry after a short random pause; a failed cas is an
// api.ErrConflict error.
func (s *Store) Apply(ctx context.Context, name string, keys map[string]string, cas int64) (int64, error) {
	res, err := s.ApplyTree(ctx, name, keys, cas)
	return res.Revision, err
}

// Applied is what ApplyTree did.
type Applied struct {
	// Revision is the apply's, or when Unchanged the newest mod_revision among the keys of
	// the appliance's view (see keep).
	Revision int64
	// Unchanged: the appliance held exactly keys already, and nothing was written.
	Unchanged bool
	// Checked, when Unchanged, is the store's revision when the appliance was found unchanged.
	// A deletion in the view (a key of its own or of shared/ deleted after the newest
	// mod_revision) moves the view's revision on without leaving a key to say so: the server's
	// hub, which saw it, knows it once it has seen Checked.
	Checked int64
	// Deleted are the keys the apply deleted (those of the appliance it did not name), for the
	// audit line; relative to the store's root, sorted.
	Deleted []string
}

// ApplyTree is Apply, and says whether the appliance already held exactly keys. Such an apply
// writes nothing: no revision, no release, no change for the appliance's agents to fetch and
// render. It is refused as the write would be: keys that break the appliance's schema are 422,
// a rollout running is rollout_in_progress, a cas that fails is 409.
func (s *Store) ApplyTree(ctx context.Context, name string, keys map[string]string, cas int64) (Applied, error) {
	if err := api.ValidateSegment("appliance name", name); err != nil {
		return Applied{}, err
	}
	if len(keys) > s.cfg.MaxTxnOps {
		return Applied{}, tooManyOps(fmt.Sprintf("the apply of appliance %q", name), len(keys), s.cfg.MaxTxnOps)
	}
	root := api.ApplianceRoot(name)
	for k := range keys {
		if err := api.ValidateKey(root + "/" + k); err != nil {
			return Applied{}, err
		}
	}
	const attempts = 20
	for i := range attempts {
		res, done, err := s.applyOnce(ctx, name, keys, cas)
		if done || err != nil {
			return res, err
		}
		pause := time.Duration(rand.Int64N(int64(min(time.Millisecond<<i, 50*time.Millisecond)) + 1))
		select {
		case <-time.After(pause):
		case <-ctx.Done():
			return Applied{}, s.etcdErr(ctx, "apply "+name, ctx.Err())
		}
	}
	return Applied{}, api.Errorf(api.CodeConflict, "apply of appliance %q: the appliance kept changing during %d attempts", name, attempts)
}

// applyOnce makes one attempt of Apply; done is false when a concurrent write got in between.
func (s *Store) applyOnce(ctx context.Context, name string, keys map[string]string, cas int64) (res Applied, done bool, err error) {
	wctx := ctx // the write is bounded by commit, each page of the read by its own call
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	abs := s.kvRoot + api.ApplianceRoot(name) + "/"
	live, read, err := s.readLive(wctx, name, abs, keys, cas)
	switch {
	case err != nil && api.AsError(err).Code == api.CodeConflict:
		return Applied{Revision: read}, true, err
	case err != nil:
		return Applied{}, false, s.etcdErr(ctx, "apply "+name, err)
	}
	if cas >= 0 {
		if err := s.noneDeletedSince(ctx, name, abs, cas, read, live); err != nil {
			return Applied{Revision: read}, true, err
		}
	}
	e := edits{applyName: name, apply: keys}
	if holdsExactly(live, keys) {
		if s.applyHook != nil {
			s.applyHook("read")
		}
		at, checked, kept, changed, err := s.keep(wctx, e, abs, read, live)
		if err != nil || kept {
			return Applied{Revision: at, Unchanged: kept, Checked: checked}, true, err
		}
		if s.applyHook != nil {
			s.applyHook("checked")
		}
		if changed {
			// Not as read any more: read again. Writing the keys as they are would write a
			// revision for nothing where the change was undone meanwhile (a key created and
			// deleted again).
			return Applied{}, false, nil
		}
		// A guard of the write's failed (a rollout runs), or this apply promotes a rollout: the
		// write refuses or applies as a write does.
	}

	// Every key in sorted order, old and new; a run of old keys with no new key among them
	// is deleted as one range [first, last+"\x00").
	type entry struct {
		key  string
		keep bool
	}
	all := make([]entry, 0, len(live)+len(keys))
	for k := range keys {
		all = append(all, entry{abs + k, true})
	}
	for _, kv := range live {
		if _, keep := keys[strings.TrimPrefix(kv.key, abs)]; !keep {
			all = append(all, entry{kv.key, false})
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].key < all[j].key })
	// A key that holds its value already is not put again, when others change: a new version of
	// every key for one changed grew etcd's history by the whole appliance, and gave each key's
	// history a version that no release names. Those keys are guarded instead (below).
	had := make(map[string]*liveKey, len(live))
	for i := range live {
		had[live[i].key] = &live[i]
	}
	var ops, sameOps []clientv3.Op
	for i := 0; i < len(all); i++ {
		if all[i].keep {
			v := keys[strings.TrimPrefix(all[i].key, abs)]
			if kv := had[all[i].key]; kv != nil && kv.same {
				sameOps = append(sameOps, clientv3.OpPut(all[i].key, v))
				continue
			}
			ops = append(ops, clientv3.OpPut(all[i].key, v))
			continue
		}
		j := i
		for j+1 < len(all) && !all[j+1].keep {
			j++
		}
		if i == j {
			ops = append(ops, clientv3.OpDelete(all[i].key))
		} else {
			ops = append(ops, clientv3.OpDelete(all[i].key, clientv3.WithRange(all[j].key+"\x00")))
		}
		i = j
	}
	same := len(sameOps)
	if len(ops) == 0 {
		// Nothing changes: keep found a guard of the write's failing (a rollout, a schema), or
		// this apply promotes a rollout. The write puts every key, and applies or refuses as a
		// write does; the guards below make it retry instead when the appliance changed since
		// the read.
		ops = sameOps
	}
	if len(ops) == 0 {
		return Applied{Revision: read}, true, nil // nothing there and nothing to write
	}
	// The write is what changes from the read, so it applies only while the appliance is still
	// exactly as read: nothing put under it since (no key created or changed), and every key
	// read still there (a deletion leaves no mod_revision to compare). Else it retries and reads
	// again. Keys created, changed or deleted in between would otherwise be left or undone
	// unseen; and an apply that raced a write of the same values (the same apply twice, or a
	// put of a key's own value) wrote a revision, a new version of every key and a release that
	// names no change, where it holds its keys and writes nothing.
	cmps := []clientv3.Cmp{compare(clientv3.ModRevision(abs), "<", read+1).WithPrefix()}
	if cas >= 0 {
		// Guarded: nothing changed after cas either.
		cmps = append(cmps, compare(clientv3.ModRevision(abs), "<", cas+1).WithPrefix())
	}
	for _, kv := range live {
		cmps = append(cmps, compare(clientv3.CreateRevision(kv.key), "=", kv.create))
	}
	// The release names, and the prior cache keeps, the keys put: not those left as they are.
	eff := &effect{puts: make([]keyValue, 0, len(keys)-same), tree: keys}
	for _, op := range ops {
		if op.IsPut() {
			eff.puts = append(eff.puts, keyValue{string(op.KeyBytes()), string(op.ValueBytes())})
		}
	}
	for _, kv := range live {
		if _, keep := keys[strings.TrimPrefix(kv.key, abs)]; !keep {
			eff.dels = append(eff.dels, kv.key)
		}
	}
	w, err := s.commitChecked(wctx, "apply "+name, e, eff, plainTxn(cmps, ops, nil))
	if err != nil {
		return Applied{}, false, err
	}
	res = Applied{Revision: w.rev}
	for _, k := range eff.dels {
		res.Deleted = append(res.Deleted, strings.TrimPrefix(k, s.kvRoot))
	}
	slices.Sort(res.Deleted)
	return res, w.succeeded, nil
}

// liveKey is what an apply keeps of a key of the appliance's live tree: its name and revisions
// for the transaction's guards and the audit's list of keys deleted, and whether it holds the
// value the apply gives it. Not the value: an apply held the whole tree it read, in no budget,
// so that many small applies at once to an appliance of large values held it as many times.
type liveKey struct {
	key         string // absolute
	mod, create int64
	same        bool // the apply gives the key the value it holds
}

// readLive reads the keys under abs (appliance name's root, with its '/') for an apply of keys
// guarded by cas (-1: none): their names and revisions in one read (a key changed after cas
// ends it with the apply's conflict, 409, at once), then asks etcd, for each key that the apply
// names, whether it holds the apply's value (liveKey.same), in pages of about livePageBytes of
// the apply's keys and values: no live value is read. The apply read the values of the keys it
// names, in pages sized by its own values, so that one
// giving many keys values far smaller than they hold (empty ones) read them all in one answer
// (an appliance's nine values of 950 KB, 8.5 MB, for an apply of a few hundred bytes), and as
// many times as such applies were sent; it held its whole tree before that. A key changed
// since the read may be told either way: the apply's write, guarded on the read, reads again.
// etcd's errors come back as they are. With keys nil, it reads the names only.
func (s *Store) readLive(ctx context.Context, name, abs string, keys map[string]string, cas int64) (live []liveKey, read int64, err error) {
	cctx, cancel := s.opCtx(ctx)
	resp, err := s.cli.Get(cctx, abs, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	cancel()
	if err != nil {
		return nil, 0, err
	}
	read = resp.Header.Revision
	if s.liveReadHook != nil {
		n := 0
		for _, kv := range resp.Kvs {
			n += len(kv.Key)
		}
		s.liveReadHook(n)
	}
	live = make([]liveKey, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		k := string(kv.Key)
		if cas >= 0 && kv.ModRevision > cas {
			return nil, read, ApplyConflict(name, cas, strings.TrimPrefix(k, abs), kv.ModRevision)
		}
		live = append(live, liveKey{key: k, mod: kv.ModRevision, create: kv.CreateRevision})
	}
	resp = nil
	// A page is a read-only transaction of groups (nested transactions without compares, which
	// run their ops), each of one nested transaction per key, whose compare says whether the key
	// holds the apply's value: its answer is a flag per key. A key changed since the read may be
	// told either way: the apply's write, and keep's look, are guarded on nothing under abs put
	// since read, and read again when it was (a compare of each key's mod_revision as well read
	// each key twice in etcd, for nothing). Groups make a
	// page of many keys one call within etcd's limit of ops per transaction, which a nested
	// transaction takes its ops from: one transaction per key, 64 a page, made an unchanged apply
	// of 10,000 keys 157 calls.
	fan := livePageFan
	if s.etcdMaxTxnOps > 0 {
		fan = max(fan, (s.etcdMaxTxnOps-1)/2)
	}
	var (
		at    []int // the live keys of the page, in order
		bytes int
	)
	flush := func() error {
		if len(at) == 0 {
			return nil
		}
		var groups []clientv3.Op
		for g := 0; g < len(at); g += fan {
			var ops []clientv3.Op
			for _, i := range at[g:min(g+fan, len(at))] {
				ops = append(ops, clientv3.OpTxn([]clientv3.Cmp{
					compare(clientv3.Value(live[i].key), "=", keys[strings.TrimPrefix(live[i].key, abs)]),
				}, nil, nil))
			}
			groups = append(groups, clientv3.OpTxn(nil, ops, nil))
		}
		cctx, cancel := s.opCtx(ctx)
		defer cancel()
		resp, err := s.cli.Txn(cctx).Then(groups...).Commit()
		if err != nil {
			return err
		}
		k := 0
		for _, g := range resp.Responses {
			for _, r := range g.GetResponseTxn().GetResponses() {
				live[at[k]].same = r.GetResponseTxn().GetSucceeded()
				k++
			}
		}
		if k != len(at) {
			return fmt.Errorf("compare the apply's values: %d answers for %d keys", k, len(at))
		}
		if s.liveReadHook != nil {
			s.liveReadHook(0) // flags only: no key, no value
		}
		at, bytes = at[:0], 0
		return nil
	}
	for i := range live {
		v, named := keys[strings.TrimPrefix(live[i].key, abs)]
		if !named {
			continue
		}
		n := len(live[i].key) + len(v) + 16 // the compare's key and value, with its framing
		if len(at) > 0 && (bytes+n > livePageBytes || len(at) == fan*fan) {
			if err := flush(); err != nil {
				return nil, read, err
			}
		}
		at = append(at, i)
		bytes += n
	}
	if err := flush(); err != nil {
		return nil, read, err
	}
	return live, read, nil
}

// Pages of readLive: about livePageBytes of the apply's own keys and values, in groups of at
// most livePageFan keys and as many groups (each level of nested transactions takes its ops
// from etcd's limit per transaction: 32 + 32 + 1 compare of an external etcd's 128 by
// default; the embedded etcd's limit makes larger groups).
const (
	livePageBytes = listPageBytes
	livePageFan   = 32
)

// holdsExactly reports whether live, the keys of an appliance, are keys with their values, no
// more and no fewer.
func holdsExactly(live []liveKey, keys map[string]string) bool {
	if len(live) != len(keys) || len(live) == 0 {
		return false
	}
	for _, kv := range live {
		if !kv.same {
			return false
		}
	}
	return true
}

// keep settles an apply of e that found the appliance (abs) at revision read holding kvs as e
// would leave them: it checks e as its write would be checked (the schema, which may refuse the
// keys), and reports whether, in one read-only transaction, nothing under abs was put since read
// (nor deleted: as many keys are still there) and the write's guards (no rollout running, the
// schema as checked) hold: kept. Else changed says that the appliance is not as read any more
// (the caller reads again); neither, that a guard of the write's failed, or that the apply
// promotes a rollout (the caller writes, and the write refuses or applies as it would have).
//
// at is the newest mod_revision among the keys of the appliance's view (its own and shared/'s):
// the revision its agents report once they have the view (`appliance wait --revision`). The
// store's revision would do for none of them: agents report the revision of their view's last
// change, and reports, tokens and other appliances' writes move the store's on. checked is
// the store's revision when kept was found.
func (s *Store) keep(ctx context.Context, e edits, abs string, read int64, kvs []liveKey) (at, checked int64, kept, changed bool, err error) {
	rg := s.rolloutGuard(ctx, e)
	if len(rg.ops) > 0 {
		return 0, 0, false, false, nil // a promotion: it writes its rollout's end
	}
	cmps := append([]clientv3.Cmp{
		compare(clientv3.ModRevision(abs), "<", read+1).WithPrefix(),
		compare(clientv3.CreateRevision(abs), "<", read+1).WithPrefix(),
	}, rg.cmps...)
	// A schema set, changed or removed since this replica cached the schemas fails the
	// check's guard (or makes its refusal stale): load them again and check again, as the
	// write would, rather than write the keys as they are. A few tries; then the write settles it.
	const tries = 3
	for try := 1; ; try++ {
		g, err := s.guardFor(ctx, e)
		if errors.Is(err, errStaleSchema) {
			s.dropSchemas()
			if try < tries {
				continue
			}
			return 0, 0, false, false, nil // the write loads the schemas again
		}
		if err != nil {
			return 0, 0, false, false, err
		}
		resp, err := s.keepTxn(ctx, e.applyName, append(slices.Clip(cmps), g.cmps...), abs)
		if err != nil {
			return 0, 0, false, false, err
		}
		if resp.Succeeded {
			if resp.Responses[0].GetResponseRange().Count != int64(len(kvs)) {
				return 0, 0, false, true, nil // a key went since the read
			}
			for _, kv := range kvs {
				at = max(at, kv.mod)
			}
			for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
				at = max(at, kv.ModRevision)
			}
			return at, resp.Header.Revision, true, false, nil
		}
		// Which guard failed: the appliance's own (it changed since the read), or the write's?
		held, err := s.holds(ctx, append(slices.Clip(rg.cmps), g.cmps...))
		if err != nil {
			return 0, 0, false, false, s.etcdErr(ctx, "apply "+e.applyName, err)
		}
		if held {
			return 0, 0, false, true, nil
		}
		if len(g.cmps) == 0 || try >= tries {
			return 0, 0, false, false, nil // a rollout runs: the write says so
		}
		if held, err := s.holds(ctx, g.cmps); err != nil || held {
			return 0, 0, false, false, nil // a rollout runs: the write says so
		}
		s.dropSchemas()
	}
}

// keepTxn is keep's read-only transaction: if cmps hold, how many keys are under abs, and the
// key under shared/ changed last.
func (s *Store) keepTxn(ctx context.Context, name string, cmps []clientv3.Cmp, abs string) (*clientv3.TxnResponse, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(
		clientv3.OpGet(abs, clientv3.WithPrefix(), clientv3.WithCountOnly()),
		clientv3.OpGet(s.kvRoot+api.SharedPrefix+"/", clientv3.WithPrefix(), clientv3.WithKeysOnly(),
			clientv3.WithSort(clientv3.SortByModRevision, clientv3.SortDescend), clientv3.WithLimit(1)),
	).Commit()
	if err != nil {
		return nil, s.etcdErr(ctx, "apply "+name, err)
	}
	return resp, nil
}

// casAhead is the refusal of an apply whose cas is a revision the store never had.
func casAhead(name string, cas, read int64) error {
	return api.Errorf(api.CodeInvalidRequest, "cas revision %d of appliance %q is ahead of the store (at revision %d): give a revision the store has had, such as the one a read or dry run answered", cas, name, read)
}

// noneDeletedInReleases is noneDeletedSince once etcd compacted revision cas: a release after
// cas (every write through the API makes one, kept as --release-retention says) that deleted a
// key of the appliance refuses the apply (409). A key deleted and created again since has a
// mod_revision after cas, which the guard before refused; a rollout's start deletes nothing
// live. Without it, an apply reviewed with a dry run, then given its revision as cas more than
// the history etcd keeps later (an hour for the embedded store), went through though a key
// had been deleted meanwhile, and put it back.
func (s *Store) noneDeletedInReleases(ctx context.Context, name string, cas int64) error {
	all, _, err := s.Releases(ctx)
	if err != nil {
		return err
	}
	var first *api.Release
	var deleted api.ReleaseChange
	for i := range all { // newest first: the last one found is the first deletion after cas
		r := &all[i]
		if r.Revision <= cas {
			break
		}
		if r.Kind == api.KindRollout {
			continue
		}
		for _, c := range r.Changes {
			if c.Scope == api.ScopeAppliance && c.Appliance == name && c.DeletedCount > 0 {
				first, deleted = r, c
			}
		}
	}
	if first == nil {
		return nil
	}
	what := "a key was"
	switch {
	case len(deleted.Deleted) > 0:
		what = "key " + api.KeyText(deleted.Deleted[0])
		if deleted.DeletedCount > 1 {
			what += fmt.Sprintf(" (and %d more)", deleted.DeletedCount-1)
		}
		what += " was"
	case deleted.DeletedCount > 1:
		what = fmt.Sprintf("%d keys were", deleted.DeletedCount)
	}
	return api.Errorf(api.CodeConflict, "conflict on appliance %q: %s deleted after the expected revision %d (at revision %d, as its release says: etcd's history of revision %d is compacted)",
		name, what, cas, first.Revision, cas)
}

// ApplyConflict is the refusal of an apply guarded by cas when key (relative to the appliance)
// changed at revision got, after cas.
func ApplyConflict(name string, cas int64, key string, got int64) error {
	return api.Errorf(api.CodeConflict, "conflict on appliance %q: key %s changed at revision %d, after the expected revision %d", name, api.KeyText(api.ApplianceRoot(name)+"/"+key), got, cas)
}

// ApplyBase reads appliance name's own keys as an apply guarded by cas (-1: none) starts from,
// and the revision read; with the refusals of that apply: 409 when a key changed after cas or one
// it had at cas is gone, 400 when cas is ahead of the store. A write with canary starts its
// rollout from it, so that its cas holds as the apply's would.
//
// The names come first, cas checked on them; then the values, a page at a time at the revision
// read: page (when not nil) is given each page before the next is read, and its error ends the
// read, so that a caller holds the tree within a budget as it comes (read whole at once, it was
// counted in none). A page's revision compacted meanwhile is 503 to retry.
func (s *Store) ApplyBase(ctx context.Context, name string, cas int64, page func(kvs []api.KV) error) ([]api.KV, int64, error) {
	if err := api.ValidateSegment("appliance name", name); err != nil {
		return nil, 0, err
	}
	abs := s.kvRoot + api.ApplianceRoot(name) + "/"
	names, read, err := s.readLive(ctx, name, abs, nil, cas)
	if err != nil {
		if api.AsError(err).Code == api.CodeConflict {
			return nil, read, err
		}
		return nil, read, s.etcdErr(ctx, "read appliance "+name, err)
	}
	if cas >= 0 {
		cctx, cancel := s.opCtx(ctx)
		err := s.noneDeletedSince(cctx, name, abs, cas, read, names)
		cancel()
		if err != nil {
			return nil, read, err
		}
	}
	out := make([]api.KV, 0, len(names))
	from, end := abs, clientv3.GetPrefixRangeEnd(abs)
	// The first page is one key: a tree's first keys may be as large as a value may be.
	for limit := int64(1); len(names) > 0; {
		cctx, cancel := s.opCtx(ctx)
		resp, err := s.cli.Get(cctx, from, clientv3.WithRange(end), clientv3.WithLimit(limit), clientv3.WithRev(read))
		cancel()
		switch {
		case errors.Is(err, rpctypes.ErrCompacted):
			e := api.Errorf(api.CodeUnavailable, "read appliance %q: etcd compacted revision %d while it was read; nothing was written: retry", name, read)
			e.RetryAfter = 1
			return nil, read, e
		case err != nil:
			return nil, read, s.etcdErr(ctx, "read appliance "+name, err)
		}
		kvs := make([]api.KV, 0, len(resp.Kvs))
		for _, kv := range resp.Kvs {
			kvs = append(kvs, s.toKV(kv, false))
		}
		var more bool
		from, limit, more = nextPage(resp.Kvs, from, limit, resp.More)
		resp = nil // etcd's answer is copied: let it go before the page's work
		if page != nil {
			if err := page(kvs); err != nil {
				return nil, read, err
			}
		}
		out = append(out, kvs...)
		if !more {
			break
		}
	}
	return out, read, nil
}

// noneDeletedSince refuses (409) an apply guarded by cas when a key that the appliance had at
// revision cas is not among now (its keys at the read, at revision read). When etcd no longer
// keeps revision cas (compacted), the releases after it say so (noneDeletedInReleases).
func (s *Store) noneDeletedSince(ctx context.Context, name, abs string, cas, read int64, now []liveKey) error {
	if cas == 0 {
		return nil // the appliance must not exist: the mod_revision guard says it all
	}
	if cas > read {
		return casAhead(name, cas, read)
	}
	then, err := s.cli.Get(ctx, abs, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithRev(cas))
	switch {
	case errors.Is(err, rpctypes.ErrCompacted):
		return s.noneDeletedInReleases(ctx, name, cas)
	case errors.Is(err, rpctypes.ErrFutureRev):
		return casAhead(name, cas, read)
	case err != nil:
		return s.etcdErr(ctx, "apply "+name, err)
	}
	have := make(map[string]bool, len(now))
	for _, kv := range now {
		have[kv.key] = true
	}
	var gone []string
	for _, kv := range then.Kvs {
		if !have[string(kv.Key)] {
			gone = append(gone, strings.TrimPrefix(string(kv.Key), s.kvRoot))
		}
	}
	if len(gone) == 0 {
		return nil
	}
	more := ""
	if len(gone) > 1 {
		more = fmt.Sprintf(" (and %d more)", len(gone)-1)
	}
	return api.Errorf(api.CodeConflict, "conflict on appliance %q: key %s%s was deleted after the expected revision %d",
		name, api.KeyText(gone[0]), more, cas)
}
