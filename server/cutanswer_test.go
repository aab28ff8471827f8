package server

import (
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/testutil"
)

// A client that goes away in the middle of a large answer is no error of the server's, and no
// second answer is tried after the first began. Before, the failed write of the view was
// answered again as an error: net/http refused it ("superfluous response.WriteHeader call", a
// line of its own on the server's error log), and the log said ERROR, status 500, code
// internal, for every client that dropped its connection mid-answer.
func TestServe_ClientGoneMidAnswer(t *testing.T) {
	var logs, httpLog syncBuffer
	lg := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := testConfig()
	cfg.AdminTokenFile = t.TempDir() + "/admin.token"
	s := New(testutil.Store(t), cfg, lg)
	srv := httptest.NewUnstartedServer(s.Handler())
	srv.Config.ErrorLog = log.New(&httpLog, "", 0)
	srv.Start()
	t.Cleanup(srv.Close)
	f := &fixture{t: t, st: s.st, s: s, srv: srv}
	f.token = f.adminToken()

	// A view of 8 MiB: more than the loopback connection's buffers hold, so the server is still
	// writing it when the client resets the connection.
	for i := range 8 {
		f.put(fmt.Sprintf("appliances/big/k%d", i), strings.Repeat("v", 1<<20-64))
	}
	c, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	tc := c.(*net.TCPConn)
	_ = tc.SetReadBuffer(4096)
	fmt.Fprintf(c, "GET /v1/appliances/big HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nAccept-Encoding: identity\r\n\r\n", f.token)
	first := make([]byte, 12)
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Read(first); err != nil || !strings.HasPrefix(string(first), "HTTP/1.1 200") {
		t.Fatalf("the answer began %q, %v; want HTTP/1.1 200", first, err)
	}
	time.Sleep(100 * time.Millisecond) // the server blocks in its write of the view
	_ = tc.SetLinger(0)                // close with a reset
	c.Close()

	waitFor(t, "the cut answer's log line", func() bool { return strings.Contains(logs.String(), `"msg":"request error"`) })
	time.Sleep(100 * time.Millisecond) // and net/http's line, if it writes one
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, `"level":"ERROR"`) {
			t.Errorf("a client gone mid-answer is logged as an error of the server's: %s", line)
		}
		if strings.Contains(line, `"msg":"request error"`) && !strings.Contains(line, `"answer_began":true`) {
			t.Errorf("the cut answer is not logged as an answer that began: %s", line)
		}
	}
	if strings.Contains(httpLog.String(), "superfluous") {
		t.Errorf("an error answer was tried after the answer began: %s", httpLog.String())
	}
	// The server answers the next request as before.
	f.must(f.do("GET", "/v1/appliances/big", ""), 200, nil)
}
