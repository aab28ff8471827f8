package client

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"strings"
)

// Misconfig names why a request's failure cannot go away however long a caller retries: what
// the caller must change in its configuration (the server's address or the CA it trusts).
type Misconfig int

const (
	// NotMisconfigured: the failure may go away by itself (a refused connection, a timeout).
	NotMisconfigured Misconfig = iota
	// CertHostname: the server's certificate does not name the host the caller dialed.
	CertHostname
	// CertUntrusted: the server's certificate does not verify against the CAs trusted.
	CertUntrusted
	// PlainHTTPServer: the address says https:// to a server that speaks plain HTTP.
	PlainHTTPServer
	// HTTPSServer: the address says http:// to a server that speaks HTTPS.
	HTTPSServer
	// Redirected: the server redirects to another address (ErrRedirected).
	Redirected
	// WriteRedirected: the server redirects a write, which would be followed as a read
	// (ErrWriteRedirected).
	WriteRedirected
)

// httpsServerAnswer is the text of the 400 that Go's HTTPS server answers a plain request with.
const httpsServerAnswer = "Client sent an HTTP request to an HTTPS server"

// Misconfigured says which configuration error err, a request's failure, comes of, if any.
func Misconfigured(err error) Misconfig {
	var (
		verify   *tls.CertificateVerificationError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
	)
	switch {
	case err == nil:
		return NotMisconfigured
	case errors.As(err, &hostname):
		return CertHostname
	case errors.As(err, &verify), errors.As(err, &unknown), errors.As(err, &invalid):
		return CertUntrusted
	case strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return PlainHTTPServer
	case strings.Contains(err.Error(), httpsServerAnswer):
		return HTTPSServer
	case errors.Is(err, ErrRedirected):
		return Redirected
	case errors.Is(err, ErrWriteRedirected):
		return WriteRedirected
	}
	return NotMisconfigured
}
