package ha

import (
	"bufio"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"

	"github.com/shoelace-dev/shoelace/agent"
)

// TestTopology_EtcdMemberConfigs loads the shipped etcd member configs as etcd itself does and
// checks what Shoelace relies on: 3 members that agree on the cluster, TLS with client
// certificates for clients and peers, limits that fit the API, compaction on.
func TestTopology_EtcdMemberConfigs(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join(repoRoot, "docs", "production", "etcd-*.conf.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != 3 && len(paths) != 5 {
		t.Fatalf("%d etcd member configs, want 3 or 5", len(paths))
	}
	var cluster string
	for _, p := range paths {
		t.Run(filepath.Base(p), func(t *testing.T) {
			cfg, err := embed.ConfigFromFile(p)
			if err != nil {
				t.Fatalf("etcd refuses %s: %v", p, err)
			}
			if cluster == "" {
				cluster = cfg.InitialCluster
			} else if cfg.InitialCluster != cluster {
				t.Errorf("initial-cluster %q differs from the first member's %q", cfg.InitialCluster, cluster)
			}
			if n := len(strings.Split(cfg.InitialCluster, ",")); n != len(paths) {
				t.Errorf("initial-cluster names %d members, %d configs shipped", n, len(paths))
			}
			if !strings.Contains(cfg.InitialCluster, cfg.Name+"=") {
				t.Errorf("member %s is not in its own initial-cluster", cfg.Name)
			}
			for _, u := range append(append(cfg.ListenClientUrls, cfg.AdvertiseClientUrls...), append(cfg.ListenPeerUrls, cfg.AdvertisePeerUrls...)...) {
				if u.Scheme != "https" {
					t.Errorf("URL %s is not https", u.String())
				}
			}
			if !cfg.ClientTLSInfo.ClientCertAuth || cfg.ClientTLSInfo.TrustedCAFile == "" {
				t.Error("clients are not required to present a certificate")
			}
			if !cfg.PeerTLSInfo.ClientCertAuth || cfg.PeerTLSInfo.TrustedCAFile == "" {
				t.Error("peers are not required to present a certificate")
			}
			if cfg.MaxRequestBytes < 10<<20 {
				t.Errorf("max-request-bytes %d: below the 10 MiB a whole-appliance apply may need", cfg.MaxRequestBytes)
			}
			if cfg.MaxTxnOps < 40064 {
				t.Errorf("max-txn-ops %d: an apply of 10,000 keys over a tree of as many others needs 40,064", cfg.MaxTxnOps)
			}
			if cfg.AutoCompactionMode != embed.CompactorModePeriodic || cfg.AutoCompactionRetention == "" {
				t.Errorf("auto-compaction %q/%q: want periodic with a retention", cfg.AutoCompactionMode, cfg.AutoCompactionRetention)
			}
		})
	}
}

// TestTopology_LoadBalancerTimeouts checks that the shipped HAProxy config never cuts an idle
// long-poll: its client and server timeouts exceed the wait agents ask for, and it health-checks
// the replicas.
func TestTopology_LoadBalancerTimeouts(t *testing.T) {
	f, err := os.Open(filepath.Join(repoRoot, "docs", "production", "haproxy.cfg"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	timeouts := map[string]time.Duration{}
	var checks, servers int
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		switch {
		case fields[0] == "timeout" && len(fields) == 3:
			d, err := time.ParseDuration(fields[2])
			if err != nil {
				t.Fatalf("timeout %s %q: %v", fields[1], fields[2], err)
			}
			timeouts[fields[1]] = d
		case fields[0] == "option" && len(fields) >= 3 && fields[1] == "httpchk":
			if !strings.HasPrefix(fields[len(fields)-1], "/health") {
				t.Errorf("health check %q: want /health or /health/deps", sc.Text())
			}
			checks++
		case fields[0] == "server":
			servers++
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"client", "server"} {
		if d := timeouts[name]; d <= agent.DefaultPollWait {
			t.Errorf("timeout %s %s: must exceed the agents' long-poll wait %s", name, d, agent.DefaultPollWait)
		}
	}
	if checks == 0 {
		t.Error("no health check of the replicas")
	}
	if servers < 2 {
		t.Errorf("%d replicas behind the load balancer, want at least 2", servers)
	}
}

// The runbook drains a replica through HAProxy's admin socket: the shipped haproxy.cfg must
// have one, at the path the runbook's command uses, and the real HAProxy must take the command
// on it and mark the replica draining.
func TestTopology_LoadBalancerDrainThroughAdminSocket(t *testing.T) {
	cfgPath := filepath.Join(repoRoot, "docs", "production", "haproxy.cfg")
	cfg, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(repoRoot, "docs", "RUNBOOK.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("`echo \"(set server (\\S+)/(\\S+) state drain)\" \\| socat stdio (\\S+)`").FindSubmatch(md)
	if m == nil {
		t.Fatal("docs/RUNBOOK.md has no `echo \"set server BACKEND/SERVER state drain\" | socat stdio SOCKET` to drain a replica")
	}
	command, backend, server, socket := string(m[1]), string(m[2]), string(m[3]), string(m[4])
	sockLine := regexp.MustCompile(`(?m)^\s*stats socket (\S+) .*\blevel admin\b.*$`).FindSubmatch(cfg)
	if sockLine == nil {
		t.Fatal("haproxy.cfg has no `stats socket PATH … level admin`: the runbook's drain has nowhere to go")
	}
	if string(sockLine[1]) != socket {
		t.Fatalf("haproxy.cfg's admin socket is %s, the runbook's drain writes to %s", sockLine[1], socket)
	}

	bin, err := exec.LookPath("haproxy")
	if err != nil {
		t.Fatalf("needs haproxy (Debian's haproxy; .ci/run installs it): %v", err)
	}
	// The shipped file, made to run here: loopback ports, a socket and a CA in a temp dir, and
	// a maxconn this machine's open files limit allows.
	dir := t.TempDir()
	p := newPKI(t, dir)
	sock := filepath.Join(dir, "admin.sock")
	conf := strings.ReplaceAll(string(cfg), socket, sock)
	conf = strings.ReplaceAll(conf, "/etc/haproxy/shoelace-ca.pem", p.caFile)
	conf = strings.ReplaceAll(conf, "maxconn 100000", "maxconn 500")
	for _, bind := range []string{"bind :7400", "bind :7401"} {
		addr, err := freeAddr()
		if err != nil {
			t.Fatal(err)
		}
		conf = strings.ReplaceAll(conf, bind, "bind "+addr)
	}
	conf = regexp.MustCompile(`shoelace-\d\.internal:7400`).ReplaceAllString(conf, "127.0.0.1:9")
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-c", "-f", path).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "-db", "-f", path)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	ask := func(line string) (string, error) {
		c, err := net.Dial("unix", sock)
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, line+"\n"); err != nil {
			return "", err
		}
		b, err := io.ReadAll(c)
		return string(b), err
	}
	var answer string
	deadline := time.Now().Add(20 * time.Second)
	for answer, err = ask(command); err != nil; answer, err = ask(command) {
		if time.Now().After(deadline) {
			t.Fatalf("HAProxy's admin socket %s: %v\nhaproxy:\n%s", sock, err, out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if strings.TrimSpace(answer) != "" {
		t.Fatalf("%q on the admin socket: %q", command, answer)
	}
	// "show servers state" gives each server's srv_admin_state; 0x08 is a drain set by the API.
	state, err := ask("show servers state " + backend)
	if err != nil {
		t.Fatal(err)
	}
	drained := false
	for _, line := range strings.Split(state, "\n") {
		f := strings.Fields(line)
		if len(f) > 6 && f[1] == backend && f[3] == server {
			admin, err := strconv.Atoi(f[6])
			drained = err == nil && admin&0x08 != 0
		}
	}
	if !drained {
		t.Fatalf("after %q, %s/%s is not draining:\n%s", command, backend, server, state)
	}
}
