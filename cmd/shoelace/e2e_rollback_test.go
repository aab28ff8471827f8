package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// shoelace appliance rollback NAME --to REV: the appliance's own keys become what they were at
// REV (added keys deleted, changed ones restored); shared/ and other appliances are untouched.
func TestE2E_ApplianceRollback(t *testing.T) {
	c := newCLI(t, sharedServer(t))
	dir := t.TempDir()
	v1 := filepath.Join(dir, "v1.yaml")
	v2 := filepath.Join(dir, "v2.yaml")
	os.WriteFile(v1, []byte("keys:\n  port: 80\n  secrets: {pw: one}\n"), 0o600)
	os.WriteFile(v2, []byte("keys:\n  port: 8080\n  debug: \"true\"\n  secrets: {pw: two}\n"), 0o600)

	rev1 := revisionOf(t, c.ok("appliance", "apply", "rb-web", "-f", v1))
	c.ok("appliance", "apply", "rb-web", "-f", v2)
	c.ok("kv", "put", "appliances/rb-web-frontend/port", "1")

	r := c.run("appliance", "rollback", "rb-web", "--to", strconv.FormatInt(rev1, 10))
	if r.code != 0 || !strings.HasPrefix(r.stdout, "revision ") || strings.Contains(r.stdout+r.stderr, "one") {
		t.Fatalf("rollback: exit %d, stdout %q, stderr %q (a secret must never be printed)", r.code, r.stdout, r.stderr)
	}
	if got := c.ok("kv", "ls", "appliances/rb-web"); got != "appliances/rb-web/port\nappliances/rb-web/secrets/pw\n" {
		t.Errorf("keys after rollback:\n%s", got)
	}
	if got := c.ok("kv", "get", "appliances/rb-web/port"); got != "80" {
		t.Errorf("port after rollback = %q, want 80", got)
	}
	if got := c.ok("kv", "get", "appliances/rb-web/secrets/pw"); got != "one" {
		t.Errorf("secret after rollback = %q, want the old one", got)
	}
	// The view masks secret values unless asked.
	r = c.run("appliance", "get", "rb-web")
	if r.code != 0 || !strings.Contains(r.stdout, "secrets/pw=(secret)\n") || strings.Contains(r.stdout, "one") ||
		!strings.Contains(r.stderr, "1 secret value masked") {
		t.Errorf("appliance get: exit %d, stdout %q, stderr %q; want the secret masked", r.code, r.stdout, r.stderr)
	}
	if got := c.ok("appliance", "get", "rb-web", "--show-secrets"); !strings.Contains(got, "secrets/pw=one\n") {
		t.Errorf("appliance get --show-secrets = %q", got)
	}
	if got := c.ok("kv", "get", "appliances/rb-web-frontend/port"); got != "1" {
		t.Errorf("another appliance changed: %q", got)
	}

	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"appliance", "rollback", "rb-web"}, 2, "--to REVISION is required"},
		{[]string{"appliance", "rollback", "rb-web", "--to", "1"}, 3, "no keys at revision 1"},
		{[]string{"appliance", "rollback", "rb-web", "--to", "999999999"}, 1, "ahead of the store"},
	} {
		r := c.run(tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d and %q", tc.args, r.code, r.stderr, tc.code, tc.want)
		}
	}
}

// appliance rollback --to a revision the store has not reached: one line that names the
// command, the appliance, the revision and the store's, and says that nothing was written
// (exit 1, as other requests the server refuses with 400). It said only "revision R is ahead
// of the store"; and a rollback sent straight to the API with such an X-Shoelace-Rollback was
// applied (TestReleases_RollbackAheadOfStore).
func TestE2E_RollbackToFutureRevision(t *testing.T) {
	c := newCLI(t, sharedServer(t))
	rev := revisionOf(t, c.ok("kv", "put", "appliances/rb-future/port", "80"))
	future := strconv.FormatInt(rev+1_000_000, 10)
	r := c.fails(exitError, "rollback rb-future: revision "+future+" is ahead of the store (at revision ", "appliance", "rollback", "rb-future", "--to", future)
	if !strings.Contains(r.stderr, "nothing was written") || !strings.Contains(r.stderr, "shoelace appliance history rb-future") {
		t.Errorf("stderr %q: want it to say nothing was written and where to find revisions", r.stderr)
	}
	if got := c.ok("appliance", "history", "rb-future", "-o", "json"); strings.Count(got, `"revision":`) != 2 { // the listing's and one release
		t.Errorf("history after the refused rollback: %s", got)
	}
}
