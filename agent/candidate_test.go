//go:build !windows

package agent_test

import (
	"os"
	"strings"
	"testing"
)

// When a rollout halts or is aborted, its cohort gets the live view again and the agent undoes
// the candidate's files, also those that the live view cannot render (a key the candidate
// added): what the candidate replaced is put back (bytes and mode), a file it created is
// removed, and the group's command runs. Before, such a file kept the candidate's content
// (a feature flag the rollout was to try on the canary stayed on after the abort), and the
// agent only logged that the live view did not render it.
func TestAgent_RunUndoesCandidateFilesTheLiveViewCannotRender(t *testing.T) {
	srv := newViewServer(t, map[string]string{"port": "80"})
	a, dir, logs := testAgent(t, srv, header+`templates:
  - contents: "feature={{ key \"feature\" }}\n"
    destination: $DIR/feat.conf
    command: echo feat >> $DIR/ran
  - contents: "flag={{ key \"flag\" }}\n"
    destination: $DIR/flag.conf
    perms: "0644"
  - contents: "port={{ key \"port\" }}\n"
    destination: $DIR/port.conf
`)
	if err := os.WriteFile(dir+"/flag.conf", []byte("old\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir+"/flag.conf", 0o640)
	view := func(rollout string, kv map[string]string) {
		srv.mu.Lock()
		srv.rollout, srv.keys = rollout, kv
		srv.rev++
		srv.cond.Broadcast()
		srv.mu.Unlock()
	}
	stop := runAgent(t, a)
	defer stop()
	waitFor(t, "the live view rendered", fileIs(dir+"/port.conf", "port=80\n"))

	view("ro-1", map[string]string{"port": "80", "feature": "on", "flag": "x"})
	waitFor(t, "the candidate's files", func() bool {
		return fileIs(dir+"/feat.conf", "feature=on\n")() && fileIs(dir+"/flag.conf", "flag=x\n")()
	})

	// Aborted: the live view again, which has neither key.
	view("", map[string]string{"port": "80"})
	waitFor(t, "the candidate's files undone", func() bool {
		_, err := os.Lstat(dir + "/feat.conf")
		return os.IsNotExist(err) && fileIs(dir+"/flag.conf", "old\n")()
	})
	if fi, err := os.Stat(dir + "/flag.conf"); err != nil || fi.Mode().Perm() != 0o640 {
		t.Fatalf("flag.conf restored with %v (%v), want mode 0640", fi.Mode().Perm(), err)
	}
	waitFor(t, "the command run on the undone file", func() bool { return len(lines(t, dir+"/ran")) == 2 })
	if !strings.Contains(logs.String(), "undone") {
		t.Fatalf("the undo is not logged:\n%s", logs.String())
	}
}
