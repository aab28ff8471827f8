//go:build !windows

package ha

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestHA_EtcdClientCertRenewal follows the runbook's certificate renewal for a replica's etcd
// client certificate: the pair is renewed in place before it expires, the replica is reloaded
// (SIGHUP), and once the old certificate has expired the etcd members are restarted one at a time
// (OS patching): every new connection to etcd must present the renewed certificate, so the
// replica keeps serving. Before, the replica read the pair once at start and presented the
// expired one: etcd refused every connection and the replica answered 503 until restarted.
func TestHA_EtcdClientCertRenewal(t *testing.T) {
	skipShort(t)
	// The replica's client certificate expires 20 s from now.
	expiry := time.Now().Add(20 * time.Second)
	c, p, r, cl := replicaWithExpiringCert(t, expiry)
	ctx := context.Background()

	// Renewal, as the runbook has it: new pair in place of the old, then a reload.
	p.issue("shoelace-etcd-client", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, time.Now().Add(24*time.Hour))
	if err := r.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(expiry) + time.Second)

	// Rolling restart of the etcd members: the replica's connections are made again.
	c.rollingRestart(t)

	var last string
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		status, _, err := cl.put(ctx, "shared/after", "2")
		deps := "?"
		if resp, err := p.httpClient(10 * time.Second).Get(r.url() + "/health/deps"); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			deps = fmt.Sprintf("%d %s", resp.StatusCode, b)
			if status == http.StatusOK && resp.StatusCode == http.StatusOK {
				return
			}
		}
		last = fmt.Sprintf("put %d %v; /health/deps %s", status, err, deps)
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("after the renewal and an etcd rolling restart the replica cannot reach etcd: %s", last)
}

// rollingRestart restarts the members one at a time, each back and the cluster with a leader
// before the next (OS patching): every client's connections to etcd are made again.
func (c *cluster) rollingRestart(t *testing.T) {
	t.Helper()
	for _, m := range c.members {
		m.kill()
		<-m.closed
		if err := c.startMember(m, c.initialCluster(), "existing"); err != nil {
			t.Fatal(err)
		}
		select {
		case <-m.etcd.Server.ReadyNotify():
		case <-time.After(30 * time.Second):
			t.Fatalf("member %s not ready after a restart", m.name)
		}
		if _, err := c.waitLeader(30 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
}

// replicaWithExpiringCert starts a 3-member etcd cluster with TLS and one replica whose etcd
// client certificate expires at expiry, and returns a client with the admin token that has
// written through it.
func replicaWithExpiringCert(t *testing.T, expiry time.Time) (*cluster, *pki, *replica, *apiClient) {
	t.Helper()
	dir := t.TempDir()
	p := newPKI(t, dir)
	c := startClusterTLS(t, filepath.Join(dir, "etcd"), p)
	p.etcdClientCert, p.etcdClientKey = p.issue("shoelace-etcd-client", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, expiry)
	tokenFile := filepath.Join(dir, "admin.token")
	r := startReplicasTLS(t, dir, c.endpoints(), map[string]string{"a": tokenFile}, p)["a"]
	cl := newClient(r.url(), waitAdminToken(t, map[string]string{"a": tokenFile}))
	cl.hc = p.httpClient(15 * time.Second)
	waitTokenAccepted(t, cl)
	if status, _, err := cl.put(context.Background(), "shared/before", "1"); status != http.StatusOK {
		t.Fatalf("put before the expiry: %d %v", status, err)
	}
	return c, p, r, cl
}
