package store

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ForeignEtcd is an etcd v3 cluster other than the store's, such as the one a confd keyspace
// lives in (shoelace import --from-etcd).
type ForeignEtcd struct {
	// Endpoints are its client URLs (https://etcd:2379).
	Endpoints []string
	// CACert, Cert and Key are PEM files: the CA that signs its certificate, and a client
	// certificate and key.
	CACert, Cert, Key string
	// Username and Password are an etcd user's, for an etcd with authentication on; both or
	// neither. The password is never part of an error.
	Username, Password string
	// DialTimeout bounds the connection; 0 means 5s.
	DialTimeout time.Duration
	// MaxBytes bounds what one read may bring back (keys and values together, as etcd sends
	// them); 0 means DefaultForeignMaxBytes.
	MaxBytes int
}

// DefaultForeignMaxBytes bounds a read of a foreign etcd: far more than one transaction of the
// Shoelace server takes, so that a prefix that is too large fails with a message instead of
// taking the memory of the machine that runs the import.
const DefaultForeignMaxBytes = 256 << 20

// ForeignKV is one key of a foreign etcd, as stored: bytes, which need not be UTF-8.
type ForeignKV struct {
	Key, Value []byte
}

// ReadForeign reads every key of f that starts with prefix (byte-wise, as etcd's prefix
// ranges do), sorted, at one revision, which it returns.
func ReadForeign(ctx context.Context, f ForeignEtcd, prefix string) ([]ForeignKV, int64, error) {
	tlsCfg, err := loadTLS(f.CACert, f.Cert, f.Key)
	if err != nil {
		return nil, 0, err
	}
	for _, e := range f.Endpoints {
		if tlsCfg == nil && strings.HasPrefix(e, "https://") {
			tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12} // the system's roots
		}
	}
	dial := f.DialTimeout
	if dial <= 0 {
		dial = 5 * time.Second
	}
	maxBytes := f.MaxBytes
	if maxBytes <= 0 {
		maxBytes = DefaultForeignMaxBytes
	}
	if why := misconfigured(f.Endpoints, tlsCfg, dial); why != "" {
		return nil, 0, fmt.Errorf("etcd %s: %s", strings.Join(f.Endpoints, ","), why)
	}
	// With a user, clientv3.New authenticates at once: a wrong password, or an endpoint away,
	// is its error, and is said as the read's would be.
	cli, err := clientv3.New(clientv3.Config{Endpoints: f.Endpoints, DialTimeout: dial, TLS: tlsCfg, Logger: zap.NewNop(), Context: ctx,
		MaxCallRecvMsgSize: maxBytes, Username: f.Username, Password: f.Password})
	if err != nil && f.Username == "" {
		return nil, 0, fmt.Errorf("etcd %s: %w", strings.Join(f.Endpoints, ","), err)
	}
	var resp *clientv3.GetResponse
	if err == nil {
		defer cli.Close()
		resp, err = cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
		if errors.Is(err, rpctypes.ErrPermissionDenied) && !strings.HasSuffix(prefix, "/") {
			resp, err = readBelow(ctx, cli, prefix)
		}
	}
	if status.Code(err) == codes.ResourceExhausted {
		return nil, 0, fmt.Errorf("etcd %s: the keys that start with %q are over %d bytes, more than one import can hold: import a narrower prefix (one subtree at a time)",
			strings.Join(f.Endpoints, ","), prefix, maxBytes)
	}
	if errors.Is(err, rpctypes.ErrAuthFailed) {
		return nil, 0, fmt.Errorf("etcd %s: user %q: %w: check --etcd-user and its password", strings.Join(f.Endpoints, ","), shownUser(f.Username), err)
	}
	if f.Username != "" && errors.Is(err, rpctypes.ErrPermissionDenied) {
		return nil, 0, fmt.Errorf("etcd %s: read %q as user %q: %w (give one of its roles read on the keys below the prefix: etcdctl role grant-permission ROLE --prefix read %s)",
			strings.Join(f.Endpoints, ","), prefix, shownUser(f.Username), err, strings.TrimSuffix(prefix, "/")+"/")
	}
	if errors.Is(err, rpctypes.ErrUserEmpty) || errors.Is(err, rpctypes.ErrPermissionDenied) {
		return nil, 0, fmt.Errorf("etcd %s: read %q: %w (etcd has authentication on: the import reads it as an etcd user that may read the prefix, given with --etcd-user USER[:PASSWORD], or as the user a client certificate names, given with --etcd-cacert, --etcd-cert and --etcd-key, which etcd takes when it runs with --client-cert-auth)",
			strings.Join(f.Endpoints, ","), prefix, err)
	}
	if err != nil {
		err = clientv3.ContextError(ctx, err)
		// etcd's client retries and ends with its deadline: say what the endpoints answer.
		if why, config := probeEndpoints(f.Endpoints, tlsCfg, dial); config {
			// Not unavailable: the settings must change.
			return nil, 0, fmt.Errorf("etcd %s: read %q: %v (%s)", strings.Join(f.Endpoints, ","), prefix, err, why)
		} else if why != "" {
			return nil, 0, fmt.Errorf("etcd %s: read %q: %w (%s)", strings.Join(f.Endpoints, ","), prefix, err, why)
		}
		return nil, 0, fmt.Errorf("etcd %s: read %q: %w", strings.Join(f.Endpoints, ","), prefix, err)
	}
	out := make([]ForeignKV, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out = append(out, ForeignKV{Key: kv.Key, Value: kv.Value})
	}
	return out, resp.Header.Revision, nil
}

// readBelow reads what an import of prefix takes when the range of prefix as a string (the
// prefix itself, and siblings that start alike: /production/web-old) is refused: the keys below
// prefix+"/", which a role granted the prefix as a directory may read (etcdctl role
// grant-permission ROLE --prefix read /production/web/, all that confd needs, as it reads
// PREFIX/KEY ranges), and the prefix's own value at the same revision where the role allows it.
func readBelow(ctx context.Context, cli *clientv3.Client, prefix string) (*clientv3.GetResponse, error) {
	resp, err := cli.Get(ctx, prefix+"/", clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, err
	}
	own, err := cli.Get(ctx, prefix, clientv3.WithRev(resp.Header.Revision))
	switch {
	case errors.Is(err, rpctypes.ErrPermissionDenied):
	case err != nil:
		return nil, err
	default:
		resp.Kvs = append(own.Kvs, resp.Kvs...) // prefix sorts before prefix/…
	}
	return resp, nil
}

// shownUser is user as an error names it: up to its first ':', as USER:PASSWORD given whole
// as the name (with the password given apart too, as etcdctl reads them) would show the password.
func shownUser(user string) string {
	if name, _, ok := strings.Cut(user, ":"); ok {
		return name + ":…"
	}
	return user
}

// WithoutStoreKeys returns kvs without the keys of any Shoelace store among them, and the roots
// of those stores. A store is known by its id key (<root>sys/store-id): a read of a prefix that
// holds a store's system keys holds that key too. An import from the etcd that a Shoelace server
// uses (the embedded etcd's --etcd-listen, or a shared cluster) thus leaves out the server's
// own keys, whatever its --root: its tokens, releases and the keys of every appliance, which are
// never a confd keyspace and which the import would show to one appliance's agents.
func WithoutStoreKeys(kvs []ForeignKV) (kept []ForeignKV, roots []string) {
	idKey := "sys/" + storeIDKey
	for _, kv := range kvs {
		if root, ok := strings.CutSuffix(string(kv.Key), idKey); ok && strings.HasSuffix(root, "/") {
			roots = append(roots, root)
		}
	}
	if len(roots) == 0 {
		return kvs, nil
	}
	kept = make([]ForeignKV, 0, len(kvs))
	for _, kv := range kvs {
		if !slices.ContainsFunc(roots, func(r string) bool { return strings.HasPrefix(string(kv.Key), r) }) {
			kept = append(kept, kv)
		}
	}
	return kept, roots
}

// probeEndpoints connects to each endpoint (with a TLS handshake for https) and returns what
// the first that fails says, or "" when every one answers; config says that its failure is one
// of the import's settings (TLS where etcd serves none, or none where it serves TLS, a
// certificate that does not verify, a client certificate refused), which retrying cannot help.
func probeEndpoints(endpoints []string, tlsCfg *tls.Config, timeout time.Duration) (why string, config bool) {
	for _, e := range endpoints {
		if why, config := probeEndpoint(e, tlsCfg, timeout, timeout); why != "" {
			return why, config
		}
	}
	return "", false
}

// misconfigured is what probeEndpoint says when every endpoint fails it with an error of the
// import's settings, else "": the read would only retry until its deadline (30 s), and the
// command would then say that etcd is unavailable. It waits at most half a second for a client
// certificate's refusal, which comes after the handshake.
func misconfigured(endpoints []string, tlsCfg *tls.Config, timeout time.Duration) string {
	// Probed together, and answered as soon as one endpoint is not misconfigured: one by one,
	// an endpoint that accepts connections and answers nothing (a frozen member) held the
	// import for the whole timeout before its first read, though the others answer.
	type probed struct {
		i      int
		why    string
		config bool
	}
	ch := make(chan probed, len(endpoints))
	for i, e := range endpoints {
		go func() {
			why, config := probeEndpoint(e, tlsCfg, timeout, min(timeout, 500*time.Millisecond))
			ch <- probed{i, why, config}
		}()
	}
	whys := make([]string, len(endpoints))
	for range endpoints {
		p := <-ch
		if !p.config {
			return ""
		}
		whys[p.i] = p.why
	}
	return strings.Join(whys, "; ")
}

// probeEndpoint connects to endpoint e as probeEndpoints does; a client certificate's refusal
// is waited for readWait.
func probeEndpoint(e string, tlsCfg *tls.Config, timeout, readWait time.Duration) (why string, config bool) {
	u, err := url.Parse(e)
	if err != nil || u.Host == "" {
		return "", false
	}
	d := &net.Dialer{Timeout: timeout}
	if u.Scheme != "https" {
		c, err := d.Dial("tcp", u.Host)
		if err != nil {
			return fmt.Sprintf("%s: %v", e, err), false
		}
		_ = c.Close()
		// An etcd given both http:// and https:// listen URLs on one port serves both there:
		// one that answers plain HTTP is not misread as wanting TLS.
		if speaksTLS(d, u.Host) && !servesPlainHTTP(d, u.Host, timeout) {
			return fmt.Sprintf("%s: the endpoint speaks TLS: give it as https://%s (with --etcd-cacert, and --etcd-cert/--etcd-key when etcd asks for a client certificate)", e, u.Host), true
		}
		return "", false
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if tlsCfg != nil {
		cfg = tlsCfg.Clone()
	}
	cfg.ServerName = u.Hostname()
	c, err := (&tls.Dialer{NetDialer: d, Config: cfg}).Dial("tcp", u.Host)
	if err != nil {
		var alert tls.AlertError
		var cert *tls.CertificateVerificationError
		var unknown x509.UnknownAuthorityError
		var host x509.HostnameError
		var invalid x509.CertificateInvalidError
		if !errors.As(err, &alert) && !errors.As(err, &cert) && speaksHTTP(d, u.Host, timeout) {
			return fmt.Sprintf("%s: the endpoint does not speak TLS: give it as http://%s", e, u.Host), true
		}
		config := errors.As(err, &alert) || errors.As(err, &cert) || errors.As(err, &unknown) || errors.As(err, &host) || errors.As(err, &invalid) ||
			strings.Contains(err.Error(), "remote error: tls:")
		return fmt.Sprintf("%s: TLS: %v: check --etcd-cacert (the CA of etcd's certificate) and --etcd-cert/--etcd-key (a client certificate, when etcd asks for one)", e, err), config
	}
	defer c.Close()
	// A server that wants a client certificate says so after the handshake, on the first read.
	_ = c.SetReadDeadline(time.Now().Add(readWait))
	if _, err := c.Read(make([]byte, 1)); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		var ne net.Error
		if !(errors.As(err, &ne) && ne.Timeout()) {
			// The peer's alert ("remote error: tls: certificate required"), whose type
			// crypto/tls does not export.
			return fmt.Sprintf("%s: TLS: %v: check --etcd-cert and --etcd-key (a client certificate that etcd trusts)", e, err), strings.Contains(err.Error(), "remote error: tls:")
		}
	}
	return "", false
}

// speaksTLS reports whether host answers a TLS handshake (or a TLS alert): an etcd that serves
// TLS, given as http://. Nothing is sent over the connection, so its certificate is not judged.
func speaksTLS(d *net.Dialer, host string) bool {
	c, err := (&tls.Dialer{NetDialer: d, Config: &tls.Config{InsecureSkipVerify: true}}).Dial("tcp", host) // #nosec G402 -- a probe: nothing is sent
	if err == nil {
		_ = c.Close()
		return true
	}
	var alert tls.AlertError
	return errors.As(err, &alert)
}

// servesPlainHTTP reports whether host answers etcd's GET /version without TLS with 200 OK, as
// an etcd that serves plain HTTP on its client port does; a TLS server answers 400 (Go's "Client
// sent an HTTP request to an HTTPS server") or nothing.
func servesPlainHTTP(d *net.Dialer, host string, timeout time.Duration) bool {
	b := plainVersionAnswer(d, host, timeout, 12)
	return b != nil && strings.HasPrefix(string(b), "HTTP/1.") && string(b[8:]) == " 200"
}

// speaksHTTP reports whether host answers a plain HTTP request (etcd serves GET /version on its
// client port): an etcd without TLS, given as https://.
func speaksHTTP(d *net.Dialer, host string, timeout time.Duration) bool {
	return string(plainVersionAnswer(d, host, timeout, 5)) == "HTTP/"
}

// plainVersionAnswer is the first n bytes host answers GET /version sent without TLS, or nil
// when it does not answer as many.
func plainVersionAnswer(d *net.Dialer, host string, timeout time.Duration, n int) []byte {
	c, err := d.Dial("tcp", host)
	if err != nil {
		return nil
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(c, "GET /version HTTP/1.0\r\n\r\n"); err != nil {
		return nil
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		return nil
	}
	return b
}
