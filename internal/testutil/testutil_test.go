package testutil_test

import (
	"context"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

func TestEtcdIsShared(t *testing.T) {
	a, b := testutil.Etcd(t), testutil.Etcd(t)
	if len(a) == 0 || !reflect.DeepEqual(a, b) {
		t.Fatalf("endpoints %v and %v", a, b)
	}
}

func TestRootIsUnique(t *testing.T) {
	seen := map[string]bool{}
	for range 3 {
		r := testutil.Root(t)
		if seen[r] || !strings.HasPrefix(r, "/t/TestRootIsUnique-") || !strings.HasSuffix(r, "/") {
			t.Fatalf("root %q (seen: %v)", r, seen)
		}
		seen[r] = true
	}
	t.Run("sub test/with odd:chars", func(t *testing.T) {
		r := testutil.Root(t)
		if strings.ContainsAny(r[3:len(r)-1], "/: ") {
			t.Errorf("root %q", r)
		}
	})
}

func TestStoresDoNotSeeEachOther(t *testing.T) {
	a, b := testutil.Store(t), testutil.Store(t)
	ctx := context.Background()
	if _, err := a.Put(ctx, "shared/x", "a", -1); err != nil {
		t.Fatal(err)
	}
	kvs, _, err := b.List(ctx, "", false)
	if err != nil || len(kvs) != 0 {
		t.Fatalf("b sees %v (%v)", kvs, err)
	}
	if a.ID() == b.ID() {
		t.Errorf("two roots share id %s", a.ID())
	}
}

func TestStartEtcdRestart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "etcd")
	ep, stop := testutil.StartEtcd(t, dir)
	cfg := testutil.StoreConfig(t)
	cfg.Endpoints = ep
	cfg.RequestTimeout = time.Second
	s := testutil.OpenStore(t, cfg)
	ctx := context.Background()
	if _, err := s.Put(ctx, "shared/kept", "yes", -1); err != nil {
		t.Fatal(err)
	}
	stop()
	stop()
	if _, _, err := s.Get(ctx, "shared/kept"); err == nil {
		t.Fatal("read from a stopped etcd")
	}
	ep2, _ := testutil.StartEtcd(t, dir)
	if !reflect.DeepEqual(ep, ep2) {
		t.Fatalf("restart serves on %v, first on %v", ep2, ep)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		kv, _, err := s.Get(ctx, "shared/kept")
		if err == nil {
			if kv.Value != "yes" {
				t.Fatalf("got %q", kv.Value)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("store did not reconnect: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
