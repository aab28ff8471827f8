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
	if c != nil || s != nil {
		p.flushes++
	}
	p.mu.Unlock()
	if c != nil {
		if err := SaveCache(c.dir, c.c); err != nil {
			p.log.Error("cache not saved", "error", err.Error())
		}
	}
	if s != nil {
		if err := saveStatus(s.dir, s.s); err != nil {
			p.log.Warn("status not saved", "error", err.Error())
		}
	}
}

// close writes what is pending and stops the writer. No put may follow.
func (p *persister) close() {
	close(p.wake)
	<-p.done
	p.flush()
}
