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
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)
	for i, want := range []int{http.StatusBadRequest, http.StatusTooManyRequests} {
		if _, err := conn.Write([]byte("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		var body strings.Builder
		_, _ = bufio.NewReader(res.Body).WriteTo(&body)
		res.Body.Close()
		if res.StatusCode != want || !strings.Contains(body.String(), `"code"`) {
			t.Fatalf("OPTIONS * number %d: %d %s, want %d with Shoelace's JSON error", i+1, res.StatusCode, body.String(), want)
		}
		// It said the path "*" had an empty, '.' or '..' segment.
		if want == http.StatusBadRequest && !strings.Contains(body.String(), `request path \"*\" does not start with '/'`) {
			t.Fatalf("OPTIONS *: %s", body.String())
		}
		if want == http.StatusTooManyRequests && !strings.Contains(body.String(), api.CodeRateLimited) {
			t.Fatalf("OPTIONS * over the limit: %s", body.String())
		}
	}
}
