package store

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestReadForeign_AuthOn: an etcd with authentication on answers an import's read with
// "etcdserver: user name is empty", which said nothing of what to do: the error now says that
// etcd has authentication on and that the import reads it with a client certificate whose
// common name is an etcd user (--etcd-cert, --etcd-key).
func TestReadForeign_AuthOn(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ee, cli := foreignEtcd(ctx, t)
	if _, err := cli.Put(ctx, "/p/a", "1"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.UserAdd(ctx, "root", "rootpw"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.UserGrantRole(ctx, "root", "root"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.AuthEnable(ctx); err != nil {
		t.Fatal(err)
	}
	_, _, err := ReadForeign(ctx, ForeignEtcd{Endpoints: ee.Endpoints()}, "/p")
	for _, w := range []string{"user name is empty", "authentication on", "--etcd-cert"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("read of an etcd with authentication on: %v, want it to say %q", err, w)
		}
	}
}
