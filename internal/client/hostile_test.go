package client

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// lowerMaxAnswer sets the bound on one answer to n for a test.
func lowerMaxAnswer(t *testing.T, n int64) {
	old := maxAnswer
	maxAnswer = n
	t.Cleanup(func() { maxAnswer = old })
}

// endless writes the start of a JSON answer, then spaces until the client goes away (at most
// limit bytes, so that a client that reads on does not keep the test for ever).
func endless(w io.Writer, start string, limit int64) {
	io.WriteString(w, start)
	chunk := bytes.Repeat([]byte(" "), 64<<10)
	for n := int64(0); n < limit; n += int64(len(chunk)) {
		if _, err := w.Write(chunk); err != nil {
			return
		}
	}
}

// gzipBomb is a gzip stream of `{"keys":{"a":"` followed by n spaces: a few KiB that expand to n bytes.
func gzipBomb(t *testing.T, n int64) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	endless(zw, `{"keys":{"a":"`, n)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// An answer over the bound — one that never ends, or a few KiB of gzip that expand past it
// (net/http gunzips answers by itself) — ends in ErrAnswerTooLarge, read no further than the
// bound, and is not sent again; io.ReadAll read it whole before (the bomb: 8 MiB here, GiBs
// from a hostile server, as the client's memory).
func TestDo_AnswerBounded(t *testing.T) {
	lowerMaxAnswer(t, 1<<20)
	bomb := gzipBomb(t, 8<<20)
	if len(bomb) > 64<<10 {
		t.Fatalf("the bomb is %d bytes", len(bomb))
	}
	var calls atomic.Int32
	sent := make(chan int64, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		markAnswer(w)
		calls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/v1/appliances/endless":
			cw := &countWriter{w: w}
			endless(cw, `{"keys":{"a":"`, 64<<20)
			sent <- cw.n
		case "/v1/appliances/bomb":
			w.Header().Set("Content-Encoding", "gzip")
			w.Write(bomb)
		case "/v1/appliances/error":
			w.WriteHeader(http.StatusServiceUnavailable)
			endless(w, `{"error":{"code":"unavailable","message":"`, 64<<20)
		}
	}))
	defer srv.Close()
	c, _ := New(srv.URL, Options{Retries: 2})
	for _, name := range []string{"endless", "bomb", "error"} {
		calls.Store(0)
		_, _, err := c.View(context.Background(), name)
		if !errors.Is(err, ErrAnswerTooLarge) || IsTransport(err) {
			t.Fatalf("%s: View = %v; want ErrAnswerTooLarge", name, err)
		}
		if n := calls.Load(); n != 1 {
			t.Fatalf("%s: asked %d times; an answer over the bound is not asked again", name, n)
		}
		if name == "endless" {
			// The server could write what the sockets' buffers held beyond the bound, not the 64 MiB.
			select {
			case n := <-sent:
				if n > 32<<20 {
					t.Fatalf("the server wrote %d bytes of the endless answer before the client went away", n)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("the server still writes the endless answer")
			}
		}
	}
	// An answer at the bound is read.
	lowerMaxAnswer(t, int64(len(`{"keys":{"a":"b"}}`)))
	srv2 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		markAnswer(w)
		io.WriteString(w, `{"keys":{"a":"b"}}`)
	}))
	defer srv2.Close()
	c2, _ := New(srv2.URL, Options{})
	if v, _, err := c2.View(context.Background(), "web"); err != nil || v.Keys["a"] != "b" {
		t.Fatalf("an answer of the bound's size: %+v, %v", v, err)
	}
}

// The bound on answers is the real one: a gzip bomb of a little over 256 MiB decoded (some
// 260 KiB sent) ends in ErrAnswerTooLarge.
func TestDo_GzipBombAtTheRealBound(t *testing.T) {
	if maxAnswer != MaxAnswerBytes || MaxAnswerBytes != 256<<20 {
		t.Fatalf("maxAnswer %d, MaxAnswerBytes %d", maxAnswer, MaxAnswerBytes)
	}
	// gzip members of 1 MiB of spaces each, one after another (a gzip reader reads them as one
	// stream): compressing 256 MiB took 40 s under the race detector.
	var member bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&member, gzip.BestCompression)
	zw.Write(bytes.Repeat([]byte(" "), 1<<20))
	zw.Close()
	bomb := append(gzipBomb(t, 0), bytes.Repeat(member.Bytes(), MaxAnswerBytes>>20)...)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Encoding", "gzip")
		w.Write(bomb)
	}))
	defer srv.Close()
	c, _ := New(srv.URL, Options{})
	if _, _, err := c.View(context.Background(), "web"); !errors.Is(err, ErrAnswerTooLarge) {
		t.Fatalf("View = %v; want ErrAnswerTooLarge", err)
	}
}

// An answer trickled a byte at a time, never ending, ends at the caller's deadline.
func TestDo_TrickledAnswerEndsAtTheDeadline(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"keys":{"a":"`)
		for r.Context().Err() == nil {
			if _, err := w.Write([]byte(" ")); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			time.Sleep(10 * time.Millisecond)
		}
	}))
	defer srv.Close()
	c, _ := New(srv.URL, Options{Retries: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, _, err := c.View(ctx, "web"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("View = %v; want the deadline", err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("View returned after %s", d)
	}
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// A line of a stream over the bound — a line that never ends — ends the stream with
// ErrAnswerTooLarge once the bound is read, the lines before it given; json.Decoder held the
// line whole in memory, however long, before. Lines adding up to more than the bound are fine.
func TestStreamView_LineBounded(t *testing.T) {
	lowerMaxAnswer(t, 1<<20)
	line, _ := json.Marshal(api.View{Appliance: "web", Revision: 1, Keys: map[string]string{"a": strings.Repeat("x", 300<<10)}})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", api.ContentTypeStream)
		for i := 0; i < 8; i++ { // 8 lines of 300 KiB: 2.4 MiB in all
			fmt.Fprintf(w, "%s\n", line)
		}
		if r.URL.Path == "/v1/appliances/endless" {
			endless(w, `{"appliance":"web","revision":9,"keys":{"a":"`, 64<<20)
		}
	}))
	defer srv.Close()
	c, _ := New(srv.URL, Options{})
	views := 0
	fn := func(v *api.View, _ Meta) error { views++; return nil }
	if _, err := c.StreamView(context.Background(), "fine", Poll{Index: 1}, fn); err != nil || views != 8 {
		t.Fatalf("8 lines under the bound: %d views, %v", views, err)
	}
	views = 0
	_, err := c.StreamView(context.Background(), "endless", Poll{Index: 1}, fn)
	if !errors.Is(err, ErrAnswerTooLarge) || IsTransport(err) || views != 8 {
		t.Fatalf("endless line: %d views, %v; want 8 views, then ErrAnswerTooLarge", views, err)
	}
}

// A server writes a stream's heartbeats one at once and then one every 20 s; one that writes
// them as fast as it can (broken, or hostile) had them read as fast as they came: a core of the
// VM's CPU for as long as the stream lasted. They are read one a second at most (the server's
// writes then wait for the connection), and the stream goes on.
func TestStreamView_HeartbeatFloodPaced(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", api.ContentTypeStream)
		for rev := int64(1); r.Context().Err() == nil; rev++ {
			if _, err := fmt.Fprintf(w, `{"heartbeat":true,"revision":%d}`+"\n", rev); err != nil {
				return
			}
			w.(http.Flusher).Flush()
		}
	}))
	defer srv.Close()
	c, _ := New(srv.URL, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	meta, err := c.StreamView(ctx, "web", Poll{Index: 1}, func(*api.View, Meta) error { return nil })
	if err == nil {
		t.Fatalf("the stream ended without an error before the caller gave up")
	}
	// meta.Index is the revision of the last heartbeat read: how many were read in 3 s.
	if meta.Index > 10 {
		t.Fatalf("%d heartbeats read in 3 s", meta.Index)
	}
}

// A redirect to another address — another port of the same host, which net/http follows with
// the Authorization header, or another host, to which a Wrap such as the agent's sets its
// token again — is not followed: the other address sees no request, and the error says why.
// A write so answered was not applied (not Sent). A redirect within the address is followed
// (TestDo_WriteFollowsRedirect).
func TestDo_RedirectToAnotherAddressNotFollowed(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, r.Method+" "+r.Host+" "+r.Header.Get("Authorization"))
		io.WriteString(w, `{"appliance":"web","revision":3,"keys":{"a":"1"}}`)
	}))
	defer other.Close()
	otherHost := strings.Replace(other.URL, "127.0.0.1", "localhost", 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		to := other.URL
		if r.URL.Query().Has("host") {
			to = otherHost
		}
		http.Redirect(w, r, to+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	defer srv.Close()
	setToken := func(rt http.RoundTripper) http.RoundTripper { // as the agent's enroller does
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			r = r.Clone(r.Context())
			r.Header.Set("Authorization", "Bearer instance-token")
			return rt.RoundTrip(r)
		})
	}
	for _, o := range []Options{{Token: "secret", Retries: 2}, {Token: "secret", Wrap: setToken}} {
		c, _ := New(srv.URL, o)
		for _, q := range []string{"", "host"} {
			_, err := c.Do(context.Background(), Request{Method: http.MethodGet, Path: "/v1/appliances/web", Query: map[string][]string{q: {""}}}, nil)
			if !errors.Is(err, ErrRedirected) || Misconfigured(err) != Redirected || !strings.Contains(err.Error(), "to http://") {
				mu.Lock()
				defer mu.Unlock()
				t.Fatalf("GET redirected to another address = %v; want ErrRedirected (the other address saw %q)", err, seen)
			}
		}
		_, err := c.Put(context.Background(), "k", []byte("v"), NoCAS)
		var te *TransportError
		if !errors.As(err, &te) || te.Sent || !errors.Is(err, ErrRedirected) {
			t.Fatalf("PUT redirected to another address = %v (%+v); want ErrRedirected, not sent", err, te)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) > 0 {
		t.Fatalf("the other address saw %q", seen)
	}
}

// A Retry-After of years is a long wait, capped: the seconds overflowed time.Duration
// (past some 292 years) into a negative wait, which the client took for none and retried
// after 100 ms. A negative Retry-After, or one that is not a number nor a date, is none.
func TestMeta_RetryAfterBounded(t *testing.T) {
	for _, c := range []struct {
		header string
		want   time.Duration
	}{
		{"1", time.Second},
		{"31536000", 365 * 24 * time.Hour},
		{"99999999999", maxRetryAfterHeader},
		{"9223372036854775807", maxRetryAfterHeader},
		{"99999999999999999999", 0}, // not an int: not a date either
		{"-5", 0},
		{"soon", 0},
	} {
		resp := &http.Response{StatusCode: 503, Header: http.Header{"Retry-After": {c.header}}}
		if got := metaOf(resp).RetryAfter; got != c.want {
			t.Errorf("Retry-After %s = %s, want %s", c.header, got, c.want)
		}
	}
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Retry-After", "9223372036854775807")
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, `{"error":{"code":"unavailable","message":"down"}}`)
	}))
	defer srv.Close()
	c, _ := New(srv.URL, Options{Retries: 2})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, _, err := c.View(ctx, "web")
	var ae *api.Error
	if !errors.As(err, &ae) || ae.RetryAfter <= 0 || calls.Load() != 1 {
		t.Fatalf("View = %v after %d calls; want the 503 with its Retry-After, not retried within the second", err, calls.Load())
	}
}

// hijack answers with raw bytes from write, on the connection itself.
func hijack(t *testing.T, write func(w io.Writer) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		conn, buf, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		write(buf)
		buf.Flush()
	}
}

// Answers that no bound of the answer's body covers end in an error too, each a bound of
// net/http's or of encoding/json's, which this test holds: headers that never end, and
// informational (1xx) answers that never end (10 MiB of headers in all; a write: max1xx
// answers), JSON nested past encoding/json's depth, as an answer and as a line of a stream.
func TestDo_HostileAnswersEndInErrors(t *testing.T) {
	nested := `{"keys":` + strings.Repeat("[", 200000)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/kv/headers":
			hijack(t, func(w io.Writer) error {
				io.WriteString(w, "HTTP/1.1 200 OK\r\n")
				line := "X-A: " + strings.Repeat("a", 64<<10) + "\r\n"
				for i := 0; i < 1024; i++ { // 64 MiB at most
					if _, err := io.WriteString(w, line); err != nil {
						return err
					}
				}
				return nil
			})(w, r)
		case "/v1/kv/informational":
			hijack(t, func(w io.Writer) error {
				for i := 0; i < 2<<20; i++ { // 80 MiB at most
					if _, err := io.WriteString(w, "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"); err != nil {
						return err
					}
				}
				return nil
			})(w, r)
		case "/v1/kv/nested":
			io.WriteString(w, nested)
		case "/v1/appliances/nested":
			w.Header().Set("Content-Type", api.ContentTypeStream)
			io.WriteString(w, nested+"\n")
		}
	}))
	defer srv.Close()
	c, _ := New(srv.URL, Options{})
	for _, key := range []string{"headers", "informational", "nested"} {
		if _, _, err := c.Get(context.Background(), key); err == nil {
			t.Errorf("GET %s: no error", key)
		} else {
			t.Logf("GET %s: %v", key, err)
		}
	}
	if _, err := c.Put(context.Background(), "informational", []byte("v"), NoCAS); err == nil || !strings.Contains(err.Error(), "informational") {
		t.Errorf("PUT after a flood of 1xx = %v", err)
	}
	// A line that is not an update is the server's answer, not a lost connection: it was
	// reported as a TransportError, and the agent logged "server unreachable".
	var ae *AnswerError
	if _, err := c.StreamView(context.Background(), "nested", Poll{Index: 1}, func(*api.View, Meta) error { return nil }); !errors.As(err, &ae) || IsTransport(err) {
		t.Errorf("stream of a nested line = %v; want an AnswerError", err)
	} else {
		t.Logf("stream: %v", err)
	}
}

// A line of a stream that is not JSON, or not an update, is an AnswerError: the server
// answered, and it is not a Shoelace server's answer.
func TestStreamView_BadLineIsAnAnswerError(t *testing.T) {
	for name, line := range map[string]string{
		"not JSON":      "<html>",
		"not an update": `{"keys":["a"]}`,
		"two values":    `{"heartbeat":true} x`,
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", api.ContentTypeStream)
			io.WriteString(w, line+"\n")
		}))
		c, _ := New(srv.URL, Options{})
		_, err := c.StreamView(context.Background(), "web", Poll{Index: 1}, func(*api.View, Meta) error { return nil })
		var ae *AnswerError
		if !errors.As(err, &ae) || IsTransport(err) || ae.Status != http.StatusOK || ae.ContentType != api.ContentTypeStream {
			t.Errorf("%s: %v; want an AnswerError", name, err)
		}
		srv.Close()
	}
}

// The CLI reads an answer whole (Options.MaxAnswerBytes < 0): an export of a store over the
// agent's bound is as large as the store. The same answer is over the bound of a client
// without the option.
func TestDo_AnswerUnboundedForTheCLI(t *testing.T) {
	lowerMaxAnswer(t, 1<<10)
	big := `{"keys":{"a":"` + strings.Repeat("v", 4<<10) + `"}}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		markAnswer(w)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, big)
	}))
	defer srv.Close()
	var v api.View
	bounded, _ := New(srv.URL, Options{})
	if _, err := bounded.Do(context.Background(), Request{Method: "GET", Path: "/v1/appliances/web"}, &v); !errors.Is(err, ErrAnswerTooLarge) {
		t.Fatalf("a 4 KiB answer over a 1 KiB bound: %v, want ErrAnswerTooLarge", err)
	}
	whole, _ := New(srv.URL, Options{MaxAnswerBytes: -1})
	if _, err := whole.Do(context.Background(), Request{Method: "GET", Path: "/v1/appliances/web"}, &v); err != nil || len(v.Keys["a"]) != 4<<10 {
		t.Fatalf("unbounded: %v, %d bytes of the value, want all 4096", err, len(v.Keys["a"]))
	}
}

// The message of an error answer is the server's text, which the agent logs at each retry and
// once prints on the operator's terminal: a server's (or a proxy's) message of megabytes was
// logged whole at every retry, and its control characters (ESC, BEL) reached the terminal,
// where they can set its title, clear it or worse. The message is cut to 4 KiB, its control
// characters but newline and tab escaped, for a JSON error body as for a plain one.
func TestDo_ErrorMessageBoundedAndPrintable(t *testing.T) {
	evil := "\x1b]2;pwned\x07\x1b[2J\r" + strings.Repeat("a", 1<<20)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/kv/json" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			json.NewEncoder(w).Encode(api.ErrorBody{Error: &api.Error{Code: api.CodeUnavailable, Message: evil}})
			return
		}
		w.WriteHeader(http.StatusInternalServerError)
		io.WriteString(w, "\x1b[2Jdown\x1b]2;pwned\x07")
	}))
	defer srv.Close()
	c, _ := New(srv.URL, Options{})
	for _, key := range []string{"json", "plain"} {
		_, _, err := c.Get(context.Background(), key)
		if err == nil {
			t.Fatalf("GET %s: no error", key)
		}
		msg := err.Error()
		if strings.ContainsAny(msg, "\x1b\x07\r") || len(msg) > 5<<10 {
			t.Errorf("GET %s: error of %d bytes, %q…", key, len(msg), msg[:min(len(msg), 80)])
		}
		if !strings.Contains(msg, `\x1b`) {
			t.Errorf("GET %s: %q does not show the escape", key, msg[:min(len(msg), 80)])
		}
	}
}

// lowerMaxEntries sets the bound on one answer's JSON entries to n for a test.
func lowerMaxEntries(t *testing.T, n int64) {
	old := maxEntries
	maxEntries = n
	t.Cleanup(func() { maxEntries = old })
}

// entries counts object members and array elements outside strings, whatever the strings hold
// and however the bytes are split between calls.
func TestEntries_CountedOutsideStrings(t *testing.T) {
	for _, tc := range []struct {
		json string
		want int64
	}{
		{`{}`, 1}, // an empty container counts as one
		{`{"a":"b"}`, 1},
		{`{"appliance":"web","revision":3,"keys":{"a":"1","b:c":"x,y","d":"{\"e\":[1,2]}"}}`, 6},
		{`{"a\\":"b\":\\","c":[1,{"d":2}]}`, 5},
		{`{"a":"\\\\\",,[{"}`, 1},
		{`["x:y", "z"]`, 2},
		{`[0,0,0,0]`, 4}, // a delta's unset of numbers: 16 bytes each decoded, for 2 sent
		{`{"unset":[]}`, 2},
		{"{\n\"a\":\n1,\n\"b\":\n2}", 2}, // whitespace, newlines too, does not end a value
	} {
		for split := 0; split <= len(tc.json); split++ {
			// At limit want-1 it is over; at want it is not; a second value counts afresh.
			for _, limit := range []int64{max(tc.want-1, 0), tc.want} {
				m := entries{limit: limit}
				m.scan([]byte(tc.json[:split]))
				m.scan([]byte(tc.json[split:] + "\n" + tc.json))
				if m.over != (limit < tc.want) || m.depth != 0 || m.n != 0 {
					t.Fatalf("%s split at %d, limit %d: over %v, depth %d, n %d", tc.json, split, limit, m.over, m.depth, m.n)
				}
			}
		}
		var v any
		if err := json.Unmarshal([]byte(tc.json), &v); err != nil {
			t.Fatalf("%s is not JSON: %v", tc.json, err)
		}
	}
}

// An answer of many tiny keys, under the bound in bytes, ends in ErrAnswerTooManyEntries
// before it is decoded, as a plain answer and as a stream's line: 256 MiB of them (33 MB
// gzip-compressed) took 2 GiB of an agent's memory as a map, and a delta's unset of numbers
// more. An answer at the bound is read;
// the CLI (no bound on answers) reads any.
func TestDo_AnswerEntriesBounded(t *testing.T) {
	view := func(keys int) []byte {
		v := api.View{Appliance: "web", Revision: 1, Keys: map[string]string{}}
		for i := range keys {
			v.Keys[fmt.Sprint("k", i)] = ""
		}
		b, _ := json.Marshal(v)
		return b
	}
	atBound, over := view(1000), view(1001)
	m := entries{limit: math.MaxInt64 - 1}
	m.scan(atBound[:len(atBound)-1]) // the keys, and the view's own fields (all but its last '}')
	lowerMaxEntries(t, m.n)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		markAnswer(w)
		body := atBound
		if r.URL.Path == "/v1/appliances/over" {
			body = over
		}
		if r.URL.Path == "/v1/appliances/unset" {
			// A delta whose unset holds more numbers than the bound: 2 bytes each, 16 decoded.
			w.Header().Set("Content-Type", api.ContentTypeStream)
			fmt.Fprintf(w, "%s\n{\"appliance\":\"web\",\"revision\":3,\"base\":1,\"sum\":\"x\",\"unset\":[%s0]}\n", atBound, strings.Repeat("0,", int(maxEntries)))
			return
		}
		if r.URL.Query().Has("stream") {
			w.Header().Set("Content-Type", api.ContentTypeStream)
			fmt.Fprintf(w, "%s\n%s\n", atBound, body)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	}))
	defer srv.Close()
	c, _ := New(srv.URL, Options{})
	if v, _, err := c.View(context.Background(), "fine"); err != nil || len(v.Keys) != 1000 {
		t.Fatalf("a view at the bound: %d keys, %v", len(v.Keys), err)
	}
	if _, _, err := c.View(context.Background(), "over"); !errors.Is(err, ErrAnswerTooManyEntries) || IsTransport(err) {
		t.Fatalf("a view over the bound: %v; want ErrAnswerTooManyEntries", err)
	}
	views := 0
	fn := func(*api.View, Meta) error { views++; return nil }
	if _, err := c.StreamView(context.Background(), "over", Poll{Index: 1}, fn); !errors.Is(err, ErrAnswerTooManyEntries) || views > 1 {
		// The line before it is read when it came in another read than the line over the bound.
		t.Fatalf("a stream's line over the bound: %d views, %v; want 1 view at most, then ErrAnswerTooManyEntries", views, err)
	}
	views = 0
	if _, err := c.StreamView(context.Background(), "unset", Poll{Index: 1}, fn); !errors.Is(err, ErrAnswerTooManyEntries) || views > 1 {
		t.Fatalf("a delta's unset over the bound: %d views, %v; want 1 view at most, then ErrAnswerTooManyEntries", views, err)
	}
	cli, _ := New(srv.URL, Options{MaxAnswerBytes: -1})
	if v, _, err := cli.View(context.Background(), "over"); err != nil || len(v.Keys) != 1001 {
		t.Fatalf("the CLI's client (no bound): %d keys, %v", len(v.Keys), err)
	}
}

// entries agrees with the decoder on random JSON (strings full of quotes and backslashes,
// nested objects and arrays), split anywhere between calls.
func TestEntries_MatchesDecoder(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	str := func() string {
		var b strings.Builder
		for range rng.IntN(8) {
			b.WriteString([]string{`"`, `\`, `\\`, `\"`, `:`, `,`, `{`, `]`, "x", "é", "\n"}[rng.IntN(11)])
		}
		return b.String()
	}
	var value func(depth int) any
	value = func(depth int) any {
		switch k := rng.IntN(4); {
		case depth > 3 || k == 0:
			return str()
		case k == 1:
			return rng.IntN(100)
		case k == 2:
			a := make([]any, rng.IntN(4))
			for i := range a {
				a[i] = value(depth + 1)
			}
			return a
		default:
			m := map[string]any{}
			for range rng.IntN(4) {
				m[str()] = value(depth + 1)
			}
			return m
		}
	}
	var count func(v any) int64
	count = func(v any) int64 {
		n := int64(0)
		switch v := v.(type) {
		case []any:
			n = max(int64(len(v)), 1)
			for _, e := range v {
				n += count(e)
			}
		case map[string]any:
			n = max(int64(len(v)), 1)
			for _, e := range v {
				n += count(e)
			}
		}
		return n
	}
	for range 2000 {
		v := map[string]any{"keys": value(0)}
		data, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		want := count(v)
		split := rng.IntN(len(data))
		m := entries{limit: math.MaxInt64}
		m.scan(data[:split])
		m.scan(data[split : len(data)-1]) // all but the last '}', which ends the value
		if m.n != want {
			t.Fatalf("%s split at %d: %d entries, want %d", data, split, m.n, want)
		}
	}
}

// utf8Check finds bytes that are not UTF-8 however the bytes are split between calls, and takes
// a rune split between two calls.
func TestUTF8Check_Splits(t *testing.T) {
	for _, tc := range []struct {
		text string
		bad  bool
	}{
		{`{"a":"héllo wörld €𝄞"}`, false},
		{"{\"a\":\"\xff\"}", true},
		{"{\"a\":\"\xe2\x82\"}", true},     // a rune cut short
		{"{\"a\":\"\xed\xa0\x80\"}", true}, // a surrogate
		{"{\"a\":\"€\"}\xe2", false},       // a rune the next call would end
	} {
		for split := 0; split <= len(tc.text); split++ {
			var u utf8Check
			u.scan([]byte(tc.text[:split]))
			u.scan([]byte(tc.text[split:]))
			if u.bad != tc.bad {
				t.Fatalf("%q split at %d: bad %v, want %v", tc.text, split, u.bad, tc.bad)
			}
		}
	}
}

// An answer that is not UTF-8 is refused before it is decoded (each invalid byte decoded as
// U+FFFD, three bytes: 250 MiB of them took 3.7 GB of an agent's memory), as a plain answer and
// as a stream's line; and a decoding error quotes at most a little of what it refused (a number
// of 250 MiB made each of the agent's log lines as long).
func TestDo_AnswerNotUTF8OrUndecodable(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		markAnswer(w)
		body := "{\"appliance\":\"web\",\"revision\":1,\"keys\":{\"a\":\"" + strings.Repeat("\xff", 1<<20) + "\"}}"
		if r.URL.Path == "/v1/appliances/number" {
			body = `{"appliance":"web","keys":{"a":"b"},"revision":` + strings.Repeat("1", 1<<20) + `}`
		}
		if r.URL.Query().Has("stream") {
			w.Header().Set("Content-Type", api.ContentTypeStream)
			fmt.Fprintf(w, "%s\n", body)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, body)
	}))
	defer srv.Close()
	c, _ := New(srv.URL, Options{})
	if _, _, err := c.View(context.Background(), "web"); !errors.Is(err, ErrAnswerNotUTF8) || IsTransport(err) {
		t.Fatalf("a view not UTF-8: %v; want ErrAnswerNotUTF8", err)
	}
	fn := func(*api.View, Meta) error { return nil }
	if _, err := c.StreamView(context.Background(), "web", Poll{Index: 1}, fn); !errors.Is(err, ErrAnswerNotUTF8) {
		t.Fatalf("a stream's line not UTF-8: %v; want ErrAnswerNotUTF8", err)
	}
	_, _, err := c.View(context.Background(), "number")
	_, serr := c.StreamView(context.Background(), "number", Poll{Index: 1}, fn)
	for _, err := range []error{err, serr} {
		var ae *AnswerError
		if !errors.As(err, &ae) || len(err.Error()) > 1024 || !strings.Contains(err.Error(), "cannot unmarshal number 1111") {
			t.Fatalf("a revision of 1 MiB of digits: %.300v (%d bytes); want an AnswerError of 1 KiB at most", err, len(err.Error()))
		}
	}
}

// A delta that would grow the view past the bound on entries is refused before the view is
// built (ErrViewTooLarge), on a stream and on a long-poll: each answer is bounded, but a
// hostile server's deltas add up, and the agent's own check came only once the view was built.
// A delta that changes keys of a view at the bound is applied; the CLI has no bound.
func TestDeltas_GrowthBounded(t *testing.T) {
	lowerMaxEntries(t, 10) // a view of 10 keys; a delta's line of a few keys
	view := func(rev int64, n int, changed string) api.View {
		v := api.View{Appliance: "web", Revision: rev, Keys: map[string]string{}}
		for i := range n {
			v.Keys[fmt.Sprint("k", i)] = "a"
		}
		if changed != "" {
			v.Keys[changed] = "b"
		}
		return v
	}
	base, atBound, changed, over := view(1, 8, ""), view(2, 10, ""), view(3, 10, "k0"), view(4, 10, "k10")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		markAnswer(w)
		if r.URL.Query().Has("stream") {
			w.Header().Set("Content-Type", api.ContentTypeStream)
			enc := json.NewEncoder(w)
			enc.Encode(api.Diff(base, atBound))
			enc.Encode(api.Diff(atBound, changed))
			enc.Encode(api.Diff(changed, over))
			return
		}
		json.NewEncoder(w).Encode(api.Diff(base, view(5, 10, "k10")))
	}))
	defer srv.Close()
	c, _ := New(srv.URL, Options{})
	var got []int
	_, err := c.StreamView(context.Background(), "web", Poll{Index: 1, Delta: true, Base: &base}, func(v *api.View, _ Meta) error {
		got = append(got, len(v.Keys))
		return nil
	})
	if !errors.Is(err, ErrViewTooLarge) || IsTransport(err) || !slices.Equal(got, []int{10, 10}) {
		t.Fatalf("stream: views of %v keys, %v; want views of 10 and 10 keys, then ErrViewTooLarge", got, err)
	}
	if v, _, err := c.WatchView(context.Background(), "web", Poll{Index: 1, Delta: true, Base: &base}); !errors.Is(err, ErrViewTooLarge) || v != nil {
		t.Fatalf("long-poll: %v, %v; want ErrViewTooLarge", v, err)
	}
	if len(base.Keys) != 8 {
		t.Fatalf("the base changed: %d keys", len(base.Keys))
	}
	cli, _ := New(srv.URL, Options{MaxAnswerBytes: -1})
	if v, _, err := cli.WatchView(context.Background(), "web", Poll{Index: 1, Delta: true, Base: &base}); err != nil || len(v.Keys) != 11 {
		t.Fatalf("the CLI's client (no bound): %v, %v", v, err)
	}
}

// Another service at the address answering 200 with JSON of no fields ({} or null, a
// catch-all) passed for a Shoelace server: a put was "applied at revision 0", a key read held
// "", a view had no keys. A Shoelace server sends X-Shoelace-Index and X-Shoelace-Store with
// every answer, and answers a write with the revision it wrote at: a 2xx without them, or a
// write's at index 0, is an AnswerError of ErrForeignAnswer, a write's saying it may not have
// been applied.
func TestDo_ForeignAnswerRefused(t *testing.T) {
	ctx := context.Background()
	var index, store atomic.Pointer[string]
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if p := index.Load(); p != nil {
			w.Header().Set(api.HeaderIndex, *p)
		}
		if p := store.Load(); p != nil {
			w.Header().Set(api.HeaderStore, *p)
		}
		if strings.Contains(r.URL.Path, "null") {
			io.WriteString(w, "null")
			return
		}
		io.WriteString(w, "{}")
	}))
	defer srv.Close()
	c, err := New(srv.URL, Options{Token: "x"})
	if err != nil {
		t.Fatal(err)
	}
	calls := []struct {
		name  string
		write bool
		call  func() error
	}{
		{"put", true, func() error { _, err := c.Put(ctx, "shared/a", []byte("v"), NoCAS); return err }},
		{"put null", true, func() error { _, err := c.Put(ctx, "shared/null", []byte("v"), NoCAS); return err }},
		{"delete", true, func() error { _, err := c.Delete(ctx, "shared/a", false); return err }},
		{"txn", true, func() error {
			_, err := c.Txn(ctx, api.Txn{Ops: []api.Op{{Op: "put", Key: "shared/a", Value: "v"}}})
			return err
		}},
		{"report", true, func() error { return c.Report(ctx, "web", api.Report{Instance: "vm-1", Applied: 3}) }},
		{"get", false, func() error { _, _, err := c.Get(ctx, "shared/a"); return err }},
		{"view", false, func() error { _, _, err := c.View(ctx, "web"); return err }},
	}
	for _, tc := range calls {
		err := tc.call()
		var ae *AnswerError
		if !errors.As(err, &ae) || !errors.Is(err, ErrForeignAnswer) || ae.Status != 200 ||
			!strings.Contains(err.Error(), "no X-Shoelace-Index and X-Shoelace-Store headers") ||
			strings.Contains(err.Error(), "may not have been applied") != tc.write {
			t.Errorf("%s answered 200 without the headers: %v", tc.name, err)
		}
	}

	// With the headers, the store id empty (a replica that has not read it yet): taken, but for
	// a write of keys answered at index 0, no revision a server writes at. A report is taken:
	// a replica starting, before it read the store, answers it at the index it knows, 0.
	zero, empty := "0", ""
	index.Store(&zero)
	store.Store(&empty)
	for _, tc := range calls {
		err := tc.call()
		if tc.name == "report" {
			if err != nil {
				t.Errorf("report answered with the headers, index 0: %v", err)
			}
			continue
		}
		if tc.write && (!errors.Is(err, ErrForeignAnswer) || !strings.Contains(err.Error(), "X-Shoelace-Index 0") || !strings.Contains(err.Error(), "may not have been applied")) {
			t.Errorf("%s answered at index 0: %v", tc.name, err)
		}
		if !tc.write && err != nil {
			t.Errorf("%s answered with the headers: %v", tc.name, err)
		}
	}
	seven := "7"
	index.Store(&seven)
	for _, tc := range calls {
		if err := tc.call(); err != nil {
			t.Errorf("%s answered with the headers, index 7: %v", tc.name, err)
		}
	}
}
