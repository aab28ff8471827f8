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
// retry, never 500s.
func TestEtcdErr_TransientIsUnavailable(t *testing.T) {
	s := &Store{}
	ctx := context.Background()
	for _, e := range []error{
		rpctypes.ErrGRPCNoLeader,
		rpctypes.ErrGRPCLeaderChanged,
		rpctypes.ErrGRPCStopped,
		rpctypes.ErrGRPCTimeout,
		rpctypes.ErrGRPCTimeoutDueToLeaderFail,
		status.Error(codes.Unknown, "raft: stopped"),
		status.Error(codes.Unknown, "raft proposal dropped"),
		status.Error(codes.Unavailable, "connection refused"),
		// gRPC's own, for an answer garbled or cut on its way: etcd gives no error of this code.
		status.Error(codes.Internal, "grpc: failed to unmarshal the received message: proto: cannot parse invalid wire-format data"),
		status.Error(codes.Internal, "server closed the stream without sending trailers"),
	} {
		err := s.etcdErr(ctx, "get", e)
		var ae *api.Error
		if !errors.As(err, &ae) || ae.HTTPStatus() != 503 || !errors.Is(err, api.ErrUnavailable) {
			t.Errorf("etcdErr(%v) = %v, want a 503 unavailable", e, err)
		}
	}
	if err := s.etcdErr(ctx, "get", status.Error(codes.Unknown, "something else")); errors.Is(err, api.ErrUnavailable) {
		t.Errorf("an unknown error became unavailable: %v", err)
	}
}

// Only an answer that etcd gives to a request it did not apply (and never will) may make a
// sent write say "not applied": a broken connection, a timeout, a member stopping or a leader
// failing leave the outcome open.
func TestRefusedUnapplied(t *testing.T) {
	cases := []struct {
		err  error
		want bool
	}{
		{rpctypes.ErrGRPCNoLeader, true},
		{rpctypes.ErrTooManyRequests, true},
		{rpctypes.ErrGRPCRequestTooLarge, true},
		{rpctypes.ErrGRPCLeaseNotFound, true},
		{rpctypes.ErrGRPCNoSpace, true},
		{rpctypes.ErrGRPCDuplicateKey, true},
		{status.Error(codes.Unknown, "raft proposal dropped"), true},
		{status.Error(codes.Unavailable, "error reading from server: EOF"), false},
		{status.Error(codes.Unavailable, "keepalive ping failed to receive ACK within timeout"), false},
		{rpctypes.ErrGRPCTimeout, false},
		{rpctypes.ErrGRPCTimeoutDueToLeaderFail, false},
		{rpctypes.ErrGRPCTimeoutDueToConnectionLost, false},
		{rpctypes.ErrGRPCStopped, false},
		{rpctypes.ErrGRPCLeaderChanged, false},
		{rpctypes.ErrGRPCCanceled, false},
		{status.Error(codes.Unknown, "raft: stopped"), false},
		{context.DeadlineExceeded, false},
		{errors.New("something else"), false},
	}
	for _, c := range cases {
		// The client hands etcd's errors over as rpctypes errors.
		if got := refusedUnapplied(rpctypes.Error(c.err)); got != c.want {
			t.Errorf("refusedUnapplied(%v) = %v, want %v", c.err, got, c.want)
		}
	}
	msg := outcomeUnknown("put k", rpctypes.Error(status.Error(codes.Unavailable, "error reading from server: EOF"))).Error()
	if !strings.Contains(msg, "outcome is unknown: check, then retry") || !strings.Contains(msg, "EOF") {
		t.Errorf("outcome unknown message %q", msg)
	}
}
