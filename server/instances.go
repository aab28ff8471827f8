package server

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// instancePrefix is where agents' reports live among the system keys:
// instances/<appliance>/<instance>.
const instancePrefix = "instances/"

// Timings of instance reports.
const (
	// instanceRefresh is how often an unchanged report is written again (last_seen).
	instanceRefresh = time.Minute
	// instanceExpiry is how long a silent instance stays listed; older reports are removed.
	instanceExpiry = 7 * 24 * time.Hour
)

// reporter writes agents' reports to the store in the background, at most once a minute per
// instance unless what it applied changed, so that view requests never wait for it.
type reporter struct {
	mu      sync.Mutex
	written map[string]reported
	swept   time.Time
	ch      chan api.Instance
	window  time.Duration // reportWindow; tests make it longer
}

type reported struct {
	applied int64
	at      time.Time
}

func newReporter() *reporter {
	return &reporter{written: map[string]reported{}, ch: make(chan api.Instance, 1024), window: reportWindow}
}

// note queues in for writing when it says something new.
func (r *reporter) note(in api.Instance) {
	key := in.Appliance + "/" + in.Instance
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := in.LastSeen; now.Sub(r.swept) > time.Hour {
		for k, w := range r.written {
			if now.Sub(w.at) > time.Hour {
				delete(r.written, k)
			}
		}
		r.swept = now
	}
	if w, ok := r.written[key]; ok && w.applied == in.Applied && in.LastSeen.Sub(w.at) < instanceRefresh {
		return
	}
	select {
	case r.ch <- in:
		r.written[key] = reported{applied: in.Applied, at: in.LastSeen}
	default: // full: the next request reports again
	}
}

// reportBatch is the most reports written in one transaction: a change of shared/ moves the
// applied revision of every agent at once, and their reports arrive together.
const reportBatch = 256

// reportWindow is how long the reporter collects reports before it writes them: during a stream
// of changes every agent's applied revision moves with each one, and writing each report at once
// cost one etcd write per change (as many as the pipeline's own) for no reader's benefit.
const reportWindow = 100 * time.Millisecond

// runReporter writes queued reports until ctx ends: those that arrive within reportWindow of the
// first (up to reportBatch) go into one transaction, the latest report of an instance winning.
func (s *Server) runReporter(ctx context.Context) {
	for {
		var in api.Instance
		select {
		case <-ctx.Done():
			return
		case in = <-s.reports.ch:
		}
		batch := map[string]api.Instance{instancePrefix + in.Appliance + "/" + in.Instance: in}
		window := time.NewTimer(s.reports.window)
	more:
		for len(batch) < reportBatch {
			select {
			case in = <-s.reports.ch:
				batch[instancePrefix+in.Appliance+"/"+in.Instance] = in // the later report wins
			case <-window.C:
				break more
			case <-ctx.Done():
				window.Stop()
				return // agents report again to the replica they reach next
			}
		}
		window.Stop()
		kvs := make(map[string][]byte, len(batch))
		for k, in := range batch {
			kvs[k], _ = json.Marshal(in)
		}
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if _, err := s.st.SysPutAll(wctx, kvs); err != nil && ctx.Err() == nil {
			s.log.Warn("record instance reports", "reports", len(batch), "err", err)
			s.reports.mu.Lock()
			for _, in := range batch {
				delete(s.reports.written, in.Appliance+"/"+in.Instance) // the next request reports again
			}
			s.reports.mu.Unlock()
		}
		cancel()
	}
}

// agentReport reads an agent's X-Shoelace-Instance and X-Shoelace-Applied, if sent.
func agentReport(r *http.Request, name string) (*api.Instance, error) {
	inst := r.Header.Get(api.HeaderInstance)
	applied := r.Header.Get(api.HeaderApplied)
	if inst == "" {
		if applied != "" {
			return nil, api.Errorf(api.CodeInvalidRequest, "header %s needs %s", api.HeaderApplied, api.HeaderInstance)
		}
		return nil, nil
	}
	if err := api.ValidateSegment("instance name (X-Shoelace-Instance)", inst); err != nil {
		return nil, err
	}
	in := &api.Instance{Appliance: name, Instance: inst, LastSeen: time.Now().UTC().Truncate(time.Second), Remote: clientIP(r), Token: principalOf(r).name}
	if applied != "" {
		n, err := strconv.ParseInt(applied, 10, 64)
		if err != nil || n < 0 {
			return nil, api.Errorf(api.CodeInvalidRequest, "header %s must be a revision (an integer >= 0), not %s", api.HeaderApplied, shorten(applied))
		}
		in.Applied = n
	}
	return in, nil
}

func (s *Server) handleInstances(w http.ResponseWriter, r *http.Request) error {
	if _, err := query(r); err != nil {
		return err
	}
	name := r.PathValue("name")
	if err := api.ValidateSegment("appliance name", name); err != nil {
		return err
	}
	if err := principalOf(r).mayReadView(name); err != nil {
		return err
	}
	ctx, cancel := s.opCtx(r)
	defer cancel()
	m, rev, err := s.st.SysList(ctx, instancePrefix+name+"/")
	if err != nil {
		return err
	}
	out := api.Instances{Appliance: name, Instances: []api.Instance{}}
	now := time.Now()
	for k, v := range m {
		var in api.Instance
		if err := json.Unmarshal(v, &in); err != nil || !strings.HasPrefix(k, instancePrefix+name+"/") {
			continue
		}
		if now.Sub(in.LastSeen) > instanceExpiry {
			_, _ = s.st.SysDelete(ctx, k)
			continue
		}
		out.Instances = append(out.Instances, in)
	}
	slices.SortFunc(out.Instances, func(a, b api.Instance) int { return strings.Compare(a.Instance, b.Instance) })
	return writeJSON(w, http.StatusOK, rev, out)
}
