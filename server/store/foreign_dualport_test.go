package store

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
)

// TestReadForeign_PlainAndTLSOnOnePort: an etcd given an http:// and an https:// listen URL on
// one port serves both there, and an import given its http:// URL reads it. The probe made
// before the read found that the port speaks TLS and refused the import at once ("the endpoint
// speaks TLS: give it as https://…", exit 1), though the read it refused works.
func TestReadForeign_PlainAndTLSOnOnePort(t *testing.T) {
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "etcd"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	addr, err := freeLoopbackAddr()
	if err != nil {
		t.Fatal(err)
	}
	peer, err := freeLoopbackAddr()
	if err != nil {
		t.Fatal(err)
	}
	ec := embed.NewConfig()
	ec.Dir = filepath.Join(dir, "etcd")
	ec.ListenClientUrls = []url.URL{{Scheme: "http", Host: addr}, {Scheme: "https", Host: addr}}
	ec.AdvertiseClientUrls = []url.URL{{Scheme: "http", Host: addr}}
	ec.ListenPeerUrls = []url.URL{{Scheme: "http", Host: peer}}
	ec.AdvertisePeerUrls = ec.ListenPeerUrls
	ec.InitialCluster = ec.InitialClusterFromName(ec.Name)
	ec.ClientTLSInfo.CertFile, ec.ClientTLSInfo.KeyFile = certFile, keyFile
	ec.LogLevel = "error"
	ec.TickMs, ec.ElectionMs, ec.UnsafeNoFsync = 10, 50, true
	e, err := embed.StartEtcd(ec)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(20 * time.Second):
		t.Fatal("etcd not ready")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"http://" + addr}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Put(ctx, "/app/x", "1"); err != nil {
		t.Fatal(err)
	}
	kvs, _, err := ReadForeign(ctx, ForeignEtcd{Endpoints: []string{"http://" + addr}, DialTimeout: time.Second}, "/app")
	if err != nil {
		t.Fatalf("read an etcd serving plain HTTP and TLS on one port through its http:// URL: %v", err)
	}
	if len(kvs) != 1 {
		t.Fatalf("read %d keys, want 1", len(kvs))
	}
}

// TestReadForeign_FrozenFirstEndpoint: an endpoint that accepts connections and answers nothing
// (a frozen member: SIGSTOP, a hung host) first in the list does not hold the import for the
// dial timeout before its read: the probe for settings that cannot work waited for it, one
// endpoint after another, and the import of a cluster whose other members answer took 5 s
// more (the read itself goes to the member that answers).
func TestReadForeign_FrozenFirstEndpoint(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ee, cli := foreignEtcd(ctx, t)
	if _, err := cli.Put(ctx, "/app/x", "1"); err != nil {
		t.Fatal(err)
	}
	frozen, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer frozen.Close()
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := frozen.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	start := time.Now()
	kvs, _, err := ReadForeign(ctx, ForeignEtcd{Endpoints: append([]string{"http://" + frozen.Addr().String()}, ee.Endpoints()...), DialTimeout: 4 * time.Second}, "/app")
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); len(kvs) != 1 || took > 2*time.Second {
		t.Fatalf("read %d keys in %v with a frozen endpoint first; want 1, well within the dial timeout (4s)", len(kvs), took.Round(10*time.Millisecond))
	}
}
