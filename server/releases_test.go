package server

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// history reads a page of releases from path.
func (f *fixture) history(path string) api.Releases {
	f.t.Helper()
	var out api.Releases
	f.must(f.do("GET", path, ""), 200, &out)
	return out
}

// Every kind of write leaves one release, in its own transaction, with who, from where, why
// and what; a refused write leaves none.
func TestReleases_EveryWriteKind(t *testing.T) {
	f := newFixture(t)
	msg := func(m string) []string { return []string{api.HeaderMessage, m, api.HeaderSource, "pipeline-7"} }
	var w api.WriteResult
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"port":"80","old":"x"}}`, msg("first")...), 200, &w)
	revApply := w.Revision
	f.must(f.do("PUT", "/v1/kv/shared/dns", "10.0.0.1", msg("dns")...), 200, &w)
	revPut := w.Revision
	f.must(f.do("POST", "/v1/txn", `{"ops":[{"op":"put","key":"appliances/web/port","value":"81"},{"op":"delete","key":"shared/dns"}]}`, msg("txn")...), 200, &w)
	revTxn := w.Revision
	f.must(f.do("POST", "/v1/txn", `{"ops":[{"op":"put","key":"appliances/db/port","value":"5432"}]}`, api.HeaderImport, "1"), 200, &w)
	revImport := w.Revision
	f.must(f.do("DELETE", "/v1/kv/appliances/web/old", "", msg("rm")...), 200, &w)
	revDelete := w.Revision
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"port":"80"}}`, api.HeaderRollback, fmt.Sprint(revApply)), 200, &w)
	revRollback := w.Revision

	n := len(f.history("/v1/releases").Releases)
	// Refused writes: a failed cas, a delete of nothing, a failed guard.
	f.mustErr(f.do("PUT", "/v1/kv/shared/x?cas=1", "v"), 409, api.CodeConflict)
	f.mustErr(f.do("DELETE", "/v1/kv/shared/none", ""), 404, api.CodeNotFound)
	f.mustErr(f.do("POST", "/v1/txn", `{"ops":[{"op":"put","key":"shared/y","value":"1"}],"guards":[{"key":"shared/y","mod_revision":3}]}`), 409, api.CodeConflict)

	all := f.history("/v1/releases")
	if len(all.Releases) != n || n != 6 {
		t.Fatalf("%d releases after the refused writes, %d before; want 6: %+v", len(all.Releases), n, all.Releases)
	}
	type want struct {
		rev            int64
		kind, message  string
		created, chg   int
		deleted        int
		copy           string
		withoutHeaders bool
	}
	wants := []want{
		{rev: revRollback, kind: api.KindRollback, message: fmt.Sprintf("rollback of web to revision %d", revApply), chg: 1, copy: "web", withoutHeaders: true},
		{rev: revDelete, kind: api.KindDelete, message: "rm", deleted: 1},
		{rev: revImport, kind: api.KindImport, created: 1, withoutHeaders: true},
		{rev: revTxn, kind: api.KindTxn, message: "txn", chg: 1, deleted: 1},
		{rev: revPut, kind: api.KindPut, message: "dns", created: 1},
		{rev: revApply, kind: api.KindApply, message: "first", created: 2, copy: "web"},
	}
	for i, wt := range wants {
		r := all.Releases[i]
		c, ch, d := r.Counts()
		if r.Revision != wt.rev || r.Kind != wt.kind || r.Message != wt.message || c != wt.created || ch != wt.chg || d != wt.deleted || r.Copy != wt.copy {
			t.Errorf("release %d: %+v; want %+v", i, r, wt)
		}
		if r.Token != "admin" || r.Remote == "" || time.Since(r.Time) > time.Minute {
			t.Errorf("release %d: token %q remote %q time %s", i, r.Token, r.Remote, r.Time)
		}
		if !wt.withoutHeaders && r.Source != "pipeline-7" {
			t.Errorf("release %d: source %q", i, r.Source)
		}
	}

	// The appliance's history: its own releases; with include_shared, shared/'s too; paged.
	web := f.history("/v1/appliances/web/releases")
	if len(web.Releases) != 4 || web.Releases[0].Revision != revRollback || web.Releases[3].Revision != revApply {
		t.Fatalf("web's history: %+v", web.Releases)
	}
	for _, r := range web.Releases {
		for _, c := range r.Changes {
			if c.Scope != api.ScopeAppliance || c.Appliance != "web" {
				t.Errorf("web's history shows another scope: %+v", c)
			}
		}
	}
	if got := f.history("/v1/appliances/web/releases?include_shared").Releases; len(got) != 5 {
		t.Errorf("web's history with shared: %d releases, want 5", len(got))
	}
	p1 := f.history("/v1/appliances/web/releases?limit=3")
	if len(p1.Releases) != 3 || p1.Next != p1.Releases[2].Revision {
		t.Fatalf("page 1: %+v", p1)
	}
	p2 := f.history(fmt.Sprintf("/v1/appliances/web/releases?limit=3&before=%d", p1.Next))
	if len(p2.Releases) != 1 || p2.Releases[0].Revision != revApply || p2.Next != 0 {
		t.Fatalf("page 2: %+v", p2)
	}
	f.mustErr(f.do("GET", "/v1/appliances/web/releases?limit=0", ""), 400, api.CodeInvalidRequest, "limit")
}

// apply A, apply B, compact, rollback to A: the view is A again, from the release copy, and
// the rollback is itself a release; secret values are sealed, never in clear in a record.
func TestReleases_RollbackAfterCompaction(t *testing.T) {
	parallelOwnEtcd(t)
	keyFile := filepath.Join(t.TempDir(), "secrets.key")
	if err := os.WriteFile(keyFile, []byte(hex.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := newOwnEtcdFixture(t, func(c *Config) { c.SecretsKeyFile = keyFile })
	var a, b api.WriteResult
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"port":"80","secrets":{"db":"hunter2"}}}`), 200, &a)
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"port":"8080","debug":"on","secrets":{"db":"swordfish"}}}`), 200, &b)
	if err := f.st.Compact(t.Context(), b.Revision); err != nil {
		t.Fatal(err)
	}
	var at ApplianceAt
	r := f.do("GET", fmt.Sprintf("/v1/appliances/web/at/%d", a.Revision), "")
	f.must(r, 200, &at)
	want := map[string]string{"port": "80", "secrets/db": "hunter2"}
	if !maps.Equal(at.Keys, want) {
		t.Fatalf("web at compacted %d: %v, want %v", a.Revision, at.Keys, want)
	}
	body, _ := json.Marshal(api.Apply{Keys: at.Keys})
	var rb api.WriteResult
	f.must(f.do("PUT", fmt.Sprintf("/v1/appliances/web?cas=%d", r.index()), string(body), api.HeaderRollback, fmt.Sprint(a.Revision)), 200, &rb)
	var v api.View
	f.must(f.do("GET", "/v1/appliances/web", ""), 200, &v)
	if !maps.Equal(v.Keys, want) {
		t.Fatalf("view after rollback: %v, want %v", v.Keys, want)
	}
	h := f.history("/v1/appliances/web/releases")
	if len(h.Releases) != 3 || h.Releases[0].Revision != rb.Revision || h.Releases[0].Kind != api.KindRollback || h.Releases[0].RollbackTo != a.Revision {
		t.Fatalf("history after rollback: %+v", h.Releases)
	}
	// Secrets: never in clear in a record, a copy, or the history.
	sys, _, err := f.st.SysList(t.Context(), "releases/", "release-copies/")
	if err != nil {
		t.Fatal(err)
	}
	if len(sys) != 6 {
		t.Errorf("%d release keys, want 3 records and 3 copies", len(sys))
	}
	for k, v := range sys {
		if strings.Contains(string(v), "hunter2") || strings.Contains(string(v), "swordfish") {
			t.Errorf("%s holds a secret in clear: %s", k, v)
		}
	}
	raw := f.do("GET", "/v1/releases", "")
	if strings.Contains(string(raw.body), "hunter2") || strings.Contains(string(raw.body), "swordfish") {
		t.Errorf("history holds a secret: %s", raw.body)
	}
	var st Status
	f.must(f.do("GET", "/v1/status", ""), 200, nil)
	if err := json.Unmarshal(f.do("GET", "/v1/status", "").body, &st); err != nil || !st.Releases.SecretsSealed || st.Releases.Retention != DefaultReleaseRetention || st.Releases.MaxAge != DefaultReleaseMaxAge.String() {
		t.Errorf("status releases: %+v, %v", st.Releases, err)
	}
}

// Without a key, secret values are left out of copies, and a rollback that needs one says so;
// a revision older than every copy is refused with the oldest that can be restored.
func TestReleases_RollbackWithoutSecretsKey(t *testing.T) {
	parallelOwnEtcd(t)
	f := newOwnEtcdFixture(t)
	var a, b, c, d api.WriteResult
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"port":"80"}}`), 200, &a)
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"port":"81","secrets":{"db":"hunter2"}}}`), 200, &b)
	f.must(f.do("PUT", "/v1/appliances/db", `{"keys":{"secrets":{"a":"1","b":"2"}}}`), 200, &d)
	f.must(f.do("PUT", "/v1/kv/appliances/web/port", "82"), 200, &c)
	last := f.put("shared/x", "1")
	if err := f.st.Compact(t.Context(), last); err != nil {
		t.Fatal(err)
	}
	f.must(f.do("GET", fmt.Sprintf("/v1/appliances/web/at/%d", a.Revision), ""), 200, nil)
	f.mustErr(f.do("GET", fmt.Sprintf("/v1/appliances/web/at/%d", b.Revision), ""), 410, api.CodeCompacted, "left out the values of 1 secret key,", "--secrets-key-file")
	f.mustErr(f.do("GET", fmt.Sprintf("/v1/appliances/db/at/%d", d.Revision), ""), 410, api.CodeCompacted, "left out the values of 2 secret keys,", "--secrets-key-file")
	f.mustErr(f.do("GET", fmt.Sprintf("/v1/appliances/web/at/%d", c.Revision), ""), 410, api.CodeCompacted,
		fmt.Sprintf("last release at or before it (revision %d, kind put) kept no copy", c.Revision), fmt.Sprintf("the oldest revision that can be restored is %d", a.Revision))
	f.mustErr(f.do("GET", fmt.Sprintf("/v1/appliances/web/at/%d", a.Revision-1), ""), 410, api.CodeCompacted,
		fmt.Sprintf("the oldest revision that can be restored is %d", a.Revision))
}

// The oldest revision a refusal names is one whose copy can be restored: not a copy that left
// out its secret values (or sealed them with a key this server lacks), and a refusal for such a
// copy names it too, so that the revision it points to restores.
func TestReleases_OldestRestorableSkipsCopiesWithoutSecrets(t *testing.T) {
	parallelOwnEtcd(t)
	f := newOwnEtcdFixture(t)
	var a, b, c api.WriteResult
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"port":"80","secrets":{"db":"hunter2"}}}`), 200, &a)
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"port":"81"}}`), 200, &b)
	f.must(f.do("PUT", "/v1/kv/appliances/web/port", "82"), 200, &c)
	if err := f.st.Compact(t.Context(), f.put("shared/x", "1")); err != nil {
		t.Fatal(err)
	}
	oldest := fmt.Sprintf("the oldest revision that can be restored is %d", b.Revision)
	f.mustErr(f.do("GET", fmt.Sprintf("/v1/appliances/web/at/%d", a.Revision-1), ""), 410, api.CodeCompacted, oldest)
	f.mustErr(f.do("GET", fmt.Sprintf("/v1/appliances/web/at/%d", a.Revision), ""), 410, api.CodeCompacted, "left out the values of 1 secret key", oldest)
	f.mustErr(f.do("GET", fmt.Sprintf("/v1/appliances/web/at/%d", c.Revision), ""), 410, api.CodeCompacted, "kind put) kept no copy", oldest)
	f.must(f.do("GET", fmt.Sprintf("/v1/appliances/web/at/%d", b.Revision), ""), 200, nil)
	r := f.do("GET", fmt.Sprintf("/v1/appliances/web/at/%d", a.Revision), "")
	if strings.Contains(string(r.body), "hunter2") {
		t.Errorf("refusal shows a secret: %s", r.body)
	}
}

// A revision etcd compacted, of an appliance whose releases kept no copy (kv puts), names
// etcd's own oldest revision, which still restores, not "restore a backup"; and an older copy
// than that revision is still the one named.
func TestReleases_OldestRestorableFromEtcdHistory(t *testing.T) {
	parallelOwnEtcd(t)
	f := newOwnEtcdFixture(t)
	a := f.put("appliances/db/port", "1")
	b := f.put("appliances/db/port", "2")
	f.put("appliances/db/port", "3")
	if err := f.st.Compact(t.Context(), b); err != nil {
		t.Fatal(err)
	}
	f.mustErr(f.do("GET", fmt.Sprintf("/v1/appliances/db/at/%d", a), ""), 410, api.CodeCompacted,
		fmt.Sprintf("the oldest revision that can be restored is %d", b))
	f.must(f.do("GET", fmt.Sprintf("/v1/appliances/db/at/%d", b), ""), 200, nil)

	var w api.WriteResult
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"port":"80"}}`), 200, &w)
	f.put("appliances/web/port", "81")
	last := f.put("appliances/web/port", "82")
	if err := f.st.Compact(t.Context(), last); err != nil {
		t.Fatal(err)
	}
	f.mustErr(f.do("GET", fmt.Sprintf("/v1/appliances/web/at/%d", w.Revision+1), ""), 410, api.CodeCompacted,
		fmt.Sprintf("the oldest revision that can be restored is %d", w.Revision))
}

// Pruning while writes stream keeps the newest --release-retention releases: none inside the
// window is lost, whatever the pruner read.
func TestReleases_PruneUnderWriteStream(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.ReleaseRetention = 5 })
	const writes = 40
	done := make(chan struct{})
	pruned := make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-done:
				pruned <- n
				return
			default:
			}
			f.s.pruneReleases(t.Context())
			n++
		}
	}()
	var all []int64
	for i := range writes {
		all = append(all, f.put("shared/k", fmt.Sprint(i)))
	}
	close(done)
	if n := <-pruned; n < 2 {
		t.Logf("only %d prune passes ran during the writes", n)
	}
	have := map[int64]bool{}
	for _, r := range f.history("/v1/releases?limit=1000").Releases {
		have[r.Revision] = true
	}
	for _, want := range all[writes-5:] {
		if !have[want] {
			t.Fatalf("the release at %d, inside the window of 5, was pruned (kept: %v)", want, have)
		}
	}
	f.s.pruneReleases(t.Context())
	got := f.history("/v1/releases?limit=1000").Releases
	if len(got) != 5 || got[0].Revision != all[writes-1] || got[4].Revision != all[writes-5] {
		t.Fatalf("after the stream: %d releases (%v); want the last 5 of %v", len(got), got, all)
	}
}

func TestReleases_SecretsKeyFileAndLimits(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.key")
	os.WriteFile(good, []byte(strings.Repeat("ab", 32)+"\n"), 0o600)
	open := filepath.Join(dir, "open.key")
	os.WriteFile(open, []byte(strings.Repeat("ab", 32)), 0o644)
	short := filepath.Join(dir, "short.key")
	os.WriteFile(short, []byte("abcd"), 0o600)
	for _, tc := range []struct{ path, want string }{
		{open, "must not be readable by group or others"},
		{short, "want a 32-byte key"},
		{filepath.Join(dir, "none"), "no such file"},
	} {
		if _, err := loadSealer(tc.path); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("loadSealer(%s): %v; want %q", filepath.Base(tc.path), err, tc.want)
		}
	}
	sl, err := loadSealer(good)
	if err != nil {
		t.Fatal(err)
	}
	id, sealed, err := sl.seal([]byte("hunter2"))
	if err != nil || strings.Contains(sealed, "hunter2") {
		t.Fatalf("seal: %q, %v", sealed, err)
	}
	if plain, err := sl.open(id, sealed); err != nil || string(plain) != "hunter2" {
		t.Errorf("open: %q, %v", plain, err)
	}
	if _, err := sl.open("other", sealed); err == nil || !strings.Contains(err.Error(), "which this server does not have") {
		t.Errorf("open with another key id: %v", err)
	}
	// Rotation: a new key first, the old one kept after it opens what the old one sealed.
	os.WriteFile(good, []byte(strings.Repeat("cd", 32)+"\n"+strings.Repeat("ab", 32)+"\n"), 0o600)
	rotated, err := loadSealer(good)
	if err != nil {
		t.Fatal(err)
	}
	if plain, err := rotated.open(id, sealed); err != nil || string(plain) != "hunter2" {
		t.Errorf("open after a rotation: %q, %v", plain, err)
	}
	if newID, _, _ := rotated.seal([]byte("x")); newID == id {
		t.Error("after a rotation, the old key still seals")
	}

	for _, tc := range []struct {
		in   string
		want time.Duration
	}{{"90d", 90 * 24 * time.Hour}, {"720h", 720 * time.Hour}, {"0", 0}} {
		if got, err := ParseAge(tc.in); err != nil || got != tc.want {
			t.Errorf("ParseAge(%q) = %s, %v; want %s", tc.in, got, err, tc.want)
		}
	}
	if _, err := ParseAge("ninety days"); err == nil {
		t.Error("ParseAge accepted ninety days")
	}
	cfg := testConfig()
	cfg.ReleaseRetention = 0
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "--release-retention") {
		t.Errorf("retention 0: %v", err)
	}
}

// Who may read which history: an appliance's needs a read grant on it; all releases need admin,
// or a readable prefix, and then show only the keys under it.
func TestReleases_Access(t *testing.T) {
	f := newFixture(t)
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"port":"80"}}`), 200, nil)
	f.must(f.do("POST", "/v1/txn", `{"ops":[{"op":"put","key":"appliances/db/port","value":"1"},{"op":"put","key":"appliances/web/tls","value":"on"}]}`), 200, nil)
	web := f.as(f.newToken(api.TokenRequest{Name: "ci-web", Write: []string{"appliances/web"}}))
	agent := f.as(f.newToken(api.TokenRequest{Name: "agent-web", Appliance: "web"}))

	if got := web.history("/v1/appliances/web/releases").Releases; len(got) != 2 {
		t.Errorf("web's history for ci-web: %+v", got)
	}
	web.mustErr(web.do("GET", "/v1/appliances/db/releases", ""), 403, api.CodeForbidden)
	web.mustErr(web.do("GET", "/v1/appliances/web/releases?include_shared", ""), 403, api.CodeForbidden)
	agent.mustErr(agent.do("GET", "/v1/appliances/web/releases", ""), 403, api.CodeForbidden)
	web.mustErr(web.do("GET", "/v1/releases", ""), 403, api.CodeForbidden, "admin")
	web.mustErr(web.do("GET", "/v1/releases?prefix=appliances/db", ""), 403, api.CodeForbidden)
	got := web.history("/v1/releases?prefix=appliances/web").Releases
	if len(got) != 2 {
		t.Fatalf("releases under appliances/web for ci-web: %+v", got)
	}
	for _, r := range got {
		for _, c := range r.Changes {
			if c.Appliance != "web" {
				t.Errorf("ci-web sees another appliance's keys: %+v", c)
			}
		}
	}
	// The apply's copy is web's own: named under the prefix appliances/web itself.
	if got[1].Kind != api.KindApply || got[1].Copy != "web" {
		t.Errorf("web's apply under prefix appliances/web: %+v, want its copy named", got[1])
	}
	// An admin sees both whole (token changes are audited, but are not releases).
	if got := f.history("/v1/releases").Releases; len(got) != 2 || len(got[0].Changes) != 2 {
		t.Errorf("admin's releases: %+v", got)
	}
}

// The root is a prefix like any other: a token granted "/" (every key) that names it
// (?prefix=/, ?prefix=%2F) lists every release, as it lists every key under /v1/kv/?recurse; it
// was refused as if it had named no prefix, 403 with a hint to name appliances/web. A token
// refused the whole list is pointed at a prefix it may read.
func TestReleases_RootPrefix(t *testing.T) {
	f := newFixture(t)
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"port":"80"}}`), 200, nil)
	f.put("shared/dns", "10.0.0.1")
	f.put("other/x", "1")
	all := f.as(f.newToken(api.TokenRequest{Name: "auditor", Read: []string{"/"}}))
	shared := f.as(f.newToken(api.TokenRequest{Name: "dns", Write: []string{"shared"}}))

	for _, path := range []string{"/v1/releases?prefix=/", "/v1/releases?prefix=%2F"} {
		if got := all.history(path).Releases; len(got) != 3 {
			t.Errorf("%s for a token granted /: %d releases, want all 3: %+v", path, len(got), got)
		}
	}
	// Without a prefix only an admin lists them all (the contract: another token names one).
	all.mustErr(all.do("GET", "/v1/releases", ""), 403, api.CodeForbidden, "?prefix=/)")
	shared.mustErr(shared.do("GET", "/v1/releases", ""), 403, api.CodeForbidden, "?prefix=shared)")
	shared.mustErr(shared.do("GET", "/v1/releases?prefix=/", ""), 403, api.CodeForbidden, "?prefix=shared)")
	if got := shared.history("/v1/releases?prefix=shared").Releases; len(got) != 1 {
		t.Errorf("releases under shared: %+v", got)
	}
}

// A key's history: its values while etcd has them, then the releases that touched it.
func TestReleases_KeyHistory(t *testing.T) {
	parallelOwnEtcd(t)
	f := newOwnEtcdFixture(t)
	var revs []int64
	for _, v := range []string{"v1", "v2", "v3"} {
		revs = append(revs, f.put("shared/k", v))
	}
	f.put("shared/other", "x")
	var h api.KeyHistory
	f.must(f.do("GET", "/v1/kv/shared/k?history", ""), 200, &h)
	if len(h.Versions) != 3 || h.Versions[0].Value != "v3" || h.Versions[2].Value != "v1" || h.Compacted ||
		len(h.Releases) != 3 || h.Releases[0].Revision != revs[2] || h.Releases[2].Changes[0].Created[0] != "shared/k" {
		t.Fatalf("history: %+v", h)
	}
	if err := f.st.Compact(t.Context(), revs[2]); err != nil {
		t.Fatal(err)
	}
	f.must(f.do("DELETE", "/v1/kv/shared/k", ""), 200, nil)
	h = api.KeyHistory{}
	f.must(f.do("GET", "/v1/kv/shared/k?history", ""), 200, &h)
	if len(h.Versions) != 0 || len(h.Releases) != 4 || h.Releases[0].Changes[0].DeletedCount != 1 {
		t.Fatalf("history after a compaction and a delete: %+v", h)
	}
	f.put("shared/k", "v4")
	h = api.KeyHistory{}
	f.must(f.do("GET", "/v1/kv/shared/k?history&limit=2", ""), 200, &h)
	if len(h.Versions) != 1 || h.Versions[0].Value != "v4" || len(h.Releases) != 2 {
		t.Fatalf("history, limit 2: %+v", h)
	}
	f.put("shared/k", "v5")
	if err := f.st.Compact(t.Context(), f.put("shared/other", "y")); err != nil {
		t.Fatal(err)
	}
	h = api.KeyHistory{}
	f.must(f.do("GET", "/v1/kv/shared/k?history", ""), 200, &h)
	if len(h.Versions) != 1 || !h.Compacted {
		t.Fatalf("history past a compaction: %+v", h)
	}
	reader := f.as(f.newToken(api.TokenRequest{Name: "r", Read: []string{"appliances"}}))
	reader.mustErr(reader.do("GET", "/v1/kv/shared/k?history", ""), 403, api.CodeForbidden)
}

// X-Shoelace-Message and X-Shoelace-Source end up in every history listing an operator reads in
// a terminal: control characters (the C1 CSI of escape sequences among them), bidi controls and
// texts past their limits are refused, and nothing is written.
func TestReleases_MessageAndSourceChecked(t *testing.T) {
	f := newFixture(t)
	for _, c := range []struct{ header, value, words string }{
		{api.HeaderMessage, "red \u009b31m alert", "control character"},
		{api.HeaderMessage, "evil\u202egnp.exe", "control character"},
		{api.HeaderMessage, strings.Repeat("m", api.MaxMessageBytes+1), fmt.Sprint(api.MaxMessageBytes)},
		{api.HeaderSource, strings.Repeat("s", api.MaxSourceBytes+1), fmt.Sprint(api.MaxSourceBytes)},
		{api.HeaderSource, "pipe\u0085next", "control character"},
		{api.HeaderMessage, "bad \xff utf-8", "UTF-8"},
	} {
		f.mustErr(f.do("PUT", "/v1/kv/shared/x", "1", c.header, c.value), 400, api.CodeInvalidRequest, c.header, c.words)
	}
	// Given twice (each fine alone): which one the release keeps would be a guess.
	for _, h := range []string{api.HeaderMessage, api.HeaderSource} {
		req, err := http.NewRequest("PUT", f.srv.URL+"/v1/kv/shared/x", strings.NewReader("1"))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+f.token)
		req.Header.Add(h, "first")
		req.Header.Add(h, "second")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 400 || !strings.Contains(string(body), api.CodeInvalidRequest) || !strings.Contains(string(body), "2 "+h+" headers") {
			t.Fatalf("two %s headers: %d %s; want 400 invalid_request naming them", h, res.StatusCode, body)
		}
	}
	if h := f.history("/v1/releases"); len(h.Releases) != 0 {
		t.Fatalf("refused writes recorded releases: %+v", h.Releases)
	}
	msg := "deploy 7: ünïcode\tand a tab " + strings.Repeat("m", 100)
	f.must(f.do("PUT", "/v1/kv/shared/x", "1", api.HeaderMessage, msg, api.HeaderSource, "ci/web#7"), 200, nil)
	if h := f.history("/v1/releases"); len(h.Releases) != 1 || h.Releases[0].Message != msg || h.Releases[0].Source != "ci/web#7" {
		t.Fatalf("history: %+v", h.Releases)
	}
}

// A write stream does not wait for the pruner's next tick (ten minutes, tens of thousands of
// releases at the rate limit): every quarter of --release-retention writes wakes it.
func TestReleases_WriteStreamWakesPruner(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.ReleaseRetention = 8 })
	for i := range 40 {
		f.put("shared/k", fmt.Sprint(i))
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		all, _, err := f.st.Releases(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if len(all) <= 8+2 { // the last kick may run before the writes after it commit
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d releases kept 20s after 40 writes, want at most 10 (retention 8)", len(all))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// X-Shoelace-Rollback names the revision a rollback restores. One ahead of the store was
// taken: the release said "rollback of web to revision R" of a state the store never had.
// It is refused as an apply's cas ahead of the store is, naming both revisions, with nothing
// written.
func TestReleases_RollbackAheadOfStore(t *testing.T) {
	f := newFixture(t)
	var w api.WriteResult
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"port":"80"}}`), 200, &w)
	future := w.Revision + 1000
	before := len(f.history("/v1/releases").Releases)
	for _, path := range []string{"/v1/appliances/web", "/v1/appliances/web?dry_run", fmt.Sprintf("/v1/appliances/web?cas=%d", w.Revision)} {
		r := f.do("PUT", path, `{"keys":{"port":"81"}}`, api.HeaderRollback, fmt.Sprint(future))
		f.mustErr(r, 400, api.CodeInvalidRequest, api.HeaderRollback, fmt.Sprintf("revision %d is ahead of the store (at revision ", future))
		// The store's revision as the check read it: other tests' writes to the shared etcd
		// move it on, so it is at least the apply's and behind the future one.
		var cur int64
		if _, err := fmt.Sscanf(r.errMessage()[strings.Index(r.errMessage(), "(at revision "):], "(at revision %d)", &cur); err != nil || cur < w.Revision || cur >= future {
			t.Errorf("%s: message %q names the store's revision %d (%v), want one from %d to %d", path, r.errMessage(), cur, err, w.Revision, future-1)
		}
	}
	var v api.View
	f.must(f.do("GET", "/v1/appliances/web", ""), 200, &v)
	if v.Keys["port"] != "80" {
		t.Errorf("port = %q after the refused rollbacks, want 80", v.Keys["port"])
	}
	if n := len(f.history("/v1/releases").Releases); n != before {
		t.Errorf("%d releases after the refused rollbacks, %d before", n, before)
	}
	// The store's own revision may be restored (nothing changes), as any revision up to it.
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"port":"80"}}`, api.HeaderRollback, fmt.Sprint(w.Revision)), 200, &w)
	if !w.Unchanged {
		t.Errorf("rollback to the current revision: %+v, want unchanged", w)
	}
}

// A prefix covers the key it names, as in listings and grants: ?prefix=KEY lists the releases
// that wrote KEY itself, also to a token whose grant is that one key.
func TestReleases_PrefixNamesOneKey(t *testing.T) {
	f := newFixture(t)
	f.put("appliances/web/port", "80")
	f.put("appliances/web/port-alt", "81")
	f.put("appliances/web/port/x", "82") // a key below the key: also under the prefix
	key := f.as(f.newToken(api.TokenRequest{Name: "ci-port", Read: []string{"appliances/web/port"}}))
	for _, c := range []*fixture{f, key} {
		got := c.history("/v1/releases?prefix=appliances/web/port").Releases
		if len(got) != 2 {
			t.Fatalf("releases under appliances/web/port: %+v, want the two that wrote it and below it", got)
		}
		var names []string
		for _, r := range got {
			for _, ch := range r.Changes {
				names = append(names, ch.Created...)
			}
		}
		if want := []string{"appliances/web/port/x", "appliances/web/port"}; fmt.Sprint(names) != fmt.Sprint(want) {
			t.Errorf("keys shown: %v, want %v (never appliances/web/port-alt)", names, want)
		}
	}
}

// Two X-Shoelace-Rollback (or X-Shoelace-Import) headers are refused as two messages are: the
// release would name the first revision and drop the other unseen. Nothing is written.
func TestReleases_KindHeadersOnce(t *testing.T) {
	f := newFixture(t)
	var w api.WriteResult
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"port":"80"}}`), 200, &w)
	before := len(f.history("/v1/releases").Releases)
	for _, c := range []struct{ method, path, body, header string }{
		{"PUT", "/v1/appliances/web", `{"keys":{"port":"81"}}`, api.HeaderRollback},
		{"POST", "/v1/txn", `{"ops":[{"op":"put","key":"appliances/web/port","value":"81"}]}`, api.HeaderImport},
	} {
		req, err := http.NewRequest(c.method, f.srv.URL+c.path, strings.NewReader(c.body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+f.token)
		req.Header.Add(c.header, fmt.Sprint(w.Revision))
		req.Header.Add(c.header, fmt.Sprint(w.Revision-1))
		f.mustErr(f.send(req), 400, api.CodeInvalidRequest, "2 "+c.header+" headers")
	}
	var v api.View
	f.must(f.do("GET", "/v1/appliances/web", ""), 200, &v)
	if v.Keys["port"] != "80" {
		t.Errorf("port = %q after the refused writes, want 80", v.Keys["port"])
	}
	if n := len(f.history("/v1/releases").Releases); n != before {
		t.Errorf("%d releases after the refused writes, %d before", n, before)
	}
}

// --release-max-age in days beyond what a time.Duration holds is refused: it wrapped around to
// a short age (213504d was 25 minutes, 106752d a negative one) that pruned nearly every release.
func TestReleases_MaxAgeDaysOverflowRefused(t *testing.T) {
	for _, in := range []string{"106752d", "213504d", "99999999d"} {
		if got, err := ParseAge(in); err == nil || !strings.Contains(err.Error(), "at most 106751d") {
			t.Errorf("ParseAge(%q) = %s, %v; want refused naming the most days", in, got, err)
		}
	}
	if got, err := ParseAge("106751d"); err != nil || got != 106751*24*time.Hour {
		t.Errorf("ParseAge(106751d) = %s, %v", got, err)
	}
}

// A release's copy is of an appliance's whole tree: a token that reads only one key of it sees
// neither the copy's appliance, nor its size (copy_bytes), nor why none was kept (which says the
// tree's size), in the releases under its prefix or in the key's history. Before, copy_bytes
// was left in both, and copy_skipped in the releases, after the copy's name was hidden.
func TestReleases_CopyHiddenFromAOneKeyReader(t *testing.T) {
	f := newFixture(t)
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"port":"80","tls":"on"}}`), 200, nil)
	// A tree over the copy limit (a third of etcd's request size) is kept no copy.
	big := strings.Repeat("x", 700<<10)
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"port":"81","tls":"`+big+`"}}`), 200, nil)
	whole := f.history("/v1/releases?prefix=appliances/web").Releases
	if len(whole) != 2 || whole[0].CopySkipped == "" || whole[1].Copy != "web" || whole[1].CopyBytes == 0 {
		t.Fatalf("releases under appliances/web for admin: %+v, want the copy skipped, then kept", whole)
	}
	port := f.as(f.newToken(api.TokenRequest{Name: "port-reader", Read: []string{"appliances/web/port"}}))
	got := port.history("/v1/releases?prefix=appliances/web/port").Releases
	var kh api.KeyHistory
	port.must(port.do("GET", "/v1/kv/appliances/web/port?history", ""), 200, &kh)
	if len(got) != 2 || len(kh.Releases) != 2 {
		t.Fatalf("port-reader's releases: %+v; key history: %+v", got, kh.Releases)
	}
	for _, r := range append(got, kh.Releases...) {
		if r.Copy != "" || r.CopyBytes != 0 || r.CopySkipped != "" {
			t.Errorf("port-reader sees the copy of web's tree: copy %q, copy_bytes %d, copy_skipped %q", r.Copy, r.CopyBytes, r.CopySkipped)
		}
	}
}
