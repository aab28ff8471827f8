package agent

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/client"
)

const (
	// reportTimeout bounds one report request.
	reportTimeout = 30 * time.Second
	// reportEvery is the least time between two reports.
	reportEvery = 100 * time.Millisecond
)

// report is what the agent tells the server after a pass at v that leaves k applied:
// that revision, the rollout it was of (after a failed pass, not v's: the candidate of a
// rollout halted since, or the live view before the candidate that failed), and the pass's
// first failure (a template not in place, or whose reload failed): a template left out
// because another of its group failed is not what the report names.
func (a *Agent) report(v *view, k ack) api.Report {
	r := api.Report{Instance: a.instance, Revision: v.Revision, Applied: k.applied, Rollout: v.Rollout, AppliedRollout: k.rollout, Version: a.opts.Version}
	var first *tmpl
	for _, t := range a.tmpls {
		if t.err != nil && (first == nil || t.failedAt < first.failedAt) {
			first = t
		}
	}
	if first != nil {
		r.Error, r.Stage, r.Template = first.err.Error(), first.stage, first.name()
	}
	return r
}

// reporter posts reports off the render path, one at a time and in order, at most one per
// reportEvery: a report put while another is being sent, or within reportEvery of it, replaces
// the one waiting, never the one in flight. A report whose
// outcome (applied revision and its rollout, rollout, error) equals the last one the server took is not sent.
// A server without the report route (404) or that refuses it is logged at debug, once; one
// that cannot be reached is tried again with backoff until a newer report replaces it.
type reporter struct {
	log    *slog.Logger
	taken  *atomic.Bool  // set when the server takes a report, cleared when it refuses one
	every  time.Duration // reportEvery
	mu     sync.Mutex
	next   *reportJob
	latest *reportJob // the last report put, sent or not
	again  bool       // send latest once more, whatever its outcome (see resend)
	wake   chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

type reportJob struct {
	c         *client.Client
	appliance string
	r         api.Report
}

func startReporter(log *slog.Logger, taken *atomic.Bool) *reporter {
	return startReporterEvery(log, taken, reportEvery)
}

func startReporterEvery(log *slog.Logger, taken *atomic.Bool, every time.Duration) *reporter {
	ctx, cancel := context.WithCancel(context.Background())
	p := &reporter{log: log, taken: taken, every: every, wake: make(chan struct{}, 1), ctx: ctx, cancel: cancel, done: make(chan struct{})}
	go p.loop()
	return p
}

// put queues r, replacing a report not sent yet.
func (p *reporter) put(c *client.Client, appliance string, r api.Report) {
	p.mu.Lock()
	p.next = &reportJob{c: c, appliance: appliance, r: r}
	p.latest = p.next
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// resend makes the reporter send the last report put once more, even when no newer one comes
// and the server took it already: the instance has just enrolled, and the server does not
// record for an enrolled name what the appliance token reported of it before (an agent that
// enrolled late, after a refusal, left its applied revision unreported until its next change).
// It is the last one put, with the client it was put with (the agent's at the time), not the
// last one the server took: after a reload (a new client), or a report refused meanwhile
// (its instance token revoked), the one taken went with an old client and its refused token,
// and an instance enrolled again showed applied 0 until the appliance changed.
func (p *reporter) resend() {
	p.mu.Lock()
	p.again = true
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// take returns the report waiting, else the last one put when a resend was asked, and whether
// it goes whatever its outcome.
func (p *reporter) take() (*reportJob, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	j, again := p.next, p.again
	if j == nil && again {
		j = p.latest
	}
	p.next, p.again = nil, false
	return j, again
}

// outcome is what decides whether a report is worth sending.
func outcome(r api.Report) api.Report {
	return api.Report{Applied: r.Applied, Rollout: r.Rollout, AppliedRollout: r.AppliedRollout, Error: r.Error, Stage: r.Stage, Template: r.Template}
}

func (p *reporter) loop() {
	defer close(p.done)
	var sent *api.Report // the outcome the server last took
	var last time.Time   // when the last report was sent
	loggedFailure := ""
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-p.wake:
		}
		for failures := 0; ; {
			// At most one report per p.every: the first of a burst of changes goes at once, the
			// last one put meanwhile goes p.every after it (a report to the server per change
			// competes with the next change for the CPU, here and on the server).
			if wait := time.Until(last.Add(p.every)); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-p.ctx.Done():
					t.Stop()
					return
				case <-t.C:
				}
			}
			j, again := p.take()
			if j == nil {
				break
			}
			if o := outcome(j.r); !again && sent != nil && *sent == o {
				break
			}
			ctx, cancel := context.WithTimeout(p.ctx, reportTimeout)
			err := j.c.Report(ctx, j.appliance, j.r)
			cancel()
			last = time.Now()
			if p.ctx.Err() != nil {
				return
			}
			if err == nil {
				o := outcome(j.r)
				sent, failures, loggedFailure = &o, 0, ""
				p.taken.Store(true)
				p.log.Debug("reported", "revision", j.r.Revision, "applied", j.r.Applied, "rollout", j.r.Rollout, "error", j.r.Error)
				continue
			}
			var ae *api.Error
			if errors.As(err, &ae) && ae.Status < http.StatusInternalServerError && ae.Status != http.StatusTooManyRequests {
				// The server does not take reports (one without the route) or refuses this one.
				p.taken.Store(false)
				if msg := err.Error(); msg != loggedFailure {
					p.log.Debug("report not taken", "error", msg)
					loggedFailure = msg
				}
				break
			}
			failures++
			if msg := err.Error(); msg != loggedFailure {
				p.log.Debug("report not sent; trying again", "error", msg)
				loggedFailure = msg
			}
			// Try again after a pause, unless a newer report comes first (then it goes instead).
			p.mu.Lock()
			if p.next == nil {
				p.next = j
			}
			p.again = p.again || again // a resend that failed is still owed
			p.mu.Unlock()
			t := time.NewTimer(backoff(failures, 0))
			select {
			case <-p.ctx.Done():
				t.Stop()
				return
			case <-t.C:
			case <-p.wake:
				t.Stop()
			}
		}
	}
}

// close stops the reporter; a report not sent yet is dropped (the next run reports again).
func (p *reporter) close() {
	p.cancel()
	<-p.done
}
