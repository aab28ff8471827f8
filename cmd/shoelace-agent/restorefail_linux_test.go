package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// An agent that runs as another user than root cannot give back root's ownership of a file it
// replaced (a template that sets owner and group to the agent's user, over root's file): its
// rollback of a failed reload fails, and the file keeps what failed. It logged "command failed
// again on the restored files", and the pass's error that the previous files were restored (but
// for it). It now says the previous file was not restored, naming it and the error, and that the
// command failed again after that rollback.
func TestE2E_OnceRollbackThatCannotRestoreSaysSo(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, to run the agent as nobody over a file of root's")
	}
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/port", "80")
	const nobody = 65534
	// A directory that nobody may enter all the way down, holding the agent and its files.
	dir := t.TempDir()
	for d := dir; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "shoelace-agent")
	data, err := os.ReadFile(filepath.Join(binDir, "shoelace-agent"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	out, cache := filepath.Join(dir, "out"), filepath.Join(dir, "cache")
	for _, d := range []string{out, cache} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d, nobody, nobody); err != nil {
			t.Fatal(err)
		}
	}
	conf := filepath.Join(out, "app.conf")
	if err := os.WriteFile(conf, []byte("port=old\n"), 0o644); err != nil { // root's
		t.Fatal(err)
	}
	tok := filepath.Join(dir, "token")
	if err := os.WriteFile(tok, []byte(srv.agentTokenFor(t, "web")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(tok, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(cfg, []byte("server: http://"+srv.addr+"\ntoken_file: "+tok+"\nappliance: web\ninstance: vm-1\ncache_dir: "+cache+`
templates:
  - contents: "port={{ key \"port\" }}\n"
    destination: `+conf+`
    owner: "65534"
    group: "65534"
    command: "false"
`), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "once", "--config", cfg)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Run(); err == nil {
		t.Fatalf("once succeeded:\n%s", stderr.String())
	}
	logs := stderr.String()
	if got := readFile(t, conf); got != "port=80\n" {
		t.Fatalf("app.conf holds %q: the restore was to fail\n%s", got, logs)
	}
	for _, bad := range []string{"on the restored files", "previous files restored"} {
		if strings.Contains(logs, bad) {
			t.Errorf("the logs say %q of a rollback that restored nothing:\n%s", bad, logs)
		}
	}
	for _, want := range []string{
		`"msg":"reload failed: previous files not restored: restore ` + conf + `: `,
		`"msg":"command failed again after a rollback that could not restore every file"`,
		`"not_restored":"restore ` + conf + `: `,
		"reload of " + conf + " at revision ", // the pass's error, on the last line
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("the logs do not say %q:\n%s", want, logs)
		}
	}
	if last := lastLine(logs); !strings.Contains(last, "previous files not restored: restore "+conf+": ") {
		t.Errorf("once's error: %s", last)
	}
}

// A canary whose undo of a rollout's file after an abort fails (its directory is immutable:
// the file the candidate created cannot be removed) changed no file: the group's command, owed
// for the undo, is not owed any more and does not run, neither then nor at each try again of
// the undo (as if a killed run had owed it: the service reloaded every second, then less often,
// for a file that had not changed); it runs once the undo succeeds.
func TestE2E_RolloutUndoThatFailsRunsNoCommand(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, to make a directory immutable")
	}
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/port", "80")
	fleet := startFleetWith(t, srv, 2, `  - contents: "port={{ key \"port\" }}\n"
    destination: $DIR/out/app.conf
  - contents: "feature={{ key \"feature\" }}\n"
    destination: $DIR/feat/feature.conf
    command: echo "$SHOELACE_REVISION" >> $DIR/commands
`)
	waitAll(t, fleet, "renders", "port=80\n")
	waitInstances(t, srv, fleet, "every agent enrolled", func(in api.Instance) bool { return in.Enrolled && in.Error != "" })

	if code, out, errOut := srv.shoelace(t, "kv", "put", "appliances/web/feature", "on", "--canary", "50%", "--manual"); code != 0 {
		t.Fatalf("kv put --canary: exit %d\n%s\n%s", code, out, errOut)
	}
	canary, _ := canaryOfTwo(fleet, srv.rollout(t))
	feature := canary.env.path("feat/feature.conf")
	waitFor(t, "the canary's candidate", fileIs(feature, "feature=on\n"))
	waitFor(t, "the canary's reload of the candidate", func() bool { return len(commandLines(t, canary.env.path("commands"))) == 1 })
	dir := filepath.Dir(feature)
	if out, err := exec.Command("chattr", "+i", dir).CombinedOutput(); err != nil {
		t.Skipf("chattr +i: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("chattr", "-i", dir).Run() })

	if code, out, errOut := srv.shoelace(t, "appliance", "rollout", "abort", "web"); code != 0 {
		t.Fatalf("rollout abort: exit %d\n%s\n%s", code, out, errOut)
	}
	waitFor(t, "the undo tried again", func() bool {
		return strings.Count(canary.run.logs.String(), `"msg":"file of the rollout's candidate not undone"`) >= 3
	})
	if got := readFile(t, feature); got != "feature=on\n" {
		t.Fatalf("feature.conf = %q, want it as it was (its undo failed)", got)
	}
	if got := commandLines(t, canary.env.path("commands")); len(got) != 1 {
		t.Fatalf("commands at revisions %v, want the candidate's only: no file changed since", got)
	}

	if out, err := exec.Command("chattr", "-i", dir).CombinedOutput(); err != nil {
		t.Fatalf("chattr -i: %v: %s", err, out)
	}
	waitFor(t, "feature.conf removed once the way is clear", func() bool { _, err := os.Stat(feature); return os.IsNotExist(err) })
	waitFor(t, "the reload of the undo", func() bool { return len(commandLines(t, canary.env.path("commands"))) == 2 })
	time.Sleep(500 * time.Millisecond)
	if got := commandLines(t, canary.env.path("commands")); len(got) != 2 {
		t.Fatalf("commands at revisions %v, want the candidate's and the undo's", got)
	}
}
