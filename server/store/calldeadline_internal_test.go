package store

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A write's tries are bounded as they were when the call had a context of its own
// (opCtx, then attemptCtx of it): each try by the earlier of its own timeout and the call's
// deadline, the call's context made only when asked for, with that same deadline, and every
// try ends with the caller's context.
func TestCallDeadline_BoundsAsNestedContexts(t *testing.T) {
	for _, tc := range []struct {
		name             string
		request, attempt time.Duration
	}{
		{"try within the call", 10 * time.Second, 3 * time.Second},
		{"call shorter than a try", 2 * time.Second, 3 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Store{cfg: Config{RequestTimeout: tc.request, AttemptTimeout: tc.attempt}}
			parent, cancelParent := context.WithCancel(context.Background())
			defer cancelParent()
			d := s.callDeadline(parent)
			defer d.stop()
			for try := range 3 {
				before := time.Now()
				actx, cancel := d.attempt(try)
				after := time.Now()
				got, ok := actx.Deadline()
				if !ok {
					t.Fatalf("try %d: no deadline", try)
				}
				// What attemptCtx of the call's context gives, taken before and after.
				lo := earlier(before.Add(s.attemptTimeout(try)), d.deadline)
				hi := earlier(after.Add(s.attemptTimeout(try)), d.deadline)
				if got.Before(lo) || got.After(hi) {
					t.Errorf("try %d: deadline %v, want within [%v, %v]", try, got, lo, hi)
				}
				cancel()
			}
			if d.ctx != nil {
				t.Fatal("the call's context was made before it was asked for")
			}
			wctx := d.context()
			if got, _ := wctx.Deadline(); !got.Equal(d.deadline) {
				t.Errorf("the call's context ends at %v, want %v", got, d.deadline)
			}
			if d.deadline.Sub(time.Now()) > tc.request {
				t.Errorf("the call's deadline is %v away, more than RequestTimeout %v", time.Until(d.deadline), tc.request)
			}
			// A try after the call's context was made is attemptCtx of it.
			actx, cancel := d.attempt(1)
			defer cancel()
			if got, _ := actx.Deadline(); got.After(d.deadline) {
				t.Errorf("a later try ends at %v, after the call's deadline %v", got, d.deadline)
			}
			cancelParent()
			<-actx.Done()
			<-wctx.Done()
			if !errors.Is(actx.Err(), context.Canceled) || !errors.Is(wctx.Err(), context.Canceled) {
				t.Errorf("after the caller's cancel: try %v, call %v; want both canceled", actx.Err(), wctx.Err())
			}
		})
	}
}

// A try made before the call's context ends with the caller's context too.
func TestCallDeadline_FirstTryEndsWithCaller(t *testing.T) {
	s := &Store{cfg: Config{RequestTimeout: 10 * time.Second, AttemptTimeout: 3 * time.Second}}
	parent, cancelParent := context.WithCancel(context.Background())
	d := s.callDeadline(parent)
	defer d.stop()
	actx, cancel := d.attempt(0)
	defer cancel()
	cancelParent()
	<-actx.Done()
	if !errors.Is(actx.Err(), context.Canceled) {
		t.Fatalf("try: %v, want canceled", actx.Err())
	}
}

func earlier(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
