package ha

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestHA_EtcdRefusesReplicaCertSaysWhy starts a replica whose etcd client certificate etcd does
// not accept (none given, as when --etcd-cert is left out of external-etcd.env): etcd is up and
// answers every other client, so the replica's log must say that the TLS handshake is the
// problem and which flags to check, not only that etcd "did not answer in time" (which sends
// the operator after the network).
func TestHA_EtcdRefusesReplicaCertSaysWhy(t *testing.T) {
	skipShort(t)
	dir := t.TempDir()
	p := newPKI(t, dir)
	c := startClusterTLS(t, filepath.Join(dir, "etcd"), p)
	r := launchReplica(t, "nocert", dir, c.endpoints(), filepath.Join(dir, "nocert.token"), p, false)
	t.Cleanup(r.terminate)
	if err := waitHealthy(r.hc, r.url(), r.done, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(r.stderr.String(), "--etcd-cert") {
		if time.Now().After(deadline) {
			t.Fatalf("15 s after start the replica's log does not say that etcd refuses its certificate:\n%s", tail(r.stderr.String(), 3000))
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, line := range strings.Split(r.stderr.String(), "\n") {
		if strings.Contains(line, "--etcd-cert") {
			t.Logf("%s", line)
		}
	}
	if !strings.Contains(r.stderr.String(), "TLS") {
		t.Errorf("the replica's log names --etcd-cert but not TLS:\n%s", tail(r.stderr.String(), 3000))
	}
}
