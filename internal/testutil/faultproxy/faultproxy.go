// Package faultproxy is a TCP proxy for tests that sits between a gRPC client and its server
// (an etcd client and etcd) and breaks the connections it carries on demand, the way a network
// or a member does: it freezes them (stops forwarding without closing, as a SIGSTOPped member),
// cuts a connection right after the server answered a given request (the request applied, the
// answer lost), cuts one before a request reaches the server, or refuses connections.
//
// It reads the HTTP/2 frames of each direction, and decodes the client's request headers to
// know each stream's method; it never changes a byte it forwards. Import it only from tests.
package faultproxy

import (
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/net/http2/hpack"
)

// HTTP/2 frame types and flags the proxy looks at.
const (
	frameHeaders      = 0x1
	frameContinuation = 0x9
	flagEndHeaders    = 0x4
	flagPadded        = 0x8
	flagPriority      = 0x20
)

const clientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// Proxy forwards connections from its own loopback address to a target address.
type Proxy struct {
	tb     testing.TB
	target string // where new connections go (under mu: see Retarget)
	ln     net.Listener

	mu       sync.Mutex
	cond     *sync.Cond
	frozen   bool
	down     bool
	conns    map[*conn]struct{}
	cutReply func(method string) bool // armed by CutAfterReply: one-shot
	cutReq   func(method string) bool // armed by CutBeforeRequest: one-shot
	cutDown  bool                     // go down after the armed cut

	fromServer atomic.Int64 // bytes forwarded from the server to clients
	cuts       atomic.Int64
	wg         sync.WaitGroup
}

type conn struct {
	client, server net.Conn
	mu             sync.Mutex
	methods        map[uint32]string // stream id → method (":path"), from the client's headers
	closed         bool
}

func (c *conn) close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.client.Close()
	c.server.Close()
}

// Start starts a proxy to target (host:port) on a loopback port and stops it when the test ends.
func Start(tb testing.TB, target string) *Proxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("faultproxy: %v", err)
	}
	p := &Proxy{tb: tb, target: strings.TrimPrefix(strings.TrimPrefix(target, "http://"), "https://"), ln: ln, conns: map[*conn]struct{}{}}
	p.cond = sync.NewCond(&p.mu)
	p.wg.Add(1)
	go p.accept()
	tb.Cleanup(p.close)
	return p
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// URL is the proxy's address as an etcd endpoint, http://host:port.
func (p *Proxy) URL() string { return "http://" + p.Addr() }

// FromServer is how many bytes the proxy has forwarded from the server to its clients.
func (p *Proxy) FromServer() int64 { return p.fromServer.Load() }

// Cuts is how many connections a CutAfterReply or CutBeforeRequest has cut.
func (p *Proxy) Cuts() int64 { return p.cuts.Load() }

// Freeze stops forwarding in both directions, on open connections and on new ones, without
// closing anything: the server looks alive to the kernel but answers nothing.
func (p *Proxy) Freeze() {
	p.mu.Lock()
	p.frozen = true
	p.mu.Unlock()
}

// Thaw undoes Freeze: what was held is forwarded.
func (p *Proxy) Thaw() {
	p.mu.Lock()
	p.frozen = false
	p.cond.Broadcast()
	p.mu.Unlock()
}

// Down closes every open connection and closes new ones at once, until Up.
func (p *Proxy) Down() {
	p.mu.Lock()
	p.down = true
	conns := p.takeConnsLocked()
	p.mu.Unlock()
	for _, c := range conns {
		c.close()
	}
}

// Retarget closes every open connection and forwards new ones to target (host:port or an etcd
// endpoint's URL) from now on: the clients' endpoints lead to another server, as when a DNS name
// or a load balancer is pointed at another cluster.
func (p *Proxy) Retarget(target string) {
	p.mu.Lock()
	p.target = strings.TrimPrefix(strings.TrimPrefix(target, "http://"), "https://")
	conns := p.takeConnsLocked()
	p.mu.Unlock()
	for _, c := range conns {
		c.close()
	}
}

// Up undoes Down (and a CutBeforeRequest that went down).
func (p *Proxy) Up() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

// CutAfterReply arms a one-shot fault: the next request whose method (such as
// "/etcdserverpb.KV/Txn") match accepts reaches the server, but when the server starts to answer
// it, its connection is closed instead: the server did the work and the client sees the
// connection break. With down, the proxy then refuses connections until Up; otherwise later
// connections are forwarded as usual.
func (p *Proxy) CutAfterReply(match func(method string) bool, down bool) {
	p.mu.Lock()
	p.cutReply, p.cutDown = match, down
	p.mu.Unlock()
}

// CutBeforeRequest arms a one-shot fault: the next request whose method match accepts is not
// forwarded and its connection is closed, so the client sent it but the server never saw it.
// down is as for CutAfterReply.
func (p *Proxy) CutBeforeRequest(match func(method string) bool, down bool) {
	p.mu.Lock()
	p.cutReq, p.cutDown = match, down
	p.mu.Unlock()
}

// Disarm drops any armed cut.
func (p *Proxy) Disarm() {
	p.mu.Lock()
	p.cutReply, p.cutReq = nil, nil
	p.mu.Unlock()
}

func (p *Proxy) takeConnsLocked() []*conn {
	out := make([]*conn, 0, len(p.conns))
	for c := range p.conns {
		out = append(out, c)
	}
	clear(p.conns)
	return out
}

func (p *Proxy) close() {
	p.ln.Close()
	p.mu.Lock()
	p.frozen = false
	p.cond.Broadcast()
	conns := p.takeConnsLocked()
	p.mu.Unlock()
	for _, c := range conns {
		c.close()
	}
	p.wg.Wait()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		cc, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		down, target := p.down, p.target
		p.mu.Unlock()
		if down {
			cc.Close()
			continue
		}
		sc, err := net.Dial("tcp", target)
		if err != nil {
			cc.Close()
			continue
		}
		c := &conn{client: cc, server: sc, methods: map[uint32]string{}}
		p.mu.Lock()
		// Down or Retarget while it was being dialled: it is one of the connections they close
		// (a connection kept to the old target would make a Retarget lead to two servers).
		if p.down || p.target != target {
			p.mu.Unlock()
			c.close()
			continue
		}
		p.conns[c] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(c, true)
		go p.pipe(c, false)
	}
}

// pipe forwards one direction of c frame by frame until either side closes.
func (p *Proxy) pipe(c *conn, fromClient bool) {
	defer p.wg.Done()
	defer func() {
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
		c.close()
	}()
	src, dst := c.server, c.client
	if fromClient {
		src, dst = c.client, c.server
		pre := make([]byte, len(clientPreface))
		if _, err := io.ReadFull(src, pre); err != nil || !p.forward(dst, pre, false) {
			return
		}
	}
	dec := hpack.NewDecoder(4096, nil)
	var block []byte // header block fragments of the stream being read
	var blockStream uint32
	hdr := make([]byte, 9)
	for {
		if _, err := io.ReadFull(src, hdr); err != nil {
			return
		}
		n := int(hdr[0])<<16 | int(hdr[1])<<8 | int(hdr[2])
		typ, flags := hdr[3], hdr[4]
		stream := binary.BigEndian.Uint32(hdr[5:9]) & 0x7fffffff
		payload := make([]byte, n)
		if _, err := io.ReadFull(src, payload); err != nil {
			return
		}
		frame := append(append([]byte{}, hdr...), payload...)
		if fromClient && (typ == frameHeaders || typ == frameContinuation) {
			if typ == frameHeaders {
				block, blockStream = headerFragment(payload, flags), stream
			} else {
				block = append(block, payload...)
			}
			if flags&flagEndHeaders != 0 {
				method := decodeMethod(dec, block)
				c.mu.Lock()
				c.methods[blockStream] = method
				c.mu.Unlock()
				if p.takeCut(&p.cutReq, method) {
					return // the deferred close cuts both sides; the request never left
				}
			}
		}
		if !fromClient && typ == frameHeaders {
			c.mu.Lock()
			method, ok := c.methods[stream]
			c.mu.Unlock()
			if ok && p.takeCut(&p.cutReply, method) {
				return
			}
		}
		if !p.forward(dst, frame, !fromClient) {
			return
		}
	}
}

// takeCut reports whether the armed cut *slot matches method; if so it disarms it, counts
// the cut and goes down when asked to (the caller then closes its connection).
func (p *Proxy) takeCut(slot *func(string) bool, method string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if *slot == nil || !(*slot)(method) {
		return false
	}
	*slot = nil
	p.cuts.Add(1)
	if p.cutDown {
		p.down = true
	}
	return true
}

// forward writes b to dst once the proxy is not frozen.
func (p *Proxy) forward(dst net.Conn, b []byte, toClient bool) bool {
	p.mu.Lock()
	for p.frozen {
		p.cond.Wait()
	}
	p.mu.Unlock()
	if _, err := dst.Write(b); err != nil {
		return false
	}
	if toClient {
		p.fromServer.Add(int64(len(b)))
	}
	return true
}

// headerFragment strips a HEADERS frame's padding and priority fields.
func headerFragment(payload []byte, flags byte) []byte {
	pad := 0
	if flags&flagPadded != 0 && len(payload) > 0 {
		pad = int(payload[0])
		payload = payload[1:]
	}
	if flags&flagPriority != 0 && len(payload) >= 5 {
		payload = payload[5:]
	}
	if pad <= len(payload) {
		payload = payload[:len(payload)-pad]
	}
	return append([]byte{}, payload...)
}

// decodeMethod decodes a header block (keeping dec's table in step) and returns its :path.
func decodeMethod(dec *hpack.Decoder, block []byte) string {
	var path string
	dec.SetEmitFunc(func(f hpack.HeaderField) {
		if f.Name == ":path" {
			path = f.Value
		}
	})
	if _, err := dec.Write(block); err != nil {
		return ""
	}
	_ = dec.Close()
	return path
}

// Carrier returns the index of the one proxy of ps that forwards bytes from etcd while probe
// runs: with the proxies leading to one etcd as its "members", the one carrying a watch is the
// one that forwards the event a write makes while nothing else is asked. probe(try) makes such
// a write and waits for the watch to hear it; keepalives on the others can share the moment,
// so it is tried again, up to 20 times.
func Carrier(tb testing.TB, ps []*Proxy, probe func(try int)) int {
	tb.Helper()
	for try := range 20 {
		before := make([]int64, len(ps))
		for i, p := range ps {
			before[i] = p.FromServer()
		}
		probe(try)
		carrier := -1
		for i, p := range ps {
			if p.FromServer() > before[i] {
				if carrier >= 0 {
					carrier = -2
					break
				}
				carrier = i
			}
		}
		if carrier >= 0 {
			return carrier
		}
	}
	tb.Fatal("no single proxy carried the watch's events")
	return -1
}

// Methods is a match for CutAfterReply and CutBeforeRequest: any of the given gRPC methods.
func Methods(names ...string) func(string) bool {
	return func(m string) bool {
		for _, n := range names {
			if m == n {
				return true
			}
		}
		return false
	}
}

// Writes matches the etcd KV methods that can write: Put, DeleteRange and Txn.
var Writes = Methods("/etcdserverpb.KV/Put", "/etcdserverpb.KV/DeleteRange", "/etcdserverpb.KV/Txn")

// Reset closes conn with a TCP RST (linger 0), as a peer that goes away mid-request does: the
// other end reads "connection reset by peer", not an orderly end of the stream.
func Reset(conn net.Conn) {
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	conn.Close()
}

// ResetRequest hijacks w's connection and resets it (see Reset): a replica that goes away while
// it serves the request, as the client sees it.
func ResetRequest(t *testing.T, w http.ResponseWriter) {
	t.Helper()
	conn, _, err := w.(http.Hijacker).Hijack()
	if err != nil {
		t.Error(err)
		return
	}
	Reset(conn)
}
