package ha

import (
	"bufio"
	"os"
	"path/filepath"
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
