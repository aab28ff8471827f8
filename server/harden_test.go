package server

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/testutil"
)

// external is a server started with Serve on the shared etcd under a root of the test's own.
type external struct {
	addr  string
	token string
	logs  *syncBuffer
	st    func() []string // keys of the store, read straight from it
}

// serveExternal runs Serve with cfg (after mod) on a loopback port until the test ends.
func serveExternal(t *testing.T, mod func(*Config), scheme string, client *http.Client) *external {
	t.Helper()
	dir := t.TempDir()
	cfg := serveConfig(t, filepath.Join(dir, "admin.token"))
	if mod != nil {
		mod(&cfg)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- Serve(ctx, ln, cfg, log) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("server did not stop")
		}
	})
	if client == nil {
		client = http.DefaultClient
	}
	url := scheme + "://" + ln.Addr().String()
	waitFor(t, "server up", func() bool {
		res, err := client.Get(url + "/health")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == 200
	})
	token, err := os.ReadFile(cfg.AdminTokenFile)
	if err != nil {
		t.Fatal(err)
	}
	scfg := testutil.StoreConfig(t)
	scfg.Root = cfg.Root
	st := testutil.OpenStore(t, scfg)
	return &external{addr: ln.Addr().String(), token: strings.TrimSpace(string(token)), logs: logs, st: func() []string {
		kvs, _, err := st.List(context.Background(), "", true)
		if err != nil {
			t.Fatalf("list: %v", err)
		}
		var out []string
		for _, kv := range kvs {
			out = append(out, kv.Key)
		}
		return out
	}}
}

// testCA is a certificate authority made in the test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1000),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// issue writes a server certificate for 127.0.0.1 with serial, signed by ca, to certFile and
// keyFile (each through a rename, as a rotation tool would).
func (ca *testCA) issue(t *testing.T, serial int64, certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: "shoelace test server"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writeRename(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
	writeRename(t, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func writeRename(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// servedSerial connects with roots and returns the serial of the certificate served.
func servedSerial(addr string, roots *x509.CertPool) (int64, error) {
	d := &net.Dialer{Timeout: 10 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{RootCAs: roots})
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64(), nil
}

func TestServe_TLSRotatesOnReload(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, "shoelace test CA")
	other := newTestCA(t, "another CA")
	certFile, keyFile := filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")
	ca.issue(t, 1, certFile, keyFile)
	reload := make(chan struct{})
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.pool}}}
	e := serveExternal(t, func(c *Config) {
		c.TLSCert, c.TLSKey = certFile, keyFile
		c.Reload = reload
	}, "https", client)

	if n, err := servedSerial(e.addr, ca.pool); err != nil || n != 1 {
		t.Fatalf("serial %d, err %v; want 1", n, err)
	}
	// A client that trusts another CA is refused.
	if _, err := servedSerial(e.addr, other.pool); err == nil {
		t.Fatal("a client trusting another CA connected")
	} else if !errors.As(err, new(*tls.CertificateVerificationError)) {
		t.Fatalf("wrong CA: %v, want a certificate verification error", err)
	}
	wrong := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: other.pool}}}
	if res, err := wrong.Get("https://" + e.addr + "/health"); err == nil {
		res.Body.Close()
		t.Fatal("GET with the wrong CA succeeded")
	}

	// Rotate the pair and reload: new handshakes get the new certificate, without a restart.
	ca.issue(t, 2, certFile, keyFile)
	reload <- struct{}{}
	waitFor(t, "the new certificate served", func() bool {
		n, err := servedSerial(e.addr, ca.pool)
		return err == nil && n == 2
	})
	res, err := client.Get("https://" + e.addr + "/health")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 || res.TLS.PeerCertificates[0].SerialNumber.Int64() != 2 {
		t.Fatalf("after rotation: %d, serial %v", res.StatusCode, res.TLS.PeerCertificates[0].SerialNumber)
	}

	// A broken pair (a key that does not match, then garbage) keeps the old one, and says so.
	ca.issue(t, 3, certFile+".new", keyFile+".new")
	writeRename(t, certFile, mustRead(t, certFile+".new"))
	reload <- struct{}{}
	waitFor(t, "the reload error logged", func() bool { return strings.Contains(e.logs.String(), "still serving the previous one") })
	writeRename(t, certFile, []byte("not a certificate"))
	reload <- struct{}{}
	waitFor(t, "two reload errors logged", func() bool {
		return strings.Count(e.logs.String(), "still serving the previous one") == 2
	})
	if n, err := servedSerial(e.addr, ca.pool); err != nil || n != 2 {
		t.Fatalf("after bad pairs: serial %d, err %v; want the previous certificate (2)", n, err)
	}
	for _, line := range strings.Split(e.logs.String(), "\n") {
		if strings.Contains(line, "still serving the previous one") && !strings.Contains(line, `"level":"ERROR"`) {
			t.Fatalf("reload failure not logged as an error: %s", line)
		}
	}
	// Plain HTTP to the TLS port gets no API answer.
	if res, err := http.Get("http://" + e.addr + "/health"); err == nil {
		res.Body.Close()
		if res.StatusCode == 200 {
			t.Fatal("plain HTTP answered on the TLS port")
		}
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestServe_BadTLSPairRefusedAtStart(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig()
	cfg.EtcdEndpoints = testutil.Etcd(t)
	cfg.DataDir = ""
	cfg.TLSCert, cfg.TLSKey = filepath.Join(dir, "missing.pem"), filepath.Join(dir, "missing-key.pem")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	err = Serve(context.Background(), ln, cfg, testutil.Logger())
	if err == nil || !strings.Contains(err.Error(), "missing.pem") {
		t.Fatalf("Serve with a missing certificate: %v", err)
	}
}

// rawConn opens a TCP connection to addr, closed when the test ends.
func rawConn(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// readAnswer reads what the server sends until it closes the connection or a generous timeout.
func readAnswer(t *testing.T, c net.Conn) (string, error) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	b, err := io.ReadAll(c)
	return string(b), err
}

func TestServe_SlowAndHostileClients(t *testing.T) {
	parallelShared(t)
	e := serveExternal(t, func(c *Config) {
		c.HeaderTimeout = time.Second
		c.BodyTimeout = time.Second
		c.MaxValueBytes = 1000
	}, "http", nil)

	t.Run("slowloris headers are cut off", func(t *testing.T) {
		c := rawConn(t, e.addr)
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			req := "GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + strings.Repeat("a", 1000)
			for i := 0; i < len(req); i++ {
				if _, err := c.Write([]byte{req[i]}); err != nil {
					return
				}
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
				}
			}
		}()
		got, err := readAnswer(t, c)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatal("a client sending its headers byte by byte was not cut off")
		}
		if strings.Contains(got, "200 OK") {
			t.Fatalf("slow headers were answered: %q", got)
		}
	})

	t.Run("half a body then a stall writes nothing", func(t *testing.T) {
		c := rawConn(t, e.addr)
		fmt.Fprintf(c, "PUT /v1/kv/shared/half HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: 100\r\n\r\n%s", e.token, strings.Repeat("v", 50))
		got, err := readAnswer(t, c)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatal("a client that stalled mid-body was not cut off")
		}
		if !strings.HasPrefix(got, "HTTP/1.1 408") {
			t.Fatalf("stalled body answered %q, want 408", got)
		}
		for _, k := range e.st() {
			if k == "shared/half" {
				t.Fatal("a half-sent body was written")
			}
		}
	})

	t.Run("oversized headers get 431", func(t *testing.T) {
		req, _ := http.NewRequest("GET", "http://"+e.addr+"/health", nil)
		req.Header.Set("X-Big", strings.Repeat("b", 100<<10))
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("100 KiB of headers: %d, want 431", res.StatusCode)
		}
	})

	// A body over the limit is refused from its Content-Length, before it is sent.
	for _, c := range []struct{ method, path, code string }{
		{"PUT", "/v1/kv/shared/big", api.CodeValueTooLarge},
		{"POST", "/v1/txn", api.CodeBodyTooLarge},
		{"PUT", "/v1/appliances/web", api.CodeBodyTooLarge},
	} {
		t.Run("413 before the body "+c.method+" "+c.path, func(t *testing.T) {
			conn := rawConn(t, e.addr)
			fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n{", c.method, c.path, e.token, 100<<20)
			conn.SetReadDeadline(time.Now().Add(30 * time.Second))
			res, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatalf("no answer before the body was sent: %v", err)
			}
			body, _ := io.ReadAll(res.Body)
			if res.StatusCode != 413 || !strings.Contains(string(body), c.code) {
				t.Fatalf("%d %s, want 413 %s", res.StatusCode, body, c.code)
			}
		})
	}

	t.Run("long-polls outlive the body timeout", func(t *testing.T) {
		req, _ := http.NewRequest("PUT", "http://"+e.addr+"/v1/appliances/web", strings.NewReader(`{"keys":{"a":"1"}}`))
		req.Header.Set("Authorization", "Bearer "+e.token)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		rev := res.Header.Get(api.HeaderIndex)
		req, _ = http.NewRequest("GET", "http://"+e.addr+"/v1/appliances/web?index="+rev+"&wait=3s", nil)
		req.Header.Set("Authorization", "Bearer "+e.token)
		res, err = testClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusNotModified {
			t.Fatalf("long-poll of 3s with 1s timeouts: %d, want 304", res.StatusCode)
		}
	})
}

// Clients without a valid token, or over a rate limit, and connections that fail their TLS
// handshake cannot flood the log: their lines are written at a budget a second at most, the
// ones left out are counted in a line that says so, and the lines of a write made meanwhile (its
// audit line, its request line) are all written. Before, each such request or connection wrote
// a line of its own: one client wrote gigabytes an hour, and under journald's rate limit that
// dropped the audit lines of every write too.
func TestServe_ClientFloodCannotFloodTheLog(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, "shoelace test CA")
	certFile, keyFile := filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")
	ca.issue(t, 1, certFile, keyFile)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.pool}, MaxIdleConnsPerHost: 16}}
	// A budget a slow host's flood still passes (the flood takes 3 s here, 50 s under -race on
	// a loaded host).
	const budget = 5
	e := serveExternal(t, func(c *Config) {
		c.TLSCert, c.TLSKey = certFile, keyFile
		c.RateLimit = 20
		c.clientLines = budget
	}, "https", client)
	url := "https://" + e.addr
	call := func(token, method, path, body string) int {
		req, err := http.NewRequest(method, url+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		res, err := client.Do(req)
		if err != nil {
			t.Errorf("%s %s: %v", method, path, err)
			return 0
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode
	}
	var created struct{ Token string }
	req, _ := http.NewRequest("POST", url+"/v1/tokens", strings.NewReader(`{"name":"flood","read":["shared"]}`))
	req.Header.Set("Authorization", "Bearer "+e.token)
	res, err := client.Do(req)
	if err != nil || res.StatusCode != 201 {
		t.Fatalf("create token: %v %v", res, err)
	}
	if err := json.NewDecoder(res.Body).Decode(&created); err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	offset := len(e.logs.String())

	// The flood: requests without a token, with an unknown one, with a token over its rate
	// limit, and plain HTTP sent to the HTTPS port.
	// Lines within the budget: each such answer's request line, and its error line when it
	// is an error (the log is at debug level); each connection's line.
	var budgeted atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 300 {
				token, path := "", "/health"
				switch i % 3 {
				case 1:
					token, path = "sl_unknown", "/v1/kv/shared/x"
				case 2:
					token, path = created.Token, "/v1/kv/shared/x"
				}
				if w == 0 && i%50 == 0 {
					c, err := net.Dial("tcp", e.addr)
					if err != nil {
						t.Error(err)
						continue
					}
					_, _ = c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
					_, _ = io.Copy(io.Discard, c)
					c.Close()
					budgeted.Add(1)
				}
				if status := call(token, "GET", path, ""); token != created.Token || status == http.StatusTooManyRequests {
					budgeted.Add(1)
					if status >= 400 {
						budgeted.Add(1)
					}
				}
			}
		}()
	}
	if status := call(e.token, "PUT", "/v1/kv/shared/during-the-flood", "v"); status != 200 {
		t.Fatalf("a write during the flood: %d", status)
	}
	wg.Wait()
	elapsed := time.Since(start)
	time.Sleep(1100 * time.Millisecond) // a second's budget again
	call("", "GET", "/health", "")
	budgeted.Add(1)

	var written, leftOut int64
	var audit, writeLine bool
	for _, line := range strings.Split(strings.TrimSpace(e.logs.String()[offset:]), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line is not JSON: %s", line)
		}
		msg, _ := m["msg"].(string)
		switch {
		case m["audit"] == true:
			audit = audit || strings.Contains(fmt.Sprint(m["keys"]), "shared/during-the-flood")
		case msg == "request" && m["token"] == "admin":
			writeLine = writeLine || m["path"] == "/v1/kv/shared/during-the-flood"
		case msg == "request" && (m["token"] == "" || m["status"] == float64(http.StatusTooManyRequests)),
			msg == "request error" && (m["status"] == float64(http.StatusUnauthorized) || m["status"] == float64(http.StatusTooManyRequests)),
			strings.Contains(msg, "TLS handshake error"):
			written++
		case strings.HasPrefix(msg, "log lines left out"):
			n, _ := m["left_out"].(float64)
			leftOut += int64(n)
		}
	}
	// The budget: a second's lines at once, then budget a second (and one more second for the
	// pause after the flood).
	if most := int64(budget * (elapsed.Seconds() + 3)); written > most {
		t.Errorf("the flood of %d requests and connections wrote %d lines in %v; want at most %d", budgeted.Load(), written, elapsed, most)
	}
	if leftOut == 0 || written+leftOut != budgeted.Load() {
		t.Errorf("%d lines written and %d said left out; want %d together, some left out", written, leftOut, budgeted.Load())
	}
	if !audit || !writeLine {
		t.Errorf("the write during the flood: audit line %v, request line %v; want both", audit, writeLine)
	}
}
