//go:build !windows

package agent_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shoelace-dev/shoelace/agent"
)

// onDisk is what tells a file rewritten from one left alone: its inode and its times.
type onDisk struct {
	ino          uint64
	mtime, ctime unix.Timespec
}

func onDiskOf(t *testing.T, path string) onDisk {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return onDisk{ino: st.Ino, mtime: st.Mtim, ctime: st.Ctim}
}

// untouched fails t when a file of before was rewritten (or touched) since.
func untouched(t *testing.T, before map[string]onDisk) {
	t.Helper()
	for path, was := range before {
		if now := onDiskOf(t, path); now != was {
			t.Errorf("%s was rewritten or touched (%+v, was %+v) though neither it nor its inputs changed", path, now, was)
		}
	}
}

// snapshot is onDisk of each of paths.
func snapshot(t *testing.T, paths ...string) map[string]onDisk {
	t.Helper()
	out := map[string]onDisk{}
	for _, p := range paths {
		out[p] = onDiskOf(t, p)
	}
	return out
}

// A file the agent installed and someone changed since (edited, its modification time set back,
// deleted, its mode changed; two of one group) is put back at the next pass, which a change of
// a key that no template reads brings, and its command runs once; the files not changed are
// not rewritten and their commands do not run. A file only touched is not rewritten either.
func TestAgent_RunPutsBackFilesChangedOnDisk(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1", "b": "1", "g": "1", "other": "1"})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	metricsAddr := l.Addr().String()
	l.Close()
	a, dir, logs := testAgent(t, srv, header+"metrics_listen: "+metricsAddr+"\n"+`templates:
  - contents: "a={{ key \"a\" }}\n"
    destination: $DIR/a
    perms: "0644"
    command: echo a >> $DIR/commands
  - contents: "b={{ key \"b\" }}\n"
    destination: $DIR/b
    command: echo b >> $DIR/commands
  - contents: "g1={{ key \"g\" }}\n"
    destination: $DIR/g1
    command: echo g >> $DIR/commands
  - contents: "g2={{ key \"g\" }}\n"
    destination: $DIR/g2
    command: echo g >> $DIR/commands
`)
	stop := runAgent(t, a)
	defer stop()
	syncLogged(t, logs, 10)
	commands := func() string { return strings.Join(lines(t, dir+"/commands"), ",") }
	if got := commands(); got != "a,b,g" {
		t.Fatalf("commands = %s after the first pass, want a,b,g", got)
	}
	rev, other := 10, 1
	// changeOther changes the key no template reads and waits for the agent's pass.
	changeOther := func() {
		t.Helper()
		other++
		rev++
		srv.set(map[string]*string{"other": str(fmt.Sprint(other))})
		syncLogged(t, logs, rev)
	}
	putBack := func(name, change string) string {
		return fmt.Sprintf(`"msg":"file put back","template":%q,"why":"changed on disk since the agent installed it","change":%q`, dir+"/"+name, change)
	}

	// Edited in place (the same inode).
	before := snapshot(t, dir+"/b", dir+"/g1", dir+"/g2")
	if err := os.WriteFile(dir+"/a", []byte("a=edited by hand\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	changeOther()
	if got := read(t, dir+"/a"); got != "a=1\n" {
		t.Fatalf("a = %q, want it put back", got)
	}
	if got := commands(); got != "a,b,g,a" {
		t.Fatalf("commands = %s, want a's once more", got)
	}
	untouched(t, before)
	if !strings.Contains(logs.String(), putBack("a", "edited")) {
		t.Fatalf("no log line says a was put back and why:\n%s", logs.String())
	}

	// Edited to the same size, its modification time set back: its change time tells.
	was, err := os.Stat(dir + "/a")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir+"/a", []byte("a=9\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(dir+"/a", time.Time{}, was.ModTime()); err != nil {
		t.Fatal(err)
	}
	changeOther()
	if got := read(t, dir+"/a"); got != "a=1\n" {
		t.Fatalf("a = %q after an edit with its modification time set back, want it put back", got)
	}
	if got := commands(); got != "a,b,g,a,a" {
		t.Fatalf("commands = %s, want a's once more", got)
	}
	untouched(t, before)

	// Touched: the same bytes, mode and owner; not rewritten, nothing run.
	if err := os.Chtimes(dir+"/a", time.Time{}, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	touched := snapshot(t, dir+"/a")
	changeOther()
	untouched(t, touched)
	if got := commands(); got != "a,b,g,a,a" {
		t.Fatalf("commands = %s after a touch, want none more", got)
	}

	// Deleted.
	before = snapshot(t, dir+"/a", dir+"/g1", dir+"/g2")
	if err := os.Remove(dir + "/b"); err != nil {
		t.Fatal(err)
	}
	changeOther()
	if got := read(t, dir+"/b"); got != "b=1\n" {
		t.Fatalf("b = %q, want it put back", got)
	}
	if got := commands(); got != "a,b,g,a,a,b" {
		t.Fatalf("commands = %s, want b's once more", got)
	}
	untouched(t, before)
	if !strings.Contains(logs.String(), putBack("b", "deleted")) {
		t.Fatalf("no log line says b was put back because it was deleted:\n%s", logs.String())
	}

	// Its mode changed (the template sets perms).
	before = snapshot(t, dir+"/b", dir+"/g1", dir+"/g2")
	if err := os.Chmod(dir+"/a", 0o600); err != nil {
		t.Fatal(err)
	}
	changeOther()
	if fi, err := os.Stat(dir + "/a"); err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("a: %v, %v, want its mode 0644 back", fi.Mode(), err)
	}
	if got := commands(); got != "a,b,g,a,a,b,a" {
		t.Fatalf("commands = %s, want a's once more", got)
	}
	untouched(t, before)

	// Two files of one group: its command runs once.
	before = snapshot(t, dir+"/a", dir+"/b")
	if err := os.WriteFile(dir+"/g1", []byte("g1=hand\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(dir + "/g2"); err != nil {
		t.Fatal(err)
	}
	changeOther()
	if got, got2 := read(t, dir+"/g1"), read(t, dir+"/g2"); got != "g1=1\n" || got2 != "g2=1\n" {
		t.Fatalf("g1 = %q, g2 = %q, want both put back", got, got2)
	}
	if got := commands(); got != "a,b,g,a,a,b,a,g" {
		t.Fatalf("commands = %s, want the group's once", got)
	}
	untouched(t, before)

	var body string
	waitFor(t, "metrics", func() bool {
		resp, err := http.Get("http://" + metricsAddr + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return strings.Contains(body, fmt.Sprintf("shoelace_agent_view_revision %d\n", rev))
	})
	if !strings.Contains(body, "shoelace_agent_restores_total 6\n") {
		t.Fatalf("metrics do not count the 6 files put back:\n%s", body)
	}
	st, err := agent.LoadStatus(dir+"/cache", "web")
	waitFor(t, "the status", func() bool {
		st, err = agent.LoadStatus(dir+"/cache", "web")
		return err == nil && st.Revision == int64(rev)
	})
	if st.Applied != int64(rev) || st.LastError != "" {
		t.Fatalf("status = %+v, want revision %d applied", st, rev)
	}
}

// A file put back is a change like any other: when its reload fails, on_command_failure
// (rollback) puts the edit back, the pass fails, and, as after any failed reload, the agent does
// not try again — the file changing on disk again neither — until the view changes what the
// template reads.
func TestAgent_RunFileChangedOnDiskFailedReloadStands(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1", "other": "1"})
	a, dir, logs := testAgent(t, srv, header+`templates:
  - contents: "a={{ key \"a\" }}\n"
    destination: $DIR/a
    command: echo ran >> $DIR/commands; test ! -e $DIR/broken
  - contents: "static\n"
    destination: $DIR/static
`)
	stop := runAgent(t, a)
	defer stop()
	syncLogged(t, logs, 10)
	ran := func() int { return len(lines(t, dir+"/commands")) }
	if ran() != 1 {
		t.Fatalf("commands = %v after the first pass", lines(t, dir+"/commands"))
	}
	if err := os.WriteFile(dir+"/broken", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir+"/a", []byte("hand\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	srv.set(map[string]*string{"other": str("2")})
	syncLogged(t, logs, 11)
	if got := ran(); got != 3 {
		t.Fatalf("command ran %d times, want 3: the first, the failed one and the one on the restored file", got)
	}
	if got := read(t, dir+"/a"); got != "hand\n" {
		t.Fatalf("a = %q, want the edit back (rollback)", got)
	}
	var st *agent.Status
	waitFor(t, "the status at revision 11", func() bool {
		var err error
		st, err = agent.LoadStatus(dir+"/cache", "web")
		return err == nil && st.Revision == 11
	})
	if st.Applied != 10 || !strings.Contains(st.LastError, "previous files restored") {
		t.Fatalf("status = %+v, want applied 10 and the failed reload", st)
	}

	// The failure stands: changed on disk again, the command fixed, other keys changed; not tried.
	if err := os.WriteFile(dir+"/a", []byte("hand again\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Remove(dir + "/broken")
	srv.set(map[string]*string{"other": str("3")})
	syncLogged(t, logs, 12)
	if got := ran(); got != 3 {
		t.Fatalf("command ran %d times, want no new run while the failure stands", got)
	}
	if got := read(t, dir+"/a"); got != "hand again\n" {
		t.Fatalf("a = %q, want it left alone while the failure stands", got)
	}
	// A view that changes what it reads tries again.
	srv.set(map[string]*string{"a": str("2")})
	syncLogged(t, logs, 13)
	if got := read(t, dir+"/a"); got != "a=2\n" {
		t.Fatalf("a = %q after its key changed", got)
	}
	if got := ran(); got != 4 {
		t.Fatalf("command ran %d times, want one more", got)
	}
}

// A destination that is a symbolic link is written where it leads (as every install is): an
// edit of that file is put back there, and the link stays.
func TestAgent_RunPutsBackFileALinkLeadsTo(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1", "other": "1"})
	a, dir, logs := testAgent(t, srv, header+`templates:
  - contents: "a={{ key \"a\" }}\n"
    destination: $DIR/link
    command: echo ran >> $DIR/commands
`)
	if err := os.Mkdir(dir+"/real", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir+"/real/a", []byte("before\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(dir+"/real/a", dir+"/link"); err != nil {
		t.Fatal(err)
	}
	stop := runAgent(t, a)
	defer stop()
	syncLogged(t, logs, 10)
	if got := read(t, dir+"/real/a"); got != "a=1\n" {
		t.Fatalf("real/a = %q", got)
	}
	if err := os.WriteFile(dir+"/real/a", []byte("hand\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	srv.set(map[string]*string{"other": str("2")})
	syncLogged(t, logs, 11)
	if got := read(t, dir+"/real/a"); got != "a=1\n" {
		t.Fatalf("real/a = %q, want it put back", got)
	}
	if fi, err := os.Lstat(dir + "/link"); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("link: %v, %v, want it a link still", fi, err)
	}
	if got := len(lines(t, dir+"/commands")); got != 2 {
		t.Fatalf("command ran %d times, want 2", got)
	}
}

// A file that a destination's link leads to, deleted since the agent installed it, is put back
// there at the next pass, the link kept, as a file deleted at its own name is. Before, every pass
// failed ("resolve symlink …: no such file or directory") and the file stayed missing until one
// was made by hand; likewise a first install through a link that led nowhere yet failed.
func TestAgent_RunPutsBackDeletedFileALinkLeadsTo(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1", "other": "1"})
	a, dir, logs := testAgent(t, srv, header+`templates:
  - contents: "a={{ key \"a\" }}\n"
    destination: $DIR/link
    command: echo ran >> $DIR/commands
  - contents: "b={{ key \"a\" }}\n"
    destination: $DIR/dangling
`)
	if err := os.Mkdir(dir+"/real", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir+"/real/a", []byte("before\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(dir+"/real/a", dir+"/link"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("real/b", dir+"/dangling"); err != nil {
		t.Fatal(err)
	}
	// validate and render --dry promise what once and run do: a file made where the link leads.
	if w := strings.Join(a.Warnings(), "\n"); strings.Contains(w, "dangling") {
		t.Fatalf("validate warns about the link: %s", w)
	}
	var dry strings.Builder
	if err := a.Render(context.Background(), &dry, agent.DryOptions{}); err != nil || !strings.Contains(dry.String(), "dangling: would change (new file)") {
		t.Fatalf("render --dry: %v\n%s", err, dry.String())
	}
	if _, err := os.Lstat(dir + "/real/b"); err == nil {
		t.Fatal("render --dry wrote real/b")
	}
	stop := runAgent(t, a)
	defer stop()
	syncLogged(t, logs, 10)
	if got := read(t, dir+"/real/b"); got != "b=1\n" {
		t.Fatalf("real/b = %q, want it made where the link leads", got)
	}
	if err := os.Remove(dir + "/real/a"); err != nil {
		t.Fatal(err)
	}
	srv.set(map[string]*string{"other": str("2")})
	syncLogged(t, logs, 11)
	if got := read(t, dir+"/real/a"); got != "a=1\n" {
		t.Fatalf("real/a = %q, want it put back", got)
	}
	for _, l := range []string{"/link", "/dangling"} {
		if fi, err := os.Lstat(dir + l); err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Fatalf("%s: %v, %v, want it a link still", l, fi, err)
		}
	}
	if got := len(lines(t, dir+"/commands")); got != 2 {
		t.Fatalf("command ran %d times, want 2", got)
	}
	if strings.Contains(logs.String(), "template not installed") {
		t.Fatalf("a template was not installed:\n%s", logs.String())
	}
}

// What a pass does with files changed on disk, counted: a file only touched is read, not
// rendered; one edited is rendered and installed; the others are neither.
func TestAgent_RenderViewRendersFilesChangedOnDisk(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	a, dir, _ := testAgent(t, srv, header+`templates:
  - contents: "a={{ key \"a\" }}\n"
    destination: $DIR/a
  - contents: "b={{ key \"b\" }}\n"
    destination: $DIR/b
`)
	ctx := t.Context()
	keys := map[string]string{"a": "1", "b": "1", "other": "1"}
	if st := a.RenderView(ctx, 1, keys); st.Executed != 2 || st.Rendered != 2 {
		t.Fatalf("first pass: %+v", st)
	}
	if err := os.Chtimes(dir+"/a", time.Time{}, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	keys = map[string]string{"a": "1", "b": "1", "other": "2"}
	if st := a.RenderView(ctx, 2, keys); st.Executed != 0 || st.Rendered != 0 || st.Failed != 0 {
		t.Fatalf("after a touch: %+v, want nothing executed", st)
	}
	if err := os.WriteFile(dir+"/b", []byte("b=hand\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	keys = map[string]string{"a": "1", "b": "1", "other": "3"}
	if st := a.RenderView(ctx, 3, keys); st.Executed != 1 || st.Rendered != 1 || st.Failed != 0 {
		t.Fatalf("after an edit of b: %+v, want b rendered and installed", st)
	}
	if got := read(t, dir+"/b"); got != "b=1\n" {
		t.Fatalf("b = %q", got)
	}
	keys = map[string]string{"a": "1", "b": "1", "other": "4"}
	if st := a.RenderView(ctx, 4, keys); st.Executed != 0 || st.Rendered != 0 {
		t.Fatalf("next pass: %+v, want nothing executed", st)
	}
}
