package readme

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/testbin"
)

// block is one fenced block of the README.
type block struct {
	line int    // of the opening fence, 1-based
	lang string // the fence's language ("sh", "yaml", "")
	text string
	skip string // the reason of a skip marker
	file string // the path of a file marker
}

var marker = regexp.MustCompile(`^<!-- readme-test: (skip|file) (\S.*?) -->$`)

// parseBlocks returns the fenced blocks of md with their markers. A marker must be followed
// (blank lines aside) by a fence; a block must be closed.
func parseBlocks(md string) ([]block, error) {
	var blocks []block
	lines := strings.Split(md, "\n")
	var pending *block // a marker waiting for its block
	pendingLine := 0
	for i := 0; i < len(lines); i++ {
		line := strings.TrimRight(lines[i], "\r")
		if strings.HasPrefix(line, "<!-- readme-test:") {
			m := marker.FindStringSubmatch(line)
			if m == nil {
				return nil, fmt.Errorf("line %d: marker %q: want <!-- readme-test: skip REASON --> or <!-- readme-test: file PATH -->", i+1, line)
			}
			if pending != nil {
				return nil, fmt.Errorf("line %d: marker of line %d has no block", i+1, pendingLine)
			}
			pending, pendingLine = &block{}, i+1
			if m[1] == "skip" {
				pending.skip = m[2]
			} else {
				pending.file = m[2]
			}
			continue
		}
		if !strings.HasPrefix(line, "```") {
			if pending != nil && strings.TrimSpace(line) != "" {
				return nil, fmt.Errorf("line %d: marker of line %d must be followed by a fenced block", i+1, pendingLine)
			}
			continue
		}
		b := block{line: i + 1, lang: strings.TrimSpace(strings.TrimPrefix(line, "```"))}
		if pending != nil {
			b.skip, b.file = pending.skip, pending.file
			pending = nil
		}
		var body []string
		j := i + 1
		for ; j < len(lines) && strings.TrimRight(lines[j], "\r") != "```"; j++ {
			body = append(body, strings.TrimRight(lines[j], "\r"))
		}
		if j >= len(lines) {
			return nil, fmt.Errorf("line %d: block not closed", i+1)
		}
		b.text = strings.Join(body, "\n") + "\n"
		blocks = append(blocks, b)
		i = j
	}
	if pending != nil {
		return nil, fmt.Errorf("line %d: marker has no block", pendingLine)
	}
	return blocks, nil
}

func TestParseBlocks(t *testing.T) {
	md := "# x\n```sh\necho a\n```\n<!-- readme-test: skip production -->\n\n```sh\nrm -rf /\n```\n" +
		"<!-- readme-test: file /etc/a.yaml -->\n```yaml\nk: v\n```\n```\nplain\n```\n"
	got, err := parseBlocks(md)
	if err != nil {
		t.Fatal(err)
	}
	want := []block{
		{line: 2, lang: "sh", text: "echo a\n"},
		{line: 7, lang: "sh", text: "rm -rf /\n", skip: "production"},
		{line: 11, lang: "yaml", text: "k: v\n", file: "/etc/a.yaml"},
		{line: 14, lang: "", text: "plain\n"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("blocks = %+v\nwant %+v", got, want)
	}
	for _, bad := range []string{
		"<!-- readme-test: skip -->\n```sh\n```\n",
		"<!-- readme-test: skip x -->\ntext\n```sh\n```\n",
		"<!-- readme-test: file a -->\n",
		"```sh\nunclosed\n",
	} {
		if _, err := parseBlocks(bad); err == nil {
			t.Errorf("parseBlocks(%q) accepted it", bad)
		}
	}
}

// TestReadme_Blocks runs the README's blocks in order against a server of its own.
func TestReadme_Blocks(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: runs every README command against a server")
	}
	for _, tool := range []string{"bash", "install", "diff"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed to run the README's commands", tool)
		}
	}
	md, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks, err := parseBlocks(string(md))
	if err != nil {
		t.Fatalf("README.md: %v", err)
	}

	tmp := t.TempDir()
	bin := filepath.Join(tmp, "bin")
	if _, err := testbin.Build(bin, nil, "./cmd/shoelace", "./cmd/shoelace-agent"); err != nil {
		t.Fatal(err)
	}
	work := filepath.Join(tmp, "work") // the user's shell: a checkout's examples/ is at hand
	vm := filepath.Join(tmp, "vm")     // the VM of the agent section
	for _, d := range []string{work, vm + "/etc/shoelace", vm + "/etc/nginx", vm + "/etc/chrony", vm + "/var/lib/shoelace"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	examples, _ := filepath.Abs(filepath.Join("..", "..", "examples"))
	if err := os.Symlink(examples, filepath.Join(work, "examples")); err != nil {
		t.Fatal(err)
	}
	addr := startServer(t, filepath.Join(bin, "shoelace"), filepath.Join(tmp, "data"))
	rewrite := strings.NewReplacer(
		"https://shoelace.internal:7400", "http://"+addr,
		"/etc/", vm+"/etc/",
		"[/etc]", "["+vm+"/etc]",
		"/var/lib/shoelace", vm+"/var/lib/shoelace",
	).Replace

	// Files first: a block may use a file shown after it.
	for _, b := range blocks {
		if b.file == "" || b.skip != "" {
			continue
		}
		path := rewrite(b.file)
		if !filepath.IsAbs(path) {
			path = filepath.Join(work, path)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(rewrite(b.text)), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	env := []string{
		"PATH=" + bin + string(os.PathListSeparator) + os.Getenv("PATH"),
		"HOME=" + tmp,
		"SHOELACE_ADDR=http://" + addr,
		"SHOELACE_TOKEN_FILE=" + filepath.Join(tmp, "data", "admin.token"),
		"SHOELACE_AGENT_CONFIG=" + vm + "/etc/shoelace/agent.yaml",
		"PW=example-password", // the secret the CLI block pipes in
	}
	ran := 0
	for _, b := range blocks {
		switch {
		case b.lang != "sh" || b.file != "":
			continue
		case b.skip != "":
			t.Logf("README.md:%d: not run here: %s", b.line, b.skip)
			continue
		}
		ran++
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", rewrite(b.text))
		cmd.Dir = work
		cmd.Env = env
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		cancel()
		if err != nil {
			t.Fatalf("README.md:%d: the block failed (%v):\n%s\n--- it printed:\n%s", b.line, err, b.text, out.String())
		}
		t.Logf("README.md:%d: ok", b.line)
	}
	if ran < 4 {
		t.Fatalf("only %d blocks ran: are the markers right?", ran)
	}
	// What the blocks did, where it shows: the bake rendered the system stage only.
	if got, err := os.ReadFile(vm + "/etc/chrony/chrony.conf"); err != nil || string(got) != "pool pool.ntp.org iburst\n" {
		t.Errorf("the bake's chrony.conf = %q (%v)", got, err)
	}
	if _, err := os.Stat(vm + "/etc/nginx/nginx.conf"); !os.IsNotExist(err) {
		t.Errorf("the bake (--stage system) rendered the application stage's nginx.conf: %v", err)
	}
	if fi, err := os.Stat(vm + "/etc/shoelace/token"); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("the agent's token file: %v, %v", fi, err)
	}
	if got, err := os.ReadFile(filepath.Join(work, "web.json")); err != nil || !strings.Contains(string(got), `"app/port": "8080"`) {
		t.Errorf("the export after the rollback = %q (%v), want the applied port 8080", got, err)
	}
	// The transaction whose guard does not hold: exit 4, and shared/motd keeps the curl's value.
	shoelace := func(args ...string) (string, int) {
		cmd := exec.Command(filepath.Join(bin, "shoelace"), args...)
		cmd.Dir, cmd.Env = work, env
		out, err := cmd.Output()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("shoelace %v: %v", args, err)
		}
		return string(out), code
	}
	if out, code := shoelace("txn", "-f", "change.json"); code != 4 || out != "" {
		t.Errorf("shoelace txn -f change.json again: exit %d, printed %q; want exit 4 and nothing on stdout", code, out)
	}
	if got, code := shoelace("kv", "get", "shared/motd"); code != 0 || got != "hello" {
		t.Errorf("shared/motd after the refused txn = %q (exit %d), want hello", got, code)
	}
	if got, err := os.ReadFile(filepath.Join(work, "all.json")); err != nil || !strings.Contains(string(got), `"shared/motd": "hello"`) {
		t.Errorf("the export of the backup block = %q (%v), want shared/motd in it", got, err)
	}
}

// startServer runs `shoelace server` on a free loopback port with its data in dir until the
// test ends, and returns its address once /health answers.
func startServer(t *testing.T, shoelace, dir string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	log := &testbin.Buffer{}
	cmd := exec.Command(shoelace, "server", "--listen", addr, "--data-dir", dir, "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	hc := &http.Client{Timeout: 2 * time.Second}
	for deadline := time.Now().Add(60 * time.Second); ; {
		select {
		case err := <-done:
			t.Fatalf("server exited (%v):\n%s", err, log.String())
		default:
		}
		if resp, err := hc.Get("http://" + addr + "/health"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				if _, err := os.Stat(filepath.Join(dir, "admin.token")); err == nil {
					return addr
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not healthy after 60 s:\n%s", log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
