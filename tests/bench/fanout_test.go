package bench

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/client"
	"github.com/shoelace-dev/shoelace/internal/testbin"
	"github.com/shoelace-dev/shoelace/internal/testutil"
)

// The fan-out benchmarks hold N long-polls open on one server, as N agents would (one
// connection each, over 10 appliances, agent tokens), from load generators in processes of
// their own (./loadgen), and answer them all with one change under shared/. The floor is a
// bare net/http server (./barehttp) whose requests block until one trigger wakes them all and
// are then answered a body of the size of Shoelace's view with the same headers, driven by
// the same load generator the same way. Latency is from the write (the trigger) to each answer, on one clock; memory
// per waiter is the server process's RSS with N long-polls open less before, ÷ N.

const fanApps = 10

var (
	fanOnce sync.Once
	fanBins []string // loadgen, barehttp
	fanErr  error
)

// fanBin returns the path of the load generator (0) or the bare server (1), built once.
func fanBin(b *testing.B, i int) string {
	dir := filepath.Dir(bin(b, "shoelace"))
	fanOnce.Do(func() {
		fanBins, fanErr = testbin.Build(dir, nil, "./tests/bench/loadgen", "./tests/bench/barehttp")
	})
	if fanErr != nil {
		b.Fatal(fanErr)
	}
	return fanBins[i]
}

// plan is the load generator's stdin (tests/bench/loadgen.Plan).
type plan struct {
	Addr      string  `json:"addr"`
	N         int     `json:"n"`
	Polls     []poll  `json:"polls"`
	Instance  string  `json:"instance,omitempty"`
	Expect    string  `json:"expect,omitempty"`
	Timeout   float64 `json:"timeout"`
	SourceIPs int     `json:"source_ips,omitempty"`
}

type poll struct {
	Path  string `json:"path"`
	Token string `json:"token"`
}

// report is the load generator's stdout (tests/bench/loadgen.Report).
type report struct {
	N          int            `json:"n"`
	Connected  int            `json:"connected"`
	Answered   int            `json:"answered"`
	Errors     int            `json:"errors"`
	Status     map[string]int `json:"status"`
	Samples    []string       `json:"samples"`
	ArrivalsNS []int64        `json:"arrivals_ns"`
	RSSKiB     int64          `json:"rss_kib"`
	// CPUAfterSentNS is the load generator's CPU time (user and system) from the last request
	// sent to the end: reading the answers.
	CPUAfterSentNS int64 `json:"cpu_after_sent_ns"`
}

// loadgen is one running load generator.
type loadgen struct {
	cmd  *exec.Cmd
	out  bytes.Buffer
	errb bytes.Buffer
	done chan struct{}
	err  error
}

func startLoadgen(b *testing.B, p plan) *loadgen {
	in, err := json.Marshal(p)
	if err != nil {
		b.Fatal(err)
	}
	g := &loadgen{done: make(chan struct{})}
	g.cmd = exec.Command(fanBin(b, 0))
	g.cmd.Stdin = bytes.NewReader(in)
	g.cmd.Stdout, g.cmd.Stderr = &g.out, &g.errb
	if err := g.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	go func() { g.err = g.cmd.Wait(); close(g.done) }()
	b.Cleanup(func() {
		select {
		case <-g.done:
		default:
			g.cmd.Process.Kill()
			<-g.done
		}
	})
	return g
}

func (g *loadgen) report(b *testing.B) report {
	select {
	case <-g.done:
	case <-time.After(5 * time.Minute):
		b.Fatal("the load generator did not finish")
	}
	var r report
	if g.err != nil {
		b.Fatalf("load generator: %v\n%s", g.err, g.errb.Bytes())
	}
	if err := json.Unmarshal(g.out.Bytes(), &r); err != nil {
		b.Fatalf("load generator's report: %v\n%s", err, g.out.Bytes())
	}
	return r
}

// fanRun is one round's figures.
type fanRun struct {
	n, answered, errors int
	samples             []string
	lat                 latencies     // write → each answer
	rssBefore, rssAfter int64         // server process, KiB
	genRSS              int64         // load generators', KiB, at the end
	trigger             time.Duration // the write (the wake) itself, until it returned
	cpu, genCPU         time.Duration // the server's and the load generators' CPU from the wake to the last answer
}

func (r fanRun) perWaiterKiB() float64 { return float64(r.rssAfter-r.rssBefore) / float64(r.n) }

// target is a server under test: how to open its long-polls, wait for them and wake them.
type target struct {
	pid     int
	addr    string
	polls   []poll
	expect  string
	open    func() int   // long-polls held now
	trigger func() error // the write (the wake)
	pprof   string       // the server's profiles (SHOELACE_DEBUG_PPROF), "" when not asked
}

// drive opens n long-polls on t from gens load generators, waits until t holds them all,
// triggers the wake and collects the answers.
func drive(b *testing.B, t target, n, gens int, instance string) fanRun {
	run := fanRun{n: n, rssBefore: procRSS(b, t.pid)}
	var gs []*loadgen
	for g := range gens {
		gn := n / gens
		if g < n%gens {
			gn++
		}
		gs = append(gs, startLoadgen(b, plan{Addr: t.addr, N: gn, Polls: t.polls, Expect: t.expect, Timeout: 240,
			SourceIPs: 200, Instance: fmt.Sprintf("%s%d", instance, g)}))
	}
	deadline := time.Now().Add(3 * time.Minute)
	for t.open() < n {
		for _, g := range gs {
			select {
			case <-g.done:
				r := g.report(b)
				b.Fatalf("a load generator ended before the wake: %d answered, %d errors %v", r.Answered, r.Errors, r.Samples)
			default:
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("the server never held %d long-polls (%d)", n, t.open())
		}
		// Every 100 ms: Shoelace's count is a scrape of /metrics (about 40 KB of garbage each),
		// the floor's a number; scraped every 20 ms, the server made ~6 MB of garbage more than
		// the floor while the long-polls opened, for a figure no operator polls that often.
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // let the last requests' garbage settle into the figure
	run.rssAfter = procRSS(b, t.pid)
	saveProfiles(b, t.pprof, instance)
	cpu := cpuProfile(b, t.pprof, instance)
	stopPerf := perfRecord(b, append([]int{t.pid}, pids(gs)...), instance)
	ticks := cpuTicks(b, t.pid)
	t0 := time.Now()
	if err := t.trigger(); err != nil {
		b.Fatal(err)
	}
	run.trigger = time.Since(t0)
	if os.Getenv("SHOELACE_BENCH_LOGS") != "" {
		b.Logf("%s: wake at %.3f s of the server's life (GODEBUG=gctrace=1 times)", instance, sinceStart(b, t.pid, t0).Seconds())
	}
	for _, g := range gs {
		r := g.report(b)
		run.answered += r.Answered
		run.errors += r.Errors
		run.genRSS += r.RSSKiB
		run.genCPU += time.Duration(r.CPUAfterSentNS)
		if len(run.samples) < 5 {
			run.samples = append(run.samples, r.Samples...)
		}
		for _, at := range r.ArrivalsNS {
			run.lat = append(run.lat, time.Unix(0, at).Sub(t0))
		}
	}
	run.cpu = time.Duration(cpuTicks(b, t.pid)-ticks) * 10 * time.Millisecond
	stopPerf()
	<-cpu
	return run
}

// saveProfiles saves the server's heap and goroutine profiles into $SHOELACE_BENCH_PROFILE
// (a directory), with its long-polls open, when it serves them (addr not "").
func saveProfiles(b *testing.B, addr, label string) {
	dir := os.Getenv("SHOELACE_BENCH_PROFILE")
	if addr == "" || dir == "" {
		return
	}
	for _, p := range []string{"heap?debug=1", "heap?gc=1", "goroutine", "allocs"} {
		res, err := http.Get("http://" + addr + "/debug/pprof/" + p)
		if err != nil {
			b.Fatal(err)
		}
		data, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil {
			b.Fatal(err)
		}
		base := filepath.Join(dir, strings.ReplaceAll(b.Name(), "/", "_")+"."+label)
		name := base + "." + strings.TrimSuffix(p, "?gc=1") + ".pb.gz"
		if strings.Contains(p, "debug") {
			name = base + ".heap.txt"
		}
		if err := os.WriteFile(name, data, 0o644); err != nil {
			b.Fatal(err)
		}
	}
}

// cpuProfile saves a CPU profile of the server for the next 3 s into $SHOELACE_BENCH_PROFILE
// (an execution trace with SHOELACE_BENCH_TRACE set), when it serves profiles (addr not "");
// the channel is closed when it is written.
func cpuProfile(b *testing.B, addr, label string) chan struct{} {
	done := make(chan struct{})
	dir := os.Getenv("SHOELACE_BENCH_PROFILE")
	if addr == "" || dir == "" {
		close(done)
		return done
	}
	name := filepath.Join(dir, strings.ReplaceAll(b.Name(), "/", "_")+"."+label+".cpu.pb.gz")
	path := "/debug/pprof/profile?seconds=3"
	if os.Getenv("SHOELACE_BENCH_TRACE") != "" { // an execution trace (go tool trace) instead
		name, path = strings.TrimSuffix(name, ".cpu.pb.gz")+".trace", "/debug/pprof/trace?seconds=3"
	}
	started := make(chan struct{})
	go func() {
		defer close(done)
		req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
		close(started)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Error(err)
			return
		}
		defer res.Body.Close()
		data, _ := io.ReadAll(res.Body)
		if err := os.WriteFile(name, data, 0o644); err != nil {
			b.Error(err)
		}
	}()
	<-started
	time.Sleep(50 * time.Millisecond) // the profile has started
	return done
}

// pids are the load generators' process ids.
func pids(gs []*loadgen) []int {
	var out []int
	for _, g := range gs {
		out = append(out, g.cmd.Process.Pid)
	}
	return out
}

// perfRecord records the processes pids with perf (kernel included: the answers' syscalls
// and loopback TCP are most of their cost) into $SHOELACE_BENCH_PERF (a directory) until the
// function it returns is called; a no-op when that is not set. It samples cpu-clock, or the
// event in $SHOELACE_BENCH_PERF_EVENT (page-faults: where first touches of memory happen).
func perfRecord(b *testing.B, pids []int, label string) func() {
	dir := os.Getenv("SHOELACE_BENCH_PERF")
	if dir == "" {
		return func() {}
	}
	base := filepath.Join(dir, strings.ReplaceAll(b.Name(), "/", "_")+"."+label)
	var cmds []*exec.Cmd
	if os.Getenv("SHOELACE_BENCH_PERF_STAT") != "" {
		// Counts rather than samples: syscalls, context switches and page faults per process.
		for i, p := range pids {
			cmds = append(cmds, exec.Command("perf", "stat", "-o", fmt.Sprintf("%s.%d.stat", base, i), "-p", strconv.Itoa(p), "-e",
				"task-clock,page-faults,context-switches,raw_syscalls:sys_enter,syscalls:sys_enter_write,syscalls:sys_enter_read,"+
					"syscalls:sys_enter_close,syscalls:sys_enter_epoll_pwait,syscalls:sys_enter_futex,syscalls:sys_enter_nanosleep,"+
					"syscalls:sys_enter_madvise,syscalls:sys_enter_mmap,syscalls:sys_enter_sched_yield,syscalls:sys_enter_tgkill"))
		}
	} else {
		var ps []string
		for _, p := range pids {
			ps = append(ps, strconv.Itoa(p))
		}
		cmds = append(cmds, exec.Command("perf", "record", "-q", "-e", cmp.Or(os.Getenv("SHOELACE_BENCH_PERF_EVENT"), "cpu-clock"), "-F", "4999", "-g", "-o", base+".perf.data", "-p", strings.Join(ps, ",")))
	}
	for _, cmd := range cmds {
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond) // perf attached
	return func() {
		for _, cmd := range cmds {
			_ = cmd.Process.Signal(os.Interrupt)
			_ = cmd.Wait()
		}
	}
}

// procRSS is process pid's resident set (VmRSS) in KiB.
func procRSS(b *testing.B, pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return n
		}
	}
	b.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

// answerShape is what the floor answers to be alike Shoelace's: a body of the size of an
// appliance's view, with the same headers (names and values; net/http adds Date).
type answerShape struct {
	size   int
	header []string // "Name: value"
}

// fanServer starts a shoelace server with extra flags and readies it for a fan-out round: 10
// appliances, an agent token for each, shared/wake. It returns the target (whose trigger
// writes shared/wake) and the shape of an appliance's view as an agent gets it.
func fanServer(b *testing.B, extra ...string) (target, answerShape) {
	ctx := context.Background()
	dir := b.TempDir()
	addr := freeAddr(b)
	tokenFile := filepath.Join(dir, "admin.token")
	args := append([]string{"server", "--listen", addr,
		"--etcd-endpoints", strings.Join(testutil.Etcd(b), ","), "--root", testutil.Root(b), "--data-dir", dir,
		"--admin-token-file", tokenFile, "--rate-limit", "0", "--log-level", "warn"}, extra...)
	var env []string
	pp := ""
	if os.Getenv("SHOELACE_BENCH_PROFILE") != "" {
		pp = freeAddr(b)
		env = append(env, "SHOELACE_DEBUG_PPROF="+pp)
	}
	exe := bin(b, "shoelace")
	if v := os.Getenv("SHOELACE_BENCH_FANOUT_BIN"); v != "" { // another build, to compare
		exe = v
	}
	keepLog(b, filepath.Join(dir, "server.log"), "shoelace")
	cmd := start(b, exe, args, filepath.Join(dir, "server.log"), env...)
	cl := adminClient(b, addr, tokenFile, nil)
	if _, err := cl.Put(ctx, "shared/wake", []byte("0"), client.NoCAS); err != nil {
		b.Fatal(err)
	}
	var polls []poll
	var rev int64
	for i := range fanApps {
		app := fmt.Sprintf("app%d", i)
		r, err := cl.Put(ctx, "appliances/"+app+"/port", []byte(strconv.Itoa(8000+i)), client.NoCAS)
		if err != nil {
			b.Fatal(err)
		}
		rev = r
		tok, err := cl.CreateToken(ctx, api.TokenRequest{Name: "agent-" + app, Appliance: app})
		if err != nil {
			b.Fatal(err)
		}
		polls = append(polls, poll{Token: tok.Token, Path: fmt.Sprintf("/v1/appliances/%s?index=%d&wait=5m", app, rev)})
	}
	// The view as an agent gets it, to shape the floor's answers alike.
	var shape answerShape
	if tok := polls[0].Token; tok != "" {
		req, _ := http.NewRequest("GET", "http://"+addr+"/v1/appliances/app0", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			b.Fatalf("view: %s: %s", res.Status, body)
		}
		shape.size = len(body)
		for name, vs := range res.Header {
			if name != "Date" && name != "Content-Length" {
				for _, v := range vs {
					shape.header = append(shape.header, name+": "+v)
				}
			}
		}
		slices.Sort(shape.header)
	}
	t := target{pid: cmd.Process.Pid, addr: addr, polls: polls, expect: `"wake":"1"`, pprof: pp,
		open: func() int { return int(metric(b, addr, "shoelace_long_polls_open")) },
		trigger: func() error {
			_, err := cl.Put(ctx, "shared/wake", []byte("1"), client.NoCAS)
			return err
		},
	}
	return t, shape
}

// bareServer starts the floor, answering answers of that shape.
func bareServer(b *testing.B, shape answerShape) target {
	dir := b.TempDir()
	addr := freeAddr(b)
	args := []string{"-listen", addr, "-body-size", strconv.Itoa(shape.size)}
	for _, h := range shape.header {
		args = append(args, "-header", h)
	}
	pp := ""
	if os.Getenv("SHOELACE_BENCH_PROFILE") != "" {
		pp = freeAddr(b)
		args = append(args, "-pprof", pp)
	}
	keepLog(b, filepath.Join(dir, "bare.log"), "bare")
	cmd := start(b, fanBin(b, 1), args, filepath.Join(dir, "bare.log"))
	get := func(method, path string) (string, error) {
		req, _ := http.NewRequest(method, "http://"+addr+path, nil)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			return "", err
		}
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusOK {
			return "", fmt.Errorf("%s %s: %s", method, path, res.Status)
		}
		return strings.TrimSpace(string(body)), err
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := get("GET", "/waiting"); err == nil {
			break
		} else if time.Now().After(deadline) {
			b.Fatal(err)
		}
	}
	return target{pid: cmd.Process.Pid, addr: addr, pprof: pp,
		polls: []poll{{Path: "/v1/appliances/app0?index=1&wait=5m", Token: "bare"}},
		open: func() int {
			s, err := get("GET", "/waiting")
			if err != nil {
				b.Fatal(err)
			}
			n, _ := strconv.Atoi(s)
			return n
		},
		trigger: func() error { _, err := get("POST", "/wake"); return err },
	}
}

// BenchmarkFanOut: N long-polls (10,000; 1,000 quick) on one shoelace server, answered after
// one shared/ write, against the bare net/http floor answering as many: p99 wake latency and
// memory per waiter, each as a ratio in the same run. Rounds alternate floor and Shoelace;
// the rows hold the median ratio. Seven rounds (about 5 s each): one round's p99 ratio moves
// by a third from the next on a quiet machine (a descheduling of either server or of the load
// generator decides it), and the median of three still moved by a fifth between runs.
func BenchmarkFanOut(b *testing.B) {
	n, rounds := 10000, 7
	if quick() {
		n, rounds = 1000, 1
	}
	if v := os.Getenv("SHOELACE_BENCH_FANOUT_ROUNDS"); v != "" { // for profiling
		rounds, _ = strconv.Atoi(v)
	}
	var p99, mem []float64
	var shs, bares []fanRun
	for r := range rounds {
		var sh, bare fanRun
		b.Run(fmt.Sprintf("round=%d", r), func(b *testing.B) {
			t, shape := fanServer(b, "--max-long-polls", strconv.Itoa(n))
			bt := bareServer(b, shape)
			if r%2 == 0 {
				bare = drive(b, bt, n, 1, "bare")
				sh = drive(b, t, n, 1, "agent")
			} else {
				sh = drive(b, t, n, 1, "agent")
				bare = drive(b, bt, n, 1, "bare")
			}
			for _, x := range []fanRun{sh, bare} {
				if x.answered != n || x.errors != 0 {
					b.Fatalf("%d of %d answered, %d errors: %v", x.answered, n, x.errors, x.samples)
				}
			}
			b.ReportMetric(sh.lat.at(0.99), "p99-ms")
			b.ReportMetric(bare.lat.at(0.99), "floor-p99-ms")
			b.ReportMetric(sh.perWaiterKiB(), "KiB/waiter")
			b.ReportMetric(bare.perWaiterKiB(), "floor-KiB/waiter")
			b.ReportMetric(0, "ns/op")
		})
		if sh.n == 0 {
			return
		}
		b.Logf("round %d: shoelace min/p10/p50/p99/max %.1f/%.1f/%.1f/%.1f/%.1f ms (write %.1f ms), %.2f KiB/waiter, CPU %.0f ms (load generator %.0f); floor %.1f/%.1f/%.1f/%.1f/%.1f ms (wake %.1f ms), %.2f KiB/waiter, CPU %.0f ms (load generator %.0f)",
			r, sh.lat.at(0), sh.lat.at(0.1), sh.lat.at(0.5), sh.lat.at(0.99), sh.lat.at(1), ms(sh.trigger), sh.perWaiterKiB(), ms(sh.cpu), ms(sh.genCPU),
			bare.lat.at(0), bare.lat.at(0.1), bare.lat.at(0.5), bare.lat.at(0.99), bare.lat.at(1), ms(bare.trigger), bare.perWaiterKiB(), ms(bare.cpu), ms(bare.genCPU))
		p99 = append(p99, sh.lat.at(0.99)/bare.lat.at(0.99))
		mem = append(mem, sh.perWaiterKiB()/bare.perWaiterKiB())
		shs, bares = append(shs, sh), append(bares, bare)
	}
	// Each row holds the round whose ratio is the median of the rounds'.
	i := medianAt(p99)
	sh, bare := shs[i], bares[i]
	note := fmt.Sprintf("median of %d rounds; p99 ratios %s; that round's p50 %.1f ms (floor %.1f)", rounds, ratios(p99), sh.lat.at(0.5), bare.lat.at(0.5))
	record(b, Row{Target: fmt.Sprintf("3. fan-out: %d long-polls, write → answer p99", n), Unit: "ms",
		Figure: sh.lat.at(0.99), Baseline: bare.lat.at(0.99), Against: "bare net/http", Ratio: true, Limit: 1.2, Note: note})
	i = medianAt(mem)
	sh, bare = shs[i], bares[i]
	note = fmt.Sprintf("median of %d rounds; ratios %s; that round's RSS with the waiters %.0f MiB (floor %.0f)", rounds, ratios(mem),
		float64(sh.rssAfter)/1024, float64(bare.rssAfter)/1024)
	record(b, Row{Target: fmt.Sprintf("3. fan-out: %d long-polls, memory per waiter", n), Unit: "KiB",
		Figure: sh.perWaiterKiB(), Baseline: bare.perWaiterKiB(), Against: "bare net/http", Ratio: true, Limit: 1.3, Note: note})
}

// BenchmarkFanOutCap: 15,000 long-polls (1,500 quick) from two load-generator processes (the
// open-file hard limit here is 20,000 per process) on one server whose long-poll cap is set
// by --max-long-polls, answered after one shared/ write: how many answered, 0 errors, and
// the server's RSS.
func BenchmarkFanOutCap(b *testing.B) {
	n := 15000
	if quick() {
		n = 1500
	}
	t, _ := fanServer(b, "--max-long-polls", strconv.Itoa(n), "--max-conns", strconv.Itoa(n+n/4))
	run := drive(b, t, n, 2, "agent")
	if run.errors != 0 {
		b.Errorf("%d errors: %v", run.errors, run.samples)
	}
	b.ReportMetric(float64(run.answered), "answered")
	b.ReportMetric(float64(run.rssAfter)/1024, "server-RSS-MiB")
	b.ReportMetric(run.lat.at(0.99), "p99-ms")
	b.ReportMetric(0, "ns/op")
	record(b, Row{Target: fmt.Sprintf("3. fan-out: %d long-polls from 2 processes, answered (0 errors)", n), Unit: "answered",
		Figure: float64(run.answered - run.errors), Limit: float64(n), AtLeast: true,
		Note: fmt.Sprintf("%d errors; server RSS %.0f MiB with them open (%.0f before, %.2f KiB/waiter); p50/p99/max %.0f/%.0f/%.0f ms",
			run.errors, float64(run.rssAfter)/1024, float64(run.rssBefore)/1024, run.perWaiterKiB(), run.lat.at(0.5), run.lat.at(0.99), run.lat.at(1))})
}

// medianAt is the index of the median of xs (the upper one of an even count).
func medianAt(xs []float64) int {
	idx := make([]int, len(xs))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int { return cmp.Compare(xs[a], xs[b]) })
	return idx[len(idx)/2]
}

func ratios(xs []float64) string {
	var parts []string
	for _, x := range xs {
		parts = append(parts, strconv.FormatFloat(x, 'f', 2, 64))
	}
	return strings.Join(parts, "/")
}

// metric reads one unlabelled counter or gauge from the server's /metrics.
func metric(b *testing.B, addr, name string) float64 {
	res, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatalf("metric %s: %v", name, err)
			}
			return f
		}
	}
	b.Fatalf("metric %s not in /metrics", name)
	return 0
}

// ms is d in milliseconds.
func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// keepLog copies a server's log (path) into $SHOELACE_BENCH_LOGS (a directory), when set, once
// the server stopped: with GODEBUG=gctrace=1 in the benchmark's environment, its GC cycles.
func keepLog(b *testing.B, path, label string) {
	dir := os.Getenv("SHOELACE_BENCH_LOGS")
	if dir == "" {
		return
	}
	b.Cleanup(func() { // registered before the server's start: runs after its stop
		data, err := os.ReadFile(path)
		if err != nil {
			b.Error(err)
			return
		}
		name := filepath.Join(dir, strings.ReplaceAll(b.Name(), "/", "_")+"."+label+".log")
		if err := os.WriteFile(name, data, 0o644); err != nil {
			b.Error(err)
		}
	})
}

// sinceStart is how long process pid had run at t (from /proc/<pid>/stat's start time, in
// clock ticks of 1/100 s since boot).
func sinceStart(b *testing.B, pid int, t time.Time) time.Duration {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	uptime, err := os.ReadFile("/proc/uptime")
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+2:]))
	startTicks, _ := strconv.ParseInt(f[19], 10, 64) // field 22 of the whole line
	up, _ := strconv.ParseFloat(strings.Fields(string(uptime))[0], 64)
	now := time.Duration(up * float64(time.Second))
	return now - time.Duration(startTicks)*10*time.Millisecond - time.Since(t)
}
