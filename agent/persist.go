package agent

import (
	"log/slog"
	"sync"
)

// persister writes the cache and the status file off the render path: the loop hands it the
// latest snapshot and goes on, and a burst of changes costs one write of the last one.
type persister struct {
	log    *slog.Logger
	mu     sync.Mutex
	cache  *cacheJob
	status *statusJob
	wake   chan struct{}
	done   chan struct{}
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
	p := &persister{log: log, wake: make(chan struct{}, 1), done: make(chan struct{})}
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
		p.flush()
	}
}

func (p *persister) flush() {
	p.mu.Lock()
	c, s := p.cache, p.status
	p.cache, p.status = nil, nil
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
