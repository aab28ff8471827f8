package store

import (
	"context"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// SysSpan is the system keys from From (included) to To (excluded), by byte order.
type SysSpan struct{ From, To string }

// SysKV is a system key (relative, as SysList names it) and its value.
type SysKV struct {
	Key   string
	Value []byte
}

// SysPage reads, at one revision, the system keys of spans in the order given, at most limit
// of them in all (each span sorted by key; a span whose From is not below its To holds none).
// etcd is asked for at most limit keys of each span, never for the rest: a page costs what the
// page holds, however many keys follow it. more says that keys past the page remain in spans.
// A limit of 0 (or less) reads every key of spans.
func (s *Store) SysPage(ctx context.Context, limit int, spans ...SysSpan) (kvs []SysKV, rev int64, more bool, err error) {
	return s.sysPage(ctx, 0, limit, false, spans)
}

// SysPageAt is SysPage at revision rev (0: the current one); with keysOnly the values are not
// read (each SysKV's Value is nil), so that a page of keys costs their names only.
func (s *Store) SysPageAt(ctx context.Context, rev int64, limit int, keysOnly bool, spans ...SysSpan) (kvs []SysKV, more bool, err error) {
	kvs, _, more, err = s.sysPage(ctx, rev, limit, keysOnly, spans)
	return kvs, more, err
}

func (s *Store) sysPage(ctx context.Context, rev int64, limit int, keysOnly bool, spans []SysSpan) (kvs []SysKV, _ int64, more bool, err error) {
	limit = max(limit, 0) // etcd takes 0 for no limit at all, as this does
	opts := []clientv3.OpOption{clientv3.WithLimit(int64(limit)), clientv3.WithRev(rev)}
	if keysOnly {
		opts = append(opts, clientv3.WithKeysOnly())
	}
	var ops []clientv3.Op
	var what []string
	for _, sp := range spans {
		if sp.From >= sp.To {
			continue
		}
		ops = append(ops, clientv3.OpGet(s.sysRoot+sp.From, append([]clientv3.OpOption{clientv3.WithRange(s.sysRoot + sp.To)}, opts...)...))
		what = append(what, sp.From+".."+sp.To)
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return nil, 0, false, s.etcdErr(ctx, "list system keys "+strings.Join(what, ", "), err)
	}
	for _, r := range resp.Responses {
		rr := r.GetResponseRange()
		for _, kv := range rr.Kvs {
			if limit > 0 && len(kvs) == limit {
				return kvs, resp.Header.Revision, true, nil
			}
			kvs = append(kvs, SysKV{Key: strings.TrimPrefix(string(kv.Key), s.sysRoot), Value: kv.Value})
		}
		if rr.More {
			return kvs, resp.Header.Revision, true, nil
		}
	}
	return kvs, resp.Header.Revision, false, nil
}
