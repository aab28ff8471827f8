package ha

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestMeasure_Resources measures the figures of docs/RUNBOOK.md ("Expected traffic and load",
// "Required resources"): a server on an embedded etcd with 10,000 keys, request rates of a
// bounded load loop, 1,000 open long-polls and their fan-out, and an agent. It only reports;
// it asserts that the measurement itself worked. It runs when SHOELACE_MEASURE=1:
//
//	SHOELACE_MEASURE=1 go test -count=1 -run TestMeasure -v ./tests/ha/
//
// SHOELACE_MEASURE_WAITERS sets the number of long-polls (default 1,000).
func TestMeasure_Resources(t *testing.T) {
	if os.Getenv("SHOELACE_MEASURE") != "1" {
		t.Skip("set SHOELACE_MEASURE=1 to measure the runbook's figures")
	}
	dir := t.TempDir()
	srv := startEmbeddedServer(t, dir, "--rate-limit", "0")
	c := newClient(srv.url(), filepath.Join(dir, "data", "admin.token"))
	c.hc = &http.Client{Timeout: 5 * time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: 2000}}
	ctx := context.Background()
	report := func(format string, args ...any) { t.Logf("MEASURE "+format, args...) }
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		report("machine: %d cores, load average before: %s", 2, strings.TrimSpace(string(b)))
	}
	for _, bin := range []string{shoelaceBin, agentBin} {
		if fi, err := os.Stat(bin); err == nil {
			report("binary %s: %.1f MB (not stripped)", filepath.Base(bin), float64(fi.Size())/1e6)
		}
	}
	time.Sleep(2 * time.Second)
	report("server idle, empty store: RSS %s", rss(srv.cmd.Process.Pid))
	report("store on disk, empty: %s", diskUsage(t, filepath.Join(dir, "data")))

	// 10 appliances of 1,000 keys of 64 bytes each, one apply per appliance.
	value := strings.Repeat("x", 64)
	for a := range 10 {
		keys := map[string]string{}
		for k := range 1000 {
			keys[fmt.Sprintf("group%02d/key%04d", k/100, k)] = value
		}
		body, _ := json.Marshal(map[string]any{"keys": keys})
		status, b, _, err := c.do(ctx, http.MethodPut, fmt.Sprintf("/v1/appliances/app%d", a), body)
		if err != nil || status != http.StatusOK {
			t.Fatalf("apply app%d: status %d %s: %v", a, status, b, err)
		}
	}
	time.Sleep(time.Second)
	report("store on disk after 10 applies of 1,000 keys (10,000 keys of 64 B): %s", diskUsage(t, filepath.Join(dir, "data")))
	report("server idle with 10,000 keys: RSS %s", rss(srv.cmd.Process.Pid))

	// 1,000 long-polls on app1, then one change wakes them all.
	waiters := 1000
	if n, err := strconv.Atoi(os.Getenv("SHOELACE_MEASURE_WAITERS")); err == nil && n > 0 {
		waiters = n
	}
	status, v, err := c.poll(ctx, "app1", 0, time.Second)
	if err != nil || status != http.StatusOK {
		t.Fatalf("view app1: %d %v", status, err)
	}
	before := rss(srv.cmd.Process.Pid)
	var wg sync.WaitGroup
	answered := make([]time.Time, waiters)
	var bad atomic.Int64
	for i := range waiters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, _, err := c.poll(ctx, "app1", v.Revision, 2*time.Minute)
			if err != nil || st != http.StatusOK {
				bad.Add(1)
			}
			answered[i] = time.Now()
		}()
	}
	deadline := time.Now().Add(60 * time.Second)
	for openLongPolls(t, srv.url()) < waiters && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if got := openLongPolls(t, srv.url()); got < waiters {
		t.Fatalf("only %d long-polls open after 60 s", got)
	}
	time.Sleep(time.Second)
	report("server with %d open long-polls: RSS %s (RSS before they opened: %s)", waiters, rss(srv.cmd.Process.Pid), before)
	cpu0 := cpuSeconds(srv.cmd.Process.Pid)
	start := time.Now()
	if st, _, err := c.put(ctx, "appliances/app1/group00/key0000", "changed"); err != nil || st != http.StatusOK {
		t.Fatalf("put: %d %v", st, err)
	}
	wg.Wait()
	var lat []time.Duration
	for _, at := range answered {
		lat = append(lat, at.Sub(start))
	}
	slices.Sort(lat)
	report("one put wakes %d long-polls of a 1,000-key view: all answered in %s (p50 %s, p99 %s), %d not 200; server CPU %.2f s",
		waiters, lat[len(lat)-1], pct(lat, 50), pct(lat, 99), bad.Load(), cpuSeconds(srv.cmd.Process.Pid)-cpu0)

	// Bounded load loops: 8 clients, 3 s each.
	var seq atomic.Int64
	loops := []struct {
		name string
		req  func() (int, error)
	}{
		{"PUT /v1/kv/{key} (64 B, new key each)", func() (int, error) {
			st, _, err := c.put(ctx, fmt.Sprintf("appliances/load/k%06d", seq.Add(1)), value)
			return st, err
		}},
		{"GET /v1/kv/{key}", func() (int, error) {
			st, _, err := c.get(ctx, "appliances/app3/group01/key0101")
			return st, err
		}},
		{"GET /v1/appliances/{name} (view of 1,000 keys)", func() (int, error) {
			st, _, _, err := c.do(ctx, http.MethodGet, "/v1/appliances/app4", nil)
			return st, err
		}},
	}
	for _, l := range loops {
		cpu0 := cpuSeconds(srv.cmd.Process.Pid)
		n, lat, errs := loadLoop(8, 3*time.Second, l.req)
		cpu := cpuSeconds(srv.cmd.Process.Pid) - cpu0
		if n == 0 {
			t.Fatalf("%s: no request succeeded (%d errors)", l.name, errs)
		}
		report("%s: %d ok in 3 s = %.0f req/s with 8 clients, latency p50 %s p99 %s, %d errors; server CPU %.2f s (%.0f%% of one core); RSS after %s",
			l.name, n, float64(n)/3, pct(lat, 50), pct(lat, 99), errs, cpu, cpu/3*100, rss(srv.cmd.Process.Pid))
	}

	// An agent rendering a 1,000-key view.
	agentToken := filepath.Join(dir, "agent.token")
	createAgentTokenFor(t, srv.url(), filepath.Join(dir, "data", "admin.token"), "app1", agentToken)
	out := filepath.Join(dir, "out", "app1.conf")
	cfg := fmt.Sprintf("server: %s\ntoken_file: %s\nappliance: app1\ncache_dir: %s\ntemplates:\n  - contents: %q\n    destination: %s\n",
		srv.url(), agentToken, filepath.Join(dir, "agent-cache"), `{{ range tree "" }}{{ .Key }}={{ .Value }}
{{ end }}`, out)
	cfgPath := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Dir(out), 0o755)
	ag := startAgent(t, cfgPath)
	waitFile(t, out, 30*time.Second)
	time.Sleep(2 * time.Second)
	report("agent rendering a 1,000-key view, idle in its long-poll: RSS %s, CPU so far %.2f s", rss(ag.cmd.Process.Pid), cpuSeconds(ag.cmd.Process.Pid))
	for i := range 20 {
		c.put(ctx, "appliances/app1/group00/key0001", fmt.Sprintf("v%d", i))
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second)
	report("agent after 20 changes: RSS %s, CPU %.2f s", rss(ag.cmd.Process.Pid), cpuSeconds(ag.cmd.Process.Pid))
	report("store on disk at the end: %s", diskUsage(t, filepath.Join(dir, "data")))
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		report("load average after: %s", strings.TrimSpace(string(b)))
	}
}

// startEmbeddedServer starts "shoelace server" on an embedded etcd in dir/data, its log in
// dir/server.log.
func startEmbeddedServer(t *testing.T, dir string, args ...string) *replica {
	t.Helper()
	addr, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return startServerAt(t, addr, filepath.Join(dir, "data"), filepath.Join(dir, "server.log"), args...)
}

// createAgentTokenFor is createAgentToken for another appliance.
func createAgentTokenFor(t *testing.T, addr, adminTokenFile, appliance, dst string) {
	t.Helper()
	cmd := exec.Command(shoelaceBin, "token", "create", "--name", appliance+"-agents", "--appliance", appliance,
		"--addr", addr, "--token-file", adminTokenFile)
	cmd.Env = cleanEnv()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("token create: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if err := os.WriteFile(dst, []byte(lines[len(lines)-1]+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// openLongPolls is the server's shoelace_long_polls_open (0 when it does not answer).
func openLongPolls(t *testing.T, base string) int {
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, "shoelace_long_polls_open "); ok {
			n, _ := strconv.ParseFloat(v, 64)
			return int(n)
		}
	}
	return 0
}

// loadLoop runs req from n goroutines for d and returns the successes, their latencies and
// the failures.
func loadLoop(n int, d time.Duration, req func() (int, error)) (int, []time.Duration, int) {
	var mu sync.Mutex
	var lat []time.Duration
	var errs int
	var wg sync.WaitGroup
	end := time.Now().Add(d)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) {
				t0 := time.Now()
				st, err := req()
				el := time.Since(t0)
				mu.Lock()
				if err == nil && st == http.StatusOK {
					lat = append(lat, el)
				} else {
					errs++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	slices.Sort(lat)
	return len(lat), lat, errs
}

func pct(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, len(sorted)*p/100)].Round(10 * time.Microsecond)
}

// rss is VmRSS (and the peak, VmHWM) of a process.
func rss(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "?"
	}
	var cur, peak string
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			cur = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			peak = strings.TrimSpace(v)
		}
	}
	return fmt.Sprintf("%s (peak %s)", kbToMB(cur), kbToMB(peak))
}

func kbToMB(s string) string {
	kb, err := strconv.Atoi(strings.TrimSuffix(s, " kB"))
	if err != nil {
		return s
	}
	return fmt.Sprintf("%.1f MB", float64(kb)/1024)
}

// cpuSeconds is the user+system CPU time a process has used.
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndex(s, ")")+2:])
	ut, _ := strconv.ParseFloat(fields[11], 64)
	st, _ := strconv.ParseFloat(fields[12], 64)
	return (ut + st) / 100 // USER_HZ is 100 on Linux
}

// diskUsage sums the blocks allocated under dir and names the largest files.
func diskUsage(t *testing.T, dir string) string {
	var total, apparent int64
	var parts []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		apparent += fi.Size()
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			total += st.Blocks * 512
		}
		if fi.Size() > 1<<20 {
			rel, _ := filepath.Rel(dir, p)
			parts = append(parts, fmt.Sprintf("%s %.1f MB", rel, float64(fi.Size())/1e6))
		}
		return nil
	})
	return fmt.Sprintf("%.1f MB allocated (%.1f MB apparent); large files: %s", float64(total)/1e6, float64(apparent)/1e6, strings.Join(parts, ", "))
}
