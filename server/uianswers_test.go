package server

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// stalledPage asks for the console page p with b's session and never reads the answer (a
// receive buffer of 4 KiB): the server's write of a large page blocks until the connection closes.
func stalledPage(t *testing.T, b *uiBrowser, p string) net.Conn {
	t.Helper()
	u, _ := url.Parse(b.base + "/ui/")
	session := ""
	for _, c := range b.c.Jar.Cookies(u) {
		if c.Name == uiCookie {
			session = c.Value
		}
	}
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	c, err := d.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nCookie: %s=%s\r\n\r\n", p, u.Host, uiCookie, session)
	return c
}

// The console's pages count against their token's share of the answers that clients have not
// taken, as the API's answers do: an edit page carries its value whole, escaped (4.5 MB for a
// value of 1 MB of quotes and brackets), and a session that asked for it again and again and
// read nothing held a copy of each until its write deadline, outside every bound.
func TestUI_UnreadPagesBounded(t *testing.T) {
	f := newFixture(t)
	uiSeed(f)
	value := strings.Repeat(`"<&>`, 250<<10)
	f.put("appliances/web-frontend/big", value)
	f.s.answers.perToken, f.s.answers.perReplica = 8<<20, 16<<20
	writer := f.newToken(api.TokenRequest{Name: "pipeline", Write: []string{"appliances/web-frontend"}, Read: []string{"shared"}})
	b := newUIBrowser(t, f.srv.URL, nil)
	b.signIn(writer)
	edit := "/ui/appliances/web-frontend/edit?key=appliances/web-frontend/big"
	page := b.get(edit)
	mustStatus(t, page, http.StatusOK)
	size := int64(len(page.body))
	if size < 4*int64(len(value)) {
		t.Fatalf("edit page of %d bytes for a value of %d", size, len(value))
	}

	stalledPage(t, b, edit)
	waitFor(t, "the stalled page held", func() bool { return f.s.answers.held() >= size })
	stalledPage(t, b, edit) // one answer fits when the token holds none; the second does not: 429
	r := b.get(edit)
	if r.StatusCode != http.StatusTooManyRequests || r.Header.Get("Retry-After") == "" || !strings.Contains(string(r.body), "not yet read") {
		t.Fatalf("a page over the token's share: %d (Retry-After %q) %s", r.StatusCode, r.Header.Get("Retry-After"), r.body)
	}
	if f.s.answers.held() >= 2*size {
		t.Fatalf("%d bytes of pages held, over the token's share", f.s.answers.held())
	}
	// Small pages are not counted.
	mustStatus(t, b.get("/ui/"), http.StatusOK)
}
