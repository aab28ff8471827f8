package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoelace-dev/shoelace/internal/client"
	"github.com/shoelace-dev/shoelace/internal/testutil"
)

var (
	binOnce sync.Once
	binDir  string
	binErr  error
)

func TestMain(m *testing.M) {
	testutil.Main(m)
	if binDir != "" {
		os.RemoveAll(binDir)
	}
}

// bin returns the path of a freshly built binary of ./cmd/<name>; they are built once, on first use,
// so that `go test ./...` without -bench builds nothing.
func bin(tb testing.TB, name string) string {
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "shoelace-bench-bin-")
		for _, cmd := range []string{"shoelace", "shoelace-agent"} {
			if binErr != nil {
				return
			}
			out, err := exec.Command("go", "build", "-o", filepath.Join(binDir, cmd), "../../cmd/"+cmd).CombinedOutput()
			if err != nil {
				binErr = fmt.Errorf("build %s: %v\n%s", cmd, err, out)
			}
		}
	})
	if binErr != nil {
		tb.Fatal(binErr)
	}
	return filepath.Join(binDir, name)
}

// latencies records one duration per change and reports percentiles as benchmark metrics.
type latencies []time.Duration

func (l latencies) report(b *testing.B, unit string) {
	if len(l) == 0 {
		return
	}
	s := slices.Clone(l)
	slices.Sort(s)
	at := func(q float64) float64 { return float64(s[int(q*float64(len(s)-1))].Microseconds()) / 1000 }
	b.ReportMetric(at(0.50), "p50-"+unit)
	b.ReportMetric(at(0.99), "p99-"+unit)
}

// fileWaiter waits for a file's content to become a given string, woken by fsnotify (both
// agents install files by rename, which the directory watch sees).
type fileWaiter struct {
	w    *fsnotify.Watcher
	path string
}

func newFileWaiter(tb testing.TB, path string) *fileWaiter {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		tb.Fatal(err)
	}
	if err := w.Add(filepath.Dir(path)); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { w.Close() })
	return &fileWaiter{w: w, path: path}
}

func (f *fileWaiter) waitFor(tb testing.TB, want string) {
	deadline := time.After(20 * time.Second)
	for {
		if b, err := os.ReadFile(f.path); err == nil && string(b) == want {
			return
		}
		select {
		case <-f.w.Events:
		case err := <-f.w.Errors:
			tb.Fatal(err)
		case <-deadline:
			b, _ := os.ReadFile(f.path)
			tb.Fatalf("%s never became %q (it is %q)", f.path, want, b)
		}
	}
}

func freeAddr(tb testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func start(tb testing.TB, name string, args []string, logPath string) {
	logf, err := os.Create(logPath)
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		logf.Close()
	})
}

func waitFile(tb testing.TB, path string) []byte {
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
			return b
		}
	}
	tb.Fatalf("%s did not appear", path)
	return nil
}

func etcdClient(tb testing.TB) *clientv3.Client {
	c, err := clientv3.New(clientv3.Config{Endpoints: testutil.Etcd(tb), DialTimeout: 5 * time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// BenchmarkWriteToFile measures one write reaching a rendered file, per b.N change, for each
// path on the same etcd. Read the p50-ms and p99-ms metrics; compare them within one run.
func BenchmarkWriteToFile(b *testing.B) {
	b.Run("floor=etcd-watch", benchEtcdWatch)
	b.Run("shoelace", benchShoelace)
	b.Run("confd", benchConfd)
}

func benchEtcdWatch(b *testing.B) {
	ctx := context.Background()
	c := etcdClient(b)
	key := testutil.Root(b) + "kv/appliances/web/app/port"
	wch := c.Watch(ctx, key)
	var lat latencies
	b.ResetTimer()
	for i := range b.N {
		t0 := time.Now()
		if _, err := c.Put(ctx, key, fmt.Sprint(10000+i)); err != nil {
			b.Fatal(err)
		}
		<-wch
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	lat.report(b, "ms")
	b.ReportMetric(0, "ns/op") // the per-op time includes the harness; the percentiles are the figures
}

func benchShoelace(b *testing.B) {
	ctx := context.Background()
	dir := b.TempDir()
	root := testutil.Root(b)
	addr := freeAddr(b)
	tokenFile := filepath.Join(dir, "admin.token")
	start(b, bin(b, "shoelace"), []string{"server", "--listen", addr,
		"--etcd-endpoints", strings.Join(testutil.Etcd(b), ","), "--root", root, "--data-dir", dir,
		"--admin-token-file", tokenFile, "--rate-limit", "0", "--log-level", "warn"}, filepath.Join(dir, "server.log"))
	token := strings.TrimSpace(string(waitFile(b, tokenFile)))
	cl, err := client.New("http://"+addr, client.Options{Token: token})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := cl.Put(ctx, "appliances/web/app/port", []byte("9999"), client.NoCAS); err != nil {
		b.Fatal(err)
	}
	out := filepath.Join(dir, "out", "port.conf")
	os.MkdirAll(filepath.Dir(out), 0o755)
	cfg := fmt.Sprintf(`server: http://%s
token_file: %s
appliance: web
cache_dir: %s
templates:
  - contents: 'port={{ key "app/port" }}'
    destination: %s
`, addr, tokenFile, filepath.Join(dir, "cache"), out)
	cfgPath := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		b.Fatal(err)
	}
	start(b, bin(b, "shoelace-agent"), []string{"run", "--config", cfgPath, "--log-level", "warn"},
		filepath.Join(dir, "agent.log"))
	fw := newFileWaiter(b, out)
	fw.waitFor(b, "port=9999")

	var lat, ack latencies
	b.ResetTimer()
	for i := range b.N {
		v := fmt.Sprint(10000 + i)
		t0 := time.Now()
		if _, err := cl.Put(ctx, "appliances/web/app/port", []byte(v), client.NoCAS); err != nil {
			b.Fatal(err)
		}
		ack = append(ack, time.Since(t0))
		fw.waitFor(b, "port="+v)
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	lat.report(b, "ms")
	ack.report(b, "ack-ms")
	b.ReportMetric(0, "ns/op")
}

// benchConfd runs the real confd (built by shared/peers/build-peers.sh into $SHOELACE_PEERS_DIR).
func benchConfd(b *testing.B) {
	peers := os.Getenv("SHOELACE_PEERS_DIR")
	confd := filepath.Join(peers, "confd")
	if _, err := os.Stat(confd); peers == "" || err != nil {
		b.Skip("set SHOELACE_PEERS_DIR to a directory holding confd (../shared/peers/build-peers.sh DIR builds it)")
	}
	ctx := context.Background()
	dir := b.TempDir()
	c := etcdClient(b)
	prefix := testutil.Root(b) + "kv/appliances/web"
	if _, err := c.Put(ctx, prefix+"/app/port", "9999"); err != nil {
		b.Fatal(err)
	}
	out := filepath.Join(dir, "out", "port.conf")
	os.MkdirAll(filepath.Join(dir, "conf.d"), 0o755)
	os.MkdirAll(filepath.Join(dir, "templates"), 0o755)
	os.MkdirAll(filepath.Dir(out), 0o755)
	os.WriteFile(filepath.Join(dir, "templates", "port.tmpl"), []byte(`port={{getv "/app/port"}}`), 0o644)
	os.WriteFile(filepath.Join(dir, "conf.d", "port.toml"), []byte(fmt.Sprintf(
		"[template]\nsrc = \"port.tmpl\"\ndest = %q\nkeys = [\"/app\"]\n", out)), 0o644)
	start(b, confd, []string{"-backend", "etcdv3", "-node", testutil.Etcd(b)[0], "-confdir", dir,
		"-prefix", prefix, "-watch", "-log-level", "error"}, filepath.Join(dir, "confd.log"))
	fw := newFileWaiter(b, out)
	fw.waitFor(b, "port=9999")

	var lat, ack latencies
	b.ResetTimer()
	for i := range b.N {
		v := fmt.Sprint(10000 + i)
		t0 := time.Now()
		if _, err := c.Put(ctx, prefix+"/app/port", v); err != nil {
			b.Fatal(err)
		}
		ack = append(ack, time.Since(t0))
		fw.waitFor(b, "port="+v)
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	lat.report(b, "ms")
	ack.report(b, "ack-ms")
	b.ReportMetric(0, "ns/op")
}
