package bake

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/testbin"
)

// binaries builds cmd/shoelace and cmd/shoelace-agent into a temp dir, or
// skips while they do not build.
func binaries(t *testing.T) (server, agent string) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: builds both binaries and runs a server")
	}
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash not installed")
	}
	bins, err := testbin.Build(t.TempDir(), nil, "./cmd/shoelace", "./cmd/shoelace-agent")
	if err != nil {
		t.Fatal(err)
	}
	return bins[0], bins[1]
}

type testServer struct {
	addr       string
	adminToken string
	bin        string
	adminFile  string
}

// startServer runs `shoelace server` on an embedded etcd in a temp dir.
func startServer(t *testing.T, bin string) *testServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := l.Addr().String()
	l.Close()
	dir := t.TempDir()
	s := &testServer{addr: "http://" + listen, bin: bin, adminFile: filepath.Join(dir, "admin.token")}
	var stderr bytes.Buffer
	cmd := exec.Command(bin, "server", "--listen", listen, "--data-dir", filepath.Join(dir, "data"),
		"--admin-token-file", s.adminFile, "--log-level", "warn")
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	var healthySince time.Time
	for {
		select {
		case err := <-done:
			t.Fatalf("server exited: %v\n%s", err, stderr.String())
		default:
		}
		resp, err := http.Get(s.addr + "/health")
		if err == nil {
			resp.Body.Close()
			b, ferr := os.ReadFile(s.adminFile)
			if resp.StatusCode == http.StatusOK && ferr == nil && len(bytes.TrimSpace(b)) > 0 {
				s.adminToken = string(bytes.TrimSpace(b))
				return s
			}
			if resp.StatusCode == http.StatusOK && healthySince.IsZero() {
				healthySince = time.Now()
			}
			if !healthySince.IsZero() && time.Since(healthySince) > 15*time.Second {
				t.Fatalf("the server is healthy but wrote no admin token to %s after 15s\n%s", s.adminFile, stderr.String())
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not healthy after 60s: %v\n%s", err, stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (s *testServer) put(t *testing.T, path, contentType, body string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, s.addr+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+s.adminToken)
	req.Header.Set("Content-Type", contentType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		t.Fatalf("PUT %s: %s %s", path, resp.Status, b.String())
	}
}

// agentToken creates a token for appliance with the CLI, as an operator
// would, and returns its secret (the last line of the output).
func (s *testServer) agentToken(t *testing.T, name, appliance string) string {
	t.Helper()
	cmd := exec.Command(s.bin, "token", "create", "--name", name, "--appliance", appliance)
	cmd.Env = append(os.Environ(), "SHOELACE_ADDR="+s.addr, "SHOELACE_TOKEN_FILE="+s.adminFile)
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("token create: %v\n%s", err, ee.Stderr)
		}
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// bake runs bake.sh with env (plus PATH) and returns its exit code and output.
func bake(t *testing.T, env ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "bake.sh")
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, env...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &ee):
		return ee.ExitCode(), string(out)
	default:
		t.Fatalf("bake.sh: %v", err)
		return -1, ""
	}
}

// tree lists every file and directory under root, relative, dirs with '/'.
func tree(t *testing.T, root string) []string {
	t.Helper()
	var got []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() {
			rel += "/"
		}
		got = append(got, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	return got
}

// newRoot makes a temp root with the appliance's template entries in
// etc/shoelace/templates.d and a stale file in the cache directory.
func newRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	entries := fmt.Sprintf(`- contents: "server {{ key \"system/ntp\" }} iburst\n# dns {{ key \"system/dns\" }}\n"
  destination: %[1]s/etc/ntp.conf
  stage: system
  perms: "0644"
  command: touch %[1]s/command-ran
- contents: "port={{ key \"app/port\" }}\n"
  destination: %[1]s/etc/app.conf
  stage: application
`, root)
	for path, content := range map[string]string{
		"etc/shoelace/templates.d/web.yaml": entries,
		"var/lib/shoelace/view.json":        `{"stale":"cache from an earlier run"}`,
	} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, path)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, path), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func rootEnv(root, agent string) []string {
	return []string{
		"SHOELACE_CONFIG_DIR=" + root + "/etc/shoelace",
		"SHOELACE_CACHE_DIR=" + root + "/var/lib/shoelace",
		"SHOELACE_AGENT=" + agent,
		"SKIP_ENABLE=1",
		"APPLIANCE=web",
	}
}

func TestBake(t *testing.T) {
	serverBin, agentBin := binaries(t)
	srv := startServer(t, serverBin)
	srv.put(t, "/v1/appliances/web", "application/json", `{"keys":{"system/ntp":"ntp1.example.org","app/port":"8080"}}`)
	srv.put(t, "/v1/kv/shared/system/dns", "text/plain", "10.0.0.53")
	token := srv.agentToken(t, "bake-web", "web")

	t.Run("a token file given is the caller's, and it is told to remove it", func(t *testing.T) {
		root := newRoot(t)
		upload := filepath.Join(t.TempDir(), "bake.token") // Packer's upload, outside the root
		if err := os.WriteFile(upload, []byte(token+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		code, out := bake(t, append(rootEnv(root, agentBin), "SHOELACE_SERVER="+srv.addr, "SHOELACE_BAKE_TOKEN_FILE="+upload)...)
		if code != 0 {
			t.Fatalf("bake.sh exit %d:\n%s", code, out)
		}
		if !strings.Contains(out, "SHOELACE_BAKE_TOKEN_FILE="+upload+" is left where it is: remove it before the image is captured") {
			t.Errorf("bake.sh did not say that the token file it was given stays:\n%s", out)
		}
		if strings.Contains(out, token) {
			t.Errorf("bake.sh printed the token:\n%s", out)
		}
		if _, err := os.Stat(filepath.Join(root, "etc/shoelace/token")); !os.IsNotExist(err) {
			t.Errorf("the token the script wrote is still there: %v", err)
		}
	})

	t.Run("renders the system stage and leaves no token or cache", func(t *testing.T) {
		root := newRoot(t)
		code, out := bake(t, append(rootEnv(root, agentBin), "SHOELACE_SERVER="+srv.addr, "SHOELACE_BAKE_TOKEN="+token)...)
		if code != 0 {
			t.Fatalf("bake.sh exit %d:\n%s", code, out)
		}
		if strings.Contains(out, token) {
			t.Errorf("bake.sh printed the token:\n%s", out)
		}
		want := []string{
			"etc/", "etc/ntp.conf", "etc/shoelace/", "etc/shoelace/agent.yaml",
			"etc/shoelace/templates.d/", "etc/shoelace/templates.d/web.yaml",
			"var/", "var/lib/", "var/lib/shoelace/",
		}
		if got := tree(t, root); !slices.Equal(got, want) {
			t.Errorf("files after bake:\n got %q\nwant %q\n(no token, no cache, no application-stage file, no command marker)", got, want)
		}
		if b, _ := os.ReadFile(filepath.Join(root, "etc/ntp.conf")); string(b) != "server ntp1.example.org iburst\n# dns 10.0.0.53\n" {
			t.Errorf("etc/ntp.conf = %q", b)
		}
		if fi, err := os.Stat(filepath.Join(root, "var/lib/shoelace")); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("cache dir: %v %v, want mode 0700", fi.Mode(), err)
		}
		cfg, _ := os.ReadFile(filepath.Join(root, "etc/shoelace/agent.yaml"))
		for _, want := range []string{`appliance: "web"`, `token_file: "` + root + `/etc/shoelace/token"`, `server: "` + srv.addr + `"`} {
			if !bytes.Contains(cfg, []byte(want)) {
				t.Errorf("agent.yaml lacks %s:\n%s", want, cfg)
			}
		}
		if bytes.Contains(cfg, []byte(token)) {
			t.Errorf("agent.yaml holds the token")
		}
	})

	// Packer uploads files to /tmp, which the VM made from the image does not have (nor the
	// service: PrivateTmp): the generated config named the CA where it was given, and on the VM
	// the agent, given its token by first boot as the README says, stopped at "ca_file: stat
	// /tmp/ca.pem: no such file or directory".
	t.Run("the CA goes into the image with the config that names it", func(t *testing.T) {
		root := newRoot(t)
		upload := filepath.Join(t.TempDir(), "ca.pem")
		caPEM := selfSignedCA(t)
		if err := os.WriteFile(upload, caPEM, 0o644); err != nil {
			t.Fatal(err)
		}
		code, out := bake(t, append(rootEnv(root, agentBin), "SHOELACE_SERVER="+srv.addr, "SHOELACE_BAKE_TOKEN="+token, "SHOELACE_CA_FILE="+upload)...)
		if code != 0 {
			t.Fatalf("bake.sh exit %d:\n%s", code, out)
		}
		if err := os.Remove(upload); err != nil { // the build's upload directory is gone
			t.Fatal(err)
		}
		inImage := filepath.Join(root, "etc/shoelace/ca.pem")
		if b, err := os.ReadFile(inImage); err != nil || !bytes.Equal(b, caPEM) {
			t.Fatalf("%s: %v; want the CA given", inImage, err)
		}
		if fi, _ := os.Stat(inImage); fi.Mode().Perm() != 0o644 {
			t.Errorf("%s mode %v, want 0644", inImage, fi.Mode().Perm())
		}
		config := filepath.Join(root, "etc/shoelace/agent.yaml")
		if cfg, _ := os.ReadFile(config); !bytes.Contains(cfg, []byte(`ca_file: "`+inImage+`"`)) {
			t.Errorf("agent.yaml does not name %s:\n%s", inImage, cfg)
		}
		// First boot writes the token; the baked config works as it is.
		if err := os.WriteFile(filepath.Join(root, "etc/shoelace/token"), []byte(token), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(agentBin, "once", "--config", config, "--stage", "system", "--no-commands")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("the agent with the baked config and a token: %v\n%s", err, out)
		}
	})

	t.Run("installs a given agent config", func(t *testing.T) {
		root := t.TempDir()
		given := filepath.Join(t.TempDir(), "agent.yaml")
		cfg := fmt.Sprintf("server: %s\ntoken_file: %s/etc/shoelace/token\nappliance: web\ncache_dir: %s/var/lib/shoelace\ntemplates:\n  - contents: 'ntp {{ key \"system/ntp\" }}'\n    destination: %s/etc/ntp.conf\n    stage: system\n",
			srv.addr, root, root, root)
		if err := os.WriteFile(given, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		code, out := bake(t, append(rootEnv(root, agentBin), "SHOELACE_SERVER="+srv.addr, "SHOELACE_BAKE_TOKEN="+token, "SHOELACE_AGENT_CONFIG="+given)...)
		if code != 0 {
			t.Fatalf("bake.sh exit %d:\n%s", code, out)
		}
		if b, _ := os.ReadFile(filepath.Join(root, "etc/shoelace/agent.yaml")); string(b) != cfg {
			t.Errorf("installed agent.yaml differs from SHOELACE_AGENT_CONFIG:\n%s", b)
		}
		if b, _ := os.ReadFile(filepath.Join(root, "etc/ntp.conf")); string(b) != "ntp ntp1.example.org" {
			t.Errorf("etc/ntp.conf = %q", b)
		}
		if _, err := os.Stat(filepath.Join(root, "etc/shoelace/token")); !os.IsNotExist(err) {
			t.Errorf("token left behind: %v", err)
		}
	})

	t.Run("a refused token fails the bake and still removes the token", func(t *testing.T) {
		root := newRoot(t)
		bogus := "not-a-real-token-0123456789abcdef"
		code, out := bake(t, append(rootEnv(root, agentBin), "SHOELACE_SERVER="+srv.addr, "SHOELACE_BAKE_TOKEN="+bogus)...)
		if code == 0 {
			t.Fatalf("bake.sh succeeded with a bogus token:\n%s", out)
		}
		if !strings.Contains(out, "token") {
			t.Errorf("output does not say the token was refused:\n%s", out)
		}
		for _, absent := range []string{"etc/shoelace/token", "etc/ntp.conf", "var/lib/shoelace/view.json"} {
			if _, err := os.Stat(filepath.Join(root, absent)); !os.IsNotExist(err) {
				t.Errorf("%s exists after a failed bake", absent)
			}
		}
	})

	t.Run("an unreachable server fails the bake", func(t *testing.T) {
		root := newRoot(t)
		l, _ := net.Listen("tcp", "127.0.0.1:0")
		dead := "http://" + l.Addr().String()
		l.Close()
		code, out := bake(t, append(rootEnv(root, agentBin), "SHOELACE_SERVER="+dead, "SHOELACE_BAKE_TOKEN="+token)...)
		if code == 0 {
			t.Fatalf("bake.sh succeeded against %s:\n%s", dead, out)
		}
		if !strings.Contains(out, strings.TrimPrefix(dead, "http://")) {
			t.Errorf("output does not name the unreachable server:\n%s", out)
		}
		if _, err := os.Stat(filepath.Join(root, "etc/shoelace/token")); !os.IsNotExist(err) {
			t.Errorf("token left behind after a failed bake")
		}
	})
}

// selfSignedCA returns a CA certificate in PEM.
func selfSignedCA(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "bake test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// TestBake_Refusals needs no server: bad input is refused before anything
// is written.
func TestBake_Refusals(t *testing.T) {
	tests := []struct {
		name string
		env  []string
		want string
	}{
		{"no server", []string{"APPLIANCE=web", "SHOELACE_BAKE_TOKEN=x"}, "SHOELACE_SERVER is required"},
		{"server not a URL", []string{"SHOELACE_SERVER=shoelace:7400", "APPLIANCE=web", "SHOELACE_BAKE_TOKEN=x"}, "want an http:// or https:// URL"},
		{"no appliance", []string{"SHOELACE_SERVER=http://127.0.0.1:1", "SHOELACE_BAKE_TOKEN=x"}, "APPLIANCE is required"},
		{"appliance not a segment", []string{"SHOELACE_SERVER=http://127.0.0.1:1", "APPLIANCE=../etc", "SHOELACE_BAKE_TOKEN=x"}, "an appliance name is one key segment"},
		{"no token", []string{"SHOELACE_SERVER=http://127.0.0.1:1", "APPLIANCE=web"}, "SHOELACE_BAKE_TOKEN (or SHOELACE_BAKE_TOKEN_FILE) is required"},
		{"relative config dir", []string{"SHOELACE_SERVER=http://127.0.0.1:1", "APPLIANCE=web", "SHOELACE_BAKE_TOKEN=x", "SHOELACE_CONFIG_DIR=etc/shoelace"}, "etc/shoelace: want an absolute path"},
		{"package of another kind", []string{"SHOELACE_SERVER=http://127.0.0.1:1", "APPLIANCE=web", "SHOELACE_BAKE_TOKEN=x", "SHOELACE_PACKAGE=/tmp/agent.tar.gz"}, "want a .deb or .rpm"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			env := []string{"SHOELACE_CONFIG_DIR=" + root + "/etc/shoelace", "SHOELACE_CACHE_DIR=" + root + "/cache", "SKIP_ENABLE=1", "SHOELACE_AGENT=/bin/false"}
			code, out := bake(t, append(env, tt.env...)...)
			if code != 2 || !strings.Contains(out, tt.want) {
				t.Errorf("exit %d, output %q; want exit 2 and %q", code, out, tt.want)
			}
			if got := tree(t, root); len(got) != 0 {
				t.Errorf("wrote %q before refusing", got)
			}
		})
	}
}
