package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
)

func TestNew_Addresses(t *testing.T) {
	for addr, want := range map[string]string{
		"":                       DefaultAddr,
		"127.0.0.1:7400":         "http://127.0.0.1:7400",
		"https://shoelace:7400/": "https://shoelace:7400",
		"http://lb/prefix/":      "http://lb/prefix",
		// A doubled or '.' trailing slash, a CR or spaces from a file or CI variable.
		"http://lb/prefix//":       "http://lb/prefix",
		"http://127.0.0.1:7400//":  "http://127.0.0.1:7400",
		"http://127.0.0.1:7400/./": "http://127.0.0.1:7400",
		" http://h:1\r\n":          "http://h:1",
	} {
		c, err := New(addr, Options{})
		if err != nil || c.Addr() != want {
			t.Errorf("New(%q).Addr() = %v, %v; want %q", addr, c, err, want)
		}
	}
	for _, bad := range []string{"ftp://x", "http://", "http://[::1"} {
		if _, err := New(bad, Options{}); err == nil {
			t.Errorf("New(%q) accepted", bad)
		}
	}
	if _, err := New("https://x", Options{CAFile: "/nonexistent/ca.pem"}); err == nil {
		t.Error("a missing CA file was accepted")
	}
}

func TestDo_DecodesErrorsAndHeaders(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer sl_t" {
			t.Errorf("Authorization = %q", r.Header.Get("Authorization"))
		}
		w.Header().Set(api.HeaderIndex, "42")
		w.Header().Set(api.HeaderStore, "s1")
		switch r.URL.EscapedPath() {
		case "/v1/kv/shared/a%20b":
			w.WriteHeader(404)
			fmt.Fprint(w, `{"error":{"code":"not_found","message":"key \"shared/a b\" not found"}}`)
		case "/v1/kv/plain":
			w.WriteHeader(502)
			fmt.Fprint(w, "bad gateway from the load balancer")
		case "/v1/appliances/web":
			w.WriteHeader(304)
		default:
			t.Errorf("unexpected path %s", r.URL.EscapedPath())
		}
	}))
	defer srv.Close()
	c, _ := New(srv.URL, Options{Token: "sl_t"})
	ctx := context.Background()

	_, m, err := c.Get(ctx, "shared/a b")
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeNotFound || ae.Status != 404 || !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("Get = %#v", err)
	}
	if m.Index != 42 || m.Store != "s1" {
		t.Errorf("meta = %+v", m)
	}
	_, _, err = c.Get(ctx, "plain")
	if !errors.As(err, &ae) || ae.Code != api.CodeUnavailable || ae.Status != 502 {
		t.Fatalf("a non-JSON 502 = %#v", err)
	}
	v, m, err := c.WatchView(ctx, "web", Poll{Index: 41, Wait: time.Second})
	if err != nil || v != nil || m.Status != 304 || m.Index != 42 {
		t.Fatalf("WatchView on 304 = %v, %+v, %v", v, m, err)
	}
}

func TestDo_RetriesTooManyRequestsAfterRetryAfter(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		markAnswer(w)
		if calls.Add(1) == 1 {
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(429)
			fmt.Fprint(w, `{"error":{"code":"rate_limited","message":"slow down"}}`)
			return
		}
		fmt.Fprint(w, `{"revision":7}`)
	}))
	defer srv.Close()

	c, _ := New(srv.URL, Options{})
	if _, err := c.Put(context.Background(), "k", []byte("v"), NoCAS); !errors.Is(err, &api.Error{Code: api.CodeRateLimited}) {
		t.Fatalf("without retries, Put = %v; want the 429", err)
	}
	calls.Store(0)
	c, _ = New(srv.URL, Options{Retries: 2})
	rev, err := c.Put(context.Background(), "k", []byte("v"), NoCAS)
	if err != nil || rev != 7 || calls.Load() != 2 {
		t.Fatalf("with retries, Put = %d, %v after %d calls; want revision 7 after 2", rev, err, calls.Load())
	}
}

// A Retry-After beyond the caller's deadline is answered at once with the server's answer:
// waiting out the deadline for a try that could not start before it only delays the error.
func TestDo_RetryAfterBeyondTheDeadlineAnswersAtOnce(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Retry-After", "60")
		w.WriteHeader(429)
		fmt.Fprint(w, `{"error":{"code":"rate_limited","message":"slow down"}}`)
	}))
	defer srv.Close()
	c, _ := New(srv.URL, Options{Retries: 3})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	_, _, err := c.Get(ctx, "k")
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeRateLimited || ae.RetryAfter != 60 || calls.Load() != 1 {
		t.Fatalf("Get = %v after %d calls; want the 429 with its Retry-After after one", err, calls.Load())
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Fatalf("Get took %s: it waited for a retry that could not start before the deadline", d)
	}
}

func TestDo_TransportError(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	addr := srv.URL
	srv.Close()
	c, _ := New(addr, Options{})
	_, _, err := c.Get(context.Background(), "k")
	if !IsTransport(err) {
		t.Fatalf("a closed server gave %v, want a transport error", err)
	}
}

// A read's retry cut off by the caller's deadline returns the server's answer to the try before
// it (503: etcd away), not "no answer before the timeout", which would blame the network; a
// write's is an outcome unknown that keeps that answer; a caller that gives up (Ctrl-C) still
// gets its cancellation.
func TestDo_RetryOutOfTimeKeepsTheServersAnswer(t *testing.T) {
	var calls atomic.Int32
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(503)
			fmt.Fprint(w, `{"error":{"code":"unavailable","message":"read the keys a write touches: etcd did not answer in time"}}`)
			return
		}
		select { // the retry: the server waits for etcd longer than the caller
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release)
	c, _ := New(srv.URL, Options{Retries: 2})

	// The retry comes 1 to 1.5 s after the 503 (retryWait's spread of Retry-After: 1), and must
	// have left before the deadline (a deadline of 1.5 s failed about 1 run in 6).
	const deadline = 3 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	_, _, err := c.Get(ctx, "k")
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeUnavailable || calls.Load() != 2 {
		t.Fatalf("Get = %v after %d calls; want the first try's 503", err, calls.Load())
	}
	// A write whose retry left and was not answered: its outcome is unknown (Sent), and the
	// server's answer to the try before is kept beside it.
	calls.Store(0)
	ctx, cancel = context.WithTimeout(context.Background(), deadline)
	defer cancel()
	_, err = c.Put(ctx, "k", []byte("v"), NoCAS)
	var te *TransportError
	if !errors.As(err, &te) || !te.Sent || !strings.Contains(te.Prior, "etcd did not answer in time") {
		t.Fatalf("Put = %v (%+v); want a sent write's transport error with the 503 before it", err, te)
	}

	calls.Store(0)
	ctx, cancel = context.WithCancel(context.Background())
	go func() {
		for calls.Load() < 2 {
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
	}()
	if _, err := c.Put(ctx, "k", []byte("v"), NoCAS); !errors.Is(err, context.Canceled) {
		t.Fatalf("a Put canceled during its retry = %v; want context.Canceled", err)
	}
}

// Shoelace never answers 502 or 504: a proxy in front of it does, and for a write it may have
// passed the write on before its upstream failed or timed out. Such a write's outcome is
// unknown (it exited 6, "not applied: retry it"); a read's 502 or 504 stays unavailable.
func TestDo_GatewayErrorOnWriteIsOutcomeUnknown(t *testing.T) {
	var calls atomic.Int32
	status := atomic.Int32{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Retry-After", "0")
		w.WriteHeader(int(status.Load()))
		fmt.Fprint(w, "<html>upstream timed out</html>")
	}))
	defer srv.Close()
	c, _ := New(srv.URL, Options{Retries: 2})
	ctx := context.Background()
	for _, st := range []int{502, 504} {
		status.Store(int32(st))
		calls.Store(0)
		_, err := c.Put(ctx, "k", []byte("v"), NoCAS)
		var ae *api.Error
		if !errors.As(err, &ae) || ae.Code != api.CodeOutcomeUnknown || ae.Status != st ||
			!strings.Contains(ae.Message, fmt.Sprintf("a proxy in front of the server answered %d (<html>upstream timed out</html>)", st)) {
			t.Errorf("Put answered %d = %#v; want outcome_unknown naming the proxy's answer", st, err)
		}
		if calls.Load() != 1 {
			t.Errorf("Put answered %d was sent %d times; a write of unknown outcome is never resent", st, calls.Load())
		}
		if _, _, err := c.Get(ctx, "k"); !errors.As(err, &ae) || ae.Code != api.CodeUnavailable || ae.Status != st {
			t.Errorf("Get answered %d = %#v; want unavailable", st, err)
		}
	}
}

// A 503 outcome_unknown is not retried even when it carries Retry-After: the write may have
// been applied, and a blind retry (a --cas one fails on its own write) is the caller's choice.
func TestDo_OutcomeUnknownIsNeverRetried(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(503)
		fmt.Fprint(w, `{"error":{"code":"outcome_unknown","message":"etcd did not confirm the write"}}`)
	}))
	defer srv.Close()
	c, _ := New(srv.URL, Options{Retries: 2})
	_, err := c.Put(context.Background(), "k", []byte("v"), NoCAS)
	if !errors.Is(err, &api.Error{Code: api.CodeOutcomeUnknown}) || calls.Load() != 1 {
		t.Fatalf("Put = %v after %d calls; want outcome_unknown after 1", err, calls.Load())
	}
}

// A retry waits Retry-After and up to half as long again, at random, within the cap: pipelines
// turned away together (429) come back spread out, not together.
func TestRetryWait_Spreads(t *testing.T) {
	for _, c := range []struct{ ra, lo, hi time.Duration }{
		{time.Second, time.Second, 1500 * time.Millisecond},
		{0, 100 * time.Millisecond, 150 * time.Millisecond},
		{time.Hour, maxRetryAfter, maxRetryAfter},
	} {
		seen := map[time.Duration]bool{}
		for range 200 {
			w := retryWait(c.ra)
			if w < c.lo || w > c.hi {
				t.Fatalf("Retry-After %s: waits %s, want %s to %s", c.ra, w, c.lo, c.hi)
			}
			seen[w] = true
		}
		if c.lo < c.hi && len(seen) < 50 {
			t.Errorf("Retry-After %s: 200 waits took %d values", c.ra, len(seen))
		}
	}
}

// A CA file was read whole with no bound: --ca-file (or the agent's ca_file) given by mistake
// to a large file took its size in memory. One over 4 MiB is refused, unread, naming the limit.
func TestNew_CAFileSizeLimit(t *testing.T) {
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(ca, 4<<20+1); err != nil {
		t.Fatal(err)
	}
	_, err := New("https://127.0.0.1:1", Options{CAFile: ca})
	if want := "ca file " + ca + " is over 4194304 bytes (4 MiB)"; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("New = %v, want %q", err, want)
	}
}

// A write answered 503 "not applied" (etcd without quorum: the server answers after its own
// request timeout) is not sent again when less time is left than the answer took: that retry
// would be cut off by the caller's deadline and turn a clean "not applied" (exit 6) into an
// outcome unknown (exit 7). A write answered at once is still retried.
func TestDo_WriteNotRetriedWhenItsRetryCannotFinish(t *testing.T) {
	var calls atomic.Int32
	var delay atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		select {
		case <-r.Context().Done():
			return
		case <-time.After(time.Duration(delay.Load())):
		}
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(503)
		fmt.Fprint(w, `{"error":{"code":"unavailable","message":"read the keys a write touches: etcd did not answer in time"}}`)
	}))
	defer srv.Close()
	c, _ := New(srv.URL, Options{Retries: 2})

	delay.Store(int64(1500 * time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, err := c.Put(ctx, "k", []byte("v"), NoCAS)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeUnavailable || calls.Load() != 1 {
		t.Fatalf("Put = %v after %d calls; want the 503 (not applied) of the one try", err, calls.Load())
	}

	calls.Store(0)
	delay.Store(0)
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.Put(ctx, "k", []byte("v"), NoCAS); !errors.As(err, &ae) || ae.Code != api.CodeUnavailable || calls.Load() != 3 {
		t.Fatalf("Put = %v after %d calls; want the 503 after 3 tries", err, calls.Load())
	}
}

// markAnswer sets the headers that every answer of a Shoelace server carries, which the
// client refuses a 2xx answer without (ErrForeignAnswer): a handler may set its own after.
func markAnswer(w http.ResponseWriter) {
	w.Header().Set(api.HeaderIndex, "7")
	w.Header().Set(api.HeaderStore, "test-store")
}
