package bench

import (
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/client"
	"github.com/shoelace-dev/shoelace/internal/testutil"
)

const mib = 1 << 20

// footprintTemplates is how many templates (shoelace) and resources (confd) the footprint
// benchmarks render: issue 20's "RSS after rendering 20 templates".
const footprintTemplates = 20

// BenchmarkAgentFootprint measures what the agent costs a VM (issue 20, target 4), beside confd
// and consul-template built the same way (CGO_ENABLED=0, -trimpath, -ldflags "-s -w", as
// `make build` and scripts/peers/build.sh build them; the agent with make's build tags):
//   - the stripped binary's size, limit 12 MiB;
//   - the resident memory (VmRSS) of a real `shoelace-agent run` once it rendered 20 templates
//     from a real `shoelace server` and sits on its long-poll, limit 12 MiB; confd's with 20
//     resources on the same etcd beside it;
//   - the CPU time (utime+stime, in clock ticks) both spend while idle on that long-poll.
func BenchmarkAgentFootprint(b *testing.B) {
	peers := os.Getenv("SHOELACE_PEERS_DIR")
	agentBin := bin(b, "shoelace-agent") // stripped, as make build builds it

	var confdSize, ctSize float64
	var notes []string
	for _, p := range []struct {
		name string
		size *float64
	}{{"confd", &confdSize}, {"consul-template", &ctSize}} {
		path := filepath.Join(peers, p.name)
		st, err := os.Stat(path)
		if peers == "" || err != nil {
			notes = append(notes, p.name+" not built (make peers)")
			continue
		}
		*p.size = float64(st.Size()) / mib
		if !stripped(path) {
			notes = append(notes, p.name+" in $SHOELACE_PEERS_DIR is not stripped: build it with scripts/peers/build.sh")
		}
	}
	st, err := os.Stat(agentBin)
	if err != nil {
		b.Fatal(err)
	}
	size := float64(st.Size()) / mib
	b.ReportMetric(size, "agent-MiB")
	record(b, Row{Target: "4. agent binary, stripped", Unit: "MiB", Figure: size, Baseline: confdSize, Against: "confd",
		Limit: 12, Note: strings.Join(append([]string{fmt.Sprintf("consul-template %.2f MiB", ctSize)}, notes...), "; ")})

	eps := testutil.Etcd(b)
	idle := 10 * time.Second
	if quick() {
		idle = 3 * time.Second
	}
	agentPID, change := footprintAgent(b, agentBin, eps)
	var confdPID int
	if _, err := os.Stat(filepath.Join(peers, "confd")); peers != "" && err == nil {
		confdPID = footprintConfd(b, filepath.Join(peers, "confd"), eps)
	}
	// Both sit on their watch now: let whatever follows a first render (the agent's report and
	// its memory release 2 s after a pass, confd's next watch) settle, then measure memory and
	// the CPU of an idle stretch. The agent's memory is measured again once it rendered one
	// change and settled, for the note.
	time.Sleep(3 * time.Second)
	rss, confdRSS := vmRSS(b, agentPID, "VmRSS"), 0.0
	anon, file := vmRSS(b, agentPID, "RssAnon"), vmRSS(b, agentPID, "RssFile")
	if confdPID != 0 {
		confdRSS = vmRSS(b, confdPID, "VmRSS")
	}
	saveSmaps(b, agentPID)
	t0, c0 := cpuTicks(b, agentPID), 0
	if confdPID != 0 {
		c0 = cpuTicks(b, confdPID)
	}
	time.Sleep(idle)
	ticks, confdTicks := cpuTicks(b, agentPID)-t0, 0
	if confdPID != 0 {
		confdTicks = cpuTicks(b, confdPID) - c0
	}
	change()
	time.Sleep(3 * time.Second)
	changedRSS := vmRSS(b, agentPID, "VmRSS")
	b.ReportMetric(rss, "agent-rss-MiB")
	b.ReportMetric(float64(ticks), "agent-idle-ticks")
	record(b, Row{Target: fmt.Sprintf("4. agent RSS after rendering %d templates, idle on its long-poll", footprintTemplates),
		Unit: "MiB", Figure: rss, Baseline: confdRSS, Against: "confd", Limit: 12,
		Note: fmt.Sprintf("anonymous %.1f MiB + the binary's mapped pages %.1f MiB; %.1f MiB once it rendered a change and settled; confd: %d resources on the same etcd",
			anon, file, changedRSS, footprintTemplates)})
	record(b, Row{Target: fmt.Sprintf("4. agent CPU while idle on its long-poll, %s", idle),
		Unit: "ticks", Figure: float64(ticks), Baseline: float64(confdTicks), Against: "confd", Limit: 0,
		Note: "utime+stime from /proc/PID/stat, in clock ticks (1/100 s)"})
}

// saveSmaps copies the agent's /proc/PID/smaps into $SHOELACE_BENCH_PROFILE (a directory),
// when it is set: which mappings its resident memory is in.
func saveSmaps(b *testing.B, pid int) {
	dir := os.Getenv("SHOELACE_BENCH_PROFILE")
	if dir == "" {
		return
	}
	s, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, "agent-footprint.smaps"), s, 0o644)
	}
	if err != nil {
		b.Fatal(err)
	}
}

// stripped says whether an ELF binary has no symbol table.
func stripped(path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		return true // not ELF: nothing to say
	}
	defer f.Close()
	return f.Section(".symtab") == nil
}

// footprintAgent starts a server and an agent rendering footprintTemplates templates from a
// view of a few hundred keys, waits until every file is rendered and returns the agent's pid
// and a func that changes one template's key and waits until the agent rendered the change.
func footprintAgent(b *testing.B, agentBin string, eps []string) (int, func()) {
	ctx := context.Background()
	addr, tokenFile, _ := shoelaceServer(b, eps)
	cl := adminClient(b, addr, tokenFile, nil)
	const app = "footprint"
	for i := range footprintTemplates {
		for j := range 10 {
			if _, err := cl.Put(ctx, fmt.Sprintf("appliances/%s/svc%02d/backends/b%02d", app, i, j), []byte(fmt.Sprintf("10.0.%d.%d:8080", i, j)), client.NoCAS); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := cl.Put(ctx, fmt.Sprintf("appliances/%s/svc%02d/port", app, i), []byte(strconv.Itoa(8000+i)), client.NoCAS); err != nil {
			b.Fatal(err)
		}
	}
	dir := b.TempDir()
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "server: http://%s\ntoken_file: %s\nappliance: %s\ncache_dir: %s\ntemplates:\n", addr, tokenFile, app, filepath.Join(dir, "cache"))
	outs := make([]string, footprintTemplates)
	for i := range footprintTemplates {
		outs[i] = filepath.Join(dir, "out", fmt.Sprintf("svc%02d.conf", i))
		fmt.Fprintf(&cfg, "  - contents: |\n      listen {{ getv \"/svc%02d/port\" }}\n      {{- range ls \"/svc%02d/backends\" }}\n      server {{ .Key }} {{ .Value | upper }}\n      {{- end }}\n    destination: %s\n", i, i, outs[i])
	}
	os.MkdirAll(filepath.Join(dir, "out"), 0o755)
	cfgPath := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	pid := start(b, agentBin, []string{"run", "--config", cfgPath, "--log-level", "warn"}, filepath.Join(dir, "agent.log")).Process.Pid
	for i, out := range outs {
		if got := waitFile(b, out); !bytes.Contains(got, []byte(fmt.Sprintf("listen %d", 8000+i))) {
			b.Fatalf("%s: %q", out, got)
		}
	}
	change := func() {
		if _, err := cl.Put(ctx, fmt.Sprintf("appliances/%s/svc00/port", app), []byte("9000"), client.NoCAS); err != nil {
			b.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			if got, _ := os.ReadFile(outs[0]); bytes.Contains(got, []byte("listen 9000")) {
				return
			}
			if time.Now().After(deadline) {
				b.Fatalf("%s: the change to port 9000 never rendered", outs[0])
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return pid, change
}

// footprintConfd starts confd -watch with footprintTemplates resources over the same kind of
// keys on etcd, waits until every file is rendered and returns its pid.
func footprintConfd(b *testing.B, confd string, eps []string) int {
	ctx := context.Background()
	c := etcdClient(b, eps)
	prefix := testutil.Root(b) + "confd-footprint"
	dir := b.TempDir()
	for _, d := range []string{"conf.d", "templates", "out"} {
		os.MkdirAll(filepath.Join(dir, d), 0o755)
	}
	outs := make([]string, footprintTemplates)
	for i := range footprintTemplates {
		for j := range 10 {
			if _, err := c.Put(ctx, fmt.Sprintf("%s/svc%02d/backends/b%02d", prefix, i, j), fmt.Sprintf("10.0.%d.%d:8080", i, j)); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := c.Put(ctx, fmt.Sprintf("%s/svc%02d/port", prefix, i), strconv.Itoa(8000+i)); err != nil {
			b.Fatal(err)
		}
		outs[i] = filepath.Join(dir, "out", fmt.Sprintf("svc%02d.conf", i))
		tmpl := fmt.Sprintf("listen {{ getv \"/svc%02d/port\" }}\n{{- range gets \"/svc%02d/backends/*\" }}\nserver {{ .Key }} {{ toUpper .Value }}\n{{- end }}\n", i, i)
		os.WriteFile(filepath.Join(dir, "templates", fmt.Sprintf("svc%02d.tmpl", i)), []byte(tmpl), 0o644)
		os.WriteFile(filepath.Join(dir, "conf.d", fmt.Sprintf("svc%02d.toml", i)), []byte(fmt.Sprintf(
			"[template]\nsrc = \"svc%02d.tmpl\"\ndest = %q\nkeys = [\"/svc%02d\"]\n", i, outs[i], i)), 0o644)
	}
	pid := start(b, confd, []string{"-backend", "etcdv3", "-node", eps[0], "-confdir", dir,
		"-prefix", prefix, "-watch", "-log-level", "error"}, filepath.Join(dir, "confd.log")).Process.Pid
	for i, out := range outs {
		if got := waitFile(b, out); !bytes.Contains(got, []byte(fmt.Sprintf("listen %d", 8000+i))) {
			b.Fatalf("%s: %q", out, got)
		}
	}
	return pid
}

// vmRSS is a process's resident memory in MiB from /proc/PID/status: field VmRSS (all of it),
// RssAnon (its own memory) or RssFile (mapped files: mostly the executable's pages).
func vmRSS(b *testing.B, pid int, field string) float64 {
	s, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(s), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			if err != nil {
				b.Fatalf("%s %q: %v", field, v, err)
			}
			return float64(kb) / 1024
		}
	}
	b.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// cpuTicks is a process's utime+stime (all its threads) in clock ticks, from /proc/PID/stat.
func cpuTicks(b *testing.B, pid int) int {
	s, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The command name (field 2) is in parentheses and may hold spaces: count from after it.
	i := bytes.LastIndexByte(s, ')')
	f := strings.Fields(string(s[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	ut, err1 := strconv.Atoi(f[11])
	st, err2 := strconv.Atoi(f[12])
	if err1 != nil || err2 != nil {
		b.Fatalf("/proc/%d/stat: %q", pid, s)
	}
	return ut + st
}
