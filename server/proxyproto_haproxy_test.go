package server

import (
	"encoding/csv"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestServe_ProxyProtocolBehindHAProxy runs the real HAProxy in front of a replica, as
// docs/production/haproxy.cfg does (mode tcp, send-proxy-v2, an httpchk of /health/deps): its
// checks, sent as the balancer itself (v2 LOCAL), pass, and two clients behind it are two
// addresses to the replica, which refuses the second connection without a token of one client
// (--max-conns-per-addr 1) and serves the other's.
func TestServe_ProxyProtocolBehindHAProxy(t *testing.T) {
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		t.Skip("needs haproxy (Debian's haproxy; .ci/run installs it)")
	}
	const lb = "127.0.0.3" // the balancer's source address toward the replica
	cfg := testConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.MaxConnsPerAddr = 1
	cfg.ProxyProtocolFrom = []netip.Prefix{netip.MustParsePrefix(lb + "/32")}
	s := serve(t, cfg)

	front, stats := freeLoopback(t), freeLoopback(t)
	conf := fmt.Sprintf(`global
    maxconn 200
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend shoelace
    bind %s
    default_backend replicas
backend replicas
    option httpchk GET /health/deps
    http-check expect status 200
    server replica-1 %s send-proxy-v2 check inter 200ms fall 2 rise 1 source %s
listen stats
    mode http
    bind %s
    stats enable
    stats uri /stats
`, front, strings.TrimPrefix(s.url, "http://"), lb, stats)
	path := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-c", "-f", path).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "-db", "-f", path)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})

	// The replica is up for HAProxy once a check passed (L7OK): checks reach it as LOCAL.
	var status string
	if !within(20*time.Second, func() bool {
		status = checkStatus(stats, "replica-1")
		return status == "L7OK"
	}) {
		t.Fatalf("HAProxy's check of the replica: %q, want L7OK\nhaproxy:\n%s", status, out.String())
	}

	c1 := dialFrom(t, "127.0.0.4", front)
	if got := get(t, c1, "/health"); got != 200 {
		t.Fatalf("client 127.0.0.4 through HAProxy: %d, want 200\nhaproxy:\n%s", got, out.String())
	}
	c2 := dialFrom(t, "127.0.0.4", front)
	if got := get(t, c2, "/health"); got != 503 {
		t.Fatalf("a second connection of client 127.0.0.4 through HAProxy: %d, want 503 (--max-conns-per-addr 1 holds per client)", got)
	}
	c3 := dialFrom(t, "127.0.0.5", front)
	if got := get(t, c3, "/health"); got != 200 {
		t.Fatalf("client 127.0.0.5 through HAProxy: %d, want 200 (another client than 127.0.0.4)", got)
	}
}

// checkStatus is the check_status HAProxy's stats page (CSV) gives server, "" when it cannot
// be read.
func checkStatus(stats, server string) string {
	res, err := http.Get("http://" + stats + "/stats;csv")
	if err != nil {
		return ""
	}
	defer res.Body.Close()
	rows, err := csv.NewReader(res.Body).ReadAll()
	if err != nil || len(rows) == 0 {
		return ""
	}
	col := -1
	for i, h := range rows[0] {
		if strings.TrimPrefix(h, "# ") == "check_status" {
			col = i
		}
	}
	for _, r := range rows[1:] {
		if col >= 0 && len(r) > col && len(r) > 1 && r[1] == server {
			return strings.TrimPrefix(r[col], "* ")
		}
	}
	return ""
}
