package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/client"
)

// A pipeline writes with -m and --source; `appliance history` shows who, what and why, and
// `rollback --to previous` undoes the last release, itself a release naming what it undid.
func TestE2E_ApplianceHistoryAndUndo(t *testing.T) {
	c := newCLI(t, sharedServer(t))
	// A name of its own per run: releases outlive the keys, so -count=N needs a fresh history.
	name := fmt.Sprintf("hist-web-%d", time.Now().UnixNano())
	dir := t.TempDir()
	v1 := filepath.Join(dir, "v1.yaml")
	v2 := filepath.Join(dir, "v2.yaml")
	os.WriteFile(v1, []byte("keys:\n  port: 80\n  secrets: {pw: one}\n"), 0o600)
	os.WriteFile(v2, []byte("keys:\n  port: 8080\n  debug: \"true\"\n  secrets: {pw: two}\n"), 0o600)

	rev1 := revisionOf(t, c.ok("appliance", "apply", name, "-f", v1, "-m", "first cut", "--source", "deploy-7"))
	rev2 := revisionOf(t, c.ok("appliance", "apply", name, "-f", v2, "--message", "turn debug on", "--source", "deploy-8"))
	revShared := revisionOf(t, c.ok("kv", "put", "shared/hist-dns", name)) // another value each run

	out := c.ok("appliance", "history", name)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 3 || lines[0] != "REVISION\tTIME\tKIND\tTOKEN\tSOURCE\tCHANGES\tMESSAGE" {
		t.Fatalf("history:\n%s", out)
	}
	want2 := fmt.Sprintf("%d\t", rev2)
	if f := strings.Split(lines[1], "\t"); !strings.HasPrefix(lines[1], want2) || f[2] != "apply" || f[3] != "admin" || f[4] != "deploy-8" || f[5] != "+1 ~2 -0" || f[6] != "turn debug on" {
		t.Errorf("newest line: %q", lines[1])
	}
	if f := strings.Split(lines[2], "\t"); f[0] != fmt.Sprint(rev1) || f[5] != "+2 ~0 -0" || f[6] != "first cut" {
		t.Errorf("oldest line: %q", lines[2])
	}
	if strings.Contains(out, "one") || strings.Contains(out, "two") {
		t.Errorf("history shows a secret value:\n%s", out)
	}

	diff := c.run("appliance", "diff", name, "--from", fmt.Sprint(rev1), "--to", fmt.Sprint(rev2))
	if want := "+ debug=true\n~ port=8080 (was 80)\n~ secrets/pw=(secret) (was (secret))\n"; diff.code != 0 || diff.stdout != want ||
		!strings.Contains(diff.stderr, "1 added, 2 changed, 0 removed") {
		t.Errorf("diff: exit %d, stdout %q, stderr %q; want %q", diff.code, diff.stdout, diff.stderr, want)
	}
	if got := c.ok("appliance", "diff", name, "--from", fmt.Sprint(rev1), "--show-secrets"); !strings.Contains(got, "~ secrets/pw=two (was one)\n") {
		t.Errorf("diff --show-secrets (to now): %q", got)
	}
	// Secret values need an admin token as well as the flag.
	writer := c.ok("token", "create", "--name", name+"-writer", "--write", "appliances/"+name)
	t.Cleanup(func() { c.run("token", "revoke", name+"-writer") })
	secret := strings.TrimSpace(writer[strings.LastIndex(strings.TrimSpace(writer), "\n")+1:])
	c.fails(exitAuth, "needs an admin token", "appliance", "diff", name, "--from", fmt.Sprint(rev1), "--show-secrets", "--token", secret)

	r := c.run("appliance", "rollback", name, "--to", "previous", "-m", "debug broke logins")
	if r.code != 0 {
		t.Fatalf("rollback --to previous: exit %d, %s", r.code, r.stderr)
	}
	rb := revisionOf(t, r.stdout)
	if got := c.ok("kv", "get", "appliances/"+name+"/port"); got != "80" {
		t.Errorf("port after undo = %q, want 80", got)
	}
	if got := c.ok("kv", "get", "appliances/"+name+"/secrets/pw"); got != "one" {
		t.Errorf("secret after undo = %q", got)
	}
	var h api.Releases
	if err := json.Unmarshal([]byte(c.ok("appliance", "history", name, "-o", "json", "--limit", "1")), &h); err != nil {
		t.Fatal(err)
	}
	wantMsg := fmt.Sprintf("rollback of %s to revision %d: debug broke logins (undo release %d (apply: turn debug on))", name, rev2-1, rev2)
	if len(h.Releases) != 1 || h.Releases[0].Revision != rb || h.Releases[0].Kind != api.KindRollback || h.Releases[0].Message != wantMsg || h.Next != rb {
		t.Errorf("history -o json after undo: %+v; want message %q", h, wantMsg)
	}
	// With shared/ (other tests write it too): the shared put is there, between the applies and the undo.
	if got := c.ok("appliance", "history", name, "--include-shared", "--limit", "1000"); !strings.Contains(got, fmt.Sprintf("\n%d\t", revShared)) ||
		!strings.Contains(got, fmt.Sprintf("\n%d\t", rb)) || !strings.Contains(got, fmt.Sprintf("\n%d\t", rev1)) {
		t.Errorf("history with shared:\n%s", got)
	}
	if got := c.ok("appliance", "history", name); strings.Contains(got, fmt.Sprintf("\n%d\t", revShared)) {
		t.Errorf("history without shared shows the shared put:\n%s", got)
	}
	c.fails(2, `--to "last" is not a revision: give a positive revision, or previous`, "appliance", "rollback", name, "--to", "last")

	// kv history: each value with the release that wrote it; a secret's values masked.
	out = c.ok("kv", "history", "appliances/"+name+"/port")
	lines = strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 4 || lines[0] != "REVISION\tTIME\tKIND\tTOKEN\tSOURCE\tVALUE\tMESSAGE" ||
		!strings.HasPrefix(lines[1], fmt.Sprintf("%d\t", rb)) || strings.Split(lines[1], "\t")[5] != "80" || strings.Split(lines[1], "\t")[2] != "rollback" ||
		strings.Split(lines[2], "\t")[5] != "8080" || strings.Split(lines[3], "\t")[4] != "deploy-7" {
		t.Errorf("kv history:\n%s", out)
	}
	if out := c.ok("kv", "history", "appliances/"+name+"/secrets/pw"); strings.Contains(out, "one") || strings.Contains(out, "two") || !strings.Contains(out, "\t(secret)\t") {
		t.Errorf("kv history of a secret:\n%s", out)
	}
	// A key never written: not found (exit 3, as kv get), said so, not an empty table; with
	// --output json too, not an empty history a script would read as a key that never changed.
	for _, args := range [][]string{{"kv", "history", "appliances/" + name + "/never"}, {"kv", "history", "appliances/" + name + "/never", "-o", "json"}} {
		if r := c.run(args...); r.code != exitNotFound || r.stdout != "" || !strings.Contains(r.stderr, "no version or release of appliances/"+name+"/never is kept") {
			t.Errorf("%v of a key never written: %s", args, r)
		}
	}
}

// Every key of an appliance named "secrets" is a secret (its path has a secrets segment): diff
// and get mask them, though no key under it is itself named secrets.
func TestE2E_ApplianceNamedSecretsMasked(t *testing.T) {
	c := newCLI(t, sharedServer(t))
	dir := t.TempDir()
	one, two := fmt.Sprintf("pw-one-%d", time.Now().UnixNano()), fmt.Sprintf("pw-two-%d", time.Now().UnixNano())
	v1 := filepath.Join(dir, "v1.yaml")
	v2 := filepath.Join(dir, "v2.yaml")
	os.WriteFile(v1, []byte("keys:\n  db: {password: "+one+"}\n"), 0o600)
	os.WriteFile(v2, []byte("keys:\n  db: {password: "+two+"}\n"), 0o600)
	rev1 := revisionOf(t, c.ok("appliance", "apply", "secrets", "-f", v1))
	rev2 := revisionOf(t, c.ok("appliance", "apply", "secrets", "-f", v2))
	diff := c.ok("appliance", "diff", "secrets", "--from", fmt.Sprint(rev1), "--to", fmt.Sprint(rev2))
	if strings.Contains(diff, one) || strings.Contains(diff, two) {
		t.Errorf("diff of appliance secrets shows a secret value: %q", diff)
	}
	if got := c.ok("appliance", "get", "secrets"); strings.Contains(got, two) {
		t.Errorf("get of appliance secrets shows a secret value: %q", got)
	}
}

// rollback --to previous passes over rollouts' starts however many there are: behind 60
// rollouts that were aborted, it still undoes the last apply (it looked at the 50 newest
// releases only, and said "it has no release to undo").
func TestE2E_RollbackPreviousPastManyRollouts(t *testing.T) {
	s := sharedServer(t)
	c := newCLI(t, s)
	name := fmt.Sprintf("hist-ro-%d", time.Now().UnixNano())
	c.ok("kv", "put", "appliances/"+name+"/port", "80")
	c.ok("kv", "put", "appliances/"+name+"/port", "8080", "-m", "the change to undo")
	enrollOne(t, s, c, name)
	for i := range 60 {
		c.ok("kv", "put", "appliances/"+name+"/port", fmt.Sprint(9000+i), "--canary", "100%", "--manual")
		c.ok("appliance", "rollout", "abort", name)
	}
	r := c.run("appliance", "rollback", name, "--to", "previous")
	if r.code != 0 || !strings.Contains(r.stdout, "revision ") {
		t.Fatalf("rollback --to previous behind 60 rollouts: %s", r)
	}
	if got := c.ok("kv", "get", "appliances/"+name+"/port"); got != "80" {
		t.Errorf("port after the undo = %q, want 80", got)
	}
	var h api.Releases
	if err := json.Unmarshal([]byte(c.ok("appliance", "history", name, "-o", "json", "--limit", "1")), &h); err != nil {
		t.Fatal(err)
	}
	if len(h.Releases) != 1 || !strings.Contains(h.Releases[0].Message, "the change to undo") {
		t.Errorf("the undo's release: %+v, want it to name the put it undid", h.Releases)
	}
}

// enrollOne enrolls instance vm-1 of appliance name with the admin token, and forgets it at the
// test's end: a rollout of name then has an instance to draw.
func enrollOne(t *testing.T, s *testServer, c *runner, name string) {
	t.Helper()
	cl := adminClient(t, s)
	if _, err := cl.Enroll(context.Background(), name, "vm-1", ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.run("appliance", "forget", name, "vm-1") })
	time.Sleep(10 * time.Millisecond) // enrolled before the rollouts start, by the server's clock
}

// adminClient is a client of s with its admin token.
func adminClient(t *testing.T, s *testServer) *client.Client {
	t.Helper()
	tok, err := os.ReadFile(s.adminTokenFile())
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(s.url(), client.Options{Token: strings.TrimSpace(string(tok))})
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// A page past the oldest release (--before at or below it) says that none is older, not that
// the appliance has no release kept.
func TestE2E_ApplianceHistoryPastTheOldest(t *testing.T) {
	c := newCLI(t, sharedServer(t))
	name := fmt.Sprintf("hist-end-%d", time.Now().UnixNano())
	rev := revisionOf(t, c.ok("kv", "put", "appliances/"+name+"/port", "80"))
	r := c.run("appliance", "history", name, "--before", fmt.Sprint(rev))
	if want := fmt.Sprintf("no release of %s older than revision %d is kept\n", name, rev); r.code != 0 || r.stdout != "" || r.stderr != want {
		t.Errorf("history --before %d: exit %d, stdout %q, stderr %q; want stderr %q", rev, r.code, r.stdout, r.stderr, want)
	}
	if r := c.run("appliance", "history", name); r.code != 0 || !strings.Contains(r.stdout, fmt.Sprintf("%d\t", rev)) {
		t.Errorf("history: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	// A revision is 1 or more: --before 0 is refused, not taken as the first page.
	for _, b := range []string{"0", "-1"} {
		if r := c.fails(exitUsage, "--before "+b+": a revision is 1 or more", "appliance", "history", name, "--before", b); r.stdout != "" {
			t.Errorf("history --before %s: stdout %q, want nothing", b, r.stdout)
		}
	}
}

// A rollback of a name the store holds nothing of (a mistyped one) exits 3 naming it, as its
// history does, and writes nothing: --to R said "had no keys at revision R", as if it existed.
// A known appliance without releases keeps its answer.
func TestE2E_RollbackOfUnknownName(t *testing.T) {
	s := sharedServer(t)
	c := newCLI(t, s)
	name := fmt.Sprintf("hist-typo-%d", time.Now().UnixNano())
	rev := revisionOf(t, c.ok("kv", "put", "appliances/"+name+"/port", "80"))
	typo := name + "x"
	want := fmt.Sprintf("appliance %q not found: it has no keys, releases, instances, schema or rollout", typo)
	c.fails(exitNotFound, want, "appliance", "rollback", typo, "--to", "previous")
	c.fails(exitNotFound, want, "appliance", "rollback", typo, "--to", fmt.Sprint(rev))
	c.fails(exitNotFound, want, "appliance", "history", typo)
	if r := c.run("kv", "ls", "appliances/"+typo); r.stdout != "" {
		t.Errorf("rollbacks of %s wrote keys: %s", typo, r)
	}

	// Known from an instance record only: nothing to undo, as before.
	enrolled := name + "-vm"
	enrollOne(t, s, c, enrolled)
	c.fails(exitError, "it has no release to undo", "appliance", "rollback", enrolled, "--to", "previous")
}

// kv history shows a staged rollout's start, which changes no live key, as "(staged)": not as
// "(deleted)" when its candidate deletes the key (the key kept its value: kv get reads it), nor
// as "?", a value that is not known.
func TestE2E_KvHistoryOfARolloutStart(t *testing.T) {
	s := sharedServer(t)
	c := newCLI(t, s)
	name := fmt.Sprintf("hist-staged-%d", time.Now().UnixNano())
	key := "appliances/" + name + "/extra"
	c.ok("kv", "put", "appliances/"+name+"/port", "80") // the appliance keeps a key without extra
	put := revisionOf(t, c.ok("kv", "put", key, "1"))
	enrollOne(t, s, c, name)
	del := fmt.Sprintf(`{"ops":[{"op":"delete","key":%q}]}`, key)
	r := c.runStdin([]byte(del), "txn", "-f", "-", "--canary", "100%", "--manual")
	if r.code != 0 {
		t.Fatalf("txn --canary deleting %s: %s", key, r)
	}
	staged := revisionOf(t, r.stdout)
	c.ok("appliance", "rollout", "abort", name)
	changed := revisionOf(t, c.ok("kv", "put", key, "2", "--canary", "100%", "--manual"))
	c.ok("appliance", "rollout", "abort", name)

	if got := c.ok("kv", "get", key); got != "1" {
		t.Fatalf("kv get %s after the aborted rollouts = %q, want 1", key, got)
	}
	out := c.ok("kv", "history", key)
	want := []string{
		fmt.Sprintf("%d\trollout\t(staged)", changed),
		fmt.Sprintf("%d\trollout\t(staged)", staged),
		fmt.Sprintf("%d\tput\t1", put),
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != len(want)+1 {
		t.Fatalf("kv history %s:\n%s\nwant a header and %d lines", key, out, len(want))
	}
	for i, l := range lines[1:] {
		f := strings.Split(l, "\t") // REVISION TIME KIND TOKEN SOURCE VALUE MESSAGE
		if got := strings.Join([]string{f[0], f[2], f[5]}, "\t"); got != want[i] {
			t.Errorf("kv history line %d: %q, want revision, kind and value %q", i+1, l, want[i])
		}
	}
}

// kv history of a key whose versions hold more than the server reads back (4 MiB of values)
// lists those it read and says on stderr from which revision on the older values are left out;
// the releases still name every change.
func TestE2E_KvHistoryCut(t *testing.T) {
	s := sharedServer(t)
	c := newCLI(t, s)
	key := fmt.Sprintf("appliances/hist-cut-%d/big", time.Now().UnixNano())
	var revs []int64
	for i := range 6 {
		r := c.runStdin([]byte(strings.Repeat("v", 1000<<10)+fmt.Sprint(i)), "kv", "put", key, "-")
		if r.code != 0 {
			t.Fatalf("kv put %s: %s", key, r)
		}
		revs = append(revs, revisionOf(t, r.stdout))
	}
	r := c.run("kv", "history", key)
	if r.code != 0 {
		t.Fatalf("kv history %s: %s", key, r)
	}
	// The five newest versions hold 5 MB: the walk stops there.
	want := fmt.Sprintf("values older than revision %d are left out", revs[1])
	if !strings.Contains(r.stderr, want) {
		t.Fatalf("kv history %s: stderr %q, want %q", key, r.stderr, want)
	}
	if lines := strings.Count(r.stdout, "\n"); lines != 1+len(revs) {
		t.Fatalf("kv history %s: %d lines, want a header and %d releases:\n%s", key, lines, len(revs), r.stdout)
	}
}
