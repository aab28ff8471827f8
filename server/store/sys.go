package store

import (
	"context"
	"errors"
	"strings"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// System keys are the server's own records under <root>sys/ (tokens, releases, settings, the
// store id). They are never reachable through the KV API. Their names are the caller's business:
// the store only refuses the empty key.

// SysGet reads a system key; api.ErrNotFound when absent. The int64 is the key's mod_revision
// (0 when absent), ready to pass as SysPut's cas.
func (s *Store) SysGet(ctx context.Context, key string) ([]byte, int64, error) {
	v, _, err := s.SysRead(ctx, key)
	return v.Data, v.Rev, err
}

// SysRead is SysGet that also answers the revision it read at (the store's, not the key's;
// also when the key is absent).
func (s *Store) SysRead(ctx context.Context, key string) (SysValue, int64, error) {
	if err := sysKey(key); err != nil {
		return SysValue{}, 0, err
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.sysRoot+key)
	if err != nil {
		return SysValue{}, 0, s.etcdErr(ctx, "get system key "+key, err)
	}
	if len(resp.Kvs) == 0 {
		return SysValue{}, resp.Header.Revision, api.Errorf(api.CodeNotFound, "system key %q not found", key)
	}
	return SysValue{Data: resp.Kvs[0].Value, Rev: resp.Kvs[0].ModRevision}, resp.Header.Revision, nil
}

// SysValue is a system key's value and mod_revision, as SysGets reads it.
type SysValue struct {
	Data []byte
	Rev  int64 // mod_revision; 0 when the key is absent
}

// SysGets reads system keys at one revision, so that keys written together are seen together
// (two SysGets could fall on either side of a write): each key's value and mod_revision, the
// zero SysValue for one that is absent.
func (s *Store) SysGets(ctx context.Context, keys ...string) ([]SysValue, error) {
	ops := make([]clientv3.Op, len(keys))
	for i, key := range keys {
		if err := sysKey(key); err != nil {
			return nil, err
		}
		ops[i] = clientv3.OpGet(s.sysRoot + key)
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return nil, s.etcdErr(ctx, "get system keys "+strings.Join(keys, ", "), err)
	}
	out := make([]SysValue, len(keys))
	for i, r := range resp.Responses {
		if kvs := r.GetResponseRange().Kvs; len(kvs) > 0 {
			out[i] = SysValue{Data: kvs[0].Value, Rev: kvs[0].ModRevision}
		}
	}
	return out, nil
}

// SysList reads every system key under each of prefixes (relative key → value) at one
// revision.
//
// A prefix ending in '/' (or "") is a plain string prefix; any other prefix is by whole
// segments, as in List: "tokens" covers "tokens" and "tokens/...", never "tokens-old".
func (s *Store) SysList(ctx context.Context, prefixes ...string) (map[string][]byte, int64, error) {
	return s.sysListAt(ctx, 0, prefixes)
}

// SysListAt is SysList as the keys were at revision rev, from etcd's history: a revision older
// than the history kept is an api.CodeCompacted error.
func (s *Store) SysListAt(ctx context.Context, rev int64, prefixes ...string) (map[string][]byte, error) {
	out, _, err := s.sysListAt(ctx, rev, prefixes)
	return out, err
}

// sysListAt reads the system keys under prefixes at rev (0: now), and the revision read at.
func (s *Store) sysListAt(ctx context.Context, rev int64, prefixes []string) (map[string][]byte, int64, error) {
	resp, err := s.sysRange(ctx, rev, prefixes, nil)
	if err != nil {
		return nil, 0, err
	}
	out := map[string][]byte{}
	for _, r := range resp.Responses {
		for _, kv := range r.GetResponseRange().Kvs {
			out[strings.TrimPrefix(string(kv.Key), s.sysRoot)] = kv.Value
		}
	}
	return out, resp.Header.Revision, nil
}

// SysListRevs is SysList at revision rev (0: now) that also answers each key's mod_revision:
// the keys under prefixes (as SysList takes them) and those of spans (as SysPage takes them),
// all at one revision.
func (s *Store) SysListRevs(ctx context.Context, rev int64, prefixes []string, spans ...SysSpan) (map[string]SysValue, int64, error) {
	resp, err := s.sysRange(ctx, rev, prefixes, spans)
	if err != nil {
		return nil, 0, err
	}
	out := map[string]SysValue{}
	for _, r := range resp.Responses {
		for _, kv := range r.GetResponseRange().Kvs {
			out[strings.TrimPrefix(string(kv.Key), s.sysRoot)] = SysValue{Data: kv.Value, Rev: kv.ModRevision}
		}
	}
	return out, resp.Header.Revision, nil
}

// sysRange reads, in one transaction at rev (0: now), the system keys under prefixes (as
// SysList takes them) and those of spans.
func (s *Store) sysRange(ctx context.Context, rev int64, prefixes []string, spans []SysSpan) (*clientv3.TxnResponse, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	var opts []clientv3.OpOption
	what := "list system keys " + strings.Join(prefixes, ", ")
	if rev > 0 {
		opts, what = append(opts, clientv3.WithRev(rev)), what+" at a revision"
	}
	var ops []clientv3.Op
	for _, prefix := range prefixes {
		ops = append(ops, s.sysGets(prefix, opts...)...)
	}
	for _, sp := range spans {
		if sp.From < sp.To {
			ops = append(ops, clientv3.OpGet(s.sysRoot+sp.From, append([]clientv3.OpOption{clientv3.WithRange(s.sysRoot + sp.To)}, opts...)...))
		}
	}
	resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
	if rev > 0 && errors.Is(err, rpctypes.ErrCompacted) {
		return nil, api.Errorf(api.CodeCompacted, "revision %d is compacted: the store keeps %s", rev, s.historyKept())
	}
	if err != nil {
		return nil, s.etcdErr(ctx, what, err)
	}
	return resp, nil
}

// sysGets are the reads of the system keys under prefix, as SysList takes it.
func (s *Store) sysGets(prefix string, opts ...clientv3.OpOption) []clientv3.Op {
	if prefix == "" || strings.HasSuffix(prefix, "/") {
		return []clientv3.Op{clientv3.OpGet(s.sysRoot+prefix, append([]clientv3.OpOption{clientv3.WithPrefix()}, opts...)...)}
	}
	return subtreeGets(s.sysRoot+prefix, opts...)
}

// SysPut writes a system key. cas as in Put.
func (s *Store) SysPut(ctx context.Context, key string, value []byte, cas int64) (int64, error) {
	if err := sysKey(key); err != nil {
		return 0, err
	}
	w, err := s.put(ctx, s.sysRoot, key, string(value), cas)
	return w.rev, err
}

// SysDelete deletes a system key; api.ErrNotFound when absent.
func (s *Store) SysDelete(ctx context.Context, key string) (int64, error) {
	return s.SysDeleteIfPresent(ctx, key, nil)
}

// SysDeleteIfPresent deletes a system key, but only while every one of present (system keys)
// still exists; api.ErrConflict when one is gone, api.ErrNotFound when key is absent.
func (s *Store) SysDeleteIfPresent(ctx context.Context, key string, present []string) (int64, error) {
	if err := sysKey(key); err != nil {
		return 0, err
	}
	k := s.sysRoot + key
	// Guarded on the key existing too, so that a delete of nothing makes no revision; on
	// failure, Else counts the key and each of present to tell which guard failed.
	cmps := []clientv3.Cmp{compare(clientv3.Version(k), ">", 0)}
	els := []clientv3.Op{clientv3.OpGet(k, clientv3.WithCountOnly())}
	for _, p := range present {
		if err := sysKey(p); err != nil {
			return 0, err
		}
		cmps = append(cmps, compare(clientv3.Version(s.sysRoot+p), ">", 0))
		els = append(els, clientv3.OpGet(s.sysRoot+p, clientv3.WithCountOnly()))
	}
	w, err := s.commit(ctx, "delete system key "+key, nil, plainTxn(cmps, []clientv3.Op{clientv3.OpDelete(k)}, els))
	if err != nil {
		return 0, err
	}
	if !w.succeeded {
		for _, r := range w.resp.Responses[1:] {
			if r.GetResponseRange().GetCount() == 0 {
				return w.rev, api.Errorf(api.CodeConflict, "system key %q not deleted: a key it depends on is gone", key)
			}
		}
		return w.rev, api.Errorf(api.CodeNotFound, "system key %q not found", key)
	}
	return w.rev, nil
}

func sysKey(key string) error {
	if key == "" || strings.HasSuffix(key, "/") {
		return api.Errorf(api.CodeInvalidKey, "invalid system key %q: empty or ending in '/'", key)
	}
	return nil
}

// SysPutAll writes several system keys unconditionally in one transaction (at most MaxTxnOps
// of them), for records written in bulk such as agents' reports.
func (s *Store) SysPutAll(ctx context.Context, kvs map[string][]byte) (int64, error) {
	if len(kvs) > s.MaxTxnOps() {
		return 0, api.Errorf(api.CodeTooLarge, "%d system keys in one transaction, over the limit of %d", len(kvs), s.MaxTxnOps())
	}
	ops := make([]clientv3.Op, 0, len(kvs))
	for k, v := range kvs {
		if err := sysKey(k); err != nil {
			return 0, err
		}
		ops = append(ops, clientv3.OpPut(s.sysRoot+k, string(v)))
	}
	w, err := s.commit(ctx, "write system keys", nil, plainTxn(nil, ops, nil))
	if err != nil {
		return 0, err
	}
	return w.rev, nil
}

// SysGuard holds when system key Key has mod_revision Rev (0: the key is absent), or, when
// Value is not nil, when Key holds exactly Value (whatever its mod_revision).
type SysGuard struct {
	Key   string
	Rev   int64
	Value []byte
}

// SysApply writes puts and deletes deletes (system keys) in one transaction, only while every
// guard holds; api.ErrConflict, naming the first guard that failed, when one does not.
func (s *Store) SysApply(ctx context.Context, guards []SysGuard, puts map[string][]byte, deletes []string) (int64, error) {
	if n := len(guards) + len(puts) + len(deletes); n > s.MaxTxnOps() {
		return 0, api.Errorf(api.CodeTooLarge, "%d system key operations in one transaction, over the limit of %d", n, s.MaxTxnOps())
	}
	var cmps []clientv3.Cmp
	var els, ops []clientv3.Op
	for _, g := range guards {
		if err := sysKey(g.Key); err != nil {
			return 0, err
		}
		if g.Value != nil {
			cmps = append(cmps, compare(clientv3.Value(s.sysRoot+g.Key), "=", string(g.Value)))
			els = append(els, clientv3.OpGet(s.sysRoot+g.Key))
			continue
		}
		cmps = append(cmps, compare(clientv3.ModRevision(s.sysRoot+g.Key), "=", g.Rev))
		els = append(els, clientv3.OpGet(s.sysRoot+g.Key, clientv3.WithKeysOnly()))
	}
	for k, v := range puts {
		if err := sysKey(k); err != nil {
			return 0, err
		}
		ops = append(ops, clientv3.OpPut(s.sysRoot+k, string(v)))
	}
	for _, k := range deletes {
		if err := sysKey(k); err != nil {
			return 0, err
		}
		ops = append(ops, clientv3.OpDelete(s.sysRoot+k))
	}
	w, err := s.commit(ctx, "write system keys", nil, plainTxn(cmps, ops, els))
	if err != nil {
		return 0, err
	}
	if !w.succeeded {
		for i, g := range guards {
			if g.Value != nil {
				if kvs := w.resp.Responses[i].GetResponseRange().GetKvs(); len(kvs) == 0 || string(kvs[0].Value) != string(g.Value) {
					return w.rev, api.Errorf(api.CodeConflict, "conflict on key %q: it no longer holds the value expected", g.Key)
				}
				continue
			}
			if got := modRevision(w.resp.Responses[i]); got != g.Rev {
				return w.rev, conflict(g.Key, g.Rev, got)
			}
		}
		return w.rev, api.Errorf(api.CodeConflict, "system keys not written: a guard failed")
	}
	return w.rev, nil
}

// SysPutIf is one put of SysPutEach: Key is written only while system key Guard holds exactly
// Is (when Is is not nil), else while Guard exists (Exists) or is absent (!Exists).
type SysPutIf struct {
	Key    string
	Value  []byte
	Guard  string
	Exists bool
	Is     []byte
}

// SysPutEach writes each of puts, in one transaction, where its own guard holds; the others are
// left out without failing the rest. Keys must be distinct. A put's Value (and Is) is sent as it
// is, not copied: the caller leaves it alone until SysPutEach returns.
//
// The ops are built as etcd takes them, each kind in one array for the whole transaction: made
// as client/v3 ops and converted, a batch of agents' reports (10,000 arrive together when a
// fleet's agents start) made 2.9 KB of garbage per report, as much again as the report.
func (s *Store) SysPutEach(ctx context.Context, puts []SysPutIf) (int64, error) {
	if len(puts) > s.MaxTxnOps()-2 {
		return 0, api.Errorf(api.CodeTooLarge, "%d guarded system keys in one transaction, over the limit of %d", len(puts), s.MaxTxnOps()-2)
	}
	guarded := 0
	for _, p := range puts {
		if err := sysKey(p.Key); err != nil {
			return 0, err
		}
		if p.Guard != "" {
			if err := sysKey(p.Guard); err != nil {
				return 0, err
			}
			guarded++
		}
	}
	w, err := s.commitRaw(ctx, "write system keys", nil, plainTxn(nil, nil, nil), s.sysPutOps(puts, guarded))
	if err != nil {
		return 0, err
	}
	return w.rev, nil
}

// sysPutOps are SysPutEach's ops for puts, guarded of which have a guard.
func (s *Store) sysPutOps(puts []SysPutIf, guarded int) []*pb.RequestOp {
	var (
		ops      = make([]*pb.RequestOp, len(puts))
		putOps   = make([]pb.RequestOp, len(puts))
		putReqs  = make([]pb.PutRequest, len(puts))
		putsOf   = make([]pb.RequestOp_RequestPut, len(puts))
		txnOps   = make([]pb.RequestOp, guarded)
		txnReqs  = make([]pb.TxnRequest, guarded)
		txnsOf   = make([]pb.RequestOp_RequestTxn, guarded)
		cmps     = make([]pb.Compare, guarded)
		cmpPtrs  = make([]*pb.Compare, guarded)
		thenPtrs = make([]*pb.RequestOp, guarded)
		keys     = make([]byte, 0, sysKeysLen(s.sysRoot, puts))
		g        = 0
	)
	key := func(k string) []byte {
		keys = append(append(keys, s.sysRoot...), k...)
		return keys[len(keys)-len(s.sysRoot)-len(k) : len(keys) : len(keys)]
	}
	for i, p := range puts {
		putReqs[i].Key, putReqs[i].Value = key(p.Key), p.Value
		putsOf[i].RequestPut = &putReqs[i]
		putOps[i].Request = &putsOf[i]
		ops[i] = &putOps[i]
		if p.Guard == "" {
			continue
		}
		c := &cmps[g]
		c.Key, c.Target, c.Result = key(p.Guard), pb.Compare_VERSION, pb.Compare_EQUAL
		switch {
		case p.Is != nil:
			c.Target, c.TargetUnion = pb.Compare_VALUE, &pb.Compare_Value{Value: p.Is}
		case p.Exists:
			c.Result, c.TargetUnion = pb.Compare_GREATER, &pb.Compare_Version{Version: 0}
		default:
			c.TargetUnion = &pb.Compare_Version{Version: 0}
		}
		cmpPtrs[g], thenPtrs[g] = c, ops[i]
		txnReqs[g].Compare, txnReqs[g].Success = cmpPtrs[g:g+1:g+1], thenPtrs[g:g+1:g+1]
		txnsOf[g].RequestTxn = &txnReqs[g]
		txnOps[g].Request = &txnsOf[g]
		ops[i] = &txnOps[g]
		g++
	}
	return ops
}

// sysKeysLen is the length of the system keys of puts and of their guards, with root.
func sysKeysLen(root string, puts []SysPutIf) int {
	n := 0
	for _, p := range puts {
		n += len(root) + len(p.Key)
		if p.Guard != "" {
			n += len(root) + len(p.Guard)
		}
	}
	return n
}
