package server

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoelace-dev/shoelace/internal/testutil"
	"github.com/shoelace-dev/shoelace/server/store"
)

// A server whose external etcd is away at start goes on starting in the background, and before,
// once etcd came, it served a store nested in another one (its root under the other's kv/, or
// the other's under its own): the root checks of store.Open ran only when etcd answered at
// start. It made its admin token in the nested store, writing into the other store's keys, and
// served requests from it. Now the checks run when etcd comes, before anything reaches the
// store: on a refusal the server writes nothing and Serve returns the error a start with etcd
// up returns (the process exits non-zero with it), in either order of the two stores.
func TestServe_RootChecksRunWhenExternalEtcdComesAfterStart(t *testing.T) {
	for _, c := range []struct {
		name string
		// other is the id key of the store already there; root the server's.
		other, root string
	}{
		{"another store inside the root's keys", "/rc/kv/shared/y/sys/store-id", "/rc/"},
		{"the root inside another store's keys", "/rc/sys/store-id", "/rc/kv/shared/y/"},
	} {
		t.Run(c.name, func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			etcdAddr := l.Addr().String()
			l.Close()
			etcdDir := filepath.Join(t.TempDir(), "etcd")
			ectx, ecancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer ecancel()
			startEtcd := func() *store.EmbeddedEtcd {
				e, err := store.StartEmbedded(ectx, store.EmbedConfig{Dir: etcdDir, ClientAddr: etcdAddr,
					Logger: testutil.Logger(), LogLevel: "error", UnsafeFast: true})
				if err != nil {
					t.Fatal(err)
				}
				return e
			}
			e := startEtcd()
			cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"http://" + etcdAddr}, DialTimeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer cli.Close()
			if _, err := cli.Put(ectx, c.other, "the-other-store"); err != nil {
				t.Fatal(err)
			}
			e.Close()

			cfg := testConfig()
			cfg.EtcdEndpoints = []string{"http://" + etcdAddr}
			cfg.Root = c.root
			cfg.DataDir = t.TempDir()
			cfg.AdminTokenFile = filepath.Join(t.TempDir(), "admin.token")
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			errc := make(chan error, 1)
			go func() { errc <- Serve(ctx, ln, cfg, testutil.Logger()) }()
			url := "http://" + ln.Addr().String()
			waitFor(t, "/health with etcd away", func() bool {
				res, err := http.Get(url + "/health")
				if err != nil {
					return false
				}
				res.Body.Close()
				return res.StatusCode == 200
			})

			e = startEtcd()
			defer e.Close()
			var served error
			select {
			case served = <-errc:
			case <-time.After(30 * time.Second):
				t.Fatal("the server still serves 30 s after etcd came, with a store nested in another")
			}
			if served == nil {
				t.Fatal("Serve returned no error")
			}
			if _, err := os.Stat(cfg.AdminTokenFile); !os.IsNotExist(err) {
				t.Errorf("the server made its admin token in the nested store (%v)", err)
			}
			if resp, err := cli.Get(ectx, c.root, clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil {
				t.Fatal(err)
			} else if want := int64(0); strings.HasPrefix(c.other, c.root) {
				if resp.Count != want+1 {
					t.Errorf("the refused server wrote %d keys under its root", resp.Count-1)
				}
			} else if resp.Count != want {
				t.Errorf("the refused server wrote %d keys under its root", resp.Count)
			}

			// The error is the one of a start with etcd up.
			ln2, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			fg := Serve(ctx, ln2, cfg, testutil.Logger())
			if fg == nil || fg.Error() != served.Error() {
				t.Fatalf("the background start ended with\n\t%v\nthe start with etcd up with\n\t%v", served, fg)
			}
		})
	}
}

// A new store whose root checks passed but whose id could not be made yet (etcd out of space:
// reads answered, writes refused) went on in the background start, which made the id later but
// forgot that the look below the root was still to be recorded (lookAgain): the record was never
// written, and the next start read again every key the store's writers had put under kv/.
func TestOpen_LookBelowRecordedWhenTheIDIsMadeInTheBackground(t *testing.T) {
	eps, _ := testutil.StartEtcd(t, t.TempDir())
	disarm := raiseNOSPACE(t, eps)
	cfg := testutil.StoreConfig(t)
	cfg.Endpoints = eps
	cfg.RequestTimeout = 2 * time.Second
	st, err := store.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if st.ID() != "" {
		t.Fatal("the store made its id while etcd refused writes")
	}
	disarm()
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := cli.Get(context.Background(), cfg.Root+"sys/below-checked")
		if err == nil && len(resp.Kvs) > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the id made in the background (%q), the look below was not recorded", st.ID())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
