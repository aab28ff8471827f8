package server

import (
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the server's Prometheus metrics, on a registry of its own.
type metrics struct {
	reg         *prometheus.Registry
	requests    *prometheus.CounterVec
	latency     *prometheus.HistogramVec
	longPolls   prometheus.Gauge
	viewReads   prometheus.Counter
	watchEvents prometheus.Counter
	revision    prometheus.Gauge
	rateLimited prometheus.Counter
	etcdLatency *prometheus.HistogramVec
	etcdErrors  *prometheus.CounterVec
	// routes are the series of each route's 200 answers, by pattern: filled before the
	// server serves (addRoute), read-only after.
	routes map[string]*routeSeries
}

// routeSeries are one route's series of 200 answers, looked up once: WithLabelValues hashes
// the labels and takes the vector's lock for every answer, a cache line that both cores
// share while 10,000 long-polls are answered.
type routeSeries struct {
	once    sync.Once
	ok      prometheus.Counter
	latency prometheus.Observer
}

// addRoute readies the series of route (a ServeMux pattern); call it before serving.
func (m *metrics) addRoute(route string) {
	if m.routes == nil {
		m.routes = map[string]*routeSeries{}
	}
	m.routes[route] = &routeSeries{}
}

// observe counts one answer of route with status, which took d.
func (m *metrics) observe(route string, status int, d time.Duration) {
	if rs := m.routes[route]; rs != nil && status == 200 {
		// The series appear on their first answer, as WithLabelValues makes them.
		rs.once.Do(func() {
			rs.ok = m.requests.WithLabelValues(route, "200")
			rs.latency = m.latency.WithLabelValues(route)
		})
		rs.ok.Inc()
		rs.latency.Observe(d.Seconds())
		return
	}
	m.requests.WithLabelValues(route, strconv.Itoa(status)).Inc()
	m.latency.WithLabelValues(route).Observe(d.Seconds())
}

func newMetrics(version string) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoelace_http_requests_total",
			Help: "HTTP requests answered, by route and status code.",
		}, []string{"route", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "shoelace_http_request_duration_seconds",
			Help:    "Time to answer HTTP requests (long-polls included), by route.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 600},
		}, []string{"route"}),
		longPolls: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoelace_long_polls_open",
			Help: "Long-polls waiting for a change on this replica.",
		}),
		viewReads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoelace_view_reads_total",
			Help: "Appliance views read from the store.",
		}),
		watchEvents: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoelace_watch_events_total",
			Help: "Revisions (and progress notifications) received from the store watch.",
		}),
		revision: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoelace_store_revision",
			Help: "Highest store revision seen by this replica.",
		}),
		rateLimited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoelace_rate_limited_total",
			Help: "Requests refused with 429.",
		}),
		etcdLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "shoelace_etcd_request_duration_seconds",
			Help:    "Time of etcd requests (each attempt), by gRPC method such as KV/Range.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"method"}),
		etcdErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoelace_etcd_request_errors_total",
			Help: "etcd requests that failed, by gRPC method and status code (Canceled: the client went away).",
		}, []string{"method", "code"}),
	}
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "shoelace_build_info",
		Help:        "Build of the running server (always 1).",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
	})
	build.Set(1)
	m.reg.MustRegister(m.requests, m.latency, m.longPolls, m.viewReads, m.watchEvents, m.revision,
		m.rateLimited, m.etcdLatency, m.etcdErrors, build,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// observeEtcd records one etcd request (a store.Observer).
func (m *metrics) observeEtcd(method, code string, d time.Duration) {
	m.etcdLatency.WithLabelValues(method).Observe(d.Seconds())
	if code != "OK" {
		m.etcdErrors.WithLabelValues(method, code).Inc()
	}
}
