// Command loadgen holds many long-polls open against one server, one connection each, as that
// many agents would, and reports when each answer arrived. It is the fan-out benchmark's load
// generator (tests/bench/fanout_test.go), run in a process of its own so that its work and
// memory are not the server's, against Shoelace and the bare net/http floor alike.
//
// It reads one JSON Plan from stdin (tokens stay off the command line), opens Plan.N
// connections over loopback, sends one GET on each, and waits until every one has its answer
// or Plan.Timeout passed. It then prints one JSON Report on stdout and exits. The time of each
// answer is the wall clock (Unix ns) at which its whole body was read, comparable with the
// benchmark's own clock on the same machine.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Plan is what to do, read from stdin.
type Plan struct {
	Addr  string `json:"addr"` // host:port of the server, loopback
	N     int    `json:"n"`    // long-polls to open
	Polls []Poll `json:"polls"`
	// Instance, when set, names long-poll i's agent "<Instance>-<i>" (X-Shoelace-Instance), as
	// agents do.
	Instance string `json:"instance,omitempty"`
	// Expect, when set, must appear in a 200 answer's body (else it counts as an error).
	Expect string `json:"expect,omitempty"`
	// Timeout bounds the whole run, in seconds.
	Timeout float64 `json:"timeout"`
	// SourceIPs spreads the connections over 127.0.0.2… (that many addresses), so that no one
	// client address holds them all (0: the system's choice).
	SourceIPs int `json:"source_ips,omitempty"`
}

// Poll is one kind of request: long-poll i uses Polls[i % len(Polls)].
type Poll struct {
	Path  string `json:"path"`  // e.g. /v1/appliances/app0?index=12&wait=5m
	Token string `json:"token"` // bearer token ("" = none)
}

// Report is what happened, printed on stdout.
type Report struct {
	N         int            `json:"n"`
	Connected int            `json:"connected"` // connections opened and request sent
	Answered  int            `json:"answered"`  // 200 answers with the expected body
	Errors    int            `json:"errors"`    // everything else: refused, other status, cut off, timeout
	Status    map[string]int `json:"status"`    // answers by status code
	Samples   []string       `json:"samples,omitempty"`
	// SentNS is when the last request was written; ArrivalsNS the time of each 200 answer.
	SentNS     int64   `json:"sent_ns"`
	ArrivalsNS []int64 `json:"arrivals_ns"`
	Bytes      int64   `json:"bytes"`   // body bytes read
	RSSKiB     int64   `json:"rss_kib"` // this process's, at the end
	// CPUAfterSentNS is this process's CPU time (user and system) from SentNS to the end:
	// reading the answers.
	CPUAfterSentNS int64 `json:"cpu_after_sent_ns"`
}

type result struct {
	status int
	at     int64
	n      int64
	err    error
}

func main() {
	var p Plan
	if err := json.NewDecoder(os.Stdin).Decode(&p); err != nil {
		fail("read the plan from stdin: %v", err)
	}
	if p.N <= 0 || len(p.Polls) == 0 || p.Addr == "" {
		fail("plan needs addr, n > 0 and polls")
	}
	if p.Timeout <= 0 {
		p.Timeout = 120
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(p.Timeout*float64(time.Second)))
	defer cancel()
	deadline, _ := ctx.Deadline()

	results := make(chan result, p.N)
	var sent sync.WaitGroup
	dials := make(chan struct{}, 64) // connections being opened at once
	for i := range p.N {
		sent.Add(1)
		dials <- struct{}{}
		go func() {
			r := poll(ctx, &p, i, deadline, func() { <-dials; sent.Done() })
			results <- r
		}()
	}
	sent.Wait()
	cpu0 := cpuTime()
	rep := Report{N: p.N, Status: map[string]int{}, SentNS: time.Now().UnixNano(), ArrivalsNS: make([]int64, 0, p.N)}
	for range p.N {
		r := <-results
		if r.err == nil || r.status != 0 {
			rep.Connected++
		}
		if r.status != 0 {
			rep.Status[strconv.Itoa(r.status)]++
		}
		rep.Bytes += r.n
		if r.err == nil && r.status == http.StatusOK {
			rep.Answered++
			rep.ArrivalsNS = append(rep.ArrivalsNS, r.at)
			continue
		}
		rep.Errors++
		if len(rep.Samples) < 10 {
			msg := fmt.Sprintf("status %d", r.status)
			if r.err != nil {
				msg += ": " + r.err.Error()
			}
			rep.Samples = append(rep.Samples, msg)
		}
	}
	rep.RSSKiB = rss()
	rep.CPUAfterSentNS = int64(cpuTime() - cpu0)
	if err := json.NewEncoder(os.Stdout).Encode(rep); err != nil {
		fail("write the report: %v", err)
	}
}

// poll opens long-poll i's connection, sends its request, calls sent (once, whatever happens)
// and waits for the answer.
func poll(ctx context.Context, p *Plan, i int, deadline time.Time, sent func()) result {
	once := sync.OnceFunc(sent)
	defer once()
	d := net.Dialer{Timeout: 10 * time.Second}
	if p.SourceIPs > 0 {
		k := i % p.SourceIPs
		d.LocalAddr = &net.TCPAddr{IP: net.IPv4(127, 0, byte(k/250), byte(2+k%250))}
	}
	c, err := d.DialContext(ctx, "tcp", p.Addr)
	if err != nil {
		return result{err: err}
	}
	defer c.Close()
	_ = c.SetDeadline(deadline)
	pl := p.Polls[i%len(p.Polls)]
	var req strings.Builder
	fmt.Fprintf(&req, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: shoelace-loadgen\r\nAccept-Encoding: identity\r\n", pl.Path, p.Addr)
	if pl.Token != "" {
		fmt.Fprintf(&req, "Authorization: Bearer %s\r\n", pl.Token)
	}
	if p.Instance != "" {
		fmt.Fprintf(&req, "X-Shoelace-Instance: %s-%d\r\n", p.Instance, i)
	}
	req.WriteString("\r\n")
	if _, err := io.WriteString(c, req.String()); err != nil {
		return result{err: err}
	}
	once()
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return result{err: err}
	}
	body, err := io.ReadAll(res.Body)
	at := time.Now().UnixNano()
	res.Body.Close()
	r := result{status: res.StatusCode, at: at, n: int64(len(body)), err: err}
	if err == nil && res.StatusCode == http.StatusOK && p.Expect != "" && !strings.Contains(string(body), p.Expect) {
		r.err = fmt.Errorf("body of %d bytes without %q", len(body), p.Expect)
	}
	if err == nil && res.StatusCode != http.StatusOK && len(body) > 0 {
		r.err = fmt.Errorf("%.200s", body)
	}
	return r
}

// rss is this process's resident set (VmRSS) in KiB, 0 when unknown.
func rss() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

// cpuTime is this process's CPU time so far, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "loadgen: "+format+"\n", args...)
	os.Exit(1)
}
