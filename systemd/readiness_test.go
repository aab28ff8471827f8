package systemd

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/testbin"
)

// The units are Type=notify with ExecReload sending SIGHUP. These tests run
// the real binaries the way systemd does (NOTIFY_SOCKET set, SIGHUP for
// reload, SIGTERM for stop) and check that each reports READY=1, survives a
// reload and stops cleanly.

func buildBinaries(t *testing.T) (server, agent string) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: builds both binaries and runs them")
	}
	bins, err := testbin.Build(t.TempDir(), nil, "./cmd/shoelace", "./cmd/shoelace-agent")
	if err != nil {
		t.Fatal(err)
	}
	return bins[0], bins[1]
}

// notifySocket listens like systemd does and delivers each datagram.
func notifySocket(t *testing.T) (string, <-chan string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan string, 64)
	go func() {
		defer close(ch)
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			ch <- string(buf[:n])
		}
	}()
	t.Cleanup(func() { conn.Close() })
	return path, ch
}

// waitNotify waits for a datagram with the line want, and returns every
// datagram seen.
func waitNotify(t *testing.T, ch <-chan string, want string, timeout time.Duration, what string) []string {
	t.Helper()
	var seen []string
	deadline := time.After(timeout)
	for {
		select {
		case msg, ok := <-ch:
			if !ok {
				t.Fatalf("%s: notify socket closed; seen %q", what, seen)
			}
			seen = append(seen, msg)
			for _, line := range strings.Split(msg, "\n") {
				if line == want {
					return seen
				}
			}
		case <-deadline:
			t.Fatalf("%s: no %s on NOTIFY_SOCKET within %v (seen %q); the unit is Type=notify, so systemd would fail the start", what, want, timeout, seen)
		}
	}
}

type proc struct {
	cmd    *exec.Cmd
	done   chan error
	stderr *bytes.Buffer
}

func start(t *testing.T, env []string, name string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(name, args...), done: make(chan error, 1), stderr: &bytes.Buffer{}}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

func (p *proc) alive(t *testing.T, what string) {
	t.Helper()
	select {
	case err := <-p.done:
		p.done <- err
		t.Fatalf("%s: process exited: %v\n%s", what, err, p.stderr.String())
	default:
	}
}

// stop sends SIGTERM as systemctl stop does and wants a clean exit.
func (p *proc) stop(t *testing.T, timeout time.Duration) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		p.done <- err
		if err != nil {
			t.Errorf("exit after SIGTERM: %v\n%s", err, p.stderr.String())
		}
	case <-time.After(timeout):
		t.Errorf("still running %v after SIGTERM (TimeoutStopSec=30s)", timeout)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func healthy(addr string) bool {
	resp, err := http.Get("http://" + addr + "/health")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func TestServer_NotifyReloadStop(t *testing.T) {
	serverBin, _ := buildBinaries(t)
	sock, notes := notifySocket(t)
	dir := t.TempDir()
	addr := freeAddr(t)
	p := start(t, []string{"NOTIFY_SOCKET=" + sock, "SHOELACE_DATA_DIR=" + filepath.Join(dir, "data"),
		"SHOELACE_ADMIN_TOKEN_FILE=" + filepath.Join(dir, "admin.token"), "SHOELACE_LISTEN=" + addr},
		serverBin, "server")
	waitNotify(t, notes, "READY=1", 60*time.Second, "shoelace server start")
	if !healthy(addr) {
		t.Fatalf("READY=1 before /health answers 200")
	}

	// systemctl reload: the server must not die of SIGHUP (Go's default).
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	seen := waitNotify(t, notes, "READY=1", 30*time.Second, "shoelace server reload")
	if !strings.Contains(strings.Join(seen, "\n"), "RELOADING=1") {
		t.Errorf("no RELOADING=1 before READY=1 on SIGHUP: %q", seen)
	}
	p.alive(t, "after SIGHUP (ExecReload)")
	if !healthy(addr) {
		t.Errorf("/health not 200 after SIGHUP")
	}
	p.stop(t, 30*time.Second)
	waitNotify(t, notes, "STOPPING=1", 5*time.Second, "shoelace server stop")
}

func TestAgent_NotifyReloadStop(t *testing.T) {
	serverBin, agentBin := buildBinaries(t)
	dir := t.TempDir()
	addr := freeAddr(t)
	adminFile := filepath.Join(dir, "admin.token")
	srv := start(t, []string{"SHOELACE_DATA_DIR=" + filepath.Join(dir, "data"),
		"SHOELACE_ADMIN_TOKEN_FILE=" + adminFile, "SHOELACE_LISTEN=" + addr, "SHOELACE_LOG_LEVEL=warn"},
		serverBin, "server")
	deadline := time.Now().Add(60 * time.Second)
	for {
		if b, err := os.ReadFile(adminFile); err == nil && len(bytes.TrimSpace(b)) > 0 && healthy(addr) {
			break
		}
		srv.alive(t, "server start")
		if time.Now().After(deadline) {
			t.Fatalf("server not ready after 60s\n%s", srv.stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	cli := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(serverBin, args...)
		cmd.Env = append(os.Environ(), "SHOELACE_ADDR=http://"+addr, "SHOELACE_TOKEN_FILE="+adminFile)
		out, err := cmd.Output()
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				t.Fatalf("shoelace %s: %v\n%s", strings.Join(args, " "), err, ee.Stderr)
			}
			t.Fatal(err)
		}
		return string(out)
	}
	cli("kv", "put", "appliances/web/motd", "hello")
	lines := strings.Split(strings.TrimSpace(cli("token", "create", "--name", "web-agent", "--appliance", "web")), "\n")
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(lines[len(lines)-1]), 0o600); err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(dir, "out", "motd")
	config := filepath.Join(dir, "agent.yaml")
	cfg := fmt.Sprintf("server: http://%s\ntoken_file: %s\nappliance: web\ncache_dir: %s\ntemplates:\n  - contents: '{{ key \"motd\" }}'\n    destination: %s\n",
		addr, tokenFile, filepath.Join(dir, "cache"), dest)
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	sock, notes := notifySocket(t)
	p := start(t, []string{"NOTIFY_SOCKET=" + sock}, agentBin, "run", "--config", config)
	waitNotify(t, notes, "READY=1", 60*time.Second, "shoelace-agent run start")
	if b, err := os.ReadFile(dest); err != nil || string(b) != "hello" {
		t.Errorf("READY=1 but %s = %q (%v), want hello", dest, b, err)
	}

	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	seen := waitNotify(t, notes, "READY=1", 30*time.Second, "shoelace-agent reload")
	if !strings.Contains(strings.Join(seen, "\n"), "RELOADING=1") {
		t.Errorf("no RELOADING=1 before READY=1 on SIGHUP: %q", seen)
	}
	p.alive(t, "after SIGHUP (ExecReload)")
	p.stop(t, 30*time.Second)
	waitNotify(t, notes, "STOPPING=1", 5*time.Second, "shoelace-agent stop")
}
