package ha

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// ackedWrite is a write a replica acknowledged with 200.
type ackedWrite struct {
	key, value string
	revision   int64
	via        string
}

// writer puts appliances/web/seq/NNNN keys, one at a time, spreading them over its clients,
// and records what each replica answered.
type writer struct {
	mu       sync.Mutex
	next     int
	acked    []ackedWrite
	refused  map[int]int    // 5xx status → count
	bodies   map[int]string // 5xx status → the first answer body
	problems []string       // anything that is neither a 200 nor a 5xx
	slowest  time.Duration  // the longest a put took to be answered (docs/RUNBOOK.md quotes it)
	slowAns  int            // and the status it got
}

func newWriter() *writer { return &writer{refused: map[int]int{}, bodies: map[int]string{}} }

// run writes until ctx ends, through clients in turn.
func (w *writer) run(ctx context.Context, clients map[string]*apiClient) {
	names := make([]string, 0, len(clients))
	for n := range clients {
		names = append(names, n)
	}
	slices.Sort(names)
	for i := 0; ctx.Err() == nil; i++ {
		via := names[i%len(names)]
		w.mu.Lock()
		seq := w.next
		w.next++
		w.mu.Unlock()
		key := fmt.Sprintf("appliances/web/seq/%04d", seq)
		value := fmt.Sprintf("value-%04d-via-%s", seq, via)
		start := time.Now()
		status, body, _, err := clients[via].do(ctx, http.MethodPut, "/v1/kv/"+key, []byte(value))
		took := time.Since(start)
		var rev int64
		if err == nil && status == http.StatusOK {
			var ans struct {
				Revision int64 `json:"revision"`
			}
			if jerr := json.Unmarshal(body, &ans); jerr != nil {
				err = fmt.Errorf("decode put answer %q: %w", body, jerr)
			}
			rev = ans.Revision
		}
		w.mu.Lock()
		if took > w.slowest && ctx.Err() == nil {
			w.slowest, w.slowAns = took, status
		}
		switch {
		case ctx.Err() != nil:
			// the test ended the stream; an answer cut short acknowledges nothing
		case err != nil:
			w.problems = append(w.problems, fmt.Sprintf("put %s via %s: status %d: %v", key, via, status, err))
		case status == http.StatusOK && rev > 0:
			w.acked = append(w.acked, ackedWrite{key: key, value: value, revision: rev, via: via})
		case status >= 500:
			w.refused[status]++
			if _, ok := w.bodies[status]; !ok {
				w.bodies[status] = string(body)
			}
		default:
			w.problems = append(w.problems, fmt.Sprintf("put %s via %s: status %d, revision %d (want 200 or 5xx)", key, via, status, rev))
		}
		w.mu.Unlock()
		if status >= 500 {
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func (w *writer) ackedCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}

func (w *writer) snapshot() ([]ackedWrite, map[int]int, []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.acked), maps(w.refused), slices.Clone(w.problems)
}

// refusals describes the 5xx answers: how many of each status, and the first body of each.
func (w *writer) refusals() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.refused) == 0 {
		return "none"
	}
	var parts []string
	for st, n := range w.refused {
		parts = append(parts, fmt.Sprintf("%d×%d (first: %s)", n, st, strings.TrimSpace(w.bodies[st])))
	}
	slices.Sort(parts)
	return strings.Join(parts, "; ")
}

func maps(m map[int]int) map[int]int {
	c := make(map[int]int, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// stream runs w through clients until it has n more acknowledged writes (or timeout), calling
// mid once half of them are in, and returns when the writer has stopped.
func (w *writer) stream(t *testing.T, clients map[string]*apiClient, n int, timeout time.Duration, mid func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.run(ctx, clients)
	}()
	start := w.ackedCount()
	deadline := time.Now().Add(timeout)
	midDone := mid == nil
	for w.ackedCount() < start+n && time.Now().Before(deadline) {
		if !midDone && w.ackedCount() >= start+n/2 {
			mid()
			midDone = true
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if !midDone {
		t.Fatalf("only %d of %d writes acknowledged in %s before the mid-stream event", w.ackedCount()-start, n, timeout)
	}
	if got := w.ackedCount() - start; got < n {
		t.Fatalf("only %d of %d writes acknowledged in %s", got, n, timeout)
	}
}

// poller long-polls one replica's view of appliance web and keeps every view it was given.
type poller struct {
	name     string
	c        *apiClient
	mu       sync.Mutex
	index    int64
	views    []view
	problems []string
	answers  map[int]int
	cancel   context.CancelFunc
	done     chan struct{}
}

func startPoller(name string, c *apiClient) *poller {
	ctx, cancel := context.WithCancel(context.Background())
	p := &poller{name: name, c: c, cancel: cancel, done: make(chan struct{}), answers: map[int]int{}}
	go p.run(ctx)
	return p
}

func (p *poller) run(ctx context.Context) {
	defer close(p.done)
	for ctx.Err() == nil {
		p.mu.Lock()
		index := p.index
		p.mu.Unlock()
		status, v, err := p.c.poll(ctx, "web", index, 5*time.Second)
		if ctx.Err() != nil {
			return
		}
		p.mu.Lock()
		p.answers[status]++
		switch {
		case err != nil:
			p.problems = append(p.problems, fmt.Sprintf("long-poll %s at %d: status %d: %v", p.name, index, status, err))
		case status == http.StatusOK:
			if index > 0 && v.Revision <= index {
				p.problems = append(p.problems, fmt.Sprintf("long-poll %s at %d answered an older view at %d", p.name, index, v.Revision))
			}
			p.views = append(p.views, v)
			p.index = max(p.index, v.Revision)
		case status == http.StatusNotModified || status >= 500:
		default:
			p.problems = append(p.problems, fmt.Sprintf("long-poll %s at %d: status %d (want 200, 304 or 5xx)", p.name, index, status))
		}
		p.mu.Unlock()
		if err != nil || status >= 500 {
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// waitIndex waits until the poller has seen a view at rev or later.
func (p *poller) waitIndex(t *testing.T, rev int64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		p.mu.Lock()
		got := p.index
		p.mu.Unlock()
		if got >= rev {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	t.Fatalf("long-poll on %s: at revision %d after %s, want ≥ %d (answers %v)", p.name, p.index, timeout, rev, p.answers)
}

func (p *poller) stop() {
	p.cancel()
	<-p.done
}

// check asserts that every view the poller got holds exactly the acknowledged writes at or
// below its revision, each with its value, and none above it.
func (p *poller) check(t *testing.T, acked []ackedWrite) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pr := range p.problems {
		t.Error(pr)
	}
	if len(p.views) == 0 {
		t.Fatalf("long-poll on %s got no view at all (answers %v)", p.name, p.answers)
	}
	bad := 0
	for _, v := range p.views {
		for _, w := range acked {
			rel := strings.TrimPrefix(w.key, "appliances/web/")
			got, ok := v.Keys[rel]
			switch {
			case w.revision <= v.Revision && (!ok || got != w.value):
				t.Errorf("long-poll on %s: view at %d: %s = %q (present %v), want %q written at %d", p.name, v.Revision, rel, got, ok, w.value, w.revision)
				bad++
			case w.revision > v.Revision && ok:
				t.Errorf("long-poll on %s: view at %d holds %s written later, at %d", p.name, v.Revision, rel, w.revision)
				bad++
			}
			if bad > 10 {
				t.Fatal("too many wrong views")
			}
		}
	}
}

// checkReadable asserts that every acknowledged write reads back with its value and revision
// through c.
func checkReadable(t *testing.T, name string, c *apiClient, acked []ackedWrite) {
	t.Helper()
	ctx := context.Background()
	for _, w := range acked {
		var (
			status int
			e      kvEntry
			err    error
		)
		for try := 0; try < 50; try++ { // a 5xx is an honest "not now"; retry it
			if status, e, err = c.get(ctx, w.key); err == nil && status < 500 {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil || status != http.StatusOK || e.Value != w.value || e.ModRevision != w.revision {
			t.Errorf("replica %s: GET %s: status %d, value %q at %d (err %v); acknowledged %q at %d via %s",
				name, w.key, status, e.Value, e.ModRevision, err, w.value, w.revision, w.via)
		}
	}
}

// reader reads acknowledged keys through every client while writes go on, and records any
// answer that is neither right nor a 5xx.
func startReader(w *writer, clients map[string]*apiClient) (stop func() []string) {
	ctx, cancel := context.WithCancel(context.Background())
	var problems []string
	var reads atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			acked, _, _ := w.snapshot()
			if len(acked) == 0 {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			a := acked[rand.IntN(len(acked))]
			for name, c := range clients {
				status, e, err := c.get(ctx, a.key)
				if ctx.Err() != nil {
					return
				}
				reads.Add(1)
				switch {
				case err != nil:
					problems = append(problems, fmt.Sprintf("read %s via %s: %v", a.key, name, err))
				case status == http.StatusOK && (e.Value != a.value || e.ModRevision != a.revision):
					problems = append(problems, fmt.Sprintf("read %s via %s: %q at %d, want %q at %d", a.key, name, e.Value, e.ModRevision, a.value, a.revision))
				case status != http.StatusOK && status < 500:
					problems = append(problems, fmt.Sprintf("read %s via %s: status %d (want 200 or 5xx)", a.key, name, status))
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	return func() []string {
		cancel()
		<-done
		if reads.Load() == 0 {
			problems = append(problems, "the reader read nothing")
		}
		return problems
	}
}

// waitFile waits until path exists and returns its content.
func waitFile(t *testing.T, path string, timeout time.Duration) []byte {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
			return b
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s not written after %s", path, timeout)
	return nil
}

// agentTemplate renders every seq key and the final marker; expectedRender is its output for
// a view.
const agentTemplate = `{{ range ls "seq" }}{{ .Key }}={{ .Value }}
{{ end }}final={{ keyOr "final" "" }}
`

func expectedRender(v view) string {
	var names []string
	for k := range v.Keys {
		if name, ok := strings.CutPrefix(k, "seq/"); ok && !strings.Contains(name, "/") {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "%s=%s\n", n, v.Keys["seq/"+n])
	}
	fmt.Fprintf(&b, "final=%s\n", v.Keys["final"])
	return b.String()
}

// agentProc is a "shoelace-agent run" child process.
type agentProc struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan error
}

func startAgent(t *testing.T, configPath string) *agentProc {
	t.Helper()
	a := &agentProc{stderr: &syncBuffer{}, done: make(chan error, 1)}
	a.cmd = exec.Command(agentBin, "run", "--config", configPath, "--log-level", "info")
	a.cmd.Env = cleanEnv()
	a.cmd.Stdout, a.cmd.Stderr = a.stderr, a.stderr
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { a.done <- a.cmd.Wait() }()
	t.Cleanup(func() {
		a.cmd.Process.Signal(os.Interrupt)
		select {
		case <-a.done:
		case <-time.After(10 * time.Second):
			a.cmd.Process.Kill()
			<-a.done
		}
		if t.Failed() {
			t.Logf("agent stderr:\n%s", tail(a.stderr.String(), 4000))
		}
	})
	return a
}

// waitRendered waits until the agent's file holds want.
func (a *agentProc) waitRendered(t *testing.T, path, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var got []byte
	for time.Now().Before(deadline) {
		select {
		case err := <-a.done:
			a.done <- err
			t.Fatalf("agent exited: %v\n%s", err, tail(a.stderr.String(), 4000))
		default:
		}
		got, _ = os.ReadFile(path)
		if string(got) == want {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("agent's %s did not converge in %s:\ngot  %d bytes, last lines %q\nwant %d bytes, last lines %q",
		path, timeout, len(got), lastLines(string(got), 3), len(want), lastLines(want, 3))
}

func lastLines(s string, n int) []string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[max(0, len(lines)-n):]
}

// createAgentToken runs "shoelace token create --appliance" as an operator would and stores
// the secret (the last line of stdout) with mode 0600.
func createAgentToken(t *testing.T, addr, adminTokenFile, dst string, extra ...string) {
	t.Helper()
	cmd := exec.Command(shoelaceBin, append([]string{"token", "create", "--name", "web-agents", "--appliance", "web",
		"--addr", addr, "--token-file", adminTokenFile}, extra...)...)
	cmd.Env = cleanEnv()
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("shoelace token create: %v: %s", err, ee.Stderr)
		}
		t.Fatalf("shoelace token create: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	secret := strings.TrimSpace(lines[len(lines)-1])
	if len(secret) < 16 {
		t.Fatalf("token create: last line %q is not a secret", secret)
	}
	if err := os.WriteFile(dst, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestHA_LeaderKillThenReplicaKill is the failover proof the runbook cites: a 3-member etcd
// cluster, two replicas, writes and long-polls through both and an agent behind a load
// balancer; then the etcd leader is killed mid-stream, and later replica A with SIGKILL.
func TestHA_LeaderKillThenReplicaKill(t *testing.T) {
	skipShort(t)
	dir := t.TempDir()
	c := startCluster(t, filepath.Join(dir, "etcd"))
	// Both replicas start together against the empty store: exactly one creates the admin
	// token and writes it to its --admin-token-file.
	tokenFiles := map[string]string{"a": filepath.Join(dir, "admin-a.token"), "b": filepath.Join(dir, "admin-b.token")}
	reps := startReplicas(t, dir, c.endpoints(), tokenFiles)
	ra, rb := reps["a"], reps["b"]
	adminToken := waitAdminToken(t, tokenFiles)
	tok := waitFile(t, adminToken, 10*time.Second)
	if fi, err := os.Stat(adminToken); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin token file: %v, mode %v, want 0600", err, fi.Mode().Perm())
	}
	if len(strings.TrimSpace(string(tok))) < 16 {
		t.Fatalf("admin token %d bytes: too short", len(tok))
	}
	// No waiting for a second file: a replica decides whether to create the admin token before
	// it serves (bootstrap runs before Serve), and startReplicas returned once both were
	// healthy, so a second creator would have written its file by now. (A replica that found
	// the store away decides later, by compare-and-swap against the record the first wrote.)
	for _, f := range tokenFiles {
		if _, err := os.Stat(f); f != adminToken && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("both replicas wrote an admin token (%s and %s): one store, one first admin token", adminToken, f)
		}
	}
	ca, cb := newClient(ra.url(), adminToken), newClient(rb.url(), adminToken)
	both := map[string]*apiClient{"a": ca, "b": cb}
	waitTokenAccepted(t, ca, cb)

	// Unauthenticated requests are refused; the token works on both replicas.
	if status, _, _, err := newClient(ra.url(), "").do(context.Background(), http.MethodGet, "/v1/kv/appliances/web/seq/0000", nil); err != nil || status != http.StatusUnauthorized {
		t.Fatalf("GET without token: status %d, err %v; want 401", status, err)
	}
	w := newWriter()
	w.stream(t, both, 4, 30*time.Second, nil) // the appliance exists from here on

	proxy := startProxy(t, ra.url(), rb.url())
	agentToken := filepath.Join(dir, "agent.token")
	createAgentToken(t, ra.url(), adminToken, agentToken)
	out := filepath.Join(dir, "out", "web.conf")
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`server: %s
token_file: %s
appliance: web
instance: ha-vm-1
cache_dir: %s
templates:
  - contents: %q
    destination: %s
    perms: "0644"
`, proxy.url(), agentToken, filepath.Join(dir, "agent-cache"), agentTemplate, out)
	cfgPath := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	agent := startAgent(t, cfgPath)
	waitFile(t, out, 30*time.Second)

	pa, pb := startPoller("a", ca), startPoller("b", cb)
	stopReader := startReader(w, both)

	// Phase 1: kill the etcd leader while writes, reads and long-polls go through both replicas.
	var killed *member
	w.stream(t, both, 60, 60*time.Second, func() {
		killed = c.leader()
		if killed == nil {
			t.Fatal("no etcd leader to kill")
		}
		t.Logf("killing etcd leader %s after %d acknowledged writes", killed.name, w.ackedCount())
		killed.kill()
	})
	nl, err := c.waitLeader(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if nl == killed {
		t.Fatalf("the killed member %s still leads", killed.name)
	}
	t.Logf("new etcd leader %s", nl.name)
	if status, _, err := ca.put(context.Background(), "appliances/web/final", "after-leader-kill"); err != nil || status != http.StatusOK {
		t.Fatalf("put final through a: status %d, err %v", status, err)
	}
	for _, pr := range stopReader() {
		t.Error("during the election:", pr)
	}
	acked, _, problems := w.snapshot()
	for _, pr := range problems {
		t.Error("during the election:", pr)
	}
	t.Logf("phase 1: %d writes acknowledged; refused: %s; slowest put: %s, answered %d", len(acked), w.refusals(), w.slowest.Round(time.Millisecond), w.slowAns)
	last := acked[len(acked)-1].revision
	for _, a := range acked {
		last = max(last, a.revision)
	}
	pa.waitIndex(t, last, 30*time.Second)
	pb.waitIndex(t, last, 30*time.Second)
	checkReadable(t, "a", ca, acked)
	checkReadable(t, "b", cb, acked)
	status, v, err := cb.poll(context.Background(), "web", 0, time.Second)
	if err != nil || status != http.StatusOK || v.Keys["final"] != "after-leader-kill" {
		t.Fatalf("view of web through b: status %d, final %q, err %v", status, v.Keys["final"], err)
	}
	agent.waitRendered(t, out, expectedRender(v), 45*time.Second)
	pa.stop()

	// Phase 2: replica A dies with SIGKILL; the load balancer moves the agent to B, and
	// writes go on through B.
	t.Log("killing replica a with SIGKILL")
	ra.kill()
	w.stream(t, map[string]*apiClient{"b": cb}, 20, 60*time.Second, nil)
	if status, _, err := cb.put(context.Background(), "appliances/web/final", "after-replica-kill"); err != nil || status != http.StatusOK {
		t.Fatalf("put final through b: status %d, err %v", status, err)
	}
	acked, _, problems = w.snapshot()
	for _, pr := range problems {
		t.Error("after replica a died:", pr)
	}
	t.Logf("phase 2: %d writes acknowledged in all; refused: %s", len(acked), w.refusals())
	for _, a := range acked {
		last = max(last, a.revision)
	}
	pb.waitIndex(t, last, 30*time.Second)
	pb.stop()
	checkReadable(t, "b", cb, acked)
	status, v, err = cb.poll(context.Background(), "web", 0, time.Second)
	if err != nil || status != http.StatusOK || v.Keys["final"] != "after-replica-kill" {
		t.Fatalf("view of web through b: final %q, err %v", v.Keys["final"], err)
	}
	for _, a := range acked {
		if got := v.Keys[strings.TrimPrefix(a.key, "appliances/web/")]; got != a.value {
			t.Errorf("final view: %s = %q, want %q", a.key, got, a.value)
		}
	}
	agent.waitRendered(t, out, expectedRender(v), 45*time.Second)
	pa.check(t, acked)
	pb.check(t, acked)

	// The runbook's failover procedures, as written: find the failed replica, then check the
	// service through the load balancer.
	vars := map[string]string{"REPLICAS": ra.url() + " " + rb.url(), "SHOELACE_TOKEN_FILE": adminToken}
	outp, err := runBlock(t, runbookProcedure(t, "failover-find"), dir, runbookShellEnv(t, vars))
	if err != nil {
		t.Errorf("runbook failover-find: %v", err)
	}
	for _, want := range []string{ra.url() + " FAILED", rb.url() + " ok"} {
		if !strings.Contains(outp, want) {
			t.Errorf("runbook failover-find does not say %q", want)
		}
	}
	vars["SHOELACE_ADDR"] = proxy.url()
	if outp, err := runBlock(t, runbookProcedure(t, "sanity"), dir, runbookShellEnv(t, vars)); err != nil || !strings.Contains(outp, "etcd.leader: true") {
		t.Errorf("runbook sanity through the load balancer after failover: %v", err)
	}

	// Recovery: replica A comes back (same flags, new process) and serves every write at once.
	ra2 := startReplica(t, "a", dir, c.endpoints(), filepath.Join(dir, "admin-a2.token"))
	ca2 := newClient(ra2.url(), adminToken)
	checkReadable(t, "a (restarted)", ca2, acked)
	status, v2, err := ca2.poll(context.Background(), "web", 0, time.Second)
	if err != nil || status != http.StatusOK || v2.Revision < v.Revision || expectedRender(v2) != expectedRender(v) {
		t.Errorf("restarted replica a: view status %d at %d (err %v), want the view at %d", status, v2.Revision, err, v.Revision)
	}
	if outp, err := runBlock(t, runbookProcedure(t, "failover-find"), dir, runbookShellEnv(t, map[string]string{"REPLICAS": ra2.url() + " " + rb.url(), "SHOELACE_TOKEN_FILE": adminToken})); err != nil || strings.Contains(outp, "FAILED") {
		t.Errorf("runbook failover-find after recovery: %v, output %q", err, outp)
	}
}

// waitAdminToken waits until one of the replicas' --admin-token-file exists and returns it.
func waitAdminToken(t *testing.T, tokenFiles map[string]string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for _, f := range tokenFiles {
			if b, err := os.ReadFile(f); err == nil && len(b) > 0 {
				return f
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no replica wrote an admin token to any of %v", tokenFiles)
	return ""
}

// waitTokenAccepted waits until every client's token is accepted (any answer but 401) and logs
// how long that took: a token created on one replica reaches the others through their watch.
func waitTokenAccepted(t *testing.T, clients ...*apiClient) {
	t.Helper()
	start := time.Now()
	for _, c := range clients {
		for {
			status, _, _, err := c.do(context.Background(), http.MethodGet, "/v1/kv/appliances/web/none", nil)
			if err == nil && status != http.StatusUnauthorized {
				break
			}
			if time.Since(start) > 30*time.Second {
				t.Fatalf("token not accepted by %s after 30 s: status %d, err %v", c.base, status, err)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	if d := time.Since(start); d > 10*time.Millisecond {
		t.Logf("the admin token was refused with 401 for %s by a replica that had not seen it yet", d.Round(time.Millisecond))
	}
}
