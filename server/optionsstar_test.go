package server

import (
	"bufio"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// "OPTIONS *" is refused as any request whose path is not clean (400), under the client
// address's rate limit; net/http used to answer it 200 by itself, before any of Shoelace's
// handlers, so that a flood of them was answered without a limit.
func TestServe_OptionsStarRefusedAndLimited(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.RateLimit = 0.001 }) // a burst of 1, then one per 1000 s
	ask, _ := rawRequests(t, f)
	for i, want := range []int{http.StatusBadRequest, http.StatusTooManyRequests} {
		status, _, body := ask("OPTIONS", "*")
		if status != want || !strings.Contains(body, `"code"`) {
			t.Fatalf("OPTIONS * number %d: %d %s, want %d with Shoelace's JSON error", i+1, status, body, want)
		}
		// It said the path "*" had an empty, '.' or '..' segment.
		if want == http.StatusBadRequest && !strings.Contains(body, `request path \"*\" does not start with '/'`) {
			t.Fatalf("OPTIONS *: %s", body)
		}
		if want == http.StatusTooManyRequests && !strings.Contains(body, api.CodeRateLimited) {
			t.Fatalf("OPTIONS * over the limit: %s", body)
		}
	}
}

// rawRequests serves f's server on a loopback port and returns ask, which sends a request with
// the method and request target given, as they are, on one connection, and returns the
// answer's status, Location header and body; and the server's address.
func rawRequests(t *testing.T, f *fixture) (ask func(method, target string) (int, string, string), addr string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := f.s.httpServer()
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)
	return func(method, target string) (int, string, string) {
		t.Helper()
		if _, err := conn.Write([]byte(method + " " + target + " HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		var body strings.Builder
		_, _ = bufio.NewReader(res.Body).WriteTo(&body)
		res.Body.Close()
		return res.StatusCode, res.Header.Get("Location"), body.String()
	}, ln.Addr().String()
}

// A request in absolute form without a path ("GET http://host HTTP/1.1", as a proxy may
// send it) is answered as the path "/" is (RFC 9112, 3.2.2): it was refused with 400 as a path
// that does not start with '/'.
func TestServe_AbsoluteFormWithoutPathIsRoot(t *testing.T) {
	ask, addr := rawRequests(t, newFixture(t))
	rootStatus, rootLoc, rootBody := ask("GET", "/")
	status, loc, body := ask("GET", "http://"+addr)
	if status != rootStatus || status == http.StatusBadRequest || loc != rootLoc || body != rootBody {
		t.Fatalf("absolute form without a path: %d %s %q; the path / is answered %d %s %q", status, loc, body, rootStatus, rootLoc, rootBody)
	}
}
