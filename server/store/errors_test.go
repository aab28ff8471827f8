package store

import (
	"context"
	"errors"
	"strings"
	"testing"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// Errors a cluster gives during an election or while a member stops are 503s a client may
// retry, never 500s; timeouts say the outcome is unknown.
func TestEtcdErr_TransientIsUnavailable(t *testing.T) {
	s := &Store{}
	ctx := context.Background()
	cases := []struct {
		err       error
		uncertain bool
	}{
		{rpctypes.ErrGRPCNoLeader, false},
		{rpctypes.ErrGRPCLeaderChanged, false},
		{rpctypes.ErrGRPCStopped, false},
		{rpctypes.ErrGRPCTimeout, true},
		{rpctypes.ErrGRPCTimeoutDueToLeaderFail, true},
		{status.Error(codes.Unknown, "raft: stopped"), false},
		{status.Error(codes.Unavailable, "connection refused"), false},
	}
	for _, c := range cases {
		err := s.etcdErr(ctx, "put", c.err)
		var ae *api.Error
		if !errors.As(err, &ae) || ae.HTTPStatus() != 503 {
			t.Errorf("etcdErr(%v) = %v, want a 503", c.err, err)
			continue
		}
		if got := errors.Is(err, api.ErrUnavailable); !got {
			t.Errorf("etcdErr(%v) is not unavailable", c.err)
		}
		if unknown := strings.Contains(ae.Message, "outcome is unknown"); unknown != c.uncertain {
			t.Errorf("etcdErr(%v) = %q: says the outcome is unknown: %v, want %v", c.err, ae.Message, unknown, c.uncertain)
		}
	}
	if err := s.etcdErr(ctx, "put", status.Error(codes.Unknown, "something else")); errors.Is(err, api.ErrUnavailable) {
		t.Errorf("an unknown error became unavailable: %v", err)
	}
}
