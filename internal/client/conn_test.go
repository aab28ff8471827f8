package client

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/testutil/faultproxy"
)

// closedAddr is a loopback address on which nothing listens: a dial is refused.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// countTries wraps a client's transport to count its round trips and call after (when not nil)
// with each one's error, before Do sees it.
func countTries(n *atomic.Int32, after func(error)) func(http.RoundTripper) http.RoundTripper {
	return func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			n.Add(1)
			resp, err := rt.RoundTrip(r)
			if after != nil {
				after(err)
			}
			return resp, err
		})
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// A read whose connection the server reset (a replica restarting behind the load balancer),
// closed without an answer, or closed in the middle of the answer is sent again and succeeds;
// it exited 6 at once.
func TestDo_RetriesReadAfterConnectionLost(t *testing.T) {
	for _, c := range []struct {
		name   string
		break_ func(t *testing.T, w http.ResponseWriter)
	}{
		{"reset", faultproxy.ResetRequest},
		{"closed before the answer", func(t *testing.T, w http.ResponseWriter) {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err != nil {
				t.Error(err)
				return
			}
			conn.Close()
		}},
		{"closed in the answer", func(t *testing.T, w http.ResponseWriter) {
			w.Header().Set("Content-Length", "100")
			fmt.Fprint(w, `{"key":"k",`)
			w.(http.Flusher).Flush()
			faultproxy.ResetRequest(t, w)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var calls atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				markAnswer(w)
				if calls.Add(1) == 1 {
					c.break_(t, w)
					return
				}
				fmt.Fprint(w, `{"key":"k","value":"v"}`)
			}))
			defer srv.Close()
			cl, _ := New(srv.URL, Options{Retries: 2})
			kv, _, err := cl.Get(context.Background(), "k")
			if err != nil || kv.Value != "v" || calls.Load() != 2 {
				t.Fatalf("Get = %+v, %v after %d calls; want the value after 2", kv, err, calls.Load())
			}
			// Without retries (the agent's client, which has a loop of its own), as before.
			calls.Store(0)
			cl, _ = New(srv.URL, Options{})
			if _, _, err := cl.Get(context.Background(), "k"); !IsTransport(err) || calls.Load() != 1 {
				t.Fatalf("Get without retries = %v after %d calls; want the transport error after 1", err, calls.Load())
			}
		})
	}
}

// A write whose connection was reset after the request was sent may have been applied: it is
// not sent again, and its outcome is unknown (Sent), whatever the retry budget.
func TestDo_WriteResetAfterSentIsNotRetried(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		_, _ = io.ReadAll(r.Body) // the whole write arrived
		faultproxy.ResetRequest(t, w)
	}))
	defer srv.Close()
	c, _ := New(srv.URL, Options{Retries: 2})
	_, err := c.Put(context.Background(), "k", []byte("v"), NoCAS)
	var te *TransportError
	if !errors.As(err, &te) || !te.Sent || !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("Put = %v (%+v); want a sent write's transport error (connection reset)", err, te)
	}
	if calls.Load() != 1 {
		t.Fatalf("the server saw the write %d times; a write that may have been applied is never resent", calls.Load())
	}
	if _, err := c.Delete(context.Background(), "k", false); !errors.As(err, &te) || !te.Sent || calls.Load() != 2 {
		t.Fatalf("Delete = %v after %d calls; want a sent write's transport error after 1 more", err, calls.Load())
	}
}

// A write whose connection was refused never left: it is sent again once the server listens,
// and applied once.
func TestDo_RefusedWriteIsRetried(t *testing.T) {
	addr := closedAddr(t)
	var puts atomic.Int32
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		markAnswer(w)
		if b, _ := io.ReadAll(r.Body); r.Method != http.MethodPut || string(b) != "v" {
			t.Errorf("%s with %q", r.Method, b)
		}
		fmt.Fprintf(w, `{"revision":%d}`, 6+puts.Add(1))
	})
	var tries atomic.Int32
	var once sync.Once
	var srv *httptest.Server
	defer func() {
		if srv != nil {
			srv.Close()
		}
	}()
	startAfterRefusal := func(err error) {
		if err == nil || !errors.Is(err, syscall.ECONNREFUSED) {
			return
		}
		once.Do(func() { // the replica is back: listen where the first try was refused
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				t.Skipf("the port of the refused try was taken meanwhile: %v", err)
			}
			srv = &httptest.Server{Listener: ln, Config: &http.Server{Handler: handler}}
			srv.Start()
		})
	}
	c, _ := New(addr, Options{Retries: 2, Wrap: countTries(&tries, startAfterRefusal)})
	rev, err := c.Put(context.Background(), "k", []byte("v"), NoCAS)
	if err != nil || rev != 7 || puts.Load() != 1 || tries.Load() != 2 {
		t.Fatalf("Put = %d, %v; the server applied %d puts in %d tries; want revision 7, 1 put, 2 tries", rev, err, puts.Load(), tries.Load())
	}
}

// A write whose connection was reset during the TLS handshake (a load balancer that accepts,
// then finds its replica away) sent nothing either: it is sent again and applied once.
func TestDo_WriteResetInTLSHandshakeIsRetried(t *testing.T) {
	var puts atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		markAnswer(w)
		fmt.Fprintf(w, `{"revision":%d}`, 6+puts.Add(1))
	}))
	ln := &resetFirst{Listener: srv.Listener}
	srv.Listener = ln
	srv.StartTLS()
	defer srv.Close()
	c, _ := New(srv.URL, Options{Retries: 2, HTTPClient: srv.Client()})
	rev, err := c.Put(context.Background(), "k", []byte("v"), NoCAS)
	if err != nil || rev != 7 || puts.Load() != 1 || ln.accepted.Load() != 2 {
		t.Fatalf("Put = %d, %v; %d puts applied on %d connections; want revision 7, 1 put, 2 connections", rev, err, puts.Load(), ln.accepted.Load())
	}
}

// resetFirst resets the first connection it accepts.
type resetFirst struct {
	net.Listener
	accepted atomic.Int32
}

func (l *resetFirst) Accept() (net.Conn, error) {
	for {
		conn, err := l.Listener.Accept()
		if err != nil || l.accepted.Add(1) > 1 {
			return conn, err
		}
		faultproxy.Reset(conn)
	}
}

// Retries after a failed connection stop at the budget, and at the caller's deadline: a
// server that stays away gives the refusal, not a wait past the deadline.
func TestDo_ConnectionRetriesStopAtBudgetAndDeadline(t *testing.T) {
	addr := closedAddr(t)
	for _, retries := range []int{0, 2} {
		var tries atomic.Int32
		c, _ := New(addr, Options{Retries: retries, Wrap: countTries(&tries, nil)})
		_, _, err := c.Get(context.Background(), "k")
		var te *TransportError
		if !errors.As(err, &te) || te.Sent || !errors.Is(err, syscall.ECONNREFUSED) || tries.Load() != int32(retries+1) {
			t.Fatalf("Retries %d: Get = %v after %d tries; want the refusal after %d", retries, err, tries.Load(), retries+1)
		}
	}

	var tries atomic.Int32
	c, _ := New(addr, Options{Retries: 100, Wrap: countTries(&tries, nil)})
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Put(ctx, "k", []byte("v"), NoCAS)
	var te *TransportError
	// The refusal, or on a loaded machine a last try that the deadline cut.
	if !errors.As(err, &te) || te.Sent || !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Put = %v; want the refusal", err)
	}
	// 100, 200 ms (each up to half as long again) fit in 500 ms; 400 ms more does not, and no
	// try starts that could not before the deadline.
	if d := time.Since(start); d > 750*time.Millisecond || tries.Load() < 2 || tries.Load() > 3 {
		t.Fatalf("Put gave up after %s and %d tries; want 2 or 3 tries within the 500 ms deadline", d, tries.Load())
	}

	// The caller who gives up (Ctrl-C) during the backoff gets its cancellation.
	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	if _, _, err := c.Get(ctx, "k"); !errors.Is(err, context.Canceled) || !IsTransport(err) {
		t.Fatalf("a Get canceled during its backoff = %v; want context.Canceled", err)
	}
}

// Which failures are retried: those that sent nothing, for any request, and a lost connection
// for a read; never a write that got a connection, nor a failure a retry cannot mend.
func TestTransportError_Retryable(t *testing.T) {
	dial := func(err error) error {
		return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", err)}
	}
	read := func(err error) error {
		return &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", err)}
	}
	for _, c := range []struct {
		name          string
		err           error
		noConn        bool
		read, written bool // retried for a GET, for a PUT
	}{
		{"refused", dial(syscall.ECONNREFUSED), true, true, true},
		{"no route", dial(syscall.EHOSTUNREACH), true, true, true},
		{"dial timeout", &net.OpError{Op: "dial", Net: "tcp", Err: os.ErrDeadlineExceeded}, true, true, true},
		{"through a proxy", &net.OpError{Op: "proxyconnect", Net: "tcp", Err: dial(syscall.ECONNREFUSED)}, true, true, true},
		{"DNS temporary failure", &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "server misbehaving", Name: "lb", IsTemporary: true}}, true, true, true},
		{"DNS timeout", &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "i/o timeout", Name: "lb", IsTimeout: true}}, true, true, true},
		{"DNS: no such host", &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "lbb", IsNotFound: true}}, true, false, false},
		{"reset in the TLS handshake", read(syscall.ECONNRESET), true, true, true},
		{"reset", read(syscall.ECONNRESET), false, true, false},
		{"EOF", io.EOF, false, true, false},
		{"cut answer", io.ErrUnexpectedEOF, false, true, false},
		{"idle connection closed", errors.New("http: server closed idle connection"), false, true, false},
		{"broken pipe", read(syscall.EPIPE), false, true, false},
		{"timeout", context.DeadlineExceeded, false, false, false},
		{"certificate", &x509.UnknownAuthorityError{}, true, false, false},
	} {
		err := fmt.Errorf("wrapped: %w", c.err)
		get := &TransportError{Err: err}
		put := &TransportError{Err: err, noConn: c.noConn}
		if got := get.retryable(http.MethodGet); got != c.read {
			t.Errorf("%s: GET retried %v, want %v", c.name, got, c.read)
		}
		if got := put.retryable(http.MethodPut); got != c.written {
			t.Errorf("%s: PUT retried %v, want %v", c.name, got, c.written)
		}
		put.Sent = true
		if put.retryable(http.MethodPut) {
			t.Errorf("%s: a sent PUT is retried", c.name)
		}
	}
}

// The backoff after a failed connection starts at 100 ms and doubles up to 2 s, each wait up to
// half as long again, at random.
func TestConnRetryWait_BacksOff(t *testing.T) {
	for n, lo := range []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond,
		800 * time.Millisecond, 1600 * time.Millisecond, 2 * time.Second, 2 * time.Second} {
		seen := map[time.Duration]bool{}
		for range 100 {
			w := connRetryWait(n)
			if w < lo || w > lo*3/2 {
				t.Fatalf("after %d failures: waits %s, want %s to %s", n, w, lo, lo*3/2)
			}
			seen[w] = true
		}
		if len(seen) < 20 {
			t.Errorf("after %d failures: 100 waits took %d values", n, len(seen))
		}
	}
	if w := connRetryWait(1000); w < connRetryMax || w > connRetryMax*3/2 {
		t.Errorf("after 1000 failures: waits %s", w)
	}
}

// TestDo_ConnectionRetryKeepsTheServersAnswer: a read answered 503 (etcd away) with
// Retry-After, whose retry's connection was then reset and retried in turn, forgot the 503:
// cut off by the caller's deadline it said "no answer before the timeout", out of retries
// "connection reset", where the server had said why. The last answer the server gave is kept
// across connection retries: the deadline returns it, as it does when no connection failed in
// between, and a transport error carries it as Prior.
func TestDo_ConnectionRetryKeepsTheServersAnswer(t *testing.T) {
	const why = "read the keys a write touches: etcd did not answer in time"
	var calls atomic.Int32
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch calls.Add(1) {
		case 1:
			w.Header().Set("Retry-After", "1")
			// A connection of its own for the retry: net/http sends a read again by itself
			// when a connection it reused is reset.
			w.Header().Set("Connection", "close")
			w.WriteHeader(503)
			fmt.Fprintf(w, `{"error":{"code":"unavailable","message":%q}}`, why)
		case 2:
			faultproxy.ResetRequest(t, w)
		default:
			select { // the server waits for etcd longer than the caller
			case <-r.Context().Done():
			case <-release:
			}
		}
	}))
	defer srv.Close()
	defer close(release)

	c, _ := New(srv.URL, Options{Retries: 3})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, _, err := c.Get(ctx, "k")
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeUnavailable || ae.Message != why || calls.Load() != 3 {
		t.Fatalf("Get = %v after %d calls; want the first try's 503 (%q)", err, calls.Load(), why)
	}

	calls.Store(0)
	c, _ = New(srv.URL, Options{Retries: 1})
	_, _, err = c.Get(context.Background(), "k")
	var te *TransportError
	if !errors.As(err, &te) || te.Sent || te.Prior != why || calls.Load() != 2 {
		t.Fatalf("Get = %v (%+v) after %d calls; want the reset, with the 503 before it as Prior", err, te, calls.Load())
	}
}

// TestDo_FreshConnForWrites: a write went out on the connection that the request before it
// left idle; a server closes such a connection (its idle timeout, or a replica at its
// connection cap making room for a new one) without reading what arrives on it, and a write
// that went out on it as it closed was sent and unanswered: outcome unknown (the CLI's exit 7)
// for a write the server never read. With FreshConnForWrites each write has a connection of
// its own; reads still share one.
func TestDo_FreshConnForWrites(t *testing.T) {
	var mu sync.Mutex
	var conns []string // the client's address of each request, in order
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		markAnswer(w)
		mu.Lock()
		conns = append(conns, r.Method+" "+r.RemoteAddr)
		mu.Unlock()
		io.Copy(io.Discard, r.Body)
		fmt.Fprint(w, `{"key":"k","value":"v","revision":1}`)
	}))
	defer srv.Close()
	for _, fresh := range []bool{false, true} {
		mu.Lock()
		conns = nil
		mu.Unlock()
		c, _ := New(srv.URL, Options{FreshConnForWrites: fresh})
		ctx := context.Background()
		if _, _, err := c.Get(ctx, "k"); err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.Get(ctx, "k"); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Put(ctx, "k", []byte("v"), NoCAS); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Put(ctx, "k", []byte("v"), NoCAS); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		seen := append([]string(nil), conns...)
		mu.Unlock()
		addr := func(i int) string { return seen[i][strings.Index(seen[i], " ")+1:] }
		if addr(0) != addr(1) {
			t.Errorf("fresh %v: two reads on two connections: %q", fresh, seen)
		}
		if reused := addr(2) == addr(1) || addr(3) == addr(2); reused == fresh {
			t.Errorf("fresh %v: a write on the connection of the request before it: %v; requests %q", fresh, reused, seen)
		}
	}
}
