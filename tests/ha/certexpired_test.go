//go:build !windows

package ha

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestHA_EtcdClientCertExpiredSaysWhy lets a replica's etcd client certificate expire without a
// renewal: once etcd's members restart, etcd refuses each new connection of the replica in the
// TLS handshake. /health/deps (with an operator's token, as `shoelace status` asks it) and the
// replica's log must name the certificate and the flags to check. Before, both said only that
// etcd "did not answer in time", which sends the operator after the network while every other
// client of etcd is served.
func TestHA_EtcdClientCertExpiredSaysWhy(t *testing.T) {
	skipShort(t)
	expiry := time.Now().Add(15 * time.Second)
	c, _, r, cl := replicaWithExpiringCert(t, expiry)
	ctx := context.Background()
	time.Sleep(time.Until(expiry) + time.Second)
	c.rollingRestart(t)

	var last string
	deadline := time.Now().Add(45 * time.Second)
	for time.Now().Before(deadline) {
		status, body, _, err := cl.do(ctx, "GET", "/health/deps", nil)
		var deps struct {
			Reachable bool   `json:"reachable"`
			Error     string `json:"error"`
		}
		_ = json.Unmarshal(body, &deps)
		last = fmt.Sprintf("%d %s %v", status, body, err)
		if status == http.StatusServiceUnavailable && strings.Contains(deps.Error, "certificate") &&
			strings.Contains(deps.Error, "--etcd-cert") {
			t.Logf("/health/deps: %s", body)
			if !strings.Contains(r.stderr.String(), "etcd endpoint check") {
				t.Errorf("/health/deps names the certificate, the replica's log does not:\n%s", tail(r.stderr.String(), 3000))
			}
			return
		}
		if status == http.StatusOK {
			t.Fatalf("/health/deps is 200 with an expired client certificate: %s", body)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("/health/deps does not name the expired certificate and the flags to check: %s\nreplica's log:\n%s", last, tail(r.stderr.String(), 3000))
}
