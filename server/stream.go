package server

import (
	"context"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// streamHeartbeat is how often a stream with no change writes a heartbeat line, so that the
// client (and proxies) can tell a quiet stream from a dead connection.
const streamHeartbeat = 20 * time.Second

// streamLineTimeout bounds the write of one line (and the stream's end): a client that does not
// take a line within it is cut off. While a stream writes a line it is not registered in the hub
// and does not count against the caps; without this bound a client that stops reading would hold
// its connection, a goroutine and the line until the whole wait's write deadline (up to
// --max-wait and more), and could open stream after stream beside it. A line gets as long as
// any answer that does not long-poll (opTimeout + writeMargin). A variable for tests.
var streamLineTimeout = opTimeout + writeMargin

// streamFirstLine is how long a stream's first line may wait for a view the store must give
// (etcd away, a large view read under load) before a heartbeat at the client's own index goes
// out in its place: a client takes a stream silent for 5 s (client.DefaultStreamFirstLine) for
// one behind a proxy that buffers answers, and leaves streaming for 10 minutes. A variable for
// tests.
var streamFirstLine = 2500 * time.Millisecond

// streamView answers a streaming long-poll (`?index=R&stream`): 200 application/x-ndjson, then
// one line per change of the view name gives the client after index, as a plain long-poll
// would answer it (the full view, or with o.delta the difference from the previous line), each
// flushed at once. The first line goes out at once — the view when it changed after index, else
// a heartbeat — so that a client behind a proxy that buffers answers finds out in seconds;
// then a heartbeat every streamHeartbeat. The stream ends when wait expires, the server
// drains, the token is revoked, a newer long-poll of the same agent takes its place, or the
// store id changes; the client reconnects from the last revision it read.
//
// Between two lines the stream is registered in the hub as one long-poll, so that it counts
// against the caps as one. While it writes a line it is not: a new long-poll of the same agent
// arriving then is itself replaced when the stream registers again (answered 304, it comes
// back and ends the stream).
func (s *Server) streamView(w http.ResponseWriter, r *http.Request, pr *pollReq) error {
	name, index, wait, o := pr.name, pr.index, pr.wait, pr.o
	ctx := r.Context()
	began := time.Now()
	rc := http.NewResponseController(w)
	store := s.st.ID()
	p := principalOf(r)
	token, instance, since := p.name, instanceOf(r), info(r).revocation
	var wk wake
	if id := r.Header.Get(api.HeaderStore); id != "" && store != "" && id != store {
		wk = wake{kind: wakeChanged, rev: s.hub.current()}
	} else {
		// A short registration: the caps (and the replacement of the agent's older long-poll)
		// apply before the answer starts, so that a refusal is still a 503 or 429.
		var err error
		if wk, err = s.hub.wait(ctx, name, index, token, instance, since, time.Millisecond); err != nil {
			return err
		}
	}
	deadline := time.Now().Add(jitter(wait))
	started := false
	defer func() {
		if started {
			// The end of the answer (its last chunk) is written after the return.
			_ = rc.SetWriteDeadline(time.Now().Add(streamLineTimeout))
		}
	}()
	for {
		var line []byte
		switch wk.kind {
		case wakeChanged:
			if s.st.ID() != store && started {
				return nil // restored or replaced: the client reconnects and gets the new store's view
			}
			var a answer
			var err error
			if started {
				a, err = s.changed(ctx, p, name, index, o, wk)
			} else {
				a, started, err = s.firstChanged(ctx, w, rc, began, p, name, index, o, wk, store)
			}
			if err != nil {
				if started {
					s.log.Debug("stream ends", "appliance", name, "err", err)
					return nil
				}
				return err
			}
			line, index = a.body, a.rev
			o.baseRollout = a.rollout
		case wakeTimeout:
			if ctx.Err() != nil || started && time.Until(deadline) <= 0 {
				return nil
			}
			index = max(index, wk.rev)
			line = heartbeatLine(index)
		case wakeRevoked:
			if !started {
				return api.Errorf(api.CodeUnauthorized, "token revoked")
			}
			return nil
		default: // drain, replaced
			if wk.kind == wakeDrain {
				// As drained long-polls do: the clients come back spread out.
				sleep(ctx, time.Duration(rand.Int64N(int64(drainJitter))))
			}
			if !started {
				setIndex(w, max(wk.rev, index))
				w.Header().Set(api.HeaderStore, store)
				w.WriteHeader(http.StatusNotModified)
			}
			return nil
		}
		if started && !s.auth.current(p) {
			// Revoked, or its record changed, while the stream was not registered (writing its
			// last line, reading this one's view): the hub's revocation missed it.
			s.log.Debug("stream ends: its token was revoked or changed", "appliance", name, "token", token)
			return nil
		}
		if !started {
			startStream(w, store, index)
			started = true
		}
		_ = rc.SetWriteDeadline(time.Now().Add(streamLineTimeout))
		if _, err := w.Write(line); err != nil {
			return nil
		}
		if err := rc.Flush(); err != nil {
			return nil
		}
		left := time.Until(deadline)
		if left <= 0 {
			return nil
		}
		var err error
		if wk, err = s.hub.wait(ctx, name, index, token, instance, since, min(left, streamHeartbeat)); err != nil {
			return nil // over a cap now: the client reconnects and is told
		}
		if s.st.ID() != store {
			return nil
		}
	}
}

// firstChanged is changed for the first line of streamView: when the view takes longer than
// streamFirstLine from began, the stream starts with a heartbeat at index (nothing changed up to
// the client's own index) and the view follows as its next line.
func (s *Server) firstChanged(ctx context.Context, w http.ResponseWriter, rc *http.ResponseController, began time.Time, p *principal, name string, index int64, o pollOpts, wk wake, store string) (answer, bool, error) {
	type result struct {
		a   answer
		err error
	}
	done := make(chan result, 1)
	go func() {
		a, err := s.changed(ctx, p, name, index, o, wk)
		done <- result{a, err}
	}()
	t := time.NewTimer(max(0, streamFirstLine-time.Since(began)))
	defer t.Stop()
	select {
	case r := <-done:
		return r.a, false, r.err
	case <-t.C:
	}
	startStream(w, store, index)
	_ = rc.SetWriteDeadline(time.Now().Add(streamLineTimeout))
	if _, err := w.Write(heartbeatLine(index)); err == nil {
		_ = rc.Flush()
	}
	r := <-done
	return r.a, true, r.err
}

// startStream writes the headers of a stream's answer.
func startStream(w http.ResponseWriter, store string, index int64) {
	h := w.Header()
	h.Set("Content-Type", api.ContentTypeStream)
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: pass the lines on as they come
	h.Set(api.HeaderStore, store)
	setIndex(w, index)
	w.WriteHeader(http.StatusOK)
}

// heartbeatLine is a stream's line that says nothing changed up to revision index.
func heartbeatLine(index int64) []byte {
	return append(strconv.AppendInt([]byte(`{"heartbeat":true,"revision":`), index, 10), "}\n"...)
}
