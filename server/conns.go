package server

import (
	"container/list"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// File descriptors kept for the store and the process whatever the connections take: etcd's
// WAL, snapshot and database files (an embedded etcd aborts the process when it cannot open
// its snapshot directory), its gRPC connections, the logs. The reserve is a quarter of the
// file limit, within [fdReserveMin, fdReserveMax].
const (
	fdReserveMin = 128
	fdReserveMax = 1024
	// minConns is the least connection cap, however low the file limit.
	minConns = 16
)

// fdReserve is the descriptors kept for the store and the process under the file limit nofile
// (0: unknown, the most).
func fdReserve(nofile uint64) uint64 {
	if nofile == 0 {
		return fdReserveMax
	}
	return min(max(nofile/4, fdReserveMin), fdReserveMax)
}

// connCap is the cap on open connections for a requested cap (0 = DefaultMaxConns) and a file
// limit nofile (0 = unknown): the request, lowered to nofile less the reserve (never below
// minConns). lowered says the request did not fit.
func connCap(want int, nofile uint64) (limit int, lowered bool) {
	if want <= 0 {
		want = DefaultMaxConns
	}
	if nofile == 0 {
		return want, false
	}
	reserve := fdReserve(nofile)
	fit := uint64(minConns)
	if nofile > reserve+minConns {
		fit = nofile - reserve
	}
	if uint64(want) > fit {
		return int(fit), true
	}
	return want, false
}

// connLimiter is a listener that caps open connections in total and, for connections that have
// not yet presented a valid token, per client address; a connection over a cap is closed at
// once (after a 503 on plain HTTP), so that a flood costs the process no more descriptors than
// the caps allow. At the total cap, a new connection first takes the place of one that holds
// a place without using it: the connection idle longest between requests, else the oldest that
// has sent no whole request for newGrace. Otherwise whoever opened connections first (one
// agent token's keep-alives, one address's silent connections) would lock every other client
// out of the replica. It also shortens the idle time of unauthenticated keep-alive connections:
// its connState and connContext go on the http.Server, and a handler marks its connection
// authenticated with markAuthenticated.
type connLimiter struct {
	net.Listener
	max        int
	maxPerAddr int           // 0: no per-address cap
	unauthIdle time.Duration // 0: unauthenticated connections idle as long as the others
	answer503  bool          // plain HTTP: answer a refused connection 503 before closing it
	log        *slog.Logger
	// stamp gives the X-Shoelace-Index and X-Shoelace-Store of a refusal's 503, as every
	// answer carries them; nil: the answer goes without them.
	stamp func() (index int64, store string)

	openGauge prometheus.GaugeFunc
	refused   *prometheus.CounterVec
	evicted   prometheus.Counter
	newGrace  time.Duration // how long a new connection may be silent before it can be closed for another

	mu       sync.Mutex
	open     int
	unauth   map[string]int // open unauthenticated connections by client address
	idle     *list.List     // connections idle between requests, the longest idle first
	fresh    *list.List     // connections that have not yet sent a whole request, the oldest first
	loggedAt time.Time      // last "refusing connections" line
	unlogged int            // refusals since then
}

// refusalLogEvery spaces the log lines about refused connections during a flood.
const refusalLogEvery = 10 * time.Second

// newConnGrace is how long a new connection may stay without a whole request before a newer
// one may take its place at the total cap: clients send their request (or TLS handshake) at once.
const newConnGrace = time.Second

func newConnLimiter(ln net.Listener, max, maxPerAddr int, unauthIdle time.Duration, plainHTTP bool, log *slog.Logger) *connLimiter {
	l := &connLimiter{
		Listener: ln, max: max, maxPerAddr: maxPerAddr, unauthIdle: unauthIdle, answer503: plainHTTP, log: log,
		unauth: map[string]int{}, idle: list.New(), fresh: list.New(), newGrace: newConnGrace,
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoelace_connections_refused_total",
			Help: "Client connections closed at once because a cap was reached, by cap: total (--max-conns) or addr (--max-conns-per-addr).",
		}, []string{"cap"}),
	}
	l.refused.WithLabelValues("total")
	l.refused.WithLabelValues("addr")
	l.evicted = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "shoelace_connections_evicted_total",
		Help: "Connections closed at --max-conns to make room for a new one: idle between requests, or silent since they opened.",
	})
	l.openGauge = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "shoelace_connections_open",
		Help: "Open client connections of this replica (capped by --max-conns).",
	}, func() float64 {
		l.mu.Lock()
		defer l.mu.Unlock()
		return float64(l.open)
	})
	return l
}

// collectors are the limiter's metrics.
func (l *connLimiter) collectors() []prometheus.Collector {
	return []prometheus.Collector{l.openGauge, l.refused, l.evicted}
}

// Accept returns the next connection within the caps, closing those over them.
func (l *connLimiter) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			// EMFILE and ENFILE are temporary errors: http.Server backs off and tries again.
			return nil, err
		}
		if tc := l.admit(c); tc != nil {
			return tc, nil
		}
	}
}

// The bodies of the answers of refused connections on plain HTTP, written before the request is read.
var (
	refusedTotal = refusedBody("too many open connections on this replica (--max-conns); retry later")
	refusedAddr  = refusedBody("too many connections without a valid token from this address (--max-conns-per-addr); retry later")
)

func refusedBody(msg string) []byte {
	body, _ := json.Marshal(api.ErrorBody{Error: &api.Error{Code: api.CodeUnavailable, Message: msg}})
	return append(body, '\n')
}

// refusedAnswer is the whole 503 of a refused connection, with the index and store id of stamp.
func refusedAnswer(body []byte, stamp func() (int64, string)) string {
	var ids string
	if stamp != nil {
		index, store := stamp()
		ids = fmt.Sprintf("%s: %d\r\n%s: %s\r\n", api.HeaderIndex, index, api.HeaderStore, store)
	}
	return fmt.Sprintf("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n%sConnection: close\r\nContent-Length: %d\r\n\r\n%s", ids, len(body), body)
}

// admit counts c in, or refuses it and returns nil. At the total cap it makes room by closing
// a connection that holds a place without using it, if there is one (see connLimiter).
func (l *connLimiter) admit(c net.Conn) *trackedConn {
	addr := addrKey(hostOf(c.RemoteAddr()))
	now := time.Now()
	l.mu.Lock()
	var capName string
	var victim *trackedConn
	switch {
	case l.maxPerAddr > 0 && l.unauth[addr] >= l.maxPerAddr:
		capName = "addr"
	case l.open >= l.max:
		if victim = l.unusedLocked(now); victim == nil {
			capName = "total"
			break
		}
		l.releaseLocked(victim)
		fallthrough
	default:
		l.open++
		l.unauth[addr]++
	}
	var logIt bool
	var open, suppressed int
	if capName != "" {
		if now := time.Now(); now.Sub(l.loggedAt) >= refusalLogEvery {
			logIt, suppressed, open = true, l.unlogged, l.open
			l.loggedAt, l.unlogged = now, 0
		} else {
			l.unlogged++
		}
	}
	var tc *trackedConn
	if capName == "" {
		tc = &trackedConn{Conn: c, l: l, addr: addr, opened: now}
		tc.freshAt = l.fresh.PushBack(tc)
	}
	l.mu.Unlock()
	if victim != nil {
		l.evicted.Inc()
		_ = victim.Conn.Close() // counted out above; the server's own Close finds it so
	}
	if tc != nil {
		return tc
	}
	l.refused.WithLabelValues(capName).Inc()
	if logIt {
		l.log.Warn("refusing connections over a cap", "cap", capName, "remote", addr, "open", open,
			"max_conns", l.max, "max_conns_per_addr", l.maxPerAddr, "refused_since_last_line", suppressed)
	}
	if l.answer503 {
		// A fresh socket's send buffer is empty: this write does not wait for the client.
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		body := refusedTotal
		if capName == "addr" {
			body = refusedAddr
		}
		_, _ = io.WriteString(c, refusedAnswer(body, l.stamp))
	}
	_ = c.Close()
	return nil
}

// hostOf is the client address of a connection, without its port.
func hostOf(a net.Addr) string {
	if a == nil {
		return ""
	}
	s := a.String()
	if host, _, err := net.SplitHostPort(s); err == nil {
		return host
	}
	return s
}

// addrKey is what the per-address limits count a client address as: an IPv4 address itself,
// an IPv6 address's /64 network. A host commonly holds a whole /64 and could otherwise take a
// new address for each connection or request, and go round the caps and rate limits.
func addrKey(host string) string {
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	ip = ip.Unmap()
	if ip.Is4() {
		return ip.String()
	}
	p, err := ip.WithZone("").Prefix(64)
	if err != nil {
		return host
	}
	return p.String()
}

// unusedLocked picks the connection to close for a new one at the total cap: the one idle
// longest between requests, else the oldest that has not sent a whole request within
// newGrace; nil when every connection is busy. l.mu must be held.
func (l *connLimiter) unusedLocked(now time.Time) *trackedConn {
	if e := l.idle.Front(); e != nil {
		return e.Value.(*trackedConn)
	}
	if e := l.fresh.Front(); e != nil {
		if c := e.Value.(*trackedConn); now.Sub(c.opened) >= l.newGrace {
			return c
		}
	}
	return nil
}

// release counts c out; it is called once per connection, when it closes.
func (l *connLimiter) release(c *trackedConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.releaseLocked(c)
}

// releaseLocked counts c out unless it was already; l.mu must be held.
func (l *connLimiter) releaseLocked(c *trackedConn) {
	if c.closed {
		return
	}
	c.closed = true
	l.open--
	if !c.authed.Load() {
		l.dropUnauth(c.addr)
	}
	c.stopTimer()
	l.setIdleLocked(c, false)
	l.notFreshLocked(c)
}

// setIdleLocked records whether c is idle between requests; l.mu must be held.
func (l *connLimiter) setIdleLocked(c *trackedConn, idle bool) {
	switch {
	case idle && c.idleAt == nil && !c.closed:
		c.idleAt = l.idle.PushBack(c)
	case !idle && c.idleAt != nil:
		l.idle.Remove(c.idleAt)
		c.idleAt = nil
	}
}

// notFreshLocked records that c has sent a request (or closed); l.mu must be held.
func (l *connLimiter) notFreshLocked(c *trackedConn) {
	if c.freshAt != nil {
		l.fresh.Remove(c.freshAt)
		c.freshAt = nil
	}
}

func (l *connLimiter) dropUnauth(addr string) {
	if n := l.unauth[addr] - 1; n > 0 {
		l.unauth[addr] = n
	} else {
		delete(l.unauth, addr)
	}
}

// connState (http.Server.ConnState) arms the short idle timeout of an unauthenticated
// connection that is new or goes idle: it is closed unless a whole request's headers arrive
// within --unauth-idle-timeout. HTTP/1 reads a new connection's first request under a read
// deadline that the server sets right after the hook, which trackedConn shortens; a kept-alive
// connection's wait for its next request too, but not the rest of that request's headers, so a
// timer of ours bounds those; HTTP/2 keeps its own idle timer, so a timer of ours closes the
// connection instead (and a new TLS connection's, until its first request).
func (l *connLimiter) connState(nc net.Conn, st http.ConnState) {
	c := trackedOf(nc)
	if c == nil {
		return
	}
	l.mu.Lock()
	if st != http.StateNew {
		l.notFreshLocked(c)
	}
	l.setIdleLocked(c, st == http.StateIdle)
	l.mu.Unlock()
	if l.unauthIdle <= 0 {
		return
	}
	switch st {
	case http.StateNew:
		// A connection that has sent no request yet is as idle as one between requests: it
		// has --unauth-idle-timeout to send its first (its TLS handshake included), not the
		// headers' timeout, so that silent connections cannot hold an address's places. On
		// plain HTTP/1 the first request is read under the read deadline that trackedConn
		// shortens, as the next one is: no timer per connection. Over TLS the handshake's
		// deadline is lifted before the first request is read (and HTTP/2 reads none of
		// ours), so a timer closes it.
		if _, ok := nc.(*tls.Conn); !ok {
			c.idleWait.Store(true)
			return
		}
		l.armIdleTimer(c)
	case http.StateIdle:
		if c.authed.Load() {
			return
		}
		// The timer bounds the wait and the next request's headers together, as a new
		// connection's first request is bounded: a client that sends one byte of its next
		// request within the timeout and the rest over the headers' timeout would otherwise
		// hold its address's place for as long as it likes, a request at a time.
		l.armIdleTimer(c)
		if tc, ok := nc.(*tls.Conn); ok && tc.ConnectionState().NegotiatedProtocol == "h2" {
			return
		}
		c.idleWait.Store(true)
	case http.StateActive:
		l.mu.Lock()
		c.stopTimer()
		l.mu.Unlock()
	}
}

// armIdleTimer closes c once it has been idle for unauthIdle, unless it becomes active or
// authenticated first.
func (l *connLimiter) armIdleTimer(c *trackedConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c.closed || c.authed.Load() {
		return
	}
	c.stopTimer()
	var t *time.Timer
	t = time.AfterFunc(l.unauthIdle, func() {
		l.mu.Lock()
		fire := c.timer == t
		l.mu.Unlock()
		if fire {
			_ = c.Close()
		}
	})
	c.timer = t
}

type connKey struct{}

// connContext (http.Server.ConnContext) gives requests their connection, for markAuthenticated.
func (l *connLimiter) connContext(ctx context.Context, nc net.Conn) context.Context {
	if c := trackedOf(nc); c != nil {
		return context.WithValue(ctx, connKey{}, c)
	}
	return ctx
}

// markAuthenticated records that r's connection presented a valid token: it no longer counts
// against its address's cap, and it idles as long as authenticated connections do.
func markAuthenticated(r *http.Request) {
	c, ok := r.Context().Value(connKey{}).(*trackedConn)
	if !ok || c.authed.Load() {
		return
	}
	l := c.l
	l.mu.Lock()
	defer l.mu.Unlock()
	if c.closed || c.authed.Load() {
		return
	}
	c.authed.Store(true)
	l.dropUnauth(c.addr)
	c.stopTimer()
}

// trackedOf finds the trackedConn under nc (a *tls.Conn over it, for instance).
func trackedOf(nc net.Conn) *trackedConn {
	for nc != nil {
		switch c := nc.(type) {
		case *trackedConn:
			return c
		case interface{ NetConn() net.Conn }:
			nc = c.NetConn()
		default:
			return nil
		}
	}
	return nil
}

// trackedConn is a connection counted by a connLimiter until it closes.
type trackedConn struct {
	net.Conn
	l      *connLimiter
	addr   string
	authed atomic.Bool // presented a valid token (written under l.mu)
	// idleWait says that the next read deadline is HTTP/1's wait for the next request.
	idleWait atomic.Bool
	closed   bool        // under l.mu
	timer    *time.Timer // HTTP/2 idle timer, under l.mu
	opened   time.Time
	idleAt   *list.Element // in l.idle while idle between requests, under l.mu
	freshAt  *list.Element // in l.fresh until its first request, under l.mu
	// req is the HTTP/1 request in progress on the connection (there is one at a time), set
	// and read by the connection's goroutine only (see Server.begin).
	req *reqInfo
}

// stopTimer stops c's idle timer; l.mu must be held.
func (c *trackedConn) stopTimer() {
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
}

// SetReadDeadline shortens HTTP/1's wait for the next request on an unauthenticated connection.
func (c *trackedConn) SetReadDeadline(t time.Time) error {
	// Load first: net/http sets read deadlines several times per request, and a swap writes
	// the connection's cache line each time.
	if c.idleWait.Load() && c.idleWait.Swap(false) && !c.authed.Load() {
		if short := time.Now().Add(c.l.unauthIdle); t.IsZero() || t.After(short) {
			t = short
		}
	}
	return c.Conn.SetReadDeadline(t)
}

// Close closes the connection and counts it out.
func (c *trackedConn) Close() error {
	c.l.release(c)
	return c.Conn.Close()
}
