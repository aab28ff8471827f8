package server

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"sync/atomic"
)

// certReloader serves the certificate of --tls-cert/--tls-key through tls.Config.GetCertificate
// and reads the pair again on reload (SIGHUP), so that certificates rotate without a restart.
// A pair that fails to load leaves the one being served in place.
type certReloader struct {
	certFile, keyFile string
	log               *slog.Logger
	cert              atomic.Pointer[tls.Certificate]
}

// newCertReloader loads the pair once; an unusable pair at start is an error.
func newCertReloader(certFile, keyFile string, log *slog.Logger) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile, log: log}
	if err := r.reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// reload reads the pair again and serves it from the next handshake on; on error it keeps the
// pair it had.
func (r *certReloader) reload() error {
	pair, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("load TLS certificate %s and key %s: %w", r.certFile, r.keyFile, err)
	}
	r.cert.Store(&pair)
	if leaf := pair.Leaf; leaf != nil {
		r.log.Info("TLS certificate loaded", "cert", r.certFile, "serial", leaf.SerialNumber.String(),
			"subject", leaf.Subject.String(), "not_after", leaf.NotAfter)
	}
	return nil
}

func (r *certReloader) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.cert.Load(), nil
}

// tlsConfig is the server side TLS configuration: TLS 1.2 or later, the reloadable pair.
func (r *certReloader) tlsConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: r.getCertificate}
}
