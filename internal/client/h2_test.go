package client

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/testutil/h2reset"
)

// A write that went out whole over HTTP/2 is not sent again when the stream is then reset
// (a load balancer that passed it on and broke the stream: PROTOCOL_ERROR): net/http's HTTP/2
// client sent it again by itself, asking GetBody for its body anew, so that the CLI (and the
// agent, whose client retries nothing) applied one write twice and said it succeeded. Its
// outcome is unknown now, as after any failure once it was sent. A read is still sent again.
func TestDo_HTTP2ResetWriteIsNotResent(t *testing.T) {
	srv := h2reset.Start(t, func(method, path string) (int, string) {
		if method == http.MethodGet {
			return 200, `{"key":"k","value":"v","mod_revision":3}`
		}
		return 200, `{"revision":7}`
	})
	for _, retries := range []int{0, 2} {
		c, err := New(srv.URL, Options{Retries: retries, HTTPClient: srv.Client})
		if err != nil {
			t.Fatal(err)
		}
		key := []string{"a", "b"}[retries/2]
		_, err = c.Put(context.Background(), key, []byte("v"), NoCAS)
		var te *TransportError
		if !errors.As(err, &te) || !te.Sent {
			t.Errorf("retries %d: Put over a stream reset once it was sent = %v; want a sent write's transport error", retries, err)
		}
		if n := srv.Seen(http.MethodPut, "/v1/kv/"+key); n != 1 {
			t.Errorf("retries %d: the server received the write %d times, want once", retries, n)
		}
		if _, _, err := c.Get(context.Background(), key); err != nil {
			t.Errorf("retries %d: a read over a stream reset: %v, want it sent again", retries, err)
		}
	}
}

// A write answered 307 or 308 is sent, with its body, where the answer says: it was answered,
// not lost, so the guard above does not hold it back.
func TestDo_WriteFollowsRedirect(t *testing.T) {
	var paths []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		markAnswer(w)
		b, _ := io.ReadAll(r.Body)
		paths = append(paths, r.URL.Path+" "+string(b))
		if r.URL.Path == "/v1/kv/a" {
			http.Redirect(w, r, "/v1/kv/b", http.StatusPermanentRedirect)
			return
		}
		io.WriteString(w, `{"revision":7}`)
	}))
	defer srv.Close()
	c, _ := New(srv.URL, Options{})
	if rev, err := c.Put(context.Background(), "a", []byte("v"), NoCAS); err != nil || rev != 7 || len(paths) != 2 || paths[1] != "/v1/kv/b v" {
		t.Fatalf("Put answered 308 = %d, %v; the server saw %q", rev, err, paths)
	}
}
