//go:build !race

package server

import (
	"fmt"
	"net"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/testutil"
)

// An open long-poll holds its connection's goroutine stacks as net/http's own handlers do: 4
// KiB for the connection's goroutine and 2 KiB for its background reader. A goroutine's stack
// doubles when a call goes deeper than its size less a guard (3,168 bytes of 4 KiB usable),
// and the runtime halves it only when under a quarter is used, which a parked long-poll never
// is: one deep call before a long-poll waits (the query, the token, the agent's report, the
// hub's registration) costs 4 KiB for as long as it is open, 40 MB for 10,000. This counts the
// stacks of real long-polls over HTTP/1, behind the connection limiter as `shoelace server`
// serves them, with the rate limits on (the default: every agent's request takes its instance's
// limiter, below authenticate and limitToken) and off (as the fan-out benchmark runs). (Not
// under the race detector, whose frames are larger.)
func TestLongPoll_StackStaysSmall(t *testing.T) {
	t.Run("rate-limit=default", func(t *testing.T) {
		testLongPollStack(t, func(c *Config) {
			c.RateLimit = DefaultConfig().RateLimit
			c.MaxInstances = 3000 // six rounds of 400 new instances
		})
	})
	t.Run("rate-limit=0", func(t *testing.T) { testLongPollStack(t) })
}

func testLongPollStack(t *testing.T, opts ...func(*Config)) {
	f := newFixture(t, opts...)
	rev := f.put("appliances/web/port", "80")
	token := f.newToken(api.TokenRequest{Name: "agent-web", Appliance: "web"})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := f.s.httpServer()
	lim := newConnLimiter(ln, 2000, 2000, time.Minute, true, testutil.Logger())
	srv.ConnState, srv.ConnContext = lim.connState, lim.connContext
	go func() { _ = srv.Serve(lim) }()
	t.Cleanup(func() { _ = srv.Close() })

	const n = 400
	// StackInuse is the whole process's: the store's and the runtime's goroutines starting or
	// growing meanwhile count too, and in a run of the whole package they did in three rounds
	// in a row. So the long-polls are opened up to six times and the smallest figure is
	// judged: a long-poll whose stack grew grows it in every round (each round's instances
	// are new ones, whose first reports are taken as the first round's were).
	best := -1.0
	for round := 1; round <= 6; round++ {
		per := longPollStacks(t, f, ln.Addr().String(), token, rev, n, round)
		t.Logf("round %d: goroutine stacks: %.0f bytes per open long-poll", round, per)
		if best < 0 || per < best {
			best = per
		}
		// 6 KiB each when they stay small (a few others start meanwhile); 10 KiB when the
		// connection's goroutine grew to 8 KiB. The limit leaves room for one in ten growing.
		if best <= 6.5*1024 {
			return
		}
	}
	t.Fatalf("goroutine stacks take %.0f bytes per open long-poll, want about 6 KiB (4 KiB and the background reader's 2 KiB): a call before the long-poll waits went deeper than 3,168 bytes", best)
}

// longPollStacks opens n long-polls of token on addr, waits until the hub holds them all, and
// returns the goroutine stack memory that grew meanwhile per long-poll; then closes them and
// waits until the hub has let them go.
func longPollStacks(t *testing.T, f *fixture, addr, token string, rev int64, n, round int) float64 {
	t.Helper()
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before := ms.StackInuse
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
		waitFor(t, "the long-polls let go", func() bool { return f.s.hub.open() == 0 })
	}()
	for i := range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		// As an agent asks: its index, a wait, its instance (a report to take).
		req := fmt.Sprintf("GET /v1/appliances/web?index=%d&wait=5m HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"+
			"X-Shoelace-Instance: vm-%d-%d\r\nUser-Agent: shoelace-agent/test\r\n\r\n", rev, token, round, i)
		if _, err := c.Write([]byte(req)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, strconv.Itoa(n)+" long-polls open", func() bool { return f.s.hub.open() == n })
	runtime.ReadMemStats(&ms)
	return (float64(ms.StackInuse) - float64(before)) / float64(n)
}
