package scripts

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/testbin"
)

// runTree lays out what run.sh needs, the way a clone holds it, in a temporary directory:
// scripts/run.sh, examples/web-frontend/, bin/ with freshly built commands, and a Makefile
// whose build target does nothing (run.sh calls `make -s build`; the binaries are built here).
func runTree(t *testing.T) string {
	t.Helper()
	for _, tool := range []string{"bash", "make"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	root := t.TempDir()
	if _, err := testbin.Build(filepath.Join(root, "bin"), nil, "./cmd/shoelace", "./cmd/shoelace-agent"); err != nil {
		t.Fatal(err)
	}
	copyFile(t, "run.sh", filepath.Join(root, "scripts", "run.sh"))
	example := filepath.Join("..", "examples", "web-frontend")
	err := filepath.WalkDir(example, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(example, p)
		if err != nil {
			return err
		}
		copyFile(t, p, filepath.Join(root, "examples", "web-frontend", rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "Makefile"), []byte("build:\n\t@true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return root
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o755); err != nil {
		t.Fatal(err)
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

// runScript is one `make run`: the script in its own process group, as a terminal runs a
// foreground job, so that Ctrl-C can be sent the way the terminal sends it.
type runScript struct {
	cmd  *exec.Cmd
	out  *testbin.Buffer
	done chan error
}

// start runs run.sh, directly or (parent) under a bash that stands for make. Settings for
// another server are exported on purpose: run.sh must not use them.
func start(t *testing.T, root, port string, parent bool) *runScript {
	t.Helper()
	script := filepath.Join(root, "scripts", "run.sh")
	cmd := exec.Command("bash", script)
	if parent {
		// "; exit $?" keeps bash from exec'ing the script: it stays its parent.
		cmd = exec.Command("bash", "-c", `bash "$0"; exit $?`, script)
	}
	cmd.Env = append(os.Environ(), "SHOELACE_RUN_PORT="+port,
		"SHOELACE_OUTPUT=json", "SHOELACE_TOKEN=sl_not-this-one", "SHOELACE_ETCD_ENDPOINTS=http://127.0.0.1:1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	r := &runScript{cmd: cmd, out: &testbin.Buffer{}, done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = r.out, r.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pgid := cmd.Process.Pid
	go func() { r.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if groupAlive(pgid) {
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
		}
	})
	return r
}

// groupAlive says whether a live (not zombie) process is left in the process group.
func groupAlive(pgid int) bool {
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		if _, err := strconv.Atoi(d.Name()); err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", d.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp …; comm may hold spaces, so split after its ')'.
		i := strings.LastIndexByte(string(stat), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) > 2 && f[0] != "Z" && f[2] == strconv.Itoa(pgid) {
			return true
		}
	}
	return false
}

func waitFor(t *testing.T, r *runScript, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after %s; run.sh printed:\n%s", what, timeout, r.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func fileHas(path, s string) func() bool {
	return func() bool {
		b, err := os.ReadFile(path)
		return err == nil && strings.Contains(string(b), s)
	}
}

// stopped waits for the script to exit and for nothing to be left in its process group.
func (r *runScript) stopped(t *testing.T, wantCode int) {
	t.Helper()
	select {
	case err := <-r.done:
		var exit *exec.ExitError
		code := 0
		if errors.As(err, &exit) {
			code = exit.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != wantCode {
			t.Errorf("run.sh exited %d, want %d; it printed:\n%s", code, wantCode, r.out.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("run.sh still running 60 s after it was stopped; it printed:\n%s", r.out.String())
	}
	waitFor(t, r, 30*time.Second, "empty process group (the server or the agent outlived run.sh)", func() bool {
		return !groupAlive(r.cmd.Process.Pid)
	})
}

func TestRun_MakeRun(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: runs a server and an agent")
	}
	root := runTree(t)
	port := freePort(t)
	run := filepath.Join(root, "run")
	nginx := filepath.Join(run, "out", "nginx.conf")
	cli := func(t *testing.T, args ...string) string {
		t.Helper()
		cmd := exec.Command(filepath.Join(root, "bin", "shoelace"), args...)
		cmd.Env = []string{"SHOELACE_ADDR=http://127.0.0.1:" + port, "SHOELACE_TOKEN_FILE=" + filepath.Join(run, "admin.token")}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("shoelace %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	running := func(t *testing.T, r *runScript) func() bool {
		return func() bool {
			select {
			case err := <-r.done:
				r.done <- err
				t.Fatalf("run.sh exited (%v) before the server and the agent ran; it printed:\n%s", err, r.out.String())
			default:
			}
			return strings.Contains(r.out.String(), "Shoelace is running")
		}
	}

	t.Run("first run, a change, Ctrl-C", func(t *testing.T) {
		r := start(t, root, port, false)
		waitFor(t, r, 2*time.Minute, "\"Shoelace is running\"", running(t, r))
		want := fmt.Sprintf("export SHOELACE_ADDR=http://127.0.0.1:%s SHOELACE_TOKEN_FILE=%s", port, filepath.Join(run, "admin.token"))
		if !strings.Contains(r.out.String(), want) {
			t.Errorf("run.sh did not print %q; it printed:\n%s", want, r.out.String())
		}
		// The web console, at the URL it prints: its sign-in form.
		console := fmt.Sprintf("http://127.0.0.1:%s/ui/", port)
		if !strings.Contains(r.out.String(), "console  "+console) {
			t.Errorf("run.sh did not print the console's URL %s; it printed:\n%s", console, r.out.String())
		}
		if res, err := http.Get(console); err != nil || res.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %v %v", console, res, err)
		} else {
			res.Body.Close()
		}
		for _, name := range []string{"admin.token", "agent.token"} {
			fi, err := os.Stat(filepath.Join(run, name))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("run/%s has mode %o, want 600", name, fi.Mode().Perm())
			}
		}
		token, err := os.ReadFile(filepath.Join(run, "agent.token"))
		if err != nil || !strings.HasPrefix(string(token), "sl_") {
			t.Errorf("run/agent.token holds %q (%v), want the token's secret alone", token, err)
		}
		waitFor(t, r, 30*time.Second, "listen 8080 in run/out/nginx.conf", fileHas(nginx, "listen 8080;"))
		for _, f := range []string{"resolv.conf", "chrony.conf", "app.env"} {
			waitFor(t, r, 30*time.Second, "run/out/"+f, fileHas(filepath.Join(run, "out", f), "\n"))
		}
		if out := cli(t, "kv", "put", "appliances/web-frontend/app/port", "8081"); !strings.HasPrefix(out, "revision ") {
			t.Errorf("kv put printed %q, want revision N", out)
		}
		waitFor(t, r, 30*time.Second, "listen 8081 in run/out/nginx.conf after kv put", fileHas(nginx, "listen 8081;"))

		if err := syscall.Kill(-r.cmd.Process.Pid, syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		r.stopped(t, 130)
		if !strings.Contains(r.out.String(), "stopping what make run started") {
			t.Errorf("no stop message; run.sh printed:\n%s", r.out.String())
		}
	})

	t.Run("second run on the same store", func(t *testing.T) {
		r := start(t, root, port, false)
		waitFor(t, r, 2*time.Minute, "\"Shoelace is running\"", running(t, r))
		// The example is seeded again: the port is back at the example's 8080.
		waitFor(t, r, 30*time.Second, "listen 8080 in run/out/nginx.conf", fileHas(nginx, "listen 8080;"))
		if err := syscall.Kill(-r.cmd.Process.Pid, syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		r.stopped(t, 130)
	})

	t.Run("make killed", func(t *testing.T) {
		r := start(t, root, port, true)
		waitFor(t, r, 2*time.Minute, "\"Shoelace is running\"", running(t, r))
		// A third run on a store the second run left as the example has it: the seed's puts
		// and apply write nothing, and their notes saying so are not make run's output.
		if out := r.out.String(); strings.Contains(out, "nothing written") {
			t.Errorf("run.sh printed the seed apply's note; it printed:\n%s", out)
		}
		// SIGKILL to the parent alone passes nothing on: run.sh must notice by itself.
		if err := r.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		r.stopped(t, -1)
	})

	t.Run("a second make run beside the first", func(t *testing.T) {
		first := start(t, root, port, false)
		waitFor(t, first, 2*time.Minute, "\"Shoelace is running\"", running(t, first))
		second := start(t, root, freePort(t), false)
		second.stopped(t, 1)
		out := second.out.String()
		if !strings.Contains(out, "is in use by another make run") || !strings.Contains(out, "SHOELACE_RUN_DIR=") {
			t.Errorf("the second run.sh did not name the cause and the way out; it printed:\n%s", out)
		}
		if strings.Contains(out, `"level"`) || strings.Contains(out, "stopping") {
			t.Errorf("the second run.sh printed server log lines or a stop message; it printed:\n%s", out)
		}
		if err := syscall.Kill(-first.cmd.Process.Pid, syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		first.stopped(t, 130)
	})

	// Another program on the port (not a Shoelace server, which the health check finds): the
	// server cannot bind it. Before, run.sh printed the server's bind error alone.
	t.Run("port taken by another program", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:"+port)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		r := start(t, root, port, false)
		r.stopped(t, 1)
		if out := r.out.String(); !strings.Contains(out, "another program listens on 127.0.0.1:"+port) || !strings.Contains(out, "SHOELACE_RUN_PORT=") {
			t.Errorf("run.sh did not name the cause and the way out; it printed:\n%s", out)
		}
	})

	t.Run("admin token rotated", func(t *testing.T) {
		path := filepath.Join(run, "admin.token")
		old, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte("sl_rotated-since\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		r := start(t, root, port, false)
		r.stopped(t, 1)
		out := r.out.String()
		for _, want := range []string{"no longer holds an admin token", "put the current admin token into", "rm -rf run"} {
			if !strings.Contains(out, want) {
				t.Errorf("run.sh did not say %q; it printed:\n%s", want, out)
			}
		}
		if err := os.WriteFile(path, old, 0o600); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("admin token lost", func(t *testing.T) {
		if err := os.Remove(filepath.Join(run, "admin.token")); err != nil {
			t.Fatal(err)
		}
		r := start(t, root, port, false)
		r.stopped(t, 1)
		if !strings.Contains(r.out.String(), "rm -rf run") {
			t.Errorf("run.sh did not say how to start afresh; it printed:\n%s", r.out.String())
		}
	})
}
