package main

import (
	"strings"
	"testing"
)

// An --etcd-endpoints entry with a password (which etcd's client never sends) or a port it can
// never dial is a usage error, and the error does not show the password. Before, the server
// started, answered 503 to every request that needs the store for ever, and logged the
// endpoint, password included, at every retry.
func TestE2E_ServerEtcdEndpointPasswordOrPortRefused(t *testing.T) {
	c := &runner{t: t}
	r := c.fails(exitUsage, `"https://root:xxxxx@etcd-1:2379" has a user or password`,
		"server", "--etcd-endpoints", "https://root:hunter2@etcd-1:2379")
	if strings.Contains(r.stderr, "hunter2") {
		t.Errorf("the error shows the password: %s", r.stderr)
	}
	c.fails(exitUsage, `has the port "99999", not a number from 1 to 65535`, "server", "--etcd-endpoints", "https://etcd-1:99999")
}
