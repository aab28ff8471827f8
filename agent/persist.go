package agent

import (
	"log/slog"
	"sync"
	"time"
)

// How long the persister lets snapshots settle before it writes them.
const (
	// persistQuiet is the pause in puts after which the last snapshot is written.
	persistQuiet = 50 * time.Millisecond
	// persistMax bounds how long a snapshot waits during a steady stream of changes: the
	// cache lags the installed files by at most this much.
	persistMax = 500 * time.Millisecond
)

// retryPause is the pause before a write to disk that failed (a full disk, a read-only file
// system: the cache and status files, an install) is tried again, after a pause of prev (0:
// the first try failed): 1 s, doubling while the writes keep failing, at most a minute.
func retryPause(prev time.Duration) time.Duration {
	return min(max(2*prev, time.Second), time.Minute)
}

// persister writes the cache and the status file off the render path: the loop hands it the
// latest snapshot and goes on. Snapshots are written once puts pause for persistQuiet (at the
// latest persistMax after the first one waiting), so that a burst of changes costs one write
// of the last one and the writes do not compete for the CPU and the disk with the renders of
// the burst.
type persister struct {
	log    *slog.Logger
	mu     sync.Mutex
	cache  *cacheJob
	status *statusJob
	wake   chan struct{}
	done   chan struct{}
	quiet  time.Duration
	max    time.Duration
	// retry is the pause before the next try of a write that failed (0: none failed); closed
	// says that close has begun, after which nothing wakes the writer.
	retry  time.Duration
	closed bool
	// cacheErr is why the last write of the cache failed ("" once one succeeded), which every
	// status written carries; lastStatus is the last status written, written again when
	// cacheErr changes and no newer one waits. Both are the writer's alone.
	cacheErr   string
	lastStatus *statusJob
	// enrolled is when the agent last enrolled (enrolledNow): a status made before it says
	// why it was not enrolled no more; rewrite has the writer write the last status again.
	enrolled time.Time
	rewrite  bool
	// flushes counts the flushes that wrote something (for tests).
	flushes int
}

type cacheJob struct {
	dir string
	c   Cached
}

type statusJob struct {
	dir string
	s   *Status
}

func startPersister(log *slog.Logger) *persister {
	return startPersisterAfter(log, persistQuiet, persistMax)
}

func startPersisterAfter(log *slog.Logger, quiet, max time.Duration) *persister {
	p := &persister{log: log, wake: make(chan struct{}, 1), done: make(chan struct{}), quiet: quiet, max: max}
	go p.loop()
	return p
}

// put replaces the pending snapshots (nil keeps one) and wakes the writer.
func (p *persister) put(c *cacheJob, s *statusJob) {
	p.mu.Lock()
	if c != nil {
		p.cache = c
	}
	if s != nil {
		p.status = s
	}
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func (p *persister) loop() {
	defer close(p.done)
	for range p.wake {
		// Something waits: let the burst settle, then write its last snapshot.
		deadline := time.NewTimer(p.max)
		quiet := time.NewTimer(p.quiet)
	settle:
		for {
			select {
			case _, ok := <-p.wake:
				if !ok {
					break settle // closing: close flushes
				}
				quiet.Reset(p.quiet)
			case <-quiet.C:
				break settle
			case <-deadline.C:
				break settle
			}
		}
		deadline.Stop()
		quiet.Stop()
		p.flush()
	}
}

func (p *persister) flush() {
	p.mu.Lock()
	c, s := p.cache, p.status
	p.cache, p.status = nil, nil
	enrolled := p.enrolled
	if p.rewrite && s == nil {
		s = p.lastStatus
	}
	p.rewrite = false
	if c != nil || s != nil {
		p.flushes++
	}
	p.mu.Unlock()
	failed := false
	if c != nil {
		cacheErr := ""
		if err := SaveCache(c.dir, c.c); err != nil {
			p.log.Error("cache not saved", "error", err.Error())
			failed = true
			p.keep(c, nil)
			cacheErr = err.Error()
		}
		if cacheErr != p.cacheErr {
			// status says so (or no longer), though no pass changed the status.
			p.cacheErr = cacheErr
			if s == nil {
				s = p.lastStatus
			}
		}
	}
	if s != nil {
		st := *s.s
		st.CacheError = p.cacheErr
		if st.Updated.Before(enrolled) {
			st.NotEnrolled = ""
		}
		if err := saveStatus(s.dir, &st); err != nil {
			p.log.Warn("status not saved", "error", err.Error())
			failed = true
			p.keep(nil, s)
		} else {
			p.lastStatus = s
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !failed {
		p.retry = 0
		return
	}
	// Not written: tried again after a pause (unless a newer snapshot comes first), so that the
	// cache does not keep an older view until the next change once the disk has room again.
	p.retry = retryPause(p.retry)
	if !p.closed {
		time.AfterFunc(p.retry, p.poke)
	}
}

// enrolledNow says that the agent enrolled (in the background, between passes): status says
// so at once, not at the next pass.
func (p *persister) enrolledNow() {
	p.mu.Lock()
	p.enrolled, p.rewrite = time.Now(), true
	p.mu.Unlock()
	p.poke()
}

// keep puts back a snapshot that was not written, unless a newer one is pending.
func (p *persister) keep(c *cacheJob, s *statusJob) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c != nil && p.cache == nil {
		p.cache = c
	}
	if s != nil && p.status == nil {
		p.status = s
	}
}

// poke wakes the writer to try again what it could not write, unless it is closing.
func (p *persister) poke() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// close writes what is pending and stops the writer. No put may follow.
func (p *persister) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	close(p.wake)
	<-p.done
	p.flush()
}
