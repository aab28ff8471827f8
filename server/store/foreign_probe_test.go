package store

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestReadForeign_SaysWhy: when the foreign etcd cannot be read, the error says what its
// endpoint answered (etcd's client only reports its deadline): a certificate from an unknown
// CA, a client certificate it requires, a refused connection, an http:// URL of a TLS endpoint, an https:// URL of a plain one.
func TestReadForeign_SaysWhy(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAnyClientCert}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	plain := httptest.NewServer(http.NotFoundHandler())
	plain.Config.ErrorLog = log.New(io.Discard, "", 0)
	defer plain.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String()
	_ = l.Close()
	for _, tc := range []struct {
		f      ForeignEtcd
		want   []string
		config bool // the settings are wrong: said at once, not after the read's deadline
	}{
		{ForeignEtcd{Endpoints: []string{srv.URL}}, []string{"unknown authority", "--etcd-cacert"}, true},
		{ForeignEtcd{Endpoints: []string{srv.URL}, CACert: ca}, []string{"certificate required", "--etcd-cert"}, true},
		{ForeignEtcd{Endpoints: []string{closed}}, []string{"connection refused"}, false},
		// https:// of an etcd that serves plain HTTP: "TLS: EOF: check --etcd-cacert".
		{ForeignEtcd{Endpoints: []string{"https://" + plain.Listener.Addr().String()}}, []string{"does not speak TLS", "http://" + plain.Listener.Addr().String()}, true},
		// http:// of an etcd that serves TLS: its client only timed out, saying nothing.
		{ForeignEtcd{Endpoints: []string{"http://" + srv.Listener.Addr().String()}}, []string{"speaks TLS", "https://" + srv.Listener.Addr().String()}, true},
		// One endpoint that would answer: the read is tried (and here fails at its deadline).
		{ForeignEtcd{Endpoints: []string{srv.URL, closed}}, []string{"unknown authority"}, false},
	} {
		tc.f.DialTimeout = time.Second
		wait := 1500 * time.Millisecond
		if tc.config {
			// The read's own deadline, which etcd's client retried until before it said
			// anything: the command then exited 6 (unavailable), as if retrying could help.
			wait = time.Minute
		}
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		_, _, err := ReadForeign(ctx, tc.f, "/p")
		late := ctx.Err()
		cancel()
		if tc.config && (err == nil || errors.Is(err, context.DeadlineExceeded) || late != nil) {
			t.Errorf("%v: error %v (context %v), want the settings' error before the deadline, not wrapping it", tc.f.Endpoints, err, late)
		}
		for _, w := range tc.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%v: error %v, want it to say %q", tc.f.Endpoints, err, w)
			}
		}
	}
}
