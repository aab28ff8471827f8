package server

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
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
	l      *connLimiter
	srv    *http.Server
	addr   string
	closed chan string // remote addresses of the connections the server closed
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
// without a valid token, and over the total cap, a new connection is answered 503 and closed at
// once; a connection that authenticates leaves its address's count, one that closes frees its
// place.
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

	// a1, a2, b1, a3 and c1: five, the total cap.
	c1 := dialFrom(t, "127.0.0.3", ls.addr)
	if got := roundTrip(t, c1, bufio.NewReader(c1), ""); got != "200 OK" {
		t.Fatalf("fifth connection: %s", got)
	}
	wantRefused(t, dialFrom(t, "127.0.0.4", ls.addr), "--max-conns")
	wantRefused(t, dialFrom(t, "127.0.0.1", ls.addr), "--max-conns")

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
// --max-conns a new connection is answered 503 at once and counted in /metrics.
func TestServe_RefusesConnectionsOverMaxConns(t *testing.T) {
	e := serveExternal(t, func(c *Config) {
		c.MaxConns = 3
		c.MaxConnsPerAddr = 0
		c.UnauthIdleTimeout = 0
	}, "http", &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}})
	var held []net.Conn
	// The readiness probe's connection may not be counted out yet: fill up to the cap.
	for i := 0; len(held) < 3; i++ {
		if i == 100 {
			t.Fatalf("only %d of 3 connections accepted in 100 tries", len(held))
		}
		c := rawConn(t, e.addr)
		br := bufio.NewReader(c)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
		res, err := http.ReadResponse(br, nil)
		if err != nil || res.StatusCode != 200 {
			continue // refused while the probe's connection was still counted
		}
		res.Body.Close()
		held = append(held, c)
	}
	wantRefused(t, rawConn(t, e.addr), "--max-conns")
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
		return res.StatusCode == 200
	})
	for _, want := range []string{"\nshoelace_connections_open 3\n", `shoelace_connections_refused_total{cap="addr"} 0`} {
		if !strings.Contains(scraped, want) {
			t.Errorf("/metrics lacks %q", want)
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
