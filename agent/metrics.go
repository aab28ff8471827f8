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
	counter := func(name, help string, v int64) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s counter\n%s %d\n", name, help, name, name, v)
	}
	gauge := func(name, help string, v int64) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s gauge\n%s %d\n", name, help, name, name, v)
	}
	counter("shoelace_agent_renders_total", "Templates written because their output changed.", m.renders.Load())
	counter("shoelace_agent_render_failures_total", "Templates not installed (render error, failed check, write error).", m.renderFailures.Load())
	counter("shoelace_agent_check_failures_total", "Staged files a check refused (the old file was kept).", m.checkFailures.Load())
	counter("shoelace_agent_commands_total", "Commands run.", m.commands.Load())
	counter("shoelace_agent_command_failures_total", "Commands that failed or timed out.", m.commandFailures.Load())
	counter("shoelace_agent_health_failures_total", "Health commands that failed after their retries (the reload failed).", m.healthFailures.Load())
	counter("shoelace_agent_rollbacks_total", "Failed reloads whose group got its previous files back.", m.rollbacks.Load())
	counter("shoelace_agent_restores_total", "Files put back because they changed on disk since the agent installed them.", m.restores.Load())
	counter("shoelace_agent_poll_errors_total", "Failed requests to the server.", m.pollErrors.Load())
	gauge("shoelace_agent_applied_revision", "Last revision at which every template was in place.", h.applied.Load())
	gauge("shoelace_agent_view_revision", "Revision of the view the agent renders from.", m.viewRevision.Load())
	gauge("shoelace_agent_last_sync_timestamp_seconds", "When the agent last received a view from the server.", m.lastSync.Load())
	since := int64(-1) // never synced
	if last := m.lastSync.Load(); last > 0 {
		since = max(time.Now().Unix()-last, 0)
	}
	gauge("shoelace_agent_seconds_since_last_sync", "Seconds since the agent last received a view from the server (-1: never).", since)
	var c int64
	if m.fromCache.Load() {
		c = 1
	}
	gauge("shoelace_agent_from_cache", "1 while the agent renders from its cached view.", c)
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
