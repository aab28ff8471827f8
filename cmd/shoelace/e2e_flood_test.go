//go:build unix

package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// etcdPurgeInterval is how often etcd lists its WAL and snapshot directories to purge old files
// (etcdserver's purgeFileInterval), the first time as it starts. An embedded etcd that cannot
// open the directory then (EMFILE) aborts the whole process.
const etcdPurgeInterval = 30 * time.Second

// TestE2E_ConnectionFloodUnderLowFileLimit floods a server whose open files limit is 256 with
// 400 connections that each send one GET /health and then sit idle, and keeps them coming for
// longer than etcd's purge interval. The server must keep to its connection cap (refuse a new
// connection, or close an idle one for it) instead of running out of descriptors, stay up, and once the
// flood ends answer /health, /health/deps (its embedded etcd is fine) and an authenticated
// request. Before the caps, the accept loop took every descriptor and etcd's purge aborted the
// process.
func TestE2E_ConnectionFloodUnderLowFileLimit(t *testing.T) {
	dir := t.TempDir()
	addr, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	s := &testServer{addr: addr, dataDir: dir, stderr: &syncBuffer{}, done: make(chan error, 1)}
	// ulimit -n lowers the soft and the hard limit: the server cannot raise it back.
	s.cmd = exec.Command("sh", "-c", `ulimit -n 256 && exec "$0" "$@"`,
		binPath, "server", "--listen", addr, "--data-dir", dir, "--log-level", "warn")
	s.cmd.Env = cleanEnv()
	s.cmd.Stdout, s.cmd.Stderr = s.stderr, s.stderr
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.done <- s.cmd.Wait() }()
	defer s.stop()
	if err := s.waitHealthy(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	// etcd started before the server answered: its next purge is due before this.
	floodUntil := time.Now().Add(etcdPurgeInterval + 5*time.Second)

	const flooders = 400
	var answered, refused atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < flooders; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				switch floodOnce(addr, stop) {
				case "200":
					answered.Add(1)
				case "refused":
					refused.Add(1)
					// Refusals come at once: do not spin.
					select {
					case <-stop:
						return
					case <-time.After(250 * time.Millisecond):
					}
				}
			}
		}()
	}
	var exited error
	gone := false
	select {
	case exited = <-s.done:
		s.done <- exited
		gone = true
	case <-time.After(time.Until(floodUntil)):
	}
	close(stop)
	wg.Wait()
	if gone {
		t.Fatalf("the server exited under a connection flood (%v):\n%s", exited, tail(s.stderr.String(), 3000))
	}
	t.Logf("flood: %d connections answered, %d refused", answered.Load(), refused.Load())

	// The flood is over: a new client is served, etcd is fine.
	if err := s.waitHealthy(30 * time.Second); err != nil {
		t.Fatalf("after the flood: %v", err)
	}
	hc := &http.Client{Timeout: 10 * time.Second}
	// The cap held: connections over it were refused, or idle ones closed to make room.
	if res, err := hc.Get(s.url() + "/metrics"); err != nil {
		t.Fatal(err)
	} else {
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		closed := 0.0
		for _, line := range strings.Split(string(body), "\n") {
			if strings.HasPrefix(line, "shoelace_connections_refused_total{") || strings.HasPrefix(line, "shoelace_connections_evicted_total ") {
				var n float64
				fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &n)
				closed += n
			}
		}
		if closed == 0 {
			t.Errorf("no connection of %d was refused or closed for another with a file limit of 256: the cap did not hold", flooders)
		}
	}
	res, err := hc.Get(s.url() + "/health/deps")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("/health/deps after the flood: %d %s", res.StatusCode, body)
	}
	if out := newCLI(t, s).ok("status"); !strings.Contains(out, "etcd.leader: true\n") {
		t.Errorf("status after the flood: %s", out)
	}
	if logs := s.stderr.String(); strings.Contains(logs, "too many open files") {
		t.Errorf("the server ran out of descriptors despite its cap:\n%s", tail(logs, 3000))
	}
	if err := s.stop(); err != nil {
		t.Errorf("stop after the flood: %v\n%s", err, tail(s.stderr.String(), 3000))
	}
}

// floodOnce opens a connection, sends GET /health and holds the connection until the server
// closes it or stop closes; it says "200" when the server answered, "refused" when it answered
// 503 or closed the connection without an answer, "" when it could not connect.
func floodOnce(addr string, stop <-chan struct{}) string {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return ""
	}
	defer c.Close()
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-stop:
			c.Close()
		case <-done:
		}
	}()
	if _, err := io.WriteString(c, "GET /health HTTP/1.1\r\nHost: flood\r\n\r\n"); err != nil {
		return "refused"
	}
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		return "refused"
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return "refused"
	}
	_, _ = io.Copy(io.Discard, br) // idle until the server closes it, or stop
	return "200"
}

// tail is the end of a server's log, less its accept errors (a flood makes thousands).
func tail(s string, n int) string {
	var keep []string
	accept := 0
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, "Accept error") {
			accept++
			continue
		}
		keep = append(keep, line)
	}
	s = strings.Join(keep, "\n")
	if len(s) > n {
		s = "…" + s[len(s)-n:]
	}
	return fmt.Sprintf("(%d accept errors left out)\n%s", accept, s)
}
