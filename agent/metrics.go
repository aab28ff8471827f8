package agent

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// metrics are the agent's counters, served in Prometheus' text format on metrics_listen.
// They are written by hand to keep the agent's binary small.
type metrics struct {
	renders, renderFailures, checkFailures, commands, commandFailures, pollErrors atomic.Int64
	healthFailures, rollbacks, restores                                           atomic.Int64
	viewRevision, lastSync                                                        atomic.Int64
	fromCache                                                                     atomic.Bool
}

type metricsHandler struct {
	m       *metrics
	applied *atomic.Int64
}

func (h metricsHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m := h.m
	if r.URL.Path != "/metrics" {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	since := int64(-1) // never synced
	if last := m.lastSync.Load(); last > 0 {
		since = max(time.Now().Unix()-last, 0)
	}
	var fromCache int64
	if m.fromCache.Load() {
		fromCache = 1
	}
	// One loop over a table, not a call per metric: the agent's binary is kept small.
	for _, s := range [...]struct {
		name, kind, help string
		v                int64
	}{
		{"shoelace_agent_renders_total", "counter", "Templates written because their output changed.", m.renders.Load()},
		{"shoelace_agent_render_failures_total", "counter", "Templates not installed (render error, failed check, write error).", m.renderFailures.Load()},
		{"shoelace_agent_check_failures_total", "counter", "Staged files a check refused (the old file was kept).", m.checkFailures.Load()},
		{"shoelace_agent_commands_total", "counter", "Commands run.", m.commands.Load()},
		{"shoelace_agent_command_failures_total", "counter", "Commands that failed or timed out.", m.commandFailures.Load()},
		{"shoelace_agent_health_failures_total", "counter", "Health commands that failed after their retries (the reload failed).", m.healthFailures.Load()},
		{"shoelace_agent_rollbacks_total", "counter", "Failed reloads whose group got its previous files back.", m.rollbacks.Load()},
		{"shoelace_agent_restores_total", "counter", "Files put back because they changed on disk since the agent installed them.", m.restores.Load()},
		{"shoelace_agent_poll_errors_total", "counter", "Failed requests to the server.", m.pollErrors.Load()},
		{"shoelace_agent_applied_revision", "gauge", "Last revision at which every template was in place.", h.applied.Load()},
		{"shoelace_agent_view_revision", "gauge", "Revision of the view the agent renders from.", m.viewRevision.Load()},
		{"shoelace_agent_last_sync_timestamp_seconds", "gauge", "When the agent last received a view from the server.", m.lastSync.Load()},
		{"shoelace_agent_seconds_since_last_sync", "gauge", "Seconds since the agent last received a view from the server (-1: never).", since},
		{"shoelace_agent_from_cache", "gauge", "1 while the agent renders from its cached view.", fromCache},
	} {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n%s %d\n", s.name, s.help, s.name, s.kind, s.name, s.v)
	}
}

// serveMetrics serves /metrics on addr until ctx ends.
func (a *Agent) serveMetrics(ctx context.Context, addr string) (stop func(), err error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics_listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", metricsHandler{&a.metrics, &a.applied})
	mux.Handle("/metrics/", http.NotFoundHandler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(l)
	a.log.Info("serving metrics", "addr", l.Addr().String())
	return func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}, nil
}
