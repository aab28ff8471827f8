//go:build !windows

package agent_test

import (
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/agent"
	"github.com/shoelace-dev/shoelace/internal/atomicfile"
)

// holdDirSyncs makes the agent's deferred directory fsyncs wait: each sends on holding, then
// waits for a value on release (or its close) before it syncs. Undone at the end of t.
func holdDirSyncs(t *testing.T) (release, holding chan struct{}) {
	release, holding = make(chan struct{}), make(chan struct{}, 16)
	t.Cleanup(agent.SetSyncDirectories(func(d *atomicfile.DirSyncs) error {
		holding <- struct{}{}
		<-release
		return d.Sync()
	}))
	return release, holding
}

// startHeldAgent runs an agent rendering key a of srv into dir/a with its directory fsyncs
// held (see holdDirSyncs), lets the first render's go, and waits for its report (revision 10).
// reported(rev) tells whether srv got a report of rev applied.
func startHeldAgent(t *testing.T) (srv *viewServer, dir string, release chan<- struct{}, holding <-chan struct{}, reported func(rev int64) func() bool) {
	t.Helper()
	rel, hold := holdDirSyncs(t)
	srv = newViewServer(t, map[string]string{"a": "1"})
	a, dir, _ := testAgent(t, srv, header+"templates:\n  - contents: \"a={{ key \\\"a\\\" }}\"\n    destination: $DIR/a\n")
	t.Cleanup(runAgent(t, a))
	<-hold // the first render's
	rel <- struct{}{}
	reported = func(rev int64) func() bool {
		return func() bool {
			srv.mu.Lock()
			defer srv.mu.Unlock()
			for _, r := range srv.reports {
				if r.Applied >= rev {
					return true
				}
			}
			return false
		}
	}
	waitFor(t, "the first report", reported(10))
	return srv, dir, rel, hold, reported
}

// The fsync of an installed file's directory is deferred past the rename, but nothing tells
// the server that the revision is applied before it: while the fsync is held, the file is in
// place and no report says so; once it is done, the report comes.
func TestAgent_RunReportsAppliedOnlyOnceDurable(t *testing.T) {
	srv, dir, release, holding, reported := startHeldAgent(t)
	defer close(release)
	srv.set(map[string]*string{"a": str("2")})
	waitFor(t, "the change rendered", fileIs(dir+"/a", "a=2"))
	<-holding
	time.Sleep(300 * time.Millisecond) // longer than the report pacing and the fsync's delay
	if reported(11)() {
		t.Fatal("revision 11 reported applied before its directory was fsynced")
	}
	release <- struct{}{}
	waitFor(t, "the report once durable", reported(11))
}

// The directory fsync is made beside the loop: a change that arrives while it is held is
// rendered and installed at once, and neither it nor the change being fsynced is reported
// applied before the fsync of its own directory is done.
func TestAgent_RunInstallsWhileDirectoryFsyncHeld(t *testing.T) {
	srv, dir, release, holding, reported := startHeldAgent(t)
	defer close(release)
	srv.set(map[string]*string{"a": str("2")})
	waitFor(t, "the change rendered", fileIs(dir+"/a", "a=2"))
	<-holding // revision 11's fsync, held
	srv.set(map[string]*string{"a": str("3")})
	waitFor(t, "the next change rendered while the fsync is held", fileIs(dir+"/a", "a=3"))
	time.Sleep(100 * time.Millisecond)
	if reported(11)() {
		t.Fatal("revision 11 reported applied before its directory was fsynced")
	}
	release <- struct{}{}
	waitFor(t, "the report of 11 once durable", reported(11))
	<-holding // revision 12's, made after 11's
	time.Sleep(100 * time.Millisecond)
	if reported(12)() {
		t.Fatal("revision 12 reported applied before its directory was fsynced")
	}
	release <- struct{}{}
	waitFor(t, "the report of 12 once durable", reported(12))
}

// A command sees its files durable: the directory fsync comes before it, not later.
func TestAgent_RunCommandAfterDirectoryFsync(t *testing.T) {
	release, holding := holdDirSyncs(t)
	srv := newViewServer(t, map[string]string{"a": "1"})
	a, dir, _ := testAgent(t, srv, header+"templates:\n  - contents: \"a={{ key \\\"a\\\" }}\"\n    destination: $DIR/a\n    command: cat $DIR/a >> $DIR/commands\n")
	stop := runAgent(t, a)
	defer stop()
	defer close(release)
	<-holding
	waitFor(t, "the file in place", fileIs(dir+"/a", "a=1"))
	time.Sleep(200 * time.Millisecond)
	if got := lines(t, dir+"/commands"); len(got) != 0 {
		t.Fatalf("the command ran before the directory fsync: %v", got)
	}
	release <- struct{}{}
	waitFor(t, "the command", func() bool { return len(lines(t, dir+"/commands")) == 1 })
}
