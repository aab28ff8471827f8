package store

import (
	"context"
	"fmt"
	"io"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// Health checks etcd: reachable, has a leader, and how long a linearizable read took.
//
// The returned Health is filled in either way; the error is non-nil (an api.CodeUnavailable
// error) exactly when etcd is unreachable or has no leader.
func (s *Store) Health(ctx context.Context) (Health, error) {
	h := Health{Endpoints: s.cli.Endpoints()}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	start := time.Now()
	// A linearizable read goes through the leader, so its success proves both.
	_, err := s.cli.Get(ctx, s.sysRoot+storeIDKey, clientv3.WithCountOnly())
	h.Latency = time.Since(start)
	if err == nil {
		h.Reachable, h.Leader = true, true
		return h, nil
	}
	err = s.etcdErr(ctx, "etcd health", err)
	h.Error = err.Error()
	// Tell "no leader" from "unreachable": ask each endpoint for its status, briefly, even
	// when ctx is spent by the read.
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), min(s.cfg.RequestTimeout, time.Second))
	defer scancel()
	for _, ep := range h.Endpoints {
		st, serr := s.cli.Status(sctx, ep)
		if serr != nil {
			continue
		}
		h.Reachable = true
		h.Leader = st.Leader != 0
		break
	}
	return h, api.Errorf(api.CodeUnavailable, "%s", h.Error)
}

// Health is what Store.Health found.
type Health struct {
	Reachable bool          `json:"reachable"`
	Leader    bool          `json:"leader"`
	Latency   time.Duration `json:"-"`
	Endpoints []string      `json:"endpoints"`
	Error     string        `json:"error,omitempty"`
}

// Snapshot streams an etcd snapshot of the whole store to w.
// It is not bounded by RequestTimeout: ctx bounds it.
func (s *Store) Snapshot(ctx context.Context, w io.Writer) (int64, error) {
	rc, err := s.cli.Snapshot(ctx)
	if err != nil {
		return 0, s.etcdErr(ctx, "snapshot", err)
	}
	defer rc.Close()
	n, err := io.Copy(w, rc)
	if err != nil {
		return n, s.etcdErr(ctx, "snapshot", err)
	}
	return n, nil
}

// Compact discards the store's history before rev (as etcd's auto-compaction does), waiting
// until it is done. Watches and long-polls from before rev see ErrCompacted afterwards.
func (s *Store) Compact(ctx context.Context, rev int64) error {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	if _, err := s.cli.Compact(ctx, rev, clientv3.WithCompactPhysical()); err != nil {
		return s.etcdErr(ctx, fmt.Sprintf("compact to %d", rev), err)
	}
	return nil
}
