package store

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// Health checks etcd: reachable, has a leader, how long a linearizable read took, and the
// cluster's alarms (NOSPACE: its database reached --quota-backend-bytes and every write is
// refused until an operator frees space and disarms it).
//
// The returned Health is filled in either way; the error is non-nil (an api.CodeUnavailable
// error) exactly when etcd is unreachable or has no leader. An alarm is no error (reads go on):
// Alarms name it and Error says what it does.
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
		// A member that cannot be asked for its alarms says nothing of them: the read
		// above is what health is.
		if resp, aerr := s.cli.AlarmList(ctx); aerr == nil {
			for _, a := range resp.Alarms {
				if t := a.Alarm.String(); a.Alarm != etcdserverpb.AlarmType_NONE && !slices.Contains(h.Alarms, t) {
					h.Alarms = append(h.Alarms, t)
				}
			}
		}
		if _, low := s.LowDisk(); low {
			h.Alarms = append(h.Alarms, LowDiskAlarm)
		}
		h.Error = AlarmsError(h.Alarms)
		s.probe.answered()
		return h, nil
	}
	err = s.etcdErr(ctx, "etcd health", err)
	h.Error = err.Error()
	var probed <-chan struct{}
	if s.embed == nil {
		probed = s.probe.start(s)
	}
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
	if !h.Reachable && s.embed == nil {
		// "did not answer in time" is all the client says when etcd refuses the TLS handshake
		// (a client certificate that expired, a CA that changed): a probe of the endpoints,
		// started with the status requests, names the cause, as at start.
		if why := s.probe.result(probed, 500*time.Millisecond); why != "" {
			h.Error += "; " + why
		}
	}
	return h, api.Errorf(api.CodeUnavailable, "%s", h.Error)
}

// endpointProbe runs probeEndpoints for Health, one probe at a time and at most one a second,
// and logs a problem it finds once, until the store answers again.
type endpointProbe struct {
	mu      sync.Mutex
	running chan struct{} // closed when the probe in flight ends; nil when none is
	at      time.Time     // when the last probe ended
	why     string        // what it found ("" when nothing, or since the store answered)
	logged  string        // the problem last logged
}

// start starts a probe unless one is in flight or one ended less than a second ago, and returns
// what closes when the one in flight ends (nil when none is).
func (p *endpointProbe) start(s *Store) <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.running != nil || time.Since(p.at) < time.Second {
		return p.running
	}
	done := make(chan struct{})
	p.running = done
	go func() {
		why, _ := probeEndpoints(s.cli.Endpoints(), s.tlsCfg, min(s.cfg.DialTimeout, 2*time.Second))
		p.mu.Lock()
		p.why, p.at, p.running = why, time.Now(), nil
		p.mu.Unlock()
		p.report(s, why)
		close(done)
	}()
	return done
}

// report logs what a probe found (the one at start as those of Health) unless it is what was
// logged last since the store last answered: an outage is logged once, not once at start and
// again at the first health check.
func (p *endpointProbe) report(s *Store, why string) {
	p.mu.Lock()
	logIt := why != "" && why != p.logged && s.ctx.Err() == nil
	if logIt {
		p.logged = why
	}
	p.mu.Unlock()
	if logIt {
		s.log.Warn("etcd endpoint check", "problem", why)
	}
}

// result returns what the latest probe found, waiting up to wait for the one in flight (done):
// a probe of endpoints that do not answer takes its dial timeouts, which are not Health's to
// wait out; a later call gets what it found.
func (p *endpointProbe) result(done <-chan struct{}, wait time.Duration) string {
	if done != nil {
		t := time.NewTimer(wait)
		select {
		case <-done:
		case <-t.C:
		}
		t.Stop()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.why
}

// answered forgets what the probes found: the store answers.
func (p *endpointProbe) answered() {
	p.mu.Lock()
	p.why, p.logged = "", ""
	p.mu.Unlock()
}

// Health is what Store.Health found.
type Health struct {
	Reachable bool          `json:"reachable"`
	Leader    bool          `json:"leader"`
	Latency   time.Duration `json:"-"`
	Endpoints []string      `json:"endpoints"`
	// Alarms are the etcd cluster's alarms raised (NOSPACE, CORRUPT), none when it has none.
	Alarms []string `json:"alarms,omitempty"`
	Error  string   `json:"error,omitempty"`
}

// AlarmsError says what etcd's alarms do ("" when there are none); it names no address.
func AlarmsError(alarms []string) string {
	var parts []string
	for _, a := range alarms {
		switch a {
		case etcdserverpb.AlarmType_NOSPACE.String():
			parts = append(parts, "etcd is out of space (alarm NOSPACE: its database reached --quota-backend-bytes) and refuses every write until an operator compacts, defragments and runs 'etcdctl alarm disarm'; reads go on")
		case LowDiskAlarm:
			parts = append(parts, "the file system of the embedded etcd's data dir is nearly full (under the free space --min-free-disk keeps, 256 MiB by default): writes are refused (not applied) until space is freed there, since etcd stops the server when a write of its data fails; reads go on")
		case etcdserverpb.AlarmType_CORRUPT.String():
			parts = append(parts, "etcd found its data corrupt on a member (alarm CORRUPT): restore that member")
		default:
			parts = append(parts, "etcd raised alarm "+a)
		}
	}
	return strings.Join(parts, "; ")
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
//
// Only tests call it, on an etcd that every test of their package shares: the deletion of its
// history took longer than one request's timeout on a loaded machine, so it has two minutes.
func (s *Store) Compact(ctx context.Context, rev int64) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if _, err := s.cli.Compact(ctx, rev, clientv3.WithCompactPhysical()); err != nil {
		return s.etcdErr(ctx, fmt.Sprintf("compact to %d", rev), err)
	}
	return nil
}
