// Package client is the Go HTTP client of Shoelace's API, used by the CLI and the agent.
// It speaks HTTP only: it must never import etcd or gRPC.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/atomicfile"
)

// DefaultAddr is the server address used when none is given.
const DefaultAddr = "http://127.0.0.1:7400"

// MaxAnswerBytes bounds what the client reads of one answer, and of one line of a streaming
// long-poll, counted as decoded (a gzip-compressed answer counts as it expands): a view may
// legitimately be tens of MiB (values up to 1 MiB each, listings of 64 MiB), and what a broken
// or hostile server, or a man in the middle, sends beyond it — an answer that never ends, a
// few KiB of gzip that expand to GiBs — must not take a small VM's memory.
const MaxAnswerBytes = 256 << 20

// maxAnswer is MaxAnswerBytes, lowered by tests.
var maxAnswer int64 = MaxAnswerBytes

// ErrAnswerTooLarge says that an answer, or a line of a stream, was over MaxAnswerBytes: it
// was not read further.
var ErrAnswerTooLarge = errors.New("answer over 256 MiB (the client's bound on one answer, client.MaxAnswerBytes)")

// MaxAnswerEntries bounds the JSON entries, object members and array elements, of one answer
// and of one line of a stream, wherever MaxAnswerBytes holds: decoded, an entry costs memory
// beyond its text (16 bytes and more for 2 bytes of "0,"), so that 256 MiB of tiny keys
// ({"k1":"",…}, 33 MB gzip-compressed) took 2 GiB of an agent's memory, and 128 MiB of a
// delta's unset ([0,0,…]) 4.5 GB. A view of 10,000 keys is a large one.
const MaxAnswerEntries = 1_000_000

// maxEntries is MaxAnswerEntries, lowered by tests.
var maxEntries int64 = MaxAnswerEntries

// ErrAnswerTooManyEntries says that an answer, or a line of a stream, held over
// MaxAnswerEntries entries: it was not decoded.
var ErrAnswerTooManyEntries = errors.New("answer of over 1,000,000 JSON entries, object members and array elements (the client's bound on one answer, client.MaxAnswerEntries)")

// ErrViewTooLarge says that a delta would have grown the view it applies to past
// MaxAnswerEntries keys, which no one answer may hold: it was not applied. Each answer is
// bounded, but deltas add up.
var ErrViewTooLarge = errors.New("delta would grow the view past 1,000,000 keys (the client's bound, client.MaxAnswerEntries)")

// ErrAnswerNotUTF8 says that an answer, or a line of a stream, was not UTF-8, as a Shoelace
// server's always is (keys and values are UTF-8, its JSON too): encoding/json reads each
// invalid byte as U+FFFD, three bytes, so that 250 MiB of them took 3.7 GB of an agent's
// memory, under the bound on bytes and entries. It was not decoded.
var ErrAnswerNotUTF8 = errors.New("answer not UTF-8 (a Shoelace server's always is)")

// utf8Check checks that the bytes it is shown, across calls, are UTF-8: a rune split between
// two calls is held until the next.
type utf8Check struct {
	held []byte // the start of a rune the last call ended in
	bad  bool
}

func (u *utf8Check) scan(p []byte) {
	if len(u.held) > 0 {
		p = append(u.held, p...)
		u.held = nil
	}
	end := len(p)
	// The last rune's start, at most utf8.UTFMax-1 bytes back: held when not whole.
	for i := len(p) - 1; i >= 0 && i >= len(p)-utf8.UTFMax+1; i-- {
		if utf8.RuneStart(p[i]) {
			if !utf8.FullRune(p[i:]) {
				end = i
			}
			break
		}
	}
	if !utf8.Valid(p[:end]) {
		u.bad = true
	}
	u.held = append([]byte(nil), p[end:]...)
}

// entries counts the entries of each JSON value in the bytes it is shown, across calls, and
// says whether one held over limit, so that an answer, or a line of a stream, is judged before
// it is decoded: outside strings, each '{' or '[' opens a container of one entry or none (an
// empty one is counted as one) and each ',' starts another. A value ends where its outermost
// bracket closes, whatever whitespace is around it.
type entries struct {
	limit    int64
	n        int64 // of the value being read
	depth    int
	inString bool
	escaped  bool
	over     bool // a value held over limit entries
}

func (m *entries) scan(p []byte) {
	for len(p) > 0 {
		switch {
		case m.escaped:
			m.escaped, p = false, p[1:]
			continue
		case m.inString:
			// The string's end: the next '"' not escaped, found at IndexByte's speed (a
			// view is mostly strings without escapes).
			from := 0
			for {
				i := bytes.IndexByte(p[from:], '"')
				if i < 0 {
					m.escaped = oddBackslashes(p, len(p), from) // the next chunk's first byte is escaped
					return
				}
				if i += from; !oddBackslashes(p, i, from) {
					m.inString, p = false, p[i+1:]
					break
				}
				from = i + 1
			}
			continue
		}
		i := bytes.IndexAny(p, `",{}[]`)
		if i < 0 {
			return
		}
		switch p[i] {
		case '"':
			m.inString = true
		case ',', '{', '[':
			if p[i] != ',' {
				m.depth++
			}
			if m.n++; m.n > m.limit {
				m.over = true
			}
		default:
			if m.depth--; m.depth <= 0 {
				m.depth, m.n = 0, 0
			}
		}
		p = p[i+1:]
	}
}

// oddBackslashes says whether the run of backslashes that ends at p[end-1], not before
// p[from], is odd: then it escapes p[end].
func oddBackslashes(p []byte, end, from int) bool {
	n := 0
	for i := end - 1; i >= from && p[i] == '\\'; i-- {
		n++
	}
	return n%2 == 1
}

// entryBound is MaxAnswerEntries where answers are bounded, else none (the CLI's).
func (c *Client) entryBound() int64 {
	if c.opts.MaxAnswerBytes < 0 {
		return math.MaxInt64
	}
	return maxEntries
}

// maxRetryAfterHeader caps the Retry-After that Meta holds (a server's "years" stays a long
// wait, not an overflow); the waits are capped further (maxRetryAfter, the agent's own cap).
const maxRetryAfterHeader = 100 * 365 * 24 * time.Hour

// maxRetryAfter caps how long one 429/503 makes the client wait before it retries.
const maxRetryAfter = 30 * time.Second

// A request whose connection failed is tried again after connRetryBase, doubling up to
// connRetryMax (connRetryWait).
const (
	connRetryBase = 100 * time.Millisecond
	connRetryMax  = 2 * time.Second
)

// Options configure a Client.
type Options struct {
	// Token is sent as "Authorization: Bearer <token>" when not empty.
	Token string
	// CAFile, when set, is the PEM bundle that verifies the server's certificate.
	CAFile string
	// HTTPClient replaces the default client (its transport still gets CAFile if set and not
	// already configured). Unless it has a CheckRedirect of its own, the client follows
	// redirects within the server's address only (ErrRedirected).
	HTTPClient *http.Client
	// Retries is how many times a request answered 429 (or 503 with Retry-After) is retried after
	// waiting Retry-After. 0 means no retry.
	// The same budget retries, after a short backoff, a request whose connection failed before
	// any of it was sent, and a read whose connection was reset or closed before its answer
	// (see Do); never a write that may have been sent.
	Retries int
	// Message and Source are sent with writes as X-Shoelace-Message and X-Shoelace-Source.
	Message, Source string
	// UserAgent is sent as User-Agent.
	UserAgent string
	// WriteQuery is added to the query of every write (not GET): a rollout's canary and
	// strategy, or force.
	WriteQuery url.Values
	// RefuseWrites, when set, is what every write (any method but GET and HEAD) fails with,
	// unsent: the CLI's --message or --source that a write could not carry, which reads do
	// not send.
	RefuseWrites error
	// Wrap, when set, wraps the transport (after CAFile is applied): it sees every request and
	// its answer, and may change a clone of the request (the agent swaps in its instance token).
	Wrap func(http.RoundTripper) http.RoundTripper
	// FreshConnForWrites sends each write on a connection of its own, never on one that sat
	// idle: a server closes an idle connection (its idle timeout, or a replica at its
	// connection cap making room) without reading what arrives on it, and a write that went
	// out on it as it closed could only be reported as outcome unknown, though never applied.
	FreshConnForWrites bool
	// StreamFirstLine bounds StreamView's wait for a stream's first line (0:
	// DefaultStreamFirstLine).
	StreamFirstLine time.Duration
	// MaxAnswerBytes bounds what is read of one answer and of one line of a stream (0:
	// MaxAnswerBytes; negative: no bound, for the CLI, whose export of a large store is as
	// large as the store).
	MaxAnswerBytes int64
}

// answerBound is what the client reads of one answer at most (see Options.MaxAnswerBytes).
func (c *Client) answerBound() int64 {
	switch n := c.opts.MaxAnswerBytes; {
	case n < 0:
		return math.MaxInt64 - 1
	case n > 0:
		return n
	}
	return maxAnswer
}

// Client talks to one Shoelace server. It is safe for concurrent use.
type Client struct {
	base *url.URL
	http *http.Client
	opts Options
}

// Meta is what a response said besides its body.
type Meta struct {
	Status int
	// Index is X-Shoelace-Index: the revision the answer was read or written at.
	Index int64
	// Store is X-Shoelace-Store: the id of the store.
	Store string
	// RetryAfter is the Retry-After of a 429 or 503, if any.
	RetryAfter time.Duration
	// ContentType is the answer's Content-Type.
	ContentType string
	// Delta says that the view answered was made by applying a delta to the caller's base
	// (Poll.Base): its keys are the base's and those the delta set, which api.ApplyDelta
	// checked against the key rules.
	Delta bool
	// marked says that the answer carried both X-Shoelace-Index and X-Shoelace-Store, as every
	// answer of a Shoelace server does (foreignAnswer).
	marked bool
}

// New returns a client of the server at addr ("http://host:port" or "https://…"; a bare host:port means http).
func New(addr string, opts Options) (*Client, error) {
	// A value read from a file or a CI variable may carry a newline or CR, or spaces.
	addr = strings.TrimSpace(addr)
	if addr == "" {
		addr = DefaultAddr
	}
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil {
		return nil, fmt.Errorf("server address %q: %w", addr, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("server address %q: scheme must be http or https", addr)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("server address %q: no host", addr)
	}
	// The base path as written ("http://lb/shoelace//", "$BASE/" where BASE ends in '/', "/./")
	// names one prefix: each request's path is this and "/v1/…", which the server refuses with
	// an empty or '.' segment in it.
	if u.Path != "" {
		u.Path = strings.TrimRight(path.Clean(u.Path), "/")
	}
	u.RawPath = ""
	hc := opts.HTTPClient
	if hc == nil {
		hc = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	if hc.CheckRedirect == nil {
		copied := *hc
		copied.CheckRedirect = sameOrigin
		hc = &copied
	}
	if opts.CAFile != "" {
		pool, err := loadCA(opts.CAFile)
		if err != nil {
			return nil, err
		}
		tr, ok := hc.Transport.(*http.Transport)
		if !ok || tr == nil {
			tr = http.DefaultTransport.(*http.Transport).Clone()
		} else {
			tr = tr.Clone()
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		copied := *hc
		copied.Transport = tr
		hc = &copied
	}
	if opts.Wrap != nil {
		copied := *hc
		tr := copied.Transport
		if tr == nil {
			tr = http.DefaultTransport
		}
		copied.Transport = opts.Wrap(tr)
		hc = &copied
	}
	return &Client{base: u, http: hc, opts: opts}, nil
}

// maxCABytes bounds a CA file: a bundle of every public CA is some 200 KiB, and a path given by
// mistake to a large file must not take its size in memory.
const maxCABytes = 4 << 20

func loadCA(path string) (*x509.CertPool, error) {
	pem, err := atomicfile.ReadInput(path, maxCABytes)
	var tooLarge *atomicfile.TooLargeError
	if errors.As(err, &tooLarge) {
		return nil, fmt.Errorf("ca file %s is over %d bytes (4 MiB): a CA file holds PEM certificates", path, maxCABytes)
	}
	if err != nil {
		return nil, fmt.Errorf("read ca file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("ca file %s: no PEM certificate found", path)
	}
	return pool, nil
}

// ErrRedirected says that the server answered a request with a redirect to another address
// (another scheme, host or port), which the client does not follow.
var ErrRedirected = errors.New("the server redirected to another address: not followed, so that the token goes to no one else")

// ErrWriteRedirected says that the server answered a write with a redirect (301, 302 or 303)
// that net/http follows as a GET, without the write's body: the write was not sent again, and
// the answer to that GET, which would have passed for the write's (a put "applied" at revision
// 0), is not asked for. A Shoelace server never redirects a write: a proxy in front of it does.
var ErrWriteRedirected = errors.New("the server answered the write with a redirect, which would be followed as a read: not followed, and the write was not applied")

// maxRedirects is how many redirects within the server's address one request follows
// (net/http's own bound).
const maxRedirects = 10

// sameOrigin is the client's CheckRedirect: it follows a redirect within the address the
// request went to, and refuses one to another, where net/http would follow it with the token
// to another port of the same host or to a subdomain, and a Wrap (the agent's instance token)
// sets the token again on every request it sends, wherever it goes.
func sameOrigin(req *http.Request, via []*http.Request) error {
	if len(via) >= maxRedirects {
		return fmt.Errorf("stopped after %d redirects", maxRedirects)
	}
	if from, to := origin(via[0].URL), origin(req.URL); from != to {
		return fmt.Errorf("%w: from %s to %s", ErrRedirected, from, to) // the CLI and the agent say what to do
	}
	if isWrite(via[0].Method) && req.Method != via[0].Method {
		status := 0
		if req.Response != nil {
			status = req.Response.StatusCode
		}
		return fmt.Errorf("%w: %s %s answered %d, to %s", ErrWriteRedirected, via[0].Method, via[0].URL.Path, status, req.URL.Path)
	}
	return nil
}

// origin is u's scheme, host and port, the port written out when it is the scheme's default.
func origin(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	return u.Scheme + "://" + net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}

// Addr returns the server address the client talks to.
func (c *Client) Addr() string { return c.base.String() }

// Request is one API call for Do.
type Request struct {
	Method string
	// Path is the URL path, such as "/v1/kv/shared/ntp"; it is escaped segment by segment.
	Path   string
	Query  url.Values
	Body   []byte
	Header http.Header
}

// CloseIdleConnections closes the connections the client keeps open between requests.
func (c *Client) CloseIdleConnections() { c.http.CloseIdleConnections() }

// Do sends r and decodes a 2xx JSON answer into out (when out is not nil). A non-2xx answer other
// than 304 is returned as an *api.Error with its Status set. A 304 returns no error and Meta.Status 304.
//
// Within Options.Retries tries and ctx's deadline, Do sends r again after a 429 (or a 503 with
// Retry-After), and after a short backoff (connRetryWait) when its connection failed before any
// of it was sent (refused, unreachable, a name the resolver could not look up for now, reset
// during the TLS handshake), or, for a read (GET, HEAD), was reset or closed before the answer
// came. A write that may have been sent is never sent again: its TransportError has Sent set.
func (c *Client) Do(ctx context.Context, r Request, out any) (Meta, error) {
	if c.opts.RefuseWrites != nil && isWrite(r.Method) {
		return Meta{}, c.opts.RefuseWrites
	}
	// lastErr is the server's last answer to a try before this one, kept across the retries of
	// connections that failed since: it says why the request was retried, and more than the
	// failure of a later try's connection ("reset", "no answer before the timeout").
	var lastErr *api.Error
	connFailures := 0 // tries whose connection failed, for the backoff
	for attempt := 0; ; attempt++ {
		start := time.Now()
		meta, body, err := c.once(ctx, r)
		if err != nil {
			var te *TransportError
			if errors.As(err, &te) && lastErr != nil {
				te.Prior = lastErr.Message // why it was retried
			}
			if te != nil && te.Sent {
				// A write that left and was not answered: its outcome is unknown, whatever the
				// server said to a try before it.
				return meta, te
			}
			if te != nil && attempt < c.opts.Retries && ctx.Err() == nil && te.retryable(r.Method) {
				wait := connRetryWait(connFailures)
				connFailures++
				if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= wait {
					return meta, te // no try could start before the caller gives up
				}
				select {
				case <-ctx.Done():
					if errors.Is(ctx.Err(), context.Canceled) {
						return meta, &TransportError{Op: te.Op, Err: ctx.Err()} // Ctrl-C: interrupted
					}
					return meta, te
				case <-time.After(wait):
				}
				continue
			}
			if lastErr != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
				// The retry ran out of time: the server's own answer (e.g. 503 unavailable) says
				// more than "no answer before the timeout", which would blame the network.
				return meta, lastErr
			}
			return meta, err
		}
		if meta.Status >= 200 && meta.Status < 300 || meta.Status == http.StatusNotModified {
			if err := foreignAnswer(r.Method, r.Path, meta); err != nil {
				return meta, &AnswerError{Op: r.Method + " " + r.Path, Status: meta.Status, ContentType: meta.ContentType, Err: err}
			}
			if out != nil && meta.Status != http.StatusNotModified {
				if w, ok := out.(io.Writer); ok {
					_, err := w.Write(body)
					return meta, err
				}
				if err := json.Unmarshal(body, out); err != nil {
					return meta, answerError(r.Method+" "+r.Path, meta, err)
				}
			}
			return meta, nil
		}
		apiErr := decodeError(meta.Status, body)
		apiErr.RetryAfter = int(meta.RetryAfter / time.Second)
		if isWrite(r.Method) && (meta.Status == http.StatusBadGateway || meta.Status == http.StatusGatewayTimeout) {
			// Shoelace never answers 502 or 504: a proxy in front of it did, and it may have
			// passed the write on before its upstream failed or timed out. Not "retry it".
			apiErr.Code = api.CodeOutcomeUnknown
			apiErr.Message = fmt.Sprintf("the write was sent but a proxy in front of the server answered %d (%s): it may have passed the write on, so its outcome is unknown; read the key or the appliance to check, then retry if needed",
				meta.Status, strings.TrimPrefix(apiErr.Message, fmt.Sprintf("server answered %d: ", meta.Status)))
		}
		// A write whose outcome is unknown is never sent again blindly, whatever Retry-After says.
		retryable := apiErr.Code != api.CodeOutcomeUnknown && (meta.Status == http.StatusTooManyRequests ||
			meta.Status == http.StatusServiceUnavailable && meta.RetryAfter > 0 && apiErr.Code != api.CodeMaintenance)
		if !retryable || attempt >= c.opts.Retries {
			return meta, apiErr
		}
		lastErr = apiErr
		wait := retryWait(meta.RetryAfter)
		if dl, ok := ctx.Deadline(); ok && (time.Until(dl) < meta.RetryAfter ||
			isWrite(r.Method) && time.Until(dl) < wait+time.Since(start)) {
			// The server asks for more time than the caller has left, or a write's retry would
			// likely be cut off as this try's answer took: a write cut off is an outcome unknown,
			// where this answer says "not applied".
			return meta, apiErr
		}
		select {
		case <-ctx.Done():
			return meta, apiErr
		case <-time.After(wait):
		}
	}
}

// retryWait is how long to wait before retrying an answer with Retry-After ra: ra (at least 100
// ms, at most maxRetryAfter) and up to half as long again, at random. Retry-After is the earliest
// time to come back; without the spread, the pipelines a 429 turned away together all came back
// together and were turned away again (10 parallel puts at --rate-limit 1: 2 went through).
func retryWait(ra time.Duration) time.Duration {
	w := min(max(ra, 100*time.Millisecond), maxRetryAfter)
	return min(w+rand.N(w/2+1), maxRetryAfter)
}

// connRetryWait is how long to wait before retrying a request whose connection failed, after n
// such failures before: 100 ms doubling up to 2 s, and up to half as long again at random, so
// that the pipelines a restarting replica turned away together do not come back together.
func connRetryWait(n int) time.Duration {
	w := min(connRetryBase<<min(n, 8), connRetryMax)
	return w + rand.N(w/2+1)
}

func (c *Client) once(ctx context.Context, r Request) (Meta, []byte, error) {
	req, err := c.newRequest(ctx, r)
	if err != nil {
		return Meta{}, nil, err
	}
	var sent, connected atomic.Bool
	if isWrite(r.Method) {
		if c.opts.FreshConnForWrites {
			c.http.CloseIdleConnections()
		}
		// net/http sends a request again by itself after some failures, asking GetBody for its
		// body anew: over HTTP/2, after the server reset the stream (PROTOCOL_ERROR,
		// REFUSED_STREAM) or went away (GOAWAY), even once the whole request was written and may
		// have been applied. A write written whole gets no second body until it is answered (a
		// 307 or 308 is followed with one); its outcome is then unknown, as after any failure
		// past that point.
		var unanswered atomic.Bool
		var informational atomic.Int32
		if getBody := req.GetBody; getBody != nil {
			req.GetBody = func() (io.ReadCloser, error) {
				if unanswered.Load() {
					return nil, errWrittenWhole
				}
				return getBody()
			}
		}
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			GotConn: func(httptrace.GotConnInfo) { connected.Store(true) },
			WroteRequest: func(i httptrace.WroteRequestInfo) {
				if i.Err == nil {
					sent.Store(true)
					unanswered.Store(true)
				}
			},
			GotFirstResponseByte: func() { unanswered.Store(false) },
			// An informational answer (100, 103) is not the answer: it comes before it. With
			// this hook set, net/http no longer bounds how many come: this does.
			Got1xxResponse: func(int, textproto.MIMEHeader) error {
				unanswered.Store(sent.Load())
				if informational.Add(1) > max1xx {
					return fmt.Errorf("more than %d informational (1xx) answers", max1xx)
				}
				return nil
			},
		}))
	}
	resp, err := c.http.Do(req)
	if err != nil {
		// A write answered with a redirect that is not followed was answered: not applied.
		return Meta{}, nil, &TransportError{Op: r.Method + " " + r.Path, Err: err, Sent: sent.Load() && !errors.Is(err, ErrRedirected) && !errors.Is(err, ErrWriteRedirected),
			noConn: isWrite(r.Method) && !connected.Load()}
	}
	defer resp.Body.Close()
	meta := metaOf(resp)
	bound := c.answerBound()
	data, err := io.ReadAll(io.LimitReader(resp.Body, bound+1))
	if err != nil {
		return meta, nil, &TransportError{Op: r.Method + " " + r.Path, Err: err, Sent: sent.Load()}
	}
	if int64(len(data)) > bound {
		// Not a TransportError: nothing is retried, and the server answered.
		return meta, nil, fmt.Errorf("%s: answered %d: %w", r.Method+" "+r.Path, meta.Status, ErrAnswerTooLarge)
	}
	if mb := c.entryBound(); mb < math.MaxInt64 {
		m := entries{limit: mb}
		if m.scan(data); m.over {
			return meta, nil, fmt.Errorf("%s: answered %d: %w", r.Method+" "+r.Path, meta.Status, ErrAnswerTooManyEntries)
		}
		if !utf8.Valid(data) {
			return meta, nil, fmt.Errorf("%s: answered %d: %w", r.Method+" "+r.Path, meta.Status, ErrAnswerNotUTF8)
		}
	}
	return meta, data, nil
}

// newRequest makes the HTTP request of r, with the client's token and headers.
func (c *Client) newRequest(ctx context.Context, r Request) (*http.Request, error) {
	u := *c.base
	u.Path = c.base.Path + r.Path
	u.RawPath = c.base.Path + escapePath(r.Path)
	q := r.Query
	if len(c.opts.WriteQuery) > 0 && r.Method != http.MethodGet && r.Method != http.MethodHead {
		q = url.Values{}
		for k, vs := range r.Query {
			q[k] = vs
		}
		for k, vs := range c.opts.WriteQuery {
			q[k] = vs
		}
	}
	if len(q) > 0 {
		u.RawQuery = q.Encode()
	}
	var body io.Reader
	if r.Body != nil {
		body = bytes.NewReader(r.Body)
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, u.String(), body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", r.Method, r.Path, err)
	}
	for k, vs := range r.Header {
		req.Header[k] = vs
	}
	if c.opts.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.opts.Token)
	}
	if c.opts.UserAgent != "" {
		req.Header.Set("User-Agent", c.opts.UserAgent)
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		if c.opts.Message != "" && req.Header.Get(api.HeaderMessage) == "" {
			req.Header.Set(api.HeaderMessage, c.opts.Message)
		}
		if c.opts.Source != "" {
			req.Header.Set(api.HeaderSource, c.opts.Source)
		}
	}
	return req, nil
}

// AnswerError is a 2xx answer whose body is not the JSON the route answers: what answered is
// not a Shoelace server (another service at the address, a captive portal).
type AnswerError struct {
	Op          string
	Status      int
	ContentType string
	Err         error
}

func (e *AnswerError) Error() string {
	if errors.Is(e.Err, ErrForeignAnswer) {
		return fmt.Sprintf("%s: %v", e.Op, e.Err)
	}
	return fmt.Sprintf("%s: decode answer: %v", e.Op, e.Err)
}

// ErrForeignAnswer says that a 2xx answer lacks what every answer of a Shoelace server has: the
// X-Shoelace-Index and X-Shoelace-Store headers, and for a write of keys an index above 0 (the
// revision it was written at; see writesKeys). Another service at the address answered (a catch-all returning 200 {}),
// which may not have passed the request on: a write may not have been applied. An AnswerError
// carries it.
var ErrForeignAnswer = errors.New("not a Shoelace server's answer")

// foreignAnswer is the ErrForeignAnswer of a 2xx answer (meta) to a request of method and path,
// or nil. Checked in Do for every route: without it, a write answered 200 {} by another service
// passed for one applied at revision 0, and a read of a key for a key holding "".
func foreignAnswer(method, path string, meta Meta) error {
	switch {
	case meta.Status == http.StatusNotModified:
		return nil // a long-poll's 304: Poll reads its index itself
	case !meta.marked && isWrite(method):
		return fmt.Errorf("%w: no %s and %s headers, which a Shoelace server sends with every answer; the write may not have been applied",
			ErrForeignAnswer, api.HeaderIndex, api.HeaderStore)
	case !meta.marked:
		return fmt.Errorf("%w: no %s and %s headers, which a Shoelace server sends with every answer",
			ErrForeignAnswer, api.HeaderIndex, api.HeaderStore)
	case meta.Index == 0 && writesKeys(method, path):
		return fmt.Errorf("%w: %s 0, where a Shoelace server answers a write with the revision it wrote at; the write may not have been applied",
			ErrForeignAnswer, api.HeaderIndex)
	}
	return nil
}

// writesKeys says whether a request of method and path is a write of keys (PUT or DELETE of
// /v1/kv/…, POST /v1/txn), whose answer is the revision it wrote at, above 0. Not every write:
// a replica starting, before it read the store, answers a report at the index it knows, 0.
func writesKeys(method, path string) bool {
	return (method == http.MethodPut || method == http.MethodDelete) && strings.HasPrefix(path, "/v1/kv/") ||
		method == http.MethodPost && path == "/v1/txn"
}

// maxDecodeErrText bounds the text of a decoding error that an AnswerError keeps.
const maxDecodeErrText = 512

// answerError is the AnswerError of an answer that did not decode, its error's text cut to
// maxDecodeErrText bytes: encoding/json quotes what it refused (a number of 250 MiB whole), and
// the agent logs its errors (a line of 262 MB each minute).
func answerError(op string, meta Meta, err error) *AnswerError {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		err = fmt.Errorf("json: cannot unmarshal %s into Go value of type %s (field %s)", cutText(te.Value, 64), te.Type, cutText(te.Field, 128))
	} else if t := err.Error(); len(t) > maxDecodeErrText {
		err = errors.New(cutText(t, maxDecodeErrText))
	}
	return &AnswerError{Op: op, Status: meta.Status, ContentType: meta.ContentType, Err: err}
}

// cutText is s cut to at most n bytes, on a rune's start, with "…" when cut.
func cutText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
func (e *AnswerError) Unwrap() error { return e.Err }

// isWrite reports whether a request of method may change the store (any method but GET and HEAD).
func isWrite(method string) bool { return method != http.MethodGet && method != http.MethodHead }

// max1xx bounds the informational (1xx) answers that one request may get before its answer.
const max1xx = 10

// errWrittenWhole refuses net/http a second send of a write that was written whole.
var errWrittenWhole = errors.New("the request was written whole and may have been applied: not sent again")

// TransportError is a failure to reach the server or read its answer (as opposed to an API error).
type TransportError struct {
	Op  string
	Err error
	// Sent says that the request of a write (any method but GET and HEAD) was written whole
	// before the failure: the server may have applied it, and its outcome is unknown.
	Sent bool
	// Prior is the server's last answer to a try before this one (its message), when this one
	// was a retry after an answer.
	Prior string
	// noConn says that no connection was made for a write (the dial or the TLS handshake
	// failed): nothing of it reached the server.
	noConn bool
}

func (e *TransportError) Error() string { return fmt.Sprintf("%s: %v", e.Op, e.Err) }
func (e *TransportError) Unwrap() error { return e.Err }

// retryable reports whether the request of method that failed with e may be sent again: its
// connection failed before any of it was sent, or it is a read (safe to repeat) whose
// connection was reset or closed before the answer came.
func (e *TransportError) retryable(method string) bool {
	if e.Sent {
		return false
	}
	return dialFailed(e.Err) || connLost(e.Err) && (!isWrite(method) || e.noConn)
}

// dialFailed reports whether err is a failed dial (refused, unreachable, timed out), which
// sent nothing. A name the resolver says does not exist (a typo in the address) is not one
// that a retry mends: only a temporary failure to look it up counts.
func dialFailed(err error) bool {
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return dns.IsTemporary || dns.IsTimeout
	}
	for ; err != nil; err = errors.Unwrap(err) { // through a proxy's "proxyconnect" to the dial
		if oe, ok := err.(*net.OpError); ok && oe.Op == "dial" {
			return true
		}
	}
	return false
}

// connLost reports whether err says that the connection was reset or closed by the other end.
func connLost(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		strings.Contains(err.Error(), "server closed idle connection") // net/http's errServerClosedIdle
}

// IsTransport reports whether err is a failure to reach the server.
func IsTransport(err error) bool {
	var t *TransportError
	return errors.As(err, &t)
}

func metaOf(resp *http.Response) Meta {
	m := Meta{Status: resp.StatusCode, Store: resp.Header.Get(api.HeaderStore), ContentType: resp.Header.Get("Content-Type")}
	// The store's id may be empty (a replica that has not read it yet): present is enough.
	_, hasIndex := resp.Header[api.HeaderIndex]
	_, hasStore := resp.Header[api.HeaderStore]
	m.marked = hasIndex && hasStore
	if m.Index, _ = strconv.ParseInt(resp.Header.Get(api.HeaderIndex), 10, 64); m.Index < 0 {
		m.Index = 0 // no server sends one: as if not sent
	}
	if ra := resp.Header.Get("Retry-After"); ra != "" {
		if secs, err := strconv.Atoi(ra); err == nil && secs >= 0 {
			// Past some 292 years the seconds overflow a Duration into a negative one.
			m.RetryAfter = time.Duration(min(secs, int(maxRetryAfterHeader/time.Second))) * time.Second
		} else if t, err := http.ParseTime(ra); err == nil {
			m.RetryAfter = min(max(time.Until(t), 0), maxRetryAfterHeader)
		}
	}
	return m
}

func decodeError(status int, body []byte) *api.Error {
	var eb api.ErrorBody
	if err := json.Unmarshal(body, &eb); err == nil && eb.Error != nil && eb.Error.Code != "" {
		eb.Error.Status = status
		eb.Error.Message = serverText(eb.Error.Message, 4<<10)
		return eb.Error
	}
	msg := serverText(strings.TrimSpace(string(body)), 200)
	if msg == "" {
		msg = http.StatusText(status)
	}
	return &api.Error{Code: codeForStatus(status), Message: fmt.Sprintf("server answered %d: %s", status, msg), Status: status}
}

// serverText is a message the server answered, as the agent logs it at each retry and a
// terminal shows it: cut to max bytes, its control characters but newline and tab escaped
// (\x1b), so that a server or proxy can neither flood the logs nor drive the terminal.
func serverText(s string, max int) string {
	if len(s) > max {
		s = strings.ToValidUTF8(s[:max], "") + "…"
	}
	var b strings.Builder
	for _, r := range s {
		if r != '\n' && r != '\t' && (r < 0x20 || r >= 0x7f && r < 0xa0) {
			fmt.Fprintf(&b, `\x%02x`, r)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

func codeForStatus(status int) string {
	switch status {
	case http.StatusNotFound:
		return api.CodeNotFound
	case http.StatusConflict:
		return api.CodeConflict
	case http.StatusUnauthorized:
		return api.CodeUnauthorized
	case http.StatusForbidden:
		return api.CodeForbidden
	case http.StatusTooManyRequests:
		return api.CodeRateLimited
	case http.StatusServiceUnavailable, http.StatusBadGateway, http.StatusGatewayTimeout:
		return api.CodeUnavailable
	case http.StatusRequestEntityTooLarge:
		return api.CodeTooLarge
	}
	if status >= 400 && status < 500 {
		return api.CodeInvalidRequest
	}
	return api.CodeInternal
}

// escapePath escapes each segment of p, keeping the '/' between them.
func escapePath(p string) string {
	segs := strings.Split(p, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.Join(segs, "/")
}
