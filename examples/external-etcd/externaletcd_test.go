package externaletcd

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/testbin"
	"github.com/shoelace-dev/shoelace/server"
)

// envFile parses KEY=value lines, refusing anything else.
func envFile(t *testing.T, name string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || !regexp.MustCompile(`^SHOELACE_[A-Z0-9_]+$`).MatchString(k) {
			t.Fatalf("%s:%d: %q is not SHOELACE_NAME=value", name, n, line)
		}
		if strings.ContainsAny(v, `"' `) {
			t.Errorf("%s:%d: %s has quotes or spaces: systemd and shells read them differently", name, n, k)
		}
		vars[k] = v
	}
	return vars
}

func TestEnvFile_Cluster(t *testing.T) {
	vars := envFile(t, "external-etcd.env")
	endpoints := strings.Split(vars["SHOELACE_ETCD_ENDPOINTS"], ",")
	if len(endpoints) != 3 {
		t.Errorf("SHOELACE_ETCD_ENDPOINTS has %d members, want 3", len(endpoints))
	}
	for _, e := range endpoints {
		if !strings.HasPrefix(e, "https://") {
			t.Errorf("endpoint %q is not https://", e)
		}
	}
	for _, k := range []string{"SHOELACE_ETCD_CACERT", "SHOELACE_ETCD_CERT", "SHOELACE_ETCD_KEY", "SHOELACE_TLS_CERT", "SHOELACE_TLS_KEY"} {
		if !filepath.IsAbs(vars[k]) {
			t.Errorf("%s = %q, want an absolute path", k, vars[k])
		}
	}
	if _, ok := vars["SHOELACE_DATA_DIR"]; ok {
		t.Errorf("SHOELACE_DATA_DIR set: it only matters for the embedded store")
	}
}

// Behind the shipped TCP load balancer every client had the balancer's address: one client
// holding idle connections through it counted against the per-address cap of connections
// without a token, the balancer's health checks with it (tried with haproxy 2.6 and 1,100 idle
// connections: the replica was marked down). The shipped haproxy.cfg sends the PROXY protocol
// to every replica, and the env file takes it from the balancers, so that the cap (its
// default) holds per client; neither may go without the other: a header the replica does not
// take is a bad request, and a cap without it counts the whole fleet as one client.
func TestEnvFile_ClientAddressesBehindTheBalancer(t *testing.T) {
	vars := envFile(t, "external-etcd.env")
	if v, ok := vars["SHOELACE_MAX_CONNS_PER_ADDR"]; ok {
		t.Errorf("SHOELACE_MAX_CONNS_PER_ADDR = %q: with the PROXY protocol the per-address cap holds per client; leave it at its default", v)
	}
	from := vars["SHOELACE_PROXY_PROTOCOL_FROM"]
	if from == "" {
		t.Fatal("SHOELACE_PROXY_PROTOCOL_FROM not set: behind the shipped balancer (send-proxy-v2) every connection starts with a header")
	}
	if _, err := server.ParseProxyFrom(from); err != nil {
		t.Errorf("SHOELACE_PROXY_PROTOCOL_FROM: %v", err)
	}
	cfg, err := os.ReadFile(filepath.Join("..", "..", "docs", "production", "haproxy.cfg"))
	if err != nil {
		t.Fatal(err)
	}
	for n, line := range strings.Split(string(cfg), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && f[0] == "default-server" && !slices.Contains(f, "send-proxy-v2") {
			t.Errorf("haproxy.cfg:%d: default-server without send-proxy-v2: %s", n+1, line)
		}
	}
}

func TestDropIn(t *testing.T) {
	b, err := os.ReadFile("external-etcd.conf")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte("\n[Service]\nEnvironmentFile=/etc/shoelace/external-etcd.env\n")) &&
		!regexp.MustCompile(`(?m)^\[Service\]\n(#.*\n)*EnvironmentFile=/etc/shoelace/external-etcd.env$`).Match(b) {
		t.Errorf("drop-in does not load /etc/shoelace/external-etcd.env (required, no '-') in [Service]:\n%s", b)
	}
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed")
	}
	// Verify the unit with the drop-in applied: a temp unit directory with
	// the shipped unit (its binary swapped for one that exists) and the
	// drop-in beside it.
	unit, err := os.ReadFile(filepath.Join("..", "..", "systemd", "shoelace-server.service"))
	if err != nil {
		t.Fatal(err)
	}
	stand, err := exec.LookPath("true")
	if err != nil {
		t.Skip("no `true` to stand in for the binary")
	}
	dir := t.TempDir()
	unit = bytes.ReplaceAll(unit, []byte("/usr/bin/shoelace "), []byte(stand+" "))
	if err := os.WriteFile(filepath.Join(dir, "shoelace-server.service"), unit, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "shoelace-server.service.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "shoelace-server.service.d", "external-etcd.conf"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(analyze, "verify", "--man=no", "shoelace-server.service")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "SYSTEMD_UNIT_PATH="+dir+":")
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) != 0 {
		t.Fatalf("systemd-analyze verify with the drop-in: %v\n%s", err, out)
	}
}

// TestEnvFile_Flags checks every variable against `shoelace server --help`.
func TestEnvFile_Flags(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	bins, err := testbin.Build(t.TempDir(), nil, "./cmd/shoelace")
	if err != nil {
		t.Fatal(err)
	}
	bin := bins[0]
	help, err := exec.CommandContext(ctx, bin, "server", "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("shoelace server --help: %v\n%s", err, help)
	}
	for k := range envFile(t, "external-etcd.env") {
		if !bytes.Contains(help, []byte("[$"+k+"]")) {
			t.Errorf("%s is not a `shoelace server` flag variable", k)
		}
	}
}
