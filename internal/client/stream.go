package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// ErrNoStream says that the server does not stream long-polls (an older server refuses the
// stream parameter) or that its lines do not reach the client (a proxy on the way buffers the
// answer): the caller should fall back to plain long-polls.
var ErrNoStream = errors.New("long-poll streaming unavailable")

// DefaultStreamFirstLine is how long StreamView waits for the stream's first line (the server
// writes one at once) before it concludes that something on the way buffers the answer;
// Options.StreamFirstLine changes it.
const DefaultStreamFirstLine = 5 * time.Second

// errSilent is the cause StreamView's watchdog cancels a silent stream with.
var errSilent = errors.New("stream silent")

// streamIdle is how long StreamView waits for a line once the stream runs: the server writes a
// heartbeat every 20 s, so a longer silence means the connection is dead.
const streamIdle = 65 * time.Second

// heartbeatPace is the least time between two heartbeats read: the server writes one at once
// and then one every 20 s, and one that writes them as fast as it can (broken, or hostile) is
// read at this pace, not with a core of the VM's CPU.
const heartbeatPace = time.Second

// StreamView opens a streaming long-poll of appliance name's view from p.Index
// (`?index=R&stream`) and calls fn with the whole view each time it changes, with the Meta of
// that view (Index is its revision), in order, until the server ends the stream (its wait
// expired, it drains, the store changed), ctx ends, or fn returns an error (returned as is).
// With p.Delta the server sends differences from p.Base, the view the caller holds at p.Index,
// which StreamView applies (p.Base itself is left as it is) and checks, reading the full view
// when one does not match. The views passed to fn are the caller's.
//
// The Meta returned has Index set to the last revision the stream reached, heartbeats
// included: reconnect from it with the last view fn got. ErrNoStream (wrapped) says to fall
// back to WatchView: the server refused the stream, or no first line came within
// Options.StreamFirstLine.
func (c *Client) StreamView(ctx context.Context, name string, p Poll, fn func(*api.View, Meta) error) (Meta, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	q := p.query()
	q.Set("stream", "true")
	op := "GET /v1/appliances/" + name
	req, err := c.newRequest(ctx, Request{Method: http.MethodGet, Path: "/v1/appliances/" + name, Query: q, Header: p.Headers()})
	if err != nil {
		return Meta{}, err
	}
	// The watchdog cancels the request when no line comes in time: first within
	// Options.StreamFirstLine, then within streamIdle of the last one.
	firstLine := c.opts.StreamFirstLine
	if firstLine <= 0 {
		firstLine = DefaultStreamFirstLine
	}
	var lines atomic.Int64
	watchdog := time.AfterFunc(firstLine, func() { cancel(errSilent) })
	defer watchdog.Stop()
	silent := func() bool { return errors.Is(context.Cause(ctx), errSilent) }
	noFirstLine := func() bool { return silent() && lines.Load() == 0 }

	resp, err := c.http.Do(req)
	if err != nil {
		if noFirstLine() {
			return Meta{}, fmt.Errorf("%s: no answer within %s: %w", op, firstLine, ErrNoStream)
		}
		return Meta{}, &TransportError{Op: op, Err: err}
	}
	defer resp.Body.Close()
	meta := metaOf(resp)
	if meta.Status != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if meta.Status == http.StatusNotModified {
			return meta, nil
		}
		apiErr := decodeError(meta.Status, body)
		apiErr.RetryAfter = int(meta.RetryAfter / time.Second)
		if meta.Status == http.StatusBadRequest {
			return meta, fmt.Errorf("%s: %w (%w)", op, ErrNoStream, apiErr)
		}
		return meta, apiErr
	}
	if ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); ct != api.ContentTypeStream {
		return meta, fmt.Errorf("%s: answer of type %q, not a stream: %w", op, ct, ErrNoStream)
	}
	// Each line is bounded as an answer is: the decoder holds a line whole before decoding it.
	body := &lineBound{r: resp.Body, left: c.answerBound(), entries: entries{limit: c.entryBound()}}
	dec := json.NewDecoder(body)
	cur := p.Base
	curSum := "" // cur's ViewSum once a delta made it (computed from cur's keys at the first delta)
	var lastBeat time.Time
	for {
		var u api.Update
		if err := dec.Decode(&u); err != nil {
			var syntax *json.SyntaxError
			var typ *json.UnmarshalTypeError
			switch {
			case errors.Is(err, ErrAnswerTooLarge), errors.Is(err, ErrAnswerTooManyEntries), errors.Is(err, ErrAnswerNotUTF8):
				return meta, fmt.Errorf("%s: a line of the stream: %w", op, err)
			case errors.As(err, &syntax), errors.As(err, &typ):
				// The server answered, and not with an update: not a lost connection.
				return meta, answerError(op, meta, err)
			case errors.Is(err, io.EOF):
				return meta, nil // the server ended the stream: reconnect from meta.Index
			case noFirstLine():
				return meta, fmt.Errorf("%s: no line within %s (a proxy may buffer the answer): %w", op, firstLine, ErrNoStream)
			case silent():
				return meta, &TransportError{Op: op, Err: fmt.Errorf("no line within %s: %w", streamIdle, err)}
			}
			return meta, &TransportError{Op: op, Err: err}
		}
		lines.Add(1)
		watchdog.Reset(streamIdle)
		body.left = c.answerBound() // the next line's allowance, beyond what the decoder read ahead
		if u.Heartbeat {
			meta.Index = max(meta.Index, u.Revision)
			if wait := heartbeatPace - time.Since(lastBeat); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-ctx.Done():
					t.Stop()
					return meta, &TransportError{Op: op, Err: ctx.Err()}
				case <-t.C:
				}
			}
			lastBeat = time.Now()
			continue
		}
		var v api.View
		if u.IsDelta() {
			if cur == nil {
				return meta, fmt.Errorf("%s: the server sent a delta to a stream without a base", op)
			}
			if err := c.checkGrowth(cur, u.Delta()); err != nil {
				return meta, fmt.Errorf("%s: %w", op, err)
			}
			if v, curSum, err = api.ApplyDeltaSum(*cur, curSum, u.Delta()); err != nil {
				// What the client built is not what the server has: read the view whole, and
				// let the caller reconnect from it.
				full, m, err := c.fullView(ctx, name, p)
				if err != nil {
					return meta, err
				}
				m.Status, m.Index = http.StatusOK, max(m.Index, full.Revision)
				return m, fn(full, m)
			}
		} else {
			v, curSum = u.View(), ""
		}
		meta.Index, meta.Delta = v.Revision, u.IsDelta()
		if err := fn(&v, meta); err != nil {
			return meta, err
		}
		cur = &v
	}
}

// checkGrowth returns ErrViewTooLarge (wrapped) when applying d to base could make a view of
// over MaxAnswerEntries keys, where answers are bounded: it is judged before the view is built
// (a copy of base's keys, and d's new ones), which is what would take the memory. Keys that d
// unsets are not counted off: a view at the bound is not one any server sends.
func (c *Client) checkGrowth(base *api.View, d api.Delta) error {
	limit := c.entryBound()
	if limit == math.MaxInt64 {
		return nil
	}
	n := int64(len(base.Keys))
	for k := range d.Set {
		if _, ok := base.Keys[k]; !ok {
			n++
		}
	}
	if n > limit {
		return fmt.Errorf("delta from revision %d to %d to a view of %d keys: %w", d.Base, d.Revision, len(base.Keys), ErrViewTooLarge)
	}
	return nil
}

// lineBound reads a stream for a json.Decoder, failing with ErrAnswerTooLarge once left bytes
// were read since the last line was decoded: a line may then hold at most left bytes more than
// the decoder had read ahead of it (itself bounded so).
type lineBound struct {
	r    io.Reader
	left int64
	// entries counts each line's JSON entries, and utf8 checks them (neither with limit
	// math.MaxInt64: the CLI's).
	entries entries
	utf8    utf8Check
}

func (b *lineBound) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, ErrAnswerTooLarge
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	if b.entries.limit < math.MaxInt64 {
		// A line over the bound is not passed on, nor what came with it.
		if b.entries.scan(p[:n]); b.entries.over {
			return 0, ErrAnswerTooManyEntries
		}
		if b.utf8.scan(p[:n]); b.utf8.bad {
			return 0, ErrAnswerNotUTF8
		}
	}
	return n, err
}
