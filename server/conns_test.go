package server

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/testutil"
)

func TestConnCap(t *testing.T) {
	for _, tc := range []struct {
		want        int
		nofile      uint64
		cap         int
		wantLowered bool
	}{
		{0, 0, DefaultMaxConns, false},             // limit unknown (not unix)
		{0, 65536, DefaultMaxConns, false},         // the systemd unit's LimitNOFILE
		{0, 20000, DefaultMaxConns, false},         // 20000 − 1024 > 15000
		{0, 4096, 4096 - 1024, true},               // reserve a quarter
		{0, 1024, 1024 - 256, true},                // a common default hard limit
		{0, 256, 256 - fdReserveMin, true},         // the reserve is at least 128
		{0, 100, minConns, true},                   // never below minConns
		{500, 1024, 500, false},                    // --max-conns under the fit
		{20000, 1 << 20, 20000, false},             // --max-conns above the default, limit allows
		{20000, 16384, 16384 - fdReserveMax, true}, // the reserve is at most 1024
	} {
		got, lowered := connCap(tc.want, tc.nofile)
		if got != tc.cap || lowered != tc.wantLowered {
			t.Errorf("connCap(%d, %d) = %d, %v; want %d, %v", tc.want, tc.nofile, got, lowered, tc.cap, tc.wantLowered)
		}
	}
}

// limitedServer serves a handler that answers "ok" and marks its connection authenticated when
// the request carries "Authorization: Bearer good", behind a connLimiter.
type limitedServer struct {
	l       *connLimiter
	srv     *http.Server
	addr    string
	closed  chan string  // remote addresses of the connections the server closed
	blocked atomic.Int64 // requests to /block in their handler
}

func serveLimited(t *testing.T, max, perAddr int, unauthIdle time.Duration, tlsFiles ...string) *limitedServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ls := &limitedServer{addr: ln.Addr().String(), closed: make(chan string, 100)}
	ls.l = newConnLimiter(ln, max, perAddr, unauthIdle, len(tlsFiles) == 0, testutil.Logger())
	ls.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") == "Bearer good" {
				markAuthenticated(r)
			}
			if r.URL.Path == "/block" {
				ls.blocked.Add(1)
				<-r.Context().Done() // busy until the client goes
			}
			io.WriteString(w, "ok")
		}),
		IdleTimeout:       time.Minute,
		ReadHeaderTimeout: time.Minute,
		ConnContext:       ls.l.connContext,
		ConnState: func(c net.Conn, st http.ConnState) {
			ls.l.connState(c, st)
			if st == http.StateClosed {
				ls.closed <- c.RemoteAddr().String()
			}
		},
	}
	go func() {
		if len(tlsFiles) == 2 {
			ls.srv.ServeTLS(ls.l, tlsFiles[0], tlsFiles[1])
		} else {
			ls.srv.Serve(ls.l)
		}
	}()
	t.Cleanup(func() { ls.srv.Close() })
	return ls
}

func (ls *limitedServer) counts(addr string) (open, unauth int) {
	ls.l.mu.Lock()
	defer ls.l.mu.Unlock()
	return ls.l.open, ls.l.unauth[addr]
}

// dialFrom opens a connection to addr from the loopback address from (127.0.0.x).
func dialFrom(t *testing.T, from, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip sends one keep-alive GET on c and returns the status line of the answer.
func roundTrip(t *testing.T, c net.Conn, br *bufio.Reader, auth string) string {
	t.Helper()
	req := "GET / HTTP/1.1\r\nHost: x\r\n"
	if auth != "" {
		req += "Authorization: Bearer " + auth + "\r\n"
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		t.Fatalf("send on %s: %v", c.LocalAddr(), err)
	}
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("answer on %s: %v", c.LocalAddr(), err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.Status
}

// wantRefused reads what the server says on c: a 503 with Retry-After naming flag, then the end.
func wantRefused(t *testing.T, c net.Conn, flag string) {
	t.Helper()
	got, err := readAnswer(t, c)
	if err != nil {
		t.Fatalf("refused connection from %s: %v after %q", c.LocalAddr(), err, got)
	}
	if !strings.HasPrefix(got, "HTTP/1.1 503 ") || !strings.Contains(got, "\r\nRetry-After: 1\r\n") || !strings.Contains(got, flag) {
		t.Fatalf("refused connection from %s got %q; want a 503 with Retry-After naming %s", c.LocalAddr(), got, flag)
	}
}

// TestConnLimiter_CapsTotalAndUnauthenticatedPerAddress: over the per-address cap of connections
// without a valid token a new connection is answered 503 and closed at once; a connection that
// authenticates leaves its address's count, one that closes frees its place. (The total cap:
// TestConnLimiter_AtTotalCap.)
func TestConnLimiter_CapsTotalAndUnauthenticatedPerAddress(t *testing.T) {
	ls := serveLimited(t, 5, 2, 0)
	a1, a2 := dialFrom(t, "127.0.0.1", ls.addr), dialFrom(t, "127.0.0.1", ls.addr)
	waitFor(t, "two connections from 127.0.0.1 counted", func() bool { o, u := ls.counts("127.0.0.1"); return o == 2 && u == 2 })
	wantRefused(t, dialFrom(t, "127.0.0.1", ls.addr), "--max-conns-per-addr")

	b1 := dialFrom(t, "127.0.0.2", ls.addr)
	if got := roundTrip(t, b1, bufio.NewReader(b1), ""); got != "200 OK" {
		t.Fatalf("another address: %s", got)
	}

	// a1 authenticates: 127.0.0.1 holds one unauthenticated connection now, and may open another.
	if got := roundTrip(t, a1, bufio.NewReader(a1), "good"); got != "200 OK" {
		t.Fatalf("authenticated request: %s", got)
	}
	if _, u := ls.counts("127.0.0.1"); u != 1 {
		t.Fatalf("127.0.0.1 counts %d unauthenticated connections after one authenticated; want 1", u)
	}
	a3 := dialFrom(t, "127.0.0.1", ls.addr)
	if got := roundTrip(t, a3, bufio.NewReader(a3), ""); got != "200 OK" {
		t.Fatalf("a new connection once one authenticated: %s", got)
	}

	// a1, a2, b1, a3 and c1: five, the total cap; 127.0.0.1's own cap comes first.
	c1 := dialFrom(t, "127.0.0.3", ls.addr)
	if got := roundTrip(t, c1, bufio.NewReader(c1), ""); got != "200 OK" {
		t.Fatalf("fifth connection: %s", got)
	}
	wantRefused(t, dialFrom(t, "127.0.0.1", ls.addr), "--max-conns-per-addr")

	a2.Close()
	waitFor(t, "a closed connection counted out", func() bool { o, _ := ls.counts(""); return o == 4 })
	c2 := dialFrom(t, "127.0.0.4", ls.addr)
	if got := roundTrip(t, c2, bufio.NewReader(c2), ""); got != "200 OK" {
		t.Fatalf("a connection after one closed: %s", got)
	}
	if o, u := ls.counts("127.0.0.1"); o != 5 || u != 1 {
		t.Errorf("open %d, unauthenticated from 127.0.0.1 %d; want 5 and 1", o, u)
	}
	ls.l.mu.Lock()
	unauth := len(ls.l.unauth)
	ls.l.mu.Unlock()
	if unauth != 4 {
		t.Errorf("unauthenticated counts kept for %d addresses, want 4 (127.0.0.1-4)", unauth)
	}
}

// TestConnLimiter_AtTotalCap: at the total cap a new connection takes the place of the one idle
// longest between requests, else of the oldest one that sent nothing for the grace time; only
// when every connection is busy is it refused. Whoever opened connections first cannot hold
// them against everyone else.
func TestConnLimiter_AtTotalCap(t *testing.T) {
	ls := serveLimited(t, 3, 0, 0)
	var idle []net.Conn
	for i, from := range []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"} {
		c := dialFrom(t, from, ls.addr)
		if got := roundTrip(t, c, bufio.NewReader(c), "good"); got != "200 OK" {
			t.Fatalf("connection from %s: %s", from, got)
		}
		idle = append(idle, c)
		// The server marks a connection idle after the client has read its answer: wait for
		// it, so that the connections become idle in this order.
		waitFor(t, "the connection idle", func() bool { ls.l.mu.Lock(); defer ls.l.mu.Unlock(); return ls.l.idle.Len() == i+1 })
	}
	d := dialFrom(t, "127.0.0.4", ls.addr)
	if got := roundTrip(t, d, bufio.NewReader(d), ""); got != "200 OK" {
		t.Fatalf("a new connection at the cap, three idle: %s", got)
	}
	wantClosed(t, idle[0])
	if got := roundTrip(t, idle[1], bufio.NewReader(idle[1]), "good"); got != "200 OK" {
		t.Fatalf("the second idle connection: %s", got)
	}

	// Silent connections: the oldest one makes room once the grace time is over.
	ls.l.mu.Lock()
	ls.l.newGrace = 0
	ls.l.mu.Unlock()
	for _, c := range idle[1:] {
		c.Close()
	}
	d.Close()
	waitFor(t, "connections counted out", func() bool { o, _ := ls.counts(""); return o == 0 })
	var silent []net.Conn
	for i := 0; i < 3; i++ {
		silent = append(silent, dialFrom(t, "127.0.0.5", ls.addr))
		waitFor(t, "a silent connection counted", func() bool { o, _ := ls.counts(""); return o == i+1 })
	}
	e := dialFrom(t, "127.0.0.6", ls.addr)
	if got := roundTrip(t, e, bufio.NewReader(e), ""); got != "200 OK" {
		t.Fatalf("a new connection at the cap, three silent: %s", got)
	}
	wantClosed(t, silent[0])

	// Busy connections (a request in its handler) are never closed for another.
	busy := serveLimited(t, 2, 0, 0)
	for _, from := range []string{"127.0.0.1", "127.0.0.2"} {
		c := dialFrom(t, from, busy.addr)
		io.WriteString(c, "GET /block HTTP/1.1\r\nHost: x\r\n\r\n")
	}
	waitFor(t, "two busy connections", func() bool { o, _ := busy.counts(""); return o == 2 && busy.blocked.Load() == 2 })
	wantRefused(t, dialFrom(t, "127.0.0.3", busy.addr), "--max-conns")
}

// wantClosed waits for the server to close c.
func wantClosed(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("connection from %s still open (read %d bytes, %v); want it closed for the new one", c.LocalAddr(), n, err)
	}
}

// TestConnLimiter_UnauthenticatedIdleTimeoutHTTP2: over HTTP/2 too, a connection without a valid
// token is closed once idle for the short timeout, while an authenticated one stays open.
func TestConnLimiter_UnauthenticatedIdleTimeoutHTTP2(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t, t.TempDir())
	ls := serveLimited(t, 100, 100, 300*time.Millisecond, certFile, keyFile)
	client := func() *http.Client {
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	}
	get := func(c *http.Client, auth string) (local string, reused bool) {
		t.Helper()
		req, _ := http.NewRequest("GET", "https://"+ls.addr+"/", nil)
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			GotConn: func(i httptrace.GotConnInfo) { local, reused = i.Conn.LocalAddr().String(), i.Reused },
		}))
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.ProtoMajor != 2 {
			t.Fatalf("answered over %s, want HTTP/2", res.Proto)
		}
		return local, reused
	}
	authed, anon := client(), client()
	authedAddr, _ := get(authed, "good")
	anonAddr, _ := get(anon, "")
	deadline := time.After(10 * time.Second) // far below the server's IdleTimeout of a minute
	for closed := false; !closed; {
		select {
		case a := <-ls.closed:
			if a == authedAddr {
				t.Fatal("the authenticated connection was closed while idle")
			}
			closed = a == anonAddr
		case <-deadline:
			t.Fatal("the idle connection without a valid token is still open after 10 s")
		}
	}
	if addr, reused := get(authed, "good"); !reused || addr != authedAddr {
		t.Errorf("the authenticated connection did not stay open (reused %v, %s then %s)", reused, authedAddr, addr)
	}
}

// TestServe_UnauthenticatedIdleTimeout: Serve closes a keep-alive connection that sent no valid
// token once idle for --unauth-idle-timeout, while one that did keeps the long idle timeout; an
// authenticated connection also leaves its address's count, so that agents behind one load
// balancer address are not held to --max-conns-per-addr.
func TestServe_UnauthenticatedIdleTimeout(t *testing.T) {
	e := serveExternal(t, func(c *Config) {
		c.UnauthIdleTimeout = 300 * time.Millisecond
		c.MaxConnsPerAddr = 3
	}, "http", &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}})
	send := func(c net.Conn, br *bufio.Reader, path, token string) int {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+e.addr+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if err := req.Write(c); err != nil {
			t.Fatal(err)
		}
		res, err := http.ReadResponse(br, req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode
	}
	type conn struct {
		net.Conn
		br *bufio.Reader
	}
	var authed []conn
	for i := 0; i < 4; i++ { // more than --max-conns-per-addr: each leaves the count as it authenticates
		c := rawConn(t, e.addr)
		br := bufio.NewReader(c)
		if got := send(c, br, "/v1/status", e.token); got != 200 {
			t.Fatalf("authenticated connection %d: status %d", i, got)
		}
		authed = append(authed, conn{c, br})
	}
	anon := rawConn(t, e.addr)
	anonR := bufio.NewReader(anon)
	if got := send(anon, anonR, "/health", ""); got != 200 {
		t.Fatalf("/health: %d", got)
	}
	// Closed by the server long before the two minutes of authenticated connections.
	anon.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := anonR.ReadByte(); err != io.EOF {
		t.Fatalf("idle connection without a token: read %v, %v; want the server to close it within 10 s", n, err)
	}
	for i, c := range authed {
		if got := send(c, c.br, "/v1/status", e.token); got != 200 {
			t.Fatalf("authenticated connection %d after the other was closed: status %d", i, got)
		}
	}
	if logs := e.logs.String(); !strings.Contains(logs, `"msg":"connection limits"`) || !strings.Contains(logs, `"max_conns_per_addr":3`) {
		t.Errorf("Serve does not log its connection limits: %s", logs)
	}
}

// TestServe_RefusesConnectionsOverMaxConns: Serve puts its listener behind the caps: over
// --max-conns, every connection busy, a new connection is answered 503 at once and counted in
// /metrics.
func TestServe_RefusesConnectionsOverMaxConns(t *testing.T) {
	e := serveExternal(t, func(c *Config) {
		c.MaxConns = 3
		c.MaxConnsPerAddr = 0
		c.UnauthIdleTimeout = 0
	}, "http", &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}})
	var held []net.Conn
	// Three writes whose bodies have not all arrived: busy connections. The readiness probe's
	// connection may not be counted out yet: wait until the three are in.
	for tries := 0; len(held) < 3; tries++ {
		if tries == 100 {
			t.Fatal("could not hold three busy connections in 100 tries")
		}
		c := rawConn(t, e.addr)
		io.WriteString(c, "PUT /v1/kv/shared/slow HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+e.token+"\r\nContent-Length: 10\r\n\r\nx")
		// Refused while the probe's connection was still counted: the server answers at once.
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if n, _ := c.Read(make([]byte, 1)); n > 0 {
			c.Close()
			continue
		}
		c.SetReadDeadline(time.Time{})
		held = append(held, c)
	}
	// Once the three are busy, a new connection is refused (until then, one may get in).
	refused := false
	for i := 0; i < 100 && !refused; i++ {
		c := rawConn(t, e.addr)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		got, _ := io.ReadAll(c)
		c.Close()
		refused = strings.HasPrefix(string(got), "HTTP/1.1 503 ") && strings.Contains(string(got), "--max-conns")
	}
	if !refused {
		t.Fatal("no connection refused in 100 tries with three busy ones at --max-conns 3")
	}
	held[0].Close()
	var scraped string
	waitFor(t, "a connection freed for /metrics", func() bool {
		res, err := http.Get("http://" + e.addr + "/metrics")
		if err != nil {
			return false
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		scraped = string(b)
		// The connection closed by a refusal may still be on its way out of the server's
		// books when the first scrape gets in: the count settles at the two held and this one.
		return res.StatusCode == 200 && strings.Contains(scraped, "\nshoelace_connections_open 3\n")
	})
	for _, want := range []string{"\nshoelace_connections_open 3\n", `shoelace_connections_refused_total{cap="addr"} 0`} {
		if !strings.Contains(scraped, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, scraped)
		}
	}
	if !strings.Contains(scraped, `shoelace_connections_refused_total{cap="total"} `) || strings.Contains(scraped, `shoelace_connections_refused_total{cap="total"} 0`) {
		t.Errorf("/metrics does not count the refused connection:\n%s", scraped)
	}
	if !strings.Contains(e.logs.String(), `"msg":"refusing connections over a cap"`) {
		t.Errorf("no log line about the refused connection")
	}
}

// remoteConn is a connection that says it comes from remote.
type remoteConn struct {
	net.Conn
	remote net.Addr
}

func (c remoteConn) RemoteAddr() net.Addr { return c.remote }

// TestConnLimiter_IPv6CountsPerSlash64: a host holds a whole IPv6 /64; a new address of it for
// each connection must not go round the per-address cap.
func TestConnLimiter_IPv6CountsPerSlash64(t *testing.T) {
	l := newConnLimiter(nil, 100, 2, 0, false, testutil.Logger())
	admit := func(ip string) bool {
		t.Helper()
		c, peer := net.Pipe()
		t.Cleanup(func() { c.Close(); peer.Close() })
		return l.admit(remoteConn{c, &net.TCPAddr{IP: net.ParseIP(ip), Port: 40000}}) != nil
	}
	for _, ip := range []string{"2001:db8::1", "2001:db8::ffff:2"} {
		if !admit(ip) {
			t.Fatalf("connection from %s refused under the cap", ip)
		}
	}
	if admit("2001:db8::3") {
		t.Error("a third unauthenticated connection from 2001:db8::/64 admitted over --max-conns-per-addr 2")
	}
	if !admit("2001:db8:0:1::1") || !admit("10.0.0.1") || !admit("::ffff:10.0.0.2") {
		t.Error("a connection from another network refused")
	}
}

func TestAddrKey(t *testing.T) {
	for in, want := range map[string]string{
		"10.1.2.3":                "10.1.2.3",
		"::ffff:10.1.2.3":         "10.1.2.3",
		"2001:db8:1:2:3:4:5:6":    "2001:db8:1:2::/64",
		"2001:db8:1:2::9":         "2001:db8:1:2::/64",
		"fe80::1%eth0":            "fe80::/64",
		"::1":                     "::/64",
		"not an address (a pipe)": "not an address (a pipe)",
	} {
		if got := addrKey(in); got != want {
			t.Errorf("addrKey(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestServe_OneTokenCannotHoldEveryConnection: one agent token (any VM of a fleet) that opens
// every connection of a replica and keeps them alive, or holds long-polls on all of them,
// does not lock the other clients out: a new connection takes an idle one's place, and
// long-polls leave a third of the connections free.
func TestServe_OneTokenCannotHoldEveryConnection(t *testing.T) {
	e := serveExternal(t, func(c *Config) {
		c.MaxConns = 6
		c.MaxConnsPerAddr = 0
	}, "http", &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}})
	admin := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	do := func(method, path, token, body string) (int, http.Header, string) {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+e.addr+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		// A refusal may be the previous request's connection, not counted out yet: try again
		// for a second.
		var last string
		for i := 0; i < 50; i++ {
			res, err := admin.Do(req)
			if err != nil {
				last = err.Error() // the refusal's 503 came before the request was sent
				time.Sleep(20 * time.Millisecond)
				continue
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode == 503 && strings.Contains(string(b), "--max-conns") {
				last = string(b)
				time.Sleep(20 * time.Millisecond)
				continue
			}
			return res.StatusCode, res.Header, string(b)
		}
		t.Fatalf("%s %s refused for a second: %s", method, path, last)
		return 0, nil, ""
	}
	code, _, body := do("POST", "/v1/tokens", e.token, `{"name":"web-agents","appliance":"web"}`)
	if code != 200 && code != 201 {
		t.Fatalf("create token: %d %s", code, body)
	}
	var created struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal([]byte(body), &created); err != nil || created.Token == "" {
		t.Fatalf("create token: %s", body)
	}
	agent := created.Token

	// The agent token takes every connection and keeps them alive.
	var held []net.Conn
	for i := 0; i < 100 && len(held) < 6; i++ {
		c := rawConn(t, e.addr)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, fmt.Sprintf("GET /v1/appliances/web HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nX-Shoelace-Instance: vm-%d\r\n\r\n", agent, i))
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || res.StatusCode == 503 {
			c.Close()
			continue
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		held = append(held, c)
	}
	if len(held) < 6 {
		t.Fatalf("the agent token got %d connections of 6", len(held))
	}
	if code, _, body := do("GET", "/v1/status", e.token, ""); code != 200 {
		t.Fatalf("an operator's request with every connection held idle by one agent token: %d %s", code, body)
	}

	// Long-polls on every connection: at most four fifths of them, the rest stays usable.
	_, hdr, _ := do("GET", "/v1/appliances/web", agent, "")
	index := hdr.Get("X-Shoelace-Index")
	polls := 0
	for i := 0; i < 6; i++ {
		c := rawConn(t, e.addr)
		c.SetDeadline(time.Now().Add(60 * time.Second))
		io.WriteString(c, fmt.Sprintf("GET /v1/appliances/web?index=%s&wait=50s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nX-Shoelace-Instance: poll-%d\r\n\r\n", index, agent, i))
		polls++
	}
	waitFor(t, "four long-polls open", func() bool {
		_, _, body := do("GET", "/v1/status", e.token, "")
		return strings.Contains(body, `"long_polls":4`)
	})
	if code, _, body := do("GET", "/v1/status", e.token, ""); code != 200 {
		t.Fatalf("an operator's request with %d long-polls of one agent token open: %d %s", polls, code, body)
	}
}

// TestServe_RefusedBodyNotDrained: a request answered before its body was read (no route reads
// a body there, or the token may not write) closes its connection at once instead of draining
// the body, which a client sending it a byte at a time would keep busy for the body timeout:
// enough such connections from one address would hold every place that long-polls leave.
func TestServe_RefusedBodyNotDrained(t *testing.T) {
	e := serveExternal(t, func(c *Config) { c.BodyTimeout = time.Minute }, "http", nil)
	for _, req := range []string{
		"POST /health HTTP/1.1\r\nHost: x\r\n",
		"GET /health HTTP/1.1\r\nHost: x\r\n",
		"PUT /v1/kv/shared/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sl_unknown\r\n",
	} {
		c := rawConn(t, e.addr)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, req+"Content-Length: 100000\r\n\r\nx")
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%q: %v", req, err)
		}
		res.Body.Close()
		// The rest of the body never comes: the server must not wait for it.
		start := time.Now()
		_, err = io.Copy(io.Discard, c)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("%q answered %s, then the connection stayed open %s waiting for the body; want it closed", req, res.Status, time.Since(start).Round(time.Second))
		}
		c.Close()
	}
}

// TestServe_SilentConnectionClosedAfterUnauthIdleTimeout: a connection that sends no request,
// or only part of one, is closed after --unauth-idle-timeout, as one idle between requests is.
// Before, it stayed open for the headers' timeout (10 s by default: twice the 5 s that
// DESIGN.md gives connections without a valid token), holding one of its address's
// --max-conns-per-addr places.
func TestServe_SilentConnectionClosedAfterUnauthIdleTimeout(t *testing.T) {
	e := serveExternal(t, func(c *Config) {
		c.UnauthIdleTimeout = 300 * time.Millisecond
		c.HeaderTimeout = time.Minute
	}, "http", nil)
	for name, sent := range map[string]string{
		"nothing":         "",
		"half a request":  "GET /health HTTP/1.1\r\n",
		"one byte":        "G",
		"headers, no end": "GET /health HTTP/1.1\r\nHost: x\r\n",
		"a token, no end": "GET /v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + e.token + "\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			c := rawConn(t, e.addr)
			start := time.Now()
			if sent != "" {
				if _, err := io.WriteString(c, sent); err != nil {
					t.Fatal(err)
				}
			}
			closedSoon(t, c, c, start)
		})
	}
	// A connection that sends its request at once is served, and an authenticated one then
	// stays open past the short timeout.
	c := rawConn(t, e.addr)
	br := bufio.NewReader(c)
	fmt.Fprintf(c, "GET /v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", e.token)
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("status: %v %v", res, err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	time.Sleep(time.Second)
	fmt.Fprintf(c, "GET /v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", e.token)
	if res, err = http.ReadResponse(br, nil); err != nil || res.StatusCode != 200 {
		t.Fatalf("the authenticated connection after a second: %v %v", res, err)
	}
	res.Body.Close()
}

// TestConnLimiter_NewConnectionWithoutARequestClosed: a new connection that sends no request
// is closed after the unauthenticated idle timeout, over plain HTTP and TLS alike: one that
// sends nothing (over TLS: not even its handshake), and one over TLS that completes its
// handshake and then sends nothing. Plain HTTP/1 does it with the read deadline that
// trackedConn shortens, as between requests, so no timer is armed for each new connection; TLS
// lifts the handshake's deadline before the first request is read, so a timer does it there.
func TestConnLimiter_NewConnectionWithoutARequestClosed(t *testing.T) {
	// Deterministic: what the hook arms for a new plain connection.
	l := newConnLimiter(nil, 100, 100, time.Minute, true, testutil.Logger())
	server, client := net.Pipe()
	defer client.Close()
	tc := l.admit(server)
	l.connState(tc, http.StateNew)
	l.mu.Lock()
	armed := tc.timer != nil
	l.mu.Unlock()
	if armed || !tc.idleWait.Load() {
		t.Errorf("new plain connection: timer armed %v, read deadline shortened %v; want no timer, the deadline shortened", armed, tc.idleWait.Load())
	}
	tc.Close()

	certFile, keyFile, pool := selfSigned(t, t.TempDir())
	for _, c := range []struct {
		name      string
		tls       bool
		handshake bool
	}{{"plain, silent", false, false}, {"TLS, silent", true, false}, {"TLS, handshake then silent", true, true}} {
		t.Run(c.name, func(t *testing.T) {
			// Long enough for a handshake on a loaded machine, far below the header timeout.
			var ls *limitedServer
			if c.tls {
				ls = serveLimited(t, 100, 100, 2*time.Second, certFile, keyFile)
			} else {
				ls = serveLimited(t, 100, 100, 2*time.Second)
			}
			conn := dialFrom(t, "127.0.0.1", ls.addr)
			if c.handshake {
				tc := tls.Client(conn, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
				tc.SetDeadline(time.Now().Add(10 * time.Second))
				if err := tc.Handshake(); err != nil {
					t.Fatal(err)
				}
				conn = tc
			}
			// The server's header timeout is a minute: only the idle timeout closes it.
			start := time.Now()
			conn.SetReadDeadline(time.Now().Add(30 * time.Second))
			_, err := io.Copy(io.Discard, conn)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("still open after %s, want it closed after about 2 s", time.Since(start).Round(time.Second))
			}
		})
	}
}

// TestServe_PartialRequestAfterIdleClosedAfterUnauthIdleTimeout: a connection without a token
// that was served a request and then sends only part of its next one is closed after
// --unauth-idle-timeout, as a new connection that sends part of its first is. Before, the
// timeout bounded only the wait for the next request's first byte: one byte within it, and the
// rest had the headers' timeout (10 s by default), so a client could hold its address's
// --max-conns-per-addr places for as long as it liked, one cheap request at a time.
func TestServe_PartialRequestAfterIdleClosedAfterUnauthIdleTimeout(t *testing.T) {
	e := serveExternal(t, func(c *Config) {
		c.UnauthIdleTimeout = 300 * time.Millisecond
		c.HeaderTimeout = time.Minute
	}, "http", nil)
	for name, sent := range map[string]string{
		"one byte":        "G",
		"half a request":  "GET /health HTTP/1.1\r\n",
		"a token, no end": "GET /v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + e.token + "\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			c := rawConn(t, e.addr)
			br := bufio.NewReader(c)
			io.WriteString(c, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
			res, err := http.ReadResponse(br, nil)
			if err != nil || res.StatusCode != 200 {
				t.Fatalf("health: %v %v", res, err)
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			start := time.Now()
			if _, err := io.WriteString(c, sent); err != nil {
				t.Fatal(err)
			}
			closedSoon(t, c, br, start)
		})
	}
	// A request sent at once on a kept-alive connection is still served.
	c := rawConn(t, e.addr)
	br := bufio.NewReader(c)
	for i := 0; i < 3; i++ {
		io.WriteString(c, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
		res, err := http.ReadResponse(br, nil)
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("health %d: %v %v", i, res, err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		time.Sleep(100 * time.Millisecond)
	}
}

// closedSoon fails t unless the server closes c (read through r) well before 5 s after start:
// within a test's --unauth-idle-timeout of 300 ms, not after the header timeout.
func closedSoon(t *testing.T, c net.Conn, r io.Reader, start time.Time) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(6 * time.Second))
	io.Copy(io.Discard, r)
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("closed after %s, want about the 300 ms of --unauth-idle-timeout", took)
	}
}

// TestServe_RefusedConnectionCarriesIndexAndStore: the 503 of a connection over a cap is an
// answer like any other: it carries X-Shoelace-Index and X-Shoelace-Store, as every response
// does, so that a client reading them (the CLI, a proxy's checks) finds them there too.
func TestServe_RefusedConnectionCarriesIndexAndStore(t *testing.T) {
	e := serveExternal(t, func(c *Config) {
		c.MaxConnsPerAddr = 2
		c.UnauthIdleTimeout = time.Minute // the two held connections stay while the test runs
	}, "http", &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}})
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	res, err := client.Get("http://" + e.addr + "/health")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	store, index := res.Header.Get("X-Shoelace-Store"), res.Header.Get("X-Shoelace-Index")
	if store == "" || index == "" || index == "0" {
		t.Fatalf("/health: store %q index %q", store, index)
	}
	// Two connections without a request hold the address's places; the /health connection
	// may not be counted out yet: a third is refused within a few tries.
	rawConn(t, e.addr)
	rawConn(t, e.addr)
	var got string
	for i := 0; i < 50 && !strings.HasPrefix(got, "HTTP/1.1 503 "); i++ {
		c := rawConn(t, e.addr)
		c.SetDeadline(time.Now().Add(2 * time.Second))
		b, _ := io.ReadAll(c)
		got = string(b)
		c.Close()
	}
	if !strings.HasPrefix(got, "HTTP/1.1 503 ") || !strings.Contains(got, "--max-conns-per-addr") {
		t.Fatalf("no connection over --max-conns-per-addr 2 refused: %q", got)
	}
	r, err := http.ReadResponse(bufio.NewReader(strings.NewReader(got)), nil)
	if err != nil {
		t.Fatalf("the refusal is not an HTTP answer: %v: %q", err, got)
	}
	at, _ := strconv.ParseInt(index, 10, 64)
	rev, err := strconv.ParseInt(r.Header.Get("X-Shoelace-Index"), 10, 64)
	if r.Header.Get("Retry-After") == "" || r.Header.Get("X-Shoelace-Store") != store || err != nil || rev < at {
		t.Fatalf("refusal headers %v; want Retry-After, X-Shoelace-Store %s and an X-Shoelace-Index of at least %s", r.Header, store, index)
	}
}
