package client

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"testing"
)

func TestMisconfigured(t *testing.T) {
	wrap := func(err error) error {
		return &url.Error{Op: "Get", URL: "https://h:7070/v1/health", Err: err}
	}
	for _, c := range []struct {
		err  error
		want Misconfig
	}{
		{nil, NotMisconfigured},
		{errors.New("dial tcp 127.0.0.1:7070: connect: connection refused"), NotMisconfigured},
		{wrap(x509.UnknownAuthorityError{}), CertUntrusted},
		{wrap(x509.CertificateInvalidError{Reason: x509.Expired}), CertUntrusted},
		{wrap(x509.HostnameError{Certificate: &x509.Certificate{}, Host: "h"}), CertHostname},
		{wrap(errors.New("http: server gave HTTP response to HTTPS client")), PlainHTTPServer},
		{fmt.Errorf("server answered 400: %s", httpsServerAnswer), HTTPSServer},
	} {
		if got := Misconfigured(c.err); got != c.want {
			t.Errorf("Misconfigured(%v) = %d, want %d", c.err, got, c.want)
		}
	}
}
