package packaging

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// dockerfile is the final stage of ../Dockerfile as the instructions that
// matter at run time.
type dockerfile struct {
	stages      []string // FROM lines
	buildRuns   []string // RUN lines of the first stage
	user        string
	env         map[string]string
	volumes     []string
	expose      []string
	entrypoint  []string
	healthcheck []string
}

func parseDockerfile(t *testing.T) dockerfile {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	// Join continuation lines, drop comments.
	var lines []string
	var cur strings.Builder
	sc := bufio.NewScanner(strings.NewReader(string(raw)))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(l, "#") || (l == "" && cur.Len() == 0) {
			continue
		}
		if strings.HasSuffix(l, "\\") {
			cur.WriteString(strings.TrimSuffix(l, "\\") + " ")
			continue
		}
		cur.WriteString(l)
		lines = append(lines, cur.String())
		cur.Reset()
	}
	d := dockerfile{env: map[string]string{}}
	jsonArray := func(s string) []string {
		var a []string
		if err := json.Unmarshal([]byte(s), &a); err != nil {
			t.Fatalf("%q is not the exec (JSON) form: %v", s, err)
		}
		return a
	}
	envPair := regexp.MustCompile(`([A-Z_][A-Z0-9_]*)=(\S+)`)
	for _, l := range lines {
		instr, rest, _ := strings.Cut(l, " ")
		rest = strings.TrimSpace(rest)
		switch strings.ToUpper(instr) {
		case "FROM":
			d.stages = append(d.stages, rest)
		case "RUN":
			if len(d.stages) == 1 {
				d.buildRuns = append(d.buildRuns, rest)
			}
		}
		if len(d.stages) < 2 {
			continue
		}
		switch strings.ToUpper(instr) {
		case "USER":
			d.user = rest
		case "ENV":
			for _, m := range envPair.FindAllStringSubmatch(rest, -1) {
				d.env[m[1]] = m[2]
			}
		case "VOLUME":
			d.volumes = append(d.volumes, strings.Fields(rest)...)
		case "EXPOSE":
			d.expose = append(d.expose, strings.Fields(rest)...)
		case "ENTRYPOINT":
			d.entrypoint = jsonArray(rest)
		case "HEALTHCHECK":
			_, cmd, ok := strings.Cut(rest, "CMD ")
			if !ok {
				t.Fatalf("HEALTHCHECK without CMD: %q", rest)
			}
			d.healthcheck = jsonArray(strings.TrimSpace(cmd))
		}
	}
	return d
}

func TestDockerfile(t *testing.T) {
	d := parseDockerfile(t)
	if len(d.stages) != 2 || !strings.HasPrefix(d.stages[0], "golang:1.26") {
		t.Errorf("stages %q: want a golang:1.26 builder and one final stage", d.stages)
	}
	if !strings.Contains(strings.Join(d.buildRuns, "\n"), "make build") {
		t.Errorf("the builder does not run make build: %q", d.buildRuns)
	}
	if u := strings.Split(d.user, ":")[0]; u == "" || u == "root" || u == "0" {
		t.Errorf("USER %q: the image must run as a non-root user", d.user)
	}
	if strings.Join(d.expose, " ") != "7400" {
		t.Errorf("EXPOSE %q, want 7400", d.expose)
	}
	if strings.Join(d.entrypoint, " ") != "/usr/bin/shoelace server" {
		t.Errorf("ENTRYPOINT %q", d.entrypoint)
	}
	if strings.Join(d.healthcheck, " ") != "/usr/bin/shoelace health" {
		t.Errorf("HEALTHCHECK CMD %q, want the binary's own health command", d.healthcheck)
	}
	if len(d.volumes) != 1 || d.volumes[0] != d.env["SHOELACE_DATA_DIR"] {
		t.Errorf("VOLUME %q is not SHOELACE_DATA_DIR %q: the embedded store would not persist", d.volumes, d.env["SHOELACE_DATA_DIR"])
	}
	// `shoelace health` dials --addr's default, http://127.0.0.1:7400: the
	// server must listen on that port.
	if _, port, _ := net.SplitHostPort(d.env["SHOELACE_LISTEN"]); port != "7400" {
		t.Errorf("SHOELACE_LISTEN=%q: health checks http://127.0.0.1:7400", d.env["SHOELACE_LISTEN"])
	}
}

// TestDockerfile_Runtime runs the packaged server binary the way the image
// does — as uid/gid 65532 (distroless "nonroot"), with only the image's
// environment and the volume as data directory — and runs the HEALTHCHECK
// command against it. No Docker engine is needed. The port is a free one
// instead of 7400, given to both the server and the check.
// The health check asks SHOELACE_ADDR (default http://127.0.0.1:7400), not the port the server
// listens on: `docker run -e SHOELACE_LISTEN=0.0.0.0:8080` made a container that served and was
// marked unhealthy at every check. The Dockerfile says to set SHOELACE_ADDR with another port.
func TestDockerfile_HealthCheckFollowsAnotherPort(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`SHOELACE_LISTEN=0\.0\.0\.0:(\d+)\)?\s*(#\s*)?needs\s+(#\s*)?SHOELACE_ADDR=http://127\.0\.0\.1:(\d+)`).Match(raw) {
		t.Error("the Dockerfile does not say that a server on another port (SHOELACE_LISTEN) needs SHOELACE_ADDR for its health check")
	}
}

func TestDockerfile_Runtime(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run as uid 65532")
	}
	d := parseDockerfile(t)
	extracted := extractBinaries(t, packages(t))
	const uid = 65532
	// A directory the user can reach (t.TempDir's parents are 0700).
	vol, err := os.MkdirTemp("", "shoelace-image-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(vol) })
	if err := os.Chmod(vol, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(vol, "usr-bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(extracted, "shoelace"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "shoelace"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(vol, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(data, uid, uid); err != nil {
		t.Fatal(err)
	}
	// The port is free when picked, but another test may take it before the server binds it:
	// then the server exits at once, and another port is tried.
	var server *exec.Cmd
	var stderr *strings.Builder
	var done chan error
	for attempt := 1; ; attempt++ {
		var ok bool
		server, stderr, done, ok = startImage(t, d, bin, data, uid)
		if ok {
			break
		}
		if attempt == 3 || !strings.Contains(stderr.String(), "address already in use") {
			t.Fatalf("server exited: %s", stderr.String())
		}
	}

	// The store and the admin token live in the volume, owned by the user.
	fi, err := os.Stat(filepath.Join(data, "admin.token"))
	if err != nil {
		t.Fatalf("admin token not in the volume: %v", err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != uid || fi.Mode().Perm() != 0o600 {
		t.Errorf("admin.token: uid %d mode %v, want %d and 0600", st.Uid, fi.Mode().Perm(), uid)
	}

	if err := server.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		done <- err
		if err != nil {
			t.Errorf("exit after SIGTERM (docker stop): %v\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Errorf("still running 30s after SIGTERM: docker stop would kill it")
	}
}

// startImage starts the image's entrypoint as uid on a free port, with bin as /usr/bin and data
// as the volume, and waits for its HEALTHCHECK to pass; ok is false when the server exited
// first (its stderr says why). The server is killed when the test ends.
func startImage(t *testing.T, d dockerfile, bin, data string, uid uint32) (server *exec.Cmd, stderr *strings.Builder, done chan error, ok bool) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(l.Addr().String())
	l.Close()

	env := []string{"PATH=/usr/bin:/bin", "HOME=/"}
	for k, v := range d.env {
		switch k {
		case "SHOELACE_DATA_DIR":
			v = data
		case "SHOELACE_LISTEN":
			host, _, _ := net.SplitHostPort(v)
			v = net.JoinHostPort(host, port)
		}
		env = append(env, k+"="+v)
	}
	image := func(ctx context.Context, argv []string) *exec.Cmd {
		path := filepath.Join(bin, filepath.Base(argv[0]))
		cmd := exec.CommandContext(ctx, path, argv[1:]...)
		cmd.Env = append(env, "SHOELACE_ADDR=http://127.0.0.1:"+port)
		cmd.Dir = "/"
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
		return cmd
	}

	server = image(context.Background(), d.entrypoint)
	stderr = &strings.Builder{}
	server.Stderr = stderr
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	done = make(chan error, 1)
	go func() { done <- server.Wait() }()
	t.Cleanup(func() {
		_ = server.Process.Kill()
		done <- <-done // and leave it for whoever else waits
	})

	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := image(ctx, d.healthcheck).Run()
		cancel()
		if err == nil {
			return server, stderr, done, true
		}
		select {
		case err := <-done:
			done <- err
			return server, stderr, done, false
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("HEALTHCHECK still failing after 60s: %v\n%s", err, stderr.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}
