package server

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// stalledGet sends a GET with token and never reads its answer (a receive buffer of 4 KiB):
// the server's write of a large answer blocks until the connection closes.
func stalledGet(t *testing.T, f *fixture, token, path string) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	c, err := d.Dial("tcp", strings.TrimPrefix(f.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", path, token)
	return c
}

// Answers made for one request that their clients do not read are bounded per token and per
// replica: a client asking at its rate limit and reading nothing held a copy of each (an 8 MiB
// listing 300 times: 2 GiB in three seconds). Over a token's share its next large answer is
// 429, over the replica's 503, both with Retry-After; once the clients go, answers flow again.
func TestAnswers_UnreadAnswersBounded(t *testing.T) {
	parallelShared(t)
	f := newFixture(t)
	for i := range 6 {
		f.put(fmt.Sprintf("appliances/web/big/%d", i), strings.Repeat("v", 1000<<10))
	}
	const size = 6 * 1000 << 10 // each answer: the six values
	f.s.answers.perToken, f.s.answers.perReplica = 10<<20, 16<<20
	reader := f.newToken(api.TokenRequest{Name: "reader", Read: []string{"appliances/web"}})
	agent := f.newToken(api.TokenRequest{Name: "agent-web", Appliance: "web"})
	list := "/v1/kv/appliances/web?recurse"

	stalledGet(t, f, reader, list)
	waitFor(t, "the first stalled answer held", func() bool { return f.s.answers.held() >= size })
	r := f.doToken(reader, "GET", list, "")
	f.mustErr(r, 429, api.CodeRateLimited, "reader", "not yet read")
	if r.Header.Get("Retry-After") == "" {
		t.Fatal("429 without Retry-After")
	}
	// Another token has a share of its own, up to the replica's bound; a view read without an
	// index is made for its request too.
	c := stalledGet(t, f, agent, "/v1/appliances/web")
	waitFor(t, "the agent's stalled view held", func() bool { return f.s.answers.held() >= 2*size })
	r = f.doToken(f.token, "GET", list, "")
	f.mustErr(r, 503, api.CodeUnavailable, "not yet read")
	if r.Header.Get("Retry-After") == "" {
		t.Fatal("503 without Retry-After")
	}
	// Small answers are not counted.
	f.must(f.doToken(reader, "GET", "/v1/kv/appliances/web?recurse&keys", ""), 200, nil)

	c.Close()
	waitFor(t, "the closed client's answer given back", func() bool { return f.s.answers.held() < 2*size })
	deadline := time.Now().Add(20 * time.Second)
	for r = f.doToken(f.token, "GET", list, ""); r.StatusCode != 200 && time.Now().Before(deadline); r = f.doToken(f.token, "GET", list, "") {
		time.Sleep(10 * time.Millisecond)
	}
	f.must(r, 200, nil)
}

// A large answer costs an operator's token a request of its rate limit per 64 KiB beyond the
// first (up to one burst): within the limit of requests, one read token asking for a large
// listing a hundred times a second kept the store reading hundreds of MB/s until its reads
// timed out for everyone. Small answers and agents' views cost one request, as before.
//
// The limiters' clock stands still until the test moves it: at 10 requests/s the charge left
// the token one request short, which the real clock refilled in 0.2 s, before the next request
// under -race on a busy machine.
func TestAnswers_LargeAnswersCostRequests(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.RateLimit = 10 })
	var ahead atomic.Int64
	start := time.Now()
	f.s.auth.limits.mu.Lock()
	f.s.auth.limits.clock = func() time.Time { return start.Add(time.Duration(ahead.Load())) }
	f.s.auth.limits.mu.Unlock()
	for i := range 4 {
		f.put(fmt.Sprintf("appliances/web/big/%d", i), strings.Repeat("v", 200<<10))
	}
	reader := f.newToken(api.TokenRequest{Name: "cost-reader", Read: []string{"appliances/web"}})
	list := "/v1/kv/appliances/web?recurse"
	f.must(f.doToken(reader, "GET", list, ""), 200, nil) // 800 KiB: 12 more requests, the burst's 9 left
	r := f.doToken(reader, "GET", "/v1/kv/appliances/web?recurse&keys", "")
	f.mustErr(r, 429, api.CodeRateLimited)
	if r.Header.Get("Retry-After") == "" {
		t.Fatal("429 without Retry-After")
	}
	// The limit refills: a second later the token reads again.
	ahead.Store(int64(time.Second))
	deadline := time.Now().Add(10 * time.Second)
	for r = f.doToken(reader, "GET", list+"&keys", ""); r.StatusCode == 429 && time.Now().Before(deadline); r = f.doToken(reader, "GET", list+"&keys", "") {
		time.Sleep(100 * time.Millisecond)
	}
	f.must(r, 200, nil)

	// Small answers cost one request each: the burst's ten go through.
	small := f.newToken(api.TokenRequest{Name: "cost-small", Read: []string{"appliances/web"}})
	for i := range 10 {
		if r := f.doToken(small, "GET", list+"&keys", ""); r.StatusCode != 200 {
			t.Fatalf("small answer %d: %d %s", i+1, r.StatusCode, r.body)
		}
	}
	// An agent's view of the same size is not charged: its next request goes through.
	agent := f.newToken(api.TokenRequest{Name: "cost-agent", Appliance: "web"})
	for i := range 3 {
		if r := f.doToken(agent, "GET", "/v1/appliances/web", ""); r.StatusCode != 200 {
			t.Fatalf("agent's view read %d: %d %s", i+1, r.StatusCode, r.body)
		}
	}
}

// The instance tokens one agent token enrolled share one budget of unread answers: each had a
// share of its own, so that the holder of a fleet's agent token (on every VM), enrolling
// instance tokens and stalling a view read with each, filled the replica's bound and the
// admin's reads were 503. Their stalled answers are now 429 past one share, and the admin and
// the shared agent token still read.
func TestAnswers_EnrolledInstancesShareOneBudget(t *testing.T) {
	parallelShared(t)
	f := newFixture(t)
	for i := range 6 {
		f.put(fmt.Sprintf("appliances/web/big/%d", i), strings.Repeat("v", 1000<<10))
	}
	const size = 6 * 1000 << 10 // each view: the six values
	f.s.answers.perToken, f.s.answers.perReplica = 10<<20, 16<<20
	agent := f.newToken(api.TokenRequest{Name: "agent-web", Appliance: "web"})
	var insts []string
	for i := range 4 {
		insts = append(insts, f.enroll(agent, "web", fmt.Sprintf("vm-%d", i)).Token)
	}
	stalledGet(t, f, insts[0], "/v1/appliances/web")
	waitFor(t, "the first instance's stalled view held", func() bool { return f.s.answers.held() >= size })
	for _, tok := range insts[1:] {
		r := f.doToken(tok, "GET", "/v1/appliances/web", "")
		f.mustErr(r, 429, api.CodeRateLimited, "agent-web", "not yet read")
	}
	if h := f.s.answers.held(); h >= 2*size {
		t.Fatalf("the enrolled instances hold %d bytes of unread answers, over one share", h)
	}
	f.must(f.doToken(f.token, "GET", "/v1/kv/appliances/web?recurse", ""), 200, nil)
	f.must(f.doToken(agent, "GET", "/v1/appliances/web", "", api.HeaderInstance, "vm-shared"), 200, nil)
}

// A listing also costs what the store was read for and the answer left out, the keys the
// token's grants do not cover under the prefix asked, as if answered: a token that may read
// one key, listing the appliance's whole tree (one page from etcd, or several), made the
// replica read 800 KiB at each of its requests and paid for its one entry.
func TestAnswers_ListingLeftOutCostsRequests(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.RateLimit = 10 })
	var ahead atomic.Int64
	start := time.Now()
	f.s.auth.limits.mu.Lock()
	f.s.auth.limits.clock = func() time.Time { return start.Add(time.Duration(ahead.Load())) }
	f.s.auth.limits.mu.Unlock()
	tree := func(n, size int, port string) string { // one apply: the admin's requests count too
		keys := map[string]any{"port": port}
		big := map[string]string{}
		for i := range n {
			big[fmt.Sprintf("%02d", i)] = strings.Repeat("v", size)
		}
		keys["big"] = big
		b, _ := json.Marshal(map[string]any{"keys": keys})
		return string(b)
	}
	f.must(f.do("PUT", "/v1/appliances/web", tree(4, 200<<10, "80")), 200, nil)
	f.must(f.do("PUT", "/v1/appliances/db", tree(20, 40<<10, "5432")), 200, nil)
	for _, app := range []string{"web", "db"} { // one page, and several
		narrow := f.newToken(api.TokenRequest{Name: "narrow-" + app, Read: []string{"appliances/" + app + "/port"}})
		var l struct {
			Entries []api.KV `json:"entries"`
		}
		f.must(f.doToken(narrow, "GET", "/v1/kv/appliances/"+app+"?recurse", ""), 200, &l)
		if len(l.Entries) != 1 || l.Entries[0].Key != "appliances/"+app+"/port" {
			t.Fatalf("%s: listing %+v, want the port alone", app, l.Entries)
		}
		r := f.doToken(narrow, "GET", "/v1/kv/appliances/"+app+"/port", "")
		f.mustErr(r, 429, api.CodeRateLimited)
		if r.Header.Get("Retry-After") == "" {
			t.Fatal("429 without Retry-After")
		}
	}
	// A listing that leaves out little costs a request, as before.
	small := f.newToken(api.TokenRequest{Name: "small", Read: []string{"appliances/web/port", "appliances/db/port"}})
	for i := range 10 {
		if r := f.doToken(small, "GET", "/v1/kv/appliances?recurse&keys", ""); r.StatusCode != 200 {
			t.Fatalf("keys listing %d: %d %s", i+1, r.StatusCode, r.body)
		}
	}
}
