package server

import (
	"bytes"
	"container/list"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The PROXY protocol (HAProxy's send-proxy and send-proxy-v2, also spoken by nginx's stream
// proxy, AWS NLBs and others): a TCP load balancer opens each connection to a replica with a
// header that names the client it came from. Without it, every client behind the balancer has
// the balancer's address, and the limits kept per client address (unauthenticated requests'
// rate limit, console sign-ins, --max-conns-per-addr) hold all of them together: one client
// could lock every other out, and the logs name the balancer instead of the client.
//
// Only connections from --proxy-protocol-from addresses are read for a header, and from them a
// header is taken but not required (a health check, or an operator on the balancer's host,
// may connect without one): neither an HTTP request nor a TLS handshake can begin like a
// header. Any other peer's header is its request's first bytes, refused as the bad request
// it is: a client cannot name another address by sending one.

// proxyHeaderTimeout bounds how long a trusted peer's connection may take to send the first
// bytes that show whether it starts with a header, and the header itself.
var proxyHeaderTimeout = 5 * time.Second

// proxyV1Max is the longest v1 header, CRLF included (the protocol's own bound).
const proxyV1Max = 107

// proxyV2MaxExtra bounds a v2 header's address block and TLVs (its length field allows 64
// KiB; balancers send a few hundred bytes at most).
const proxyV2MaxExtra = 4096

var (
	proxyV1Sig = []byte("PROXY ")
	proxyV2Sig = []byte("\r\n\r\n\x00\r\nQUIT\n")
)

// ParseProxyFrom parses --proxy-protocol-from: comma-separated addresses or CIDR prefixes of
// the load balancers whose connections may start with a PROXY protocol header.
func ParseProxyFrom(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if strings.Contains(f, "/") {
			p, err := netip.ParsePrefix(f)
			if err != nil {
				return nil, fmt.Errorf("--proxy-protocol-from: %q is not an address or a CIDR prefix (10.0.0.5, 10.0.0.0/24, fd00::/64)", f)
			}
			if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
				// ::ffff:10.0.0.0/120, as a dual-stack listener shows IPv4 peers: the
				// peers are compared unmapped (isTrusted), so the prefix must be too.
				p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
			}
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil || a.Zone() != "" {
			return nil, fmt.Errorf("--proxy-protocol-from: %q is not an address or a CIDR prefix (10.0.0.5, 10.0.0.0/24, fd00::/64)", f)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// proxyListener reads a PROXY protocol header at the start of each connection from a trusted
// peer, in a goroutine of the connection's own (a peer slow to send it holds nobody else up),
// and hands the connection on with the client's address as its RemoteAddr. Connections from
// other peers are handed on as they are.
type proxyListener struct {
	net.Listener
	trusted []netip.Prefix
	timeout time.Duration
	log     *slog.Logger
	errors  prometheus.Counter

	conns  chan net.Conn
	accErr chan error
	done   chan struct{}
	once   sync.Once

	mu         sync.Mutex
	reading    *list.List // *headerRead of the connections whose header is being read, the oldest first
	maxReading int

	logMu    sync.Mutex
	loggedAt time.Time
}

// proxyPending caps the headers read at once: over it, the connection that has waited longest
// for its header is closed for the new one (see acceptLoop), so that the descriptors they take
// are bounded and the listener never stops accepting. Serve lowers it to half the descriptors
// kept for the store (fdReserve: 64 to 512), which the connection caps leave out.
var proxyPending = 1024

// proxyReadCap is how many headers are read at once with reserve descriptors kept for the
// store (see fdReserve): the connections whose header is being read are not counted by the
// connection caps, and take at most half of the reserve.
func proxyReadCap(reserve uint64) int {
	return min(proxyPending, max(int(reserve/2), 1))
}

func newProxyListener(ln net.Listener, trusted []netip.Prefix, maxReading int, log *slog.Logger) *proxyListener {
	l := &proxyListener{
		Listener: ln, trusted: trusted, timeout: proxyHeaderTimeout, log: log,
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoelace_proxy_protocol_errors_total",
			Help: "Connections from --proxy-protocol-from peers closed because their PROXY protocol header was malformed or late.",
		}),
		conns: make(chan net.Conn), accErr: make(chan error), done: make(chan struct{}),
		reading: list.New(), maxReading: maxReading,
	}
	go l.acceptLoop()
	return l
}

func (l *proxyListener) acceptLoop() {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			// Handed to Accept, which http.Server calls again after a temporary error.
			select {
			case l.accErr <- err:
			case <-l.done:
				return
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if !l.isTrusted(c.RemoteAddr()) {
			l.handOn(c)
			continue
		}
		// Never wait here for a header to end: a balancer's connections that send nothing
		// would stop the listener, and every client with it, those not behind the balancer
		// too. At the cap, the oldest header read makes room: a balancer sends its header
		// at once, and a connection still without one is the least likely to be a client's.
		l.mu.Lock()
		var oldest *list.Element
		if l.reading.Len() >= l.maxReading {
			oldest = l.reading.Front()
			l.reading.Remove(oldest)
			oldest.Value.(*headerRead).at = nil
		}
		r := &headerRead{c: c}
		r.at = l.reading.PushBack(r)
		l.mu.Unlock()
		if oldest != nil {
			old := oldest.Value.(*headerRead)
			old.c.Close()
			l.errors.Inc()
			l.logRefusal(old.c.RemoteAddr(), fmt.Errorf("no header yet, closed for a newer connection: %d others were waiting for theirs", l.maxReading))
		}
		go l.readHeader(r)
	}
}

// headerRead is a connection whose header is being read.
type headerRead struct {
	c  net.Conn
	at *list.Element // in proxyListener.reading; nil once closed by the listener (under its mu)
}

// readHeader reads the header of r's connection and hands it on.
func (l *proxyListener) readHeader(r *headerRead) {
	c := r.c
	pc, err := readProxyHeader(c, l.timeout)
	l.mu.Lock()
	closedByUs := r.at == nil
	if !closedByUs {
		l.reading.Remove(r.at)
		r.at = nil
	}
	l.mu.Unlock()
	if closedByUs {
		return // for a newer connection (counted then), or by Close
	}
	if err != nil {
		if !errors.Is(err, errNothingSent) {
			l.errors.Inc()
			l.logRefusal(c.RemoteAddr(), err)
		}
		c.Close()
		return
	}
	l.handOn(pc)
}

func (l *proxyListener) handOn(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.done:
		c.Close()
	}
}

func (l *proxyListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case err := <-l.accErr:
		return nil, err
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close closes the listener and the connections whose header is still being read.
func (l *proxyListener) Close() error {
	err := l.Listener.Close()
	l.once.Do(func() { close(l.done) })
	l.mu.Lock()
	for e := l.reading.Front(); e != nil; e = l.reading.Front() {
		l.reading.Remove(e)
		r := e.Value.(*headerRead)
		r.at = nil
		r.c.Close()
	}
	l.mu.Unlock()
	return err
}

func (l *proxyListener) isTrusted(a net.Addr) bool {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return false
	}
	ip := ap.Addr().Unmap()
	for _, p := range l.trusted {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// logRefusal logs a refused header at most once per refusalLogEvery: a broken balancer would
// otherwise write a line per connection.
func (l *proxyListener) logRefusal(remote net.Addr, err error) {
	l.logMu.Lock()
	now := time.Now()
	logIt := now.Sub(l.loggedAt) >= refusalLogEvery
	if logIt {
		l.loggedAt = now
	}
	l.logMu.Unlock()
	if logIt {
		l.log.Warn("closing a connection from a --proxy-protocol-from peer: bad PROXY protocol header (the next ones are counted in shoelace_proxy_protocol_errors_total)",
			"remote", remote.String(), "err", err.Error())
	}
}

// proxiedConn is a connection whose first bytes were read to look for a header: Read returns
// what was read past it first. RemoteAddr is the client the header named, or the peer's own
// address when it sent none (or one that names no client: LOCAL, UNKNOWN).
type proxiedConn struct {
	net.Conn
	remote net.Addr
	rest   []byte
}

func (c *proxiedConn) Read(p []byte) (int, error) {
	if len(c.rest) > 0 {
		n := copy(p, c.rest)
		c.rest = c.rest[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

func (c *proxiedConn) RemoteAddr() net.Addr { return c.remote }

// errNothingSent: the peer closed its connection, or kept it silent, without sending a byte
// (a balancer's TCP check, a preconnection): no header is missing, nothing to report.
var errNothingSent = errors.New("nothing sent")

// readProxyHeader reads c's PROXY protocol header, if it starts with one, within timeout.
func readProxyHeader(c net.Conn, timeout time.Duration) (net.Conn, error) {
	if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return nil, err
	}
	buf := make([]byte, 0, 256)
	var hdrLen int
	var remote netip.AddrPort
	for {
		n, found, addr, err := parseProxyHeader(buf)
		if err != nil {
			return nil, err
		}
		if n > 0 || !found {
			hdrLen, remote = n, addr
			break
		}
		// More bytes are needed to decide, or for the header's end.
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		m, err := c.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if err != nil && m == 0 {
			if len(buf) == 0 {
				return nil, errNothingSent
			}
			return nil, fmt.Errorf("after %d bytes: %w", len(buf), err)
		}
	}
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		return nil, err
	}
	pc := &proxiedConn{Conn: c, remote: c.RemoteAddr(), rest: buf[hdrLen:]}
	if remote.IsValid() {
		pc.remote = net.TCPAddrFromAddrPort(remote)
	}
	return pc, nil
}

// parseProxyHeader looks at the first bytes of a connection. found says they start with a
// header (or may, when more bytes are needed: then n is 0); n is the header's length once it
// is whole, and addr the client it names (not valid for LOCAL and UNKNOWN, or an address
// family other than TCP over IPv4 or IPv6). found is false, with nil error, when b cannot be
// the start of a header: the connection has none.
func parseProxyHeader(b []byte) (n int, found bool, addr netip.AddrPort, err error) {
	switch {
	case len(b) == 0:
		return 0, true, addr, nil
	case startsAs(b, proxyV1Sig):
		if len(b) < len(proxyV1Sig) {
			return 0, true, addr, nil
		}
		return parseProxyV1(b)
	case startsAs(b, proxyV2Sig):
		if len(b) < len(proxyV2Sig) {
			return 0, true, addr, nil
		}
		return parseProxyV2(b)
	}
	return 0, false, addr, nil
}

// startsAs reports whether b and sig agree on their common length (b may be shorter).
func startsAs(b, sig []byte) bool {
	k := min(len(b), len(sig))
	return len(b) > 0 && bytes.Equal(b[:k], sig[:k])
}

func parseProxyV1(b []byte) (int, bool, netip.AddrPort, error) {
	var none netip.AddrPort
	end := bytes.Index(b, []byte("\r\n"))
	if end < 0 {
		if len(b) >= proxyV1Max {
			return 0, true, none, fmt.Errorf("PROXY v1 header: no CRLF within %d bytes", proxyV1Max)
		}
		return 0, true, none, nil
	}
	if end+2 > proxyV1Max {
		return 0, true, none, fmt.Errorf("PROXY v1 header: longer than %d bytes", proxyV1Max)
	}
	line := string(b[len(proxyV1Sig):end])
	f := strings.Split(line, " ")
	if f[0] == "UNKNOWN" {
		return end + 2, true, none, nil // the balancer's own connection (a health check)
	}
	if len(f) != 5 || (f[0] != "TCP4" && f[0] != "TCP6") {
		return 0, true, none, fmt.Errorf("PROXY v1 header %q: want \"TCP4|TCP6 SRC DST SPORT DPORT\" or \"UNKNOWN\"", cutForLog(line))
	}
	src, err := netip.ParseAddr(f[1])
	if err == nil {
		_, err = netip.ParseAddr(f[2])
	}
	if err != nil || src.Zone() != "" || src.Is4() != (f[0] == "TCP4") {
		return 0, true, none, fmt.Errorf("PROXY v1 header %q: addresses not of %s", cutForLog(line), f[0])
	}
	port, err := strconv.ParseUint(f[3], 10, 16)
	if err == nil {
		_, err = strconv.ParseUint(f[4], 10, 16)
	}
	if err != nil {
		return 0, true, none, fmt.Errorf("PROXY v1 header %q: ports must be 0-65535", cutForLog(line))
	}
	return end + 2, true, netip.AddrPortFrom(src, uint16(port)), nil
}

func parseProxyV2(b []byte) (int, bool, netip.AddrPort, error) {
	var none netip.AddrPort
	const fixed = 16 // signature, version and command, family, length
	if len(b) < fixed {
		return 0, true, none, nil
	}
	if v := b[12] >> 4; v != 2 {
		return 0, true, none, fmt.Errorf("PROXY v2 header: version %d, want 2", v)
	}
	cmd := b[12] & 0xf
	if cmd > 1 {
		return 0, true, none, fmt.Errorf("PROXY v2 header: command %d, want LOCAL (0) or PROXY (1)", cmd)
	}
	extra := int(binary.BigEndian.Uint16(b[14:16]))
	if extra > proxyV2MaxExtra {
		return 0, true, none, fmt.Errorf("PROXY v2 header: %d bytes of addresses and TLVs, over %d", extra, proxyV2MaxExtra)
	}
	if len(b) < fixed+extra {
		return 0, true, none, nil
	}
	n := fixed + extra
	if cmd == 0 { // LOCAL: the balancer's own connection (a health check)
		return n, true, none, nil
	}
	body := b[fixed:n]
	switch b[13] {
	case 0x11: // TCP over IPv4
		if len(body) < 12 {
			return 0, true, none, fmt.Errorf("PROXY v2 header: %d bytes of IPv4 addresses, want 12", len(body))
		}
		ip := netip.AddrFrom4([4]byte(body[0:4]))
		return n, true, netip.AddrPortFrom(ip, binary.BigEndian.Uint16(body[8:10])), nil
	case 0x21: // TCP over IPv6
		if len(body) < 36 {
			return 0, true, none, fmt.Errorf("PROXY v2 header: %d bytes of IPv6 addresses, want 36", len(body))
		}
		ip := netip.AddrFrom16([16]byte(body[0:16])).Unmap()
		return n, true, netip.AddrPortFrom(ip, binary.BigEndian.Uint16(body[32:34])), nil
	}
	// Another family (UNSPEC, UDP, a Unix socket): the protocol lets a receiver keep the
	// connection's own address.
	return n, true, none, nil
}

// cutForLog shortens what a peer sent for an error message.
func cutForLog(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
