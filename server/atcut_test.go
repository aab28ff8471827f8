package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/client"
	"github.com/shoelace-dev/shoelace/internal/testutil"
)

// atCutKeys and atCutValue make a tree of 16 MB, written in parts of about 2 MB: more than the
// socket buffers of a client that stops reading hold, so that the server is still reading the
// tree from etcd, a page at a time, when the test compacts its revision.
const (
	atCutKeys  = 16
	atCutValue = 1_000_000
)

// atCutFixture is a server on an etcd of the test's own (the test compacts it), its log kept,
// and an appliance "big" of atCutKeys keys of atCutValue bytes and a key hot. revs are two of
// its revisions (hot 1, then hot 2; hot is 3 now), each followed by a write of another appliance,
// so that compacting past the first leaves the second readable. stop stops the etcd.
func atCutFixture(t *testing.T, requestTimeout time.Duration) (f *fixture, logs *syncBuffer, revs [2]int64, stop func()) {
	t.Helper()
	eps, stop := testutil.StartEtcd(t, t.TempDir())
	cfg := testutil.StoreConfig(t)
	cfg.Endpoints = eps
	if requestTimeout > 0 {
		cfg.RequestTimeout = requestTimeout
	}
	logs = &syncBuffer{}
	f = newFixtureLog(t, testutil.OpenStore(t, cfg), slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})))
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second, MaxCallSendMsgSize: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	root := cfg.Root + "kv/appliances/"
	put := func(k, v string) int64 {
		t.Helper()
		res, err := cli.Put(context.Background(), root+k, v)
		if err != nil {
			t.Fatal(err)
		}
		return res.Header.Revision
	}
	for i := range atCutKeys {
		put(fmt.Sprintf("big/conf/part%02d", i), strings.Repeat("a", atCutValue))
	}
	revs[0] = put("big/hot", "1")
	put("other/x", "1")
	revs[1] = put("big/hot", "2")
	put("other/x", "2")
	put("big/hot", "3")
	return f, logs, revs, stop
}

// An answer of GET /v1/appliances/{name}/at/{R} over atPartBytes is written as it is read from
// etcd; a failure once its first part is sent (here R compacted while the client had stopped
// reading) can no longer be answered with an error status. It is cut off: the client reading on
// meets the end of a chunked body with no last chunk (io.ErrUnexpectedEOF), never a JSON
// document that looks whole; the server logs the cut and gives back what the request held (its
// read slot, its share of the bound on answers), and R asked again is 410 compacted.
func TestApplianceAt_CutWhenCompactedWhileWritten(t *testing.T) {
	parallelOwnEtcd(t)
	f, logs, revs, _ := atCutFixture(t, 0)
	rev := revs[0]
	readCut(t, f, rev, func() {
		if err := f.st.Compact(context.Background(), rev+1); err != nil {
			t.Fatal(err)
		}
	})
	if l := logs.String(); !strings.Contains(l, "appliance at a revision cut off") || !strings.Contains(l, "compacted") {
		t.Errorf("the server's log does not say that the answer was cut off for the compaction:\n%s", l)
	}
	f.mustErr(f.do("GET", fmt.Sprintf("/v1/appliances/big/at/%d", rev), ""), 410, api.CodeCompacted)
}

// The same with etcd gone while the client had stopped reading: the next page's read fails
// (after the store's request timeout, 2 s here) and the answer is cut off.
func TestApplianceAt_CutWhenEtcdGoesAwayWhileWritten(t *testing.T) {
	parallelOwnEtcd(t)
	f, logs, revs, stop := atCutFixture(t, 2*time.Second)
	readCut(t, f, revs[0], stop)
	if l := logs.String(); !strings.Contains(l, "appliance at a revision cut off") {
		t.Errorf("the server's log does not say that the answer was cut off:\n%s", l)
	}
}

// readCut GETs big at rev on a connection of its own, reads the first 64 KiB of the answer,
// stops reading a while, calls meanwhile, and reads on: the answer must be cut off, and what the
// request held given back.
func readCut(t *testing.T, f *fixture, rev int64, meanwhile func()) {
	t.Helper()
	conn, err := net.Dial("tcp", f.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// A small receive buffer: the server's writes block sooner once the client stops reading.
	if err := conn.(*net.TCPConn).SetReadBuffer(64 << 10); err != nil {
		t.Fatal(err)
	}
	if err := conn.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := fmt.Fprintf(conn, "GET /v1/appliances/big/at/%d HTTP/1.1\r\nHost: shoelace\r\nAuthorization: Bearer %s\r\n\r\n", rev, f.token); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 || len(res.TransferEncoding) == 0 || res.TransferEncoding[0] != "chunked" {
		t.Fatalf("GET at %d: %d, transfer encoding %q; want 200, chunked (an answer written in parts)", rev, res.StatusCode, res.TransferEncoding)
	}
	first := make([]byte, 64<<10)
	if _, err := io.ReadFull(res.Body, first); err != nil {
		t.Fatalf("read the first part: %v", err)
	}
	if want := fmt.Sprintf(`{"appliance":"big","revision":%d,"keys":{`, rev); !strings.HasPrefix(string(first), want) {
		t.Fatalf("the answer begins %.80q, want %q", first, want)
	}
	// The client stalls: the server fills the socket buffers and blocks in a write, with
	// most of the tree still to read from etcd.
	time.Sleep(500 * time.Millisecond)
	meanwhile()
	start := time.Now()
	rest, err := io.ReadAll(res.Body)
	got := append(first, rest...)
	whole := atCutKeys*(atCutValue+len(`"conf/part00":"",`)) + len(fmt.Sprintf(`{"appliance":"big","revision":%d,"keys":{"hot":"1"}}`, rev))
	t.Logf("read %d bytes of an answer of %d before the cut (%v after the client read on): %v", len(got), whole, time.Since(start).Round(time.Millisecond), err)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("reading on: %v, want io.ErrUnexpectedEOF (a chunked body cut off)", err)
	}
	if json.Valid(got) || len(got) >= whole {
		t.Fatalf("the cut answer's %d bytes look whole (a valid JSON document of %d bytes)", len(got), whole)
	}
	// The cut request gives back its read slot and its share of the bound on answers.
	for deadline := time.Now().Add(5 * time.Second); len(f.s.historyReads) != 0 || f.s.answers.held() != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("after the cut: %d read slots and %d bytes of answers still held", len(f.s.historyReads), f.s.answers.held())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stallFirst is a transport whose first answer to a GET of /at/ is read up to after bytes,
// then held until the test lets it go: a client that stops reading a while (a slow pipe).
type stallFirst struct {
	rt      http.RoundTripper
	after   int
	stalled chan struct{} // closed once the first answer is held
	resume  chan struct{} // closed by the test
	tries   atomic.Int32  // GETs of /at/
}

func (s *stallFirst) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := s.rt.RoundTrip(req)
	if err != nil || req.Method != http.MethodGet || !strings.Contains(req.URL.Path, "/at/") {
		return res, err
	}
	if s.tries.Add(1) == 1 {
		res.Body = &stalledBody{ReadCloser: res.Body, s: s}
	}
	return res, nil
}

type stalledBody struct {
	io.ReadCloser
	s    *stallFirst
	n    int
	once sync.Once
}

func (b *stalledBody) Read(p []byte) (int, error) {
	if b.n >= b.s.after {
		b.once.Do(func() {
			close(b.s.stalled)
			<-b.s.resume
		})
	} else {
		p = p[:min(len(p), b.s.after-b.n)]
	}
	n, err := b.ReadCloser.Read(p)
	b.n += n
	return n, err
}

// The CLI reads /at for appliance diff --from R and appliance rollback --to R through
// internal/client, with its options (2 retries, no bound on answers). An answer cut off (R
// compacted while the client was reading it) is never taken for R's keys: the read fails (after
// the retry the cut allows, which is answered 410 compacted), and a rollback writes nothing.
func TestApplianceAt_CutAnswerFailsTheClient(t *testing.T) {
	parallelOwnEtcd(t)
	f, _, revs, _ := atCutFixture(t, 0)
	cut := func(t *testing.T, rev int64, read func(c *client.Client) error) error {
		t.Helper()
		// A small receive buffer, as in the test above: the server must still be reading the
		// tree when R is compacted (with the default buffers it had sometimes read it all).
		rt := http.DefaultTransport.(*http.Transport).Clone()
		rt.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err == nil {
				err = conn.(*net.TCPConn).SetReadBuffer(64 << 10)
			}
			return conn, err
		}
		s := &stallFirst{rt: rt, after: 1 << 20, stalled: make(chan struct{}), resume: make(chan struct{})}
		c, err := client.New(f.srv.URL, client.Options{HTTPClient: &http.Client{Transport: s}, Token: f.token, Retries: 2, MaxAnswerBytes: -1})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- read(c) }()
		select {
		case <-s.stalled:
		case err := <-done:
			t.Fatalf("read before the stall: %v", err)
		case <-time.After(20 * time.Second):
			t.Fatal("the answer did not reach the stall")
		}
		time.Sleep(300 * time.Millisecond)
		if err := f.st.Compact(context.Background(), rev+1); err != nil {
			t.Fatal(err)
		}
		close(s.resume)
		err = <-done
		if n := s.tries.Load(); n != 2 {
			t.Errorf("GETs of /at: %d, want 2 (the cut one, and its retry)", n)
		}
		if ae := (*api.Error)(nil); !errors.As(err, &ae) || ae.Code != api.CodeCompacted {
			t.Errorf("read of an answer cut off: %v, want the retry's 410 compacted", err)
		}
		return err
	}
	t.Run("diff", func(t *testing.T) {
		cut(t, revs[0], func(c *client.Client) error {
			keys, _, err := c.ApplianceAt(context.Background(), "big", revs[0])
			if err == nil || len(keys) > 0 {
				t.Errorf("ApplianceAt of a cut answer: %d keys, %v", len(keys), err)
			}
			return err
		})
	})
	t.Run("rollback", func(t *testing.T) {
		before := f.do("GET", "/v1/appliances/big/releases", "")
		f.must(before, 200, nil)
		cut(t, revs[1], func(c *client.Client) error {
			res, _, err := c.Rollback(context.Background(), "big", revs[1], "")
			if res.Revision != 0 {
				t.Errorf("rollback of a cut answer wrote revision %d", res.Revision)
			}
			return err
		})
		after := f.do("GET", "/v1/appliances/big/releases", "")
		if after.StatusCode != 200 || string(after.body) != string(before.body) {
			t.Errorf("releases changed by a rollback whose read was cut:\nbefore %s\nafter  %s", before.body, after.body)
		}
		var hot api.KV
		f.must(f.do("GET", "/v1/kv/appliances/big/hot", ""), 200, &hot)
		if hot.Value != "3" {
			t.Errorf("appliances/big/hot is %q after a rollback whose read was cut, want 3 as before", hot.Value)
		}
	})
}
