//go:build unix

package server

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/sdnotify"
)

// notifySocket listens like systemd on $NOTIFY_SOCKET and returns the states it receives.
func notifySocket(t *testing.T) <-chan string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv(sdnotify.SocketEnv, path)
	ch := make(chan string, 16)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(ch)
				return
			}
			ch <- string(buf[:n])
		}
	}()
	return ch
}

func nextState(t *testing.T, ch <-chan string, want string) {
	t.Helper()
	select {
	case got := <-ch:
		if got != want {
			t.Fatalf("systemd was told %q, want %q", got, want)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("systemd was not told %q", want)
	}
}

// TestRun_SystemdSighupDrainAndJSONLogs runs Run as the binary does, on an embedded etcd:
// systemd hears READY, RELOADING/READY around SIGHUP and STOPPING; ending ctx answers the open
// long-poll 304; and every log line, etcd's included, is JSON, with the request id on the
// lines of each request.
func TestRun_SystemdSighupDrainAndJSONLogs(t *testing.T) {
	states := notifySocket(t)
	dir := t.TempDir()
	var logs syncBuffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := testConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.DataDir = dir
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, log) }()

	nextState(t, states, "READY=1")
	var addr string
	for _, line := range strings.Split(logs.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "serving" {
			addr, _ = m["addr"].(string)
		}
	}
	if addr == "" {
		t.Fatalf("no serving line with the address:\n%s", logs.String())
	}
	url := "http://" + addr
	data, err := os.ReadFile(filepath.Join(dir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(data))
	do := func(method, path, body, id string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, url+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set(api.HeaderRequestID, id)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		res.Body.Close()
		return res
	}
	res := do("PUT", "/v1/kv/appliances/web/a", "1", "req-put")
	if res.StatusCode != 200 {
		t.Fatalf("put: %d", res.StatusCode)
	}
	rev := res.Header.Get(api.HeaderIndex)
	do("GET", "/v1/kv/appliances/web/missing", "", "req-404")
	do("PUT", "/v1/kv/bad..key/", "1", "req-400")

	// SIGHUP reloads (nothing, without TLS) and does not end the process.
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	nextState(t, states, "RELOADING=1")
	nextState(t, states, "READY=1")
	if res := do("GET", "/health", "", "req-health"); res.StatusCode != 200 {
		t.Fatalf("after SIGHUP: %d", res.StatusCode)
	}

	// Ending ctx (SIGTERM in the binary) answers the open long-poll with 304.
	polled := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("GET", url+"/v1/appliances/web?index="+rev+"&wait=5m", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set(api.HeaderRequestID, "req-poll")
		res, err := testClient.Do(req)
		if err != nil {
			polled <- 0
			return
		}
		res.Body.Close()
		polled <- res.StatusCode
	}()
	waitFor(t, "the long-poll open", func() bool {
		req, _ := http.NewRequest("GET", url+"/v1/status", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer res.Body.Close()
		var st Status
		json.NewDecoder(res.Body).Decode(&st)
		return st.LongPolls == 1
	})
	cancel()
	nextState(t, states, "STOPPING=1")
	select {
	case code := <-polled:
		if code != http.StatusNotModified {
			t.Fatalf("long-poll at shutdown: %d, want 304", code)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the long-poll was not answered at shutdown")
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after ctx ended")
	}

	// Every line is JSON; each request's lines carry its id.
	ids := map[string]int{}
	var etcdLines, lines int
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		lines++
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		if m["time"] == nil || m["level"] == nil || m["msg"] == nil {
			t.Fatalf("log line lacks time, level or msg: %s", line)
		}
		if c, _ := m["component"].(string); strings.HasPrefix(c, "etcd") {
			etcdLines++
		}
		switch m["msg"] {
		case "request", "request error", "write":
			id, _ := m["request_id"].(string)
			if id == "" {
				t.Fatalf("request line without request_id: %s", line)
			}
			ids[id]++
		}
	}
	for id, want := range map[string]int{"req-put": 2, "req-404": 2, "req-400": 2, "req-poll": 1} {
		if ids[id] != want {
			t.Errorf("request %s has %d log lines, want %d (access, error or audit)", id, ids[id], want)
		}
	}
	for _, msg := range []string{`"msg":"serving"`, `"msg":"draining"`, `"msg":"stopped"`, `"msg":"reload: nothing to reload (no --tls-cert)"`} {
		if !strings.Contains(logs.String(), msg) {
			t.Errorf("no %s line", msg)
		}
	}
	t.Logf("%d log lines, %d from etcd", lines, etcdLines)
}
