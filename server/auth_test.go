package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/testutil"

	"github.com/shoelace-dev/shoelace/internal/testbin"
)

// newToken creates a token through the API and returns its secret.
func (f *fixture) newToken(req api.TokenRequest) string {
	f.t.Helper()
	body, _ := json.Marshal(req)
	var c api.TokenCreated
	f.must(f.do("POST", "/v1/tokens", string(body)), 201, &c)
	if c.Name != req.Name || !strings.HasPrefix(c.Token, "sl_") || len(c.Token) < 40 || c.Revision <= 0 {
		f.t.Fatalf("created %+v", c)
	}
	return c.Token
}

func TestAuth_RoutePrincipalTable(t *testing.T) {
	f := newOwnEtcdFixture(t)
	f.put("shared/dns", "1.1.1.1")
	webRev := f.put("appliances/web/a", "1")
	frontRev := f.put("appliances/web-frontend/a", "2")
	f.put("appliances/db/secrets/pw", "hunter2")
	tokens := []struct{ name, token string }{
		{"none", ""},
		{"bogus", "sl_bogus"},
		{"admin", f.token},
		{"agent", f.newToken(api.TokenRequest{Name: "agent-web", Appliance: "web"})},
		{"reader", f.newToken(api.TokenRequest{Name: "reader", Read: []string{"shared", "appliances/web/"}})},
		{"writer", f.newToken(api.TokenRequest{Name: "writer", Write: []string{"appliances/web"}})},
	}
	f.newToken(api.TokenRequest{Name: "victim", Appliance: "db"})
	ctx := context.Background()
	type row struct {
		method, path, body string
		setup              func()
		want               [6]int // none, bogus, admin, agent, reader, writer
	}
	rows := []row{
		{"GET", "/v1/kv/shared/dns", "", nil, [6]int{401, 401, 200, 403, 200, 403}},
		{"GET", "/v1/kv/appliances/web/a", "", nil, [6]int{401, 401, 200, 403, 200, 200}},
		{"GET", "/v1/kv/appliances/web-frontend/a", "", nil, [6]int{401, 401, 200, 403, 403, 403}},
		{"GET", "/v1/kv/appliances/db/secrets/pw", "", nil, [6]int{401, 401, 200, 403, 403, 403}},
		{"GET", "/v1/kv/appliances/web?recurse", "", nil, [6]int{401, 401, 200, 403, 200, 200}},
		{"GET", "/v1/kv/appliances?recurse&keys", "", nil, [6]int{401, 401, 200, 403, 200, 200}},
		{"GET", "/v1/kv/?recurse", "", nil, [6]int{401, 401, 200, 403, 200, 200}},
		{"GET", "/v1/kv/appliances/db?recurse", "", nil, [6]int{401, 401, 200, 403, 403, 403}},
		{"PUT", "/v1/kv/appliances/web/b", "v", nil, [6]int{401, 401, 200, 403, 403, 200}},
		{"PUT", "/v1/kv/appliances/web-frontend/b", "v", nil, [6]int{401, 401, 200, 403, 403, 403}},
		{"PUT", "/v1/kv/shared/x", "v", nil, [6]int{401, 401, 200, 403, 403, 403}},
		{"DELETE", "/v1/kv/appliances/web/b", "", func() { f.put("appliances/web/b", "v") }, [6]int{401, 401, 200, 403, 403, 200}},
		{"DELETE", "/v1/kv/appliances?recurse", "", nil, [6]int{401, 401, 0, 403, 403, 403}},
		{"POST", "/v1/txn", `{"ops":[{"op":"put","key":"appliances/web/c","value":"1"}]}`, nil, [6]int{401, 401, 200, 403, 403, 200}},
		{"POST", "/v1/txn", `{"ops":[{"op":"put","key":"appliances/web/c","value":"1"},{"op":"delete","key":"shared/x"}]}`, func() { f.put("shared/x", "v") }, [6]int{401, 401, 200, 403, 403, 403}},
		{"POST", "/v1/txn", `{"ops":[{"op":"put","key":"appliances/web/c","value":"1"}],"guards":[{"key":"shared/dns","mod_revision":0}]}`, nil, [6]int{401, 401, 409, 403, 403, 403}},
		{"GET", "/v1/appliances", "", nil, [6]int{401, 401, 200, 200, 200, 200}},
		{"GET", "/v1/appliances/web", "", nil, [6]int{401, 401, 200, 200, 200, 403}},
		{"GET", "/v1/appliances/web?index=1&wait=0", "", nil, [6]int{401, 401, 200, 200, 200, 403}},
		{"GET", "/v1/appliances/web-frontend", "", nil, [6]int{401, 401, 200, 403, 403, 403}},
		{"GET", "/v1/appliances/web/instances", "", nil, [6]int{401, 401, 200, 403, 200, 200}},
		{"GET", "/v1/appliances/web-frontend/instances", "", nil, [6]int{401, 401, 200, 403, 403, 403}},
		{"GET", fmt.Sprintf("/v1/appliances/web/at/%d", webRev), "", nil, [6]int{401, 401, 200, 403, 200, 200}},
		{"GET", fmt.Sprintf("/v1/appliances/web-frontend/at/%d", frontRev), "", nil, [6]int{401, 401, 200, 403, 403, 403}},
		{"PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`, nil, [6]int{401, 401, 200, 403, 403, 200}},
		{"PUT", "/v1/appliances/web-frontend", `{"keys":{"a":"1"}}`, nil, [6]int{401, 401, 200, 403, 403, 403}},
		{"POST", "/v1/tokens", `{"name":"tmp","read":["shared"]}`, func() { f.st.SysDelete(ctx, tokenPrefix+"tmp") }, [6]int{401, 401, 201, 403, 403, 403}},
		{"GET", "/v1/tokens", "", nil, [6]int{401, 401, 200, 403, 403, 403}},
		{"DELETE", "/v1/tokens/victim", "", func() {
			f.st.SysDelete(ctx, tokenPrefix+"victim")
			f.newToken(api.TokenRequest{Name: "victim", Appliance: "db"})
		}, [6]int{401, 401, 200, 403, 403, 403}},
		{"GET", "/v1/maintenance", "", nil, [6]int{401, 401, 200, 200, 200, 200}},
		{"PUT", "/v1/maintenance", `{"on":false}`, nil, [6]int{401, 401, 200, 403, 403, 403}},
		{"GET", "/v1/snapshot", "", nil, [6]int{401, 401, 200, 403, 403, 403}},
		{"GET", "/health", "", nil, [6]int{200, 200, 200, 200, 200, 200}},
		{"GET", "/health/deps", "", nil, [6]int{200, 200, 200, 200, 200, 200}},
		{"GET", "/metrics", "", nil, [6]int{200, 200, 200, 200, 200, 200}},
	}
	for _, r := range rows {
		for i, tk := range tokens {
			want := r.want[i]
			if want == 0 {
				continue // would change what later rows rely on
			}
			if r.setup != nil {
				r.setup()
			}
			got := f.doToken(tk.token, r.method, r.path, r.body)
			if got.StatusCode != want {
				t.Errorf("%s %s as %s: %d, want %d: %s", r.method, r.path, tk.name, got.StatusCode, want, got.body)
				continue
			}
			switch want {
			case 401:
				if got.errCode() != api.CodeUnauthorized || got.Header.Get("WWW-Authenticate") == "" {
					t.Errorf("%s %s as %s: 401 body %s headers %v", r.method, r.path, tk.name, got.body, got.Header)
				}
			case 403:
				if got.errCode() != api.CodeForbidden || !strings.Contains(got.errMessage(), tk.name) && !strings.Contains(got.errMessage(), "agent-web") {
					t.Errorf("%s %s as %s: 403 body %s", r.method, r.path, tk.name, got.body)
				}
			}
		}
	}
}

func TestAuth_ListingsAreFiltered(t *testing.T) {
	f := newFixture(t)
	for _, k := range []string{"shared/dns", "appliances/web/a", "appliances/web/b/c", "appliances/web-frontend/a", "appliances/db/secrets/pw"} {
		f.put(k, "v")
	}
	reader := f.newToken(api.TokenRequest{Name: "reader", Read: []string{"shared", "appliances/web"}})
	writer := f.newToken(api.TokenRequest{Name: "writer", Write: []string{"appliances/web"}})
	agent := f.newToken(api.TokenRequest{Name: "agent", Appliance: "web-frontend"})

	var l api.List
	f.must(f.doToken(reader, "GET", "/v1/kv/?recurse&keys", ""), 200, &l)
	if want := []string{"appliances/web/a", "appliances/web/b/c", "shared/dns"}; !slices.Equal(l.Keys, want) {
		t.Fatalf("reader sees %v, want %v", l.Keys, want)
	}
	l = api.List{}
	f.must(f.doToken(writer, "GET", "/v1/kv/appliances?recurse", ""), 200, &l)
	var got []string
	for _, e := range l.Entries {
		got = append(got, e.Key)
	}
	if want := []string{"appliances/web/a", "appliances/web/b/c"}; !slices.Equal(got, want) {
		t.Fatalf("writer sees %v, want %v", got, want)
	}
	// Listing every key with a token that may read none says so, not 'may not read under ""'.
	f.mustErr(f.doToken(agent, "GET", "/v1/kv/?recurse", ""), 403, api.CodeForbidden,
		`token "agent" may not read any key: it has no read or write grant; as an agent token it reads the view of appliance web-frontend (shoelace appliance get web-frontend)`)
	for tok, want := range map[string][]string{
		f.token: {"db", "web", "web-frontend"},
		reader:  {"web"},
		writer:  {"web"}, // its own keys, without shared/: as the console lists it
		agent:   {"web-frontend"},
	} {
		var a api.Appliances
		f.must(f.doToken(tok, "GET", "/v1/appliances", ""), 200, &a)
		if !slices.Equal(a.Appliances, want) {
			t.Fatalf("appliances %v, want %v", a.Appliances, want)
		}
	}
}

func TestAuth_TokenLifecycle(t *testing.T) {
	f := newFixture(t)
	f.put("shared/a", "1")
	// A prefix given twice, or with and without its '/', is kept once (it was listed twice).
	tok := f.newToken(api.TokenRequest{Name: "ci", Read: []string{"shared/", "shared"}, Write: []string{"appliances/web", "appliances/web"}})
	f.must(f.doToken(tok, "GET", "/v1/kv/shared/a", ""), 200, nil)

	var list api.TokenList
	r := f.do("GET", "/v1/tokens", "")
	f.must(r, 200, &list)
	if strings.Contains(string(r.body), tok) || strings.Contains(string(r.body), hashSecret(tok)) || strings.Contains(string(r.body), "hash") {
		t.Fatalf("token list leaks secrets: %s", r.body)
	}
	var names []string
	for _, ti := range list.Tokens {
		names = append(names, ti.Name)
		if ti.Name == "ci" && (!slices.Equal(ti.Read, []string{"shared"}) || !slices.Equal(ti.Write, []string{"appliances/web"}) || ti.LastUsed == nil || ti.Created.IsZero()) {
			t.Fatalf("ci token info %+v", ti)
		}
	}
	if !slices.Equal(names, []string{"admin", "ci"}) {
		t.Fatalf("tokens %v", names)
	}

	for _, bad := range []struct{ body, code, word string }{
		{`{"name":"ci","admin":true}`, api.CodeConflict, "exists"},
		{`{"name":"-x","admin":true}`, api.CodeInvalidName, "token name"},
		{`{"name":"x"}`, api.CodeInvalidBody, "exactly one"},
		{`{"name":"x","admin":true,"appliance":"web"}`, api.CodeInvalidBody, "exactly one"},
		{`{"name":"x","appliance":"a/b"}`, api.CodeInvalidName, "appliance name"},
		{`{"name":"x","read":["a//b"]}`, api.CodeInvalidKey, "prefix"},
		{`{"name":"x","admin":true,"extra":1}`, api.CodeInvalidBody, "extra"},
		{`{"name":"x","admin":true}{}`, api.CodeInvalidBody, "after"},
	} {
		r := f.do("POST", "/v1/tokens", bad.body)
		if r.errCode() != bad.code || !strings.Contains(r.errMessage(), bad.word) {
			t.Errorf("POST /v1/tokens %s: %d %s, want %s mentioning %q", bad.body, r.StatusCode, r.body, bad.code, bad.word)
		}
	}

	f.must(f.do("DELETE", "/v1/tokens/ci", ""), 200, nil)
	f.mustErr(f.doToken(tok, "GET", "/v1/kv/shared/a", ""), 401, api.CodeUnauthorized, "unknown or revoked")
	f.mustErr(f.do("DELETE", "/v1/tokens/ci", ""), 404, api.CodeNotFound, "ci")
}

// The last admin token cannot be revoked: nobody could manage tokens afterwards, and the
// server makes a new admin token only for a store with no tokens at all.
func TestAuth_LastAdminTokenStays(t *testing.T) {
	f := newFixture(t)
	agent := f.newToken(api.TokenRequest{Name: "agent", Appliance: "web"})
	f.mustErr(f.do("DELETE", "/v1/tokens/admin", ""), 409, api.CodeConflict, "last admin token")
	f.must(f.do("GET", "/v1/tokens", ""), 200, nil) // still valid

	second := f.newToken(api.TokenRequest{Name: "ops", Admin: true})
	f.must(f.doToken(second, "DELETE", "/v1/tokens/admin", ""), 200, nil)
	f.mustErr(f.do("GET", "/v1/tokens", ""), 401, api.CodeUnauthorized, "revoked")
	f.mustErr(f.doToken(second, "DELETE", "/v1/tokens/ops", ""), 409, api.CodeConflict, "last admin token")
	// Other tokens are revoked as before, and a missing one is still 404.
	f.must(f.doToken(second, "DELETE", "/v1/tokens/agent", ""), 200, nil)
	f.mustErr(f.doToken(agent, "GET", "/v1/appliances", ""), 401, api.CodeUnauthorized, "revoked")
	f.mustErr(f.doToken(second, "DELETE", "/v1/tokens/admin", ""), 404, api.CodeNotFound, "admin")
}

func TestAuth_RevokeEndsLongPollsOnEveryReplica(t *testing.T) {
	parallelShared(t)
	cfg := testutil.StoreConfig(t)
	a := newFixtureOn(t, testutil.OpenStore(t, cfg))
	b := newFixtureOn(t, testutil.OpenStore(t, cfg))
	b.token = a.token
	a.must(a.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	v := a.view("web")
	agent := a.newToken(api.TokenRequest{Name: "agent", Appliance: "web"})
	// b learns of the new token through its watch.
	waitFor(t, "replica b knows the token", func() bool { return b.s.auth.lookup(agent) != nil })

	pa := &poll{done: make(chan resp, 1)}
	pb := &poll{done: make(chan resp, 1)}
	other := a.startPoll(lp("web", v.Revision, "30s")) // the admin's long-poll stays open
	at, bt := *a, *b
	at.token, bt.token = agent, agent
	go func() { pa.done <- at.doQuiet(lp("web", v.Revision, "30s")) }()
	go func() { pb.done <- bt.doQuiet(lp("web", v.Revision, "30s")) }()
	a.waitOpen(2)
	b.waitOpen(1)
	b.must(b.do("DELETE", "/v1/tokens/agent", ""), 200, nil)
	a.mustErr(pa.wait(t), 401, api.CodeUnauthorized, "revoked")
	b.mustErr(pb.wait(t), 401, api.CodeUnauthorized, "revoked")
	a.waitOpen(1)
	other.pending(t)
	a.mustErr(a.doToken(agent, "GET", "/v1/appliances/web", ""), 401, api.CodeUnauthorized)
	a.s.Drain()
	other.wait(t)
}

func TestAuth_AdminTokenOnFirstStart(t *testing.T) {
	st := testutil.Store(t)
	dir := t.TempDir()
	// Two replicas start together on an empty store: one admin token is made.
	var wg sync.WaitGroup
	servers := make([]*Server, 4)
	for i := range servers {
		cfg := testConfig()
		cfg.AdminTokenFile = filepath.Join(dir, fmt.Sprintf("r%d", i), "admin.token")
		servers[i] = New(st, cfg, testutil.Logger())
		defer servers[i].Close(context.Background())
	}
	errs := make(chan error, len(servers))
	for _, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- s.bootstrap(context.Background())
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("bootstrap: %v", err)
		}
	}
	var files []string
	for i := range servers {
		p := filepath.Join(dir, fmt.Sprintf("r%d", i), "admin.token")
		fi, err := os.Stat(p)
		if err != nil {
			continue
		}
		if fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s has mode %v, want 0600", p, fi.Mode().Perm())
		}
		files = append(files, p)
	}
	if len(files) != 1 {
		t.Fatalf("admin token files %v, want exactly one", files)
	}
	tokens, _, err := st.SysList(context.Background(), tokenPrefix)
	if err != nil || len(tokens) != 1 {
		t.Fatalf("tokens in the store: %v, %v", tokens, err)
	}
	data, _ := os.ReadFile(files[0])
	secret := strings.TrimSpace(string(data))
	for _, v := range tokens {
		if bytes.Contains(v, []byte(secret)) {
			t.Fatal("the store holds the secret, not only its hash")
		}
	}
	// Every replica accepts it once its watch saw it.
	for _, s := range servers {
		waitFor(t, "replica knows the admin token", func() bool {
			rec := s.auth.lookup(secret)
			return rec != nil && rec.Admin
		})
	}
	// A later start finds tokens and makes none.
	cfg := testConfig()
	cfg.AdminTokenFile = filepath.Join(dir, "later", "admin.token")
	s := New(st, cfg, testutil.Logger())
	defer s.Close(context.Background())
	if err := s.bootstrap(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(cfg.AdminTokenFile); err == nil {
		t.Fatal("a later start wrote another admin token")
	}
}

func TestAuth_RateLimits(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.RateLimit = 0.001 }) // a burst of 1, then one per 1000 s
	f.put("appliances/web/a", "1")
	r := f.do("GET", "/v1/kv/appliances/web/a", "")
	f.mustErr(r, 429, api.CodeRateLimited, "--rate-limit")
	if r.Header.Get("Retry-After") == "" {
		t.Fatal("429 without Retry-After")
	}
	// Agent tokens are limited per instance.
	agent := f.s.testToken(t, api.TokenRequest{Name: "agent", Appliance: "web"})
	for _, inst := range []string{"vm-1", "vm-2"} {
		f.must(f.doToken(agent, "GET", "/v1/appliances/web", "", api.HeaderInstance, inst), 200, nil)
	}
	f.mustErr(f.doToken(agent, "GET", "/v1/appliances/web", "", api.HeaderInstance, "vm-1"), 429, api.CodeRateLimited)
	// Requests without a valid token are limited per client address.
	f.mustErr(f.doToken("", "GET", "/v1/appliances", ""), 401, api.CodeUnauthorized)
	f.mustErr(f.doToken("sl_wrong", "GET", "/v1/appliances", ""), 429, api.CodeRateLimited)
	// So are unknown routes under /v1 (401 without a token), paths refused as unclean before
	// any token is read (400), and unknown paths outside /v1 (404): before, they were answered
	// without a limit.
	f.mustErr(f.doToken("", "GET", "/v1/nothing", ""), 429, api.CodeRateLimited)
	for _, p := range []string{"/v1//kv/x", "//v1/x", "/v1/./kv/x", "/v1/kv/a//b", "/nothing", "/V1/x"} {
		f.mustErr(f.doToken("", "GET", p, ""), 429, api.CodeRateLimited)
		f.mustErr(f.do("GET", p, ""), 429, api.CodeRateLimited) // refused before the token is read
	}
	// Health and metrics are not limited.
	for i := 0; i < 3; i++ {
		f.must(f.doToken("", "GET", "/health", ""), 200, nil)
	}
}

// testToken makes a token straight in the store (bypassing the API and its rate limit).
func (s *Server) testToken(t testing.TB, req api.TokenRequest) string {
	t.Helper()
	if err := validateTokenRequest(&req); err != nil {
		t.Fatal(err)
	}
	secret, _ := newSecret()
	rec := &tokenRecord{Name: req.Name, Hash: hashSecret(secret), Appliance: req.Appliance, Read: req.Read, Write: req.Write, Admin: req.Admin}
	data, _ := json.Marshal(rec)
	if _, err := s.st.SysPut(context.Background(), tokenPrefix+req.Name, data, 0); err != nil {
		t.Fatal(err)
	}
	s.auth.set(rec, 0)
	return secret
}

func TestAuth_Maintenance(t *testing.T) {
	cfg := testutil.StoreConfig(t)
	a := newFixtureOn(t, testutil.OpenStore(t, cfg))
	b := newFixtureOn(t, testutil.OpenStore(t, cfg))
	b.token = a.token
	a.put("shared/a", "1")
	var m Maintenance
	a.must(a.do("PUT", "/v1/maintenance", `{"on":true}`), 200, &m)
	if !m.On {
		t.Fatal("maintenance not on")
	}
	waitFor(t, "replica b in maintenance", func() bool { return b.s.maintenance.Load() })
	for _, f := range []*fixture{a, b} {
		f.mustErr(f.do("PUT", "/v1/kv/shared/a", "2"), 503, api.CodeMaintenance, "maintenance is on")
		f.mustErr(f.do("DELETE", "/v1/kv/shared/a", ""), 503, api.CodeMaintenance)
		f.mustErr(f.do("POST", "/v1/txn", `{"ops":[{"op":"delete","key":"shared/a"}]}`), 503, api.CodeMaintenance)
		f.mustErr(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 503, api.CodeMaintenance)
		var kv api.KV
		f.must(f.do("GET", "/v1/kv/shared/a", ""), 200, &kv)
		var h Health
		f.must(f.do("GET", "/health", ""), 200, &h)
		if !h.Maintenance {
			t.Fatal("/health does not say maintenance")
		}
	}
	b.must(b.do("PUT", "/v1/maintenance", `{"on":false}`), 200, nil)
	waitFor(t, "replica a out of maintenance", func() bool { return !a.s.maintenance.Load() })
	a.put("shared/a", "3")
}

func TestAuth_LogsNeverHoldSecretsOrValues(t *testing.T) {
	var buf syncBuffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f := newFixtureLog(t, testutil.Store(t), log)
	const value = "s3cr3t-value-xyzzy"
	f.put("appliances/web/secrets/pw", value)
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"secrets":{"pw":"`+value+`"}}}`), 200, nil)
	tok := f.newToken(api.TokenRequest{Name: "ci", Admin: true})
	f.mustErr(f.doToken("sl_not-a-real-token", "GET", "/v1/kv/x", ""), 401, api.CodeUnauthorized)
	logs := buf.String()
	for _, secret := range []string{value, f.token, tok, "sl_not-a-real-token"} {
		if strings.Contains(logs, secret) {
			t.Fatalf("logs hold a secret or value %q", secret)
		}
	}
	var audits int
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line is not JSON: %s", line)
		}
		if m["audit"] == true {
			audits++
			if m["token"] == "" || m["remote"] == "" || m["op"] == "" || m["revision"] == nil || m["keys"] == nil {
				t.Fatalf("audit line lacks fields: %s", line)
			}
		}
	}
	if audits != 3 {
		t.Fatalf("%d audit lines, want 3 (put, apply, token)", audits)
	}
	if !strings.Contains(logs, `"keys":["appliances/web/secrets/pw"]`) {
		t.Fatalf("audit lines do not name the keys:\n%s", logs)
	}
}

// A token's secret pasted where a name goes (shoelace token revoke SECRET, a key, a console
// address) or sent as the request id is not written into the log: its requests' lines write
// "sl_…" in its place. Before, the access line held the path whole, and the request id as sent.
func TestAuth_SecretPastedInAPathIsNotLogged(t *testing.T) {
	var buf syncBuffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f := newFixtureLog(t, testutil.Store(t), log)
	tok := f.newToken(api.TokenRequest{Name: "ci", Read: []string{"shared"}})
	f.mustErr(f.do("DELETE", "/v1/tokens/"+tok, ""), 404, api.CodeNotFound)
	f.mustErr(f.do("GET", "/v1/kv/shared/"+tok, ""), 404, api.CodeNotFound)
	f.mustErr(f.do("GET", "/v1/kv/shared/a"+tok+"b/c", ""), 404, api.CodeNotFound)
	f.mustErr(f.doToken(tok, "GET", "/v1/appliances/"+tok, ""), 403, api.CodeForbidden)
	f.mustErr(f.do("GET", "/v1/kv/shared/x", "", api.HeaderRequestID, f.token), 404, api.CodeNotFound)
	f.doToken("", "GET", "/ui/"+tok, "")                                 // the sign-in form
	f.must(f.doToken(tok, "GET", "/v1/kv/shared?recurse", ""), 200, nil) // the token still stands
	logs := buf.String()
	for _, secret := range []string{tok, f.token, tok[:20], tok[len(tok)-20:]} {
		if strings.Contains(logs, secret) {
			t.Fatalf("logs hold a token's secret (or part of it) %q:\n%s", secret, logs)
		}
	}
	for _, path := range []string{"/v1/tokens/sl_…", "/v1/kv/shared/sl_…", "/v1/kv/shared/asl_…/c", "/v1/appliances/sl_…", "/ui/sl_…"} {
		if !strings.Contains(logs, `"path":"`+path+`"`) {
			t.Errorf("no access line of %s:\n%s", path, logs)
		}
	}
}

// Nor is a secret pasted into a write written into its audit line: the keys it writes (a kv put,
// a txn, an apply), the message and the source; nor is a token named after one (the lines of its
// requests write its name). Before, the request line wrote "sl_…" and the audit line after it
// the secret whole.
func TestAuth_SecretPastedInAWriteIsNotLogged(t *testing.T) {
	var buf syncBuffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f := newFixtureLog(t, testutil.Store(t), log)
	tok := f.newToken(api.TokenRequest{Name: "ci", Read: []string{"shared"}})
	f.must(f.do("PUT", "/v1/kv/shared/"+tok, "v"), 200, nil)
	f.must(f.do("POST", "/v1/txn", `{"ops":[{"op":"put","key":"shared/a/`+tok+`","value":"v"}]}`), 200, nil)
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"`+tok+`":"v"}}`), 200, nil)
	f.must(f.do("PUT", "/v1/kv/shared/m", "v", api.HeaderMessage, "rotate "+tok, api.HeaderSource, tok), 200, nil)
	// A token named so would have the secret written in every line of its requests.
	f.mustErr(f.do("POST", "/v1/tokens", `{"name":"`+f.token+`","read":["shared"]}`), 400, api.CodeInvalidName, "looks like a token's secret")
	logs := buf.String()
	for _, secret := range []string{tok, f.token, tok[:20], tok[len(tok)-20:], f.token[len(f.token)-20:]} {
		if strings.Contains(logs, secret) {
			t.Fatalf("logs hold a token's secret (or part of it) %q:\n%s", secret, logs)
		}
	}
	for _, keys := range []string{`"keys":["shared/sl_…"]`, `"keys":["shared/a/sl_…"]`, `"keys":["appliances/web/sl_…"]`, `"message":"rotate sl_…","source":"sl_…"`} {
		if !strings.Contains(logs, keys) {
			t.Errorf("no audit line with %s:\n%s", keys, logs)
		}
	}
}

// Nor is a secret pasted where an instance name goes (the agent's instance:, the header, an
// enrollment or a report): an enrolled instance's token is named after its instance, and the log
// writes token names, so such a name is refused as a token's own name is. Before, the enrollment
// made a token named instance:web:SECRET, whose every request wrote the secret whole into the
// access log, and the instance lists and the console showed it.
func TestAuth_SecretAsInstanceNameIsRefused(t *testing.T) {
	var buf syncBuffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f := newFixtureLog(t, testutil.Store(t), log)
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, nil)
	agent := f.newToken(api.TokenRequest{Name: "agent-web", Appliance: "web"})
	secret := f.token
	f.mustErr(f.doToken(agent, "POST", "/v1/appliances/web/enroll", `{"instance":"`+secret+`"}`), 400, api.CodeInvalidName, "looks like a token's secret")
	f.mustErr(f.doToken(agent, "GET", "/v1/appliances/web", "", api.HeaderInstance, secret, api.HeaderApplied, "1"), 400, api.CodeInvalidName, "looks like a token's secret")
	f.mustErr(f.doToken(agent, "POST", "/v1/appliances/web/report", `{"instance":"`+secret+`","revision":1,"applied":1}`), 400, api.CodeInvalidName, "looks like a token's secret")
	// A name that only starts so is a name.
	f.enroll(agent, "web", "sl_vm-1")
	var list api.Instances
	f.must(f.do("GET", "/v1/appliances/web/instances", ""), 200, &list)
	for _, in := range list.Instances {
		if strings.Contains(in.Instance, secret[3:20]) {
			t.Fatalf("instance %q recorded", in.Instance)
		}
	}
	var toks api.TokenList
	f.must(f.do("GET", "/v1/tokens?all", ""), 200, &toks)
	for _, tok := range toks.Tokens {
		if strings.Contains(tok.Name, secret[3:20]) {
			t.Fatalf("token %q made", tok.Name)
		}
	}
	logs := buf.String()
	for _, part := range []string{secret, secret[:20], secret[len(secret)-20:]} {
		if strings.Contains(logs, part) {
			t.Fatalf("logs hold a token's secret (or part of it) %q:\n%s", part, logs)
		}
	}
}

// syncBuffer collects a child's (or a logger's) output while the test reads it.
type syncBuffer = testbin.Buffer

// A reload of a token that raced its revocation on this replica (read before, applied after)
// does not bring it back; a token created again under the name later does come in.
func TestAuthState_RevokedStaysRevoked(t *testing.T) {
	a := newAuthState(Config{})
	rec := &tokenRecord{Name: "ci", Hash: hashSecret("old-secret")}
	a.set(rec, 10)
	a.remove("ci", 20)
	if a.set(rec, 10); a.lookup("old-secret") != nil {
		t.Fatal("a stale reload brought a revoked token back")
	}
	if a.replace([]*tokenRecord{rec}, 15); a.lookup("old-secret") != nil {
		t.Fatal("a full reload read before the revocation brought it back")
	}
	again := &tokenRecord{Name: "ci", Hash: hashSecret("new-secret")}
	if a.set(again, 30); a.lookup("new-secret") == nil {
		t.Fatal("a token created again after the revocation is refused")
	}
	a.remove("ci", 40)
	if a.replace([]*tokenRecord{again}, 41); a.lookup("new-secret") == nil {
		t.Fatal("a full reload after the revocation lost a token the store has")
	}
}

// Two admin tokens revoked at the same time: one revocation succeeds, the other is refused
// (by the last-admin check or, when they interleave, by the guard on the delete), so an admin
// token always remains.
func TestAuth_ConcurrentAdminRevocationsKeepOne(t *testing.T) {
	for round := range 5 {
		f := newFixture(t)
		second := f.newToken(api.TokenRequest{Name: fmt.Sprintf("ops%d", round), Admin: true})
		tokens := map[string]string{"admin": f.token, fmt.Sprintf("ops%d", round): second}
		var wg sync.WaitGroup
		codes := make(chan int, 2)
		for name := range tokens {
			wg.Add(1)
			go func(name string) {
				defer wg.Done()
				// Each admin revokes the other one.
				for other, tok := range tokens {
					if other != name {
						codes <- f.doToken(tok, "DELETE", "/v1/tokens/"+name, "").StatusCode
					}
				}
			}(name)
		}
		wg.Wait()
		close(codes)
		ok := 0
		for c := range codes {
			switch c {
			case 200:
				ok++
			case 409, 401: // refused, or its token was the one revoked first
			default:
				t.Fatalf("round %d: revocation answered %d", round, c)
			}
		}
		var list api.TokenList
		alive := 0
		for _, tok := range tokens {
			if r := f.doToken(tok, "GET", "/v1/tokens", ""); r.StatusCode == 200 {
				f.must(r, 200, &list)
				alive++
			}
		}
		if ok != 1 || alive != 1 {
			t.Fatalf("round %d: %d revocations succeeded and %d admin tokens work, want 1 and 1", round, ok, alive)
		}
	}
}

// The routes that need no token and cost more than a refusal are held to the rate limit of the
// client's address: a client fetching /metrics without pause took a core from the agents.
func TestAuth_OpenRoutesLimitedPerAddress(t *testing.T) {
	for _, path := range []string{"/metrics", "/v1/openapi.json"} {
		t.Run(path, func(t *testing.T) {
			f := newFixture(t, func(c *Config) { c.RateLimit = 0.001 }) // a burst of 1, then one per 1000 s
			f.must(f.doToken("", "GET", path, ""), 200, nil)
			r := f.doToken("", "GET", path, "")
			f.mustErr(r, 429, api.CodeRateLimited, "--rate-limit")
			if r.Header.Get("Retry-After") == "" {
				t.Fatal("429 without Retry-After")
			}
			for i := 0; i < 3; i++ {
				f.must(f.doToken("", "GET", "/health", ""), 200, nil)
			}
		})
	}
}

// The console's static files, and a miss among them, are held to the client address's limits as
// other requests without a token are: a flood of them was answered without a limit.
func TestAuth_ConsoleStaticFilesLimitedPerAddress(t *testing.T) {
	for _, tc := range []struct{ path, first string }{{"/ui/static/console.css", "200 OK"}, {"/ui/static/nonexistent.css", "404 Not Found"}} {
		t.Run(tc.path, func(t *testing.T) {
			f := newFixture(t, func(c *Config) { c.RateLimit = 0.001; c.UI = true })
			if r := f.doToken("", "GET", tc.path, ""); r.Status != tc.first {
				t.Fatalf("first GET %s: %s, want %s", tc.path, r.Status, tc.first)
			}
			r := f.doToken("", "GET", tc.path, "")
			if r.StatusCode != 429 || r.Header.Get("Retry-After") == "" {
				t.Fatalf("second GET %s: %s (Retry-After %q), want 429 with Retry-After", tc.path, r.Status, r.Header.Get("Retry-After"))
			}
		})
	}
}

// A method is any token net/http reads, up to the header limit: one of 60 KiB, sent without a
// token to a route or to none, must not come back whole in the answer or in a log line.
func TestServer_LongMethodCutInLogsAndAnswers(t *testing.T) {
	var buf syncBuffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f := newFixtureLog(t, testutil.Store(t), log)
	method := strings.Repeat("M", 60<<10)
	for _, path := range []string{"/v1/kv/shared/a", "/v1/nothing", "/ui/nothing"} {
		r := f.doToken("", method, path, "")
		if r.StatusCode < 400 {
			t.Fatalf("%s with a 60 KiB method: %d, want a refusal", path, r.StatusCode)
		}
		if len(r.body) > 4096 {
			t.Errorf("%s with a 60 KiB method: answer of %d bytes: %.120s…", path, len(r.body), r.body)
		}
	}
	for _, line := range strings.Split(buf.String(), "\n") {
		if len(line) > 4096 {
			t.Errorf("log line of %d bytes: %.200s…", len(line), line)
		}
	}
}

// An empty prefix in a token request is refused, as the CLI refuses it: a pipeline that fills
// "read":["$PREFIX"] from an unset variable, or leaves a stray "" in a list, must not get a token
// that reads (or writes) every key. "/" says every key on purpose.
func TestAuth_EmptyTokenPrefixIsRefused(t *testing.T) {
	f := newFixture(t)
	f.put("appliances/db/secrets/pw", "hunter2")
	for _, body := range []string{
		`{"name":"x","read":[""]}`,
		`{"name":"x","write":[""]}`,
		`{"name":"x","read":["shared",""]}`,
		`{"name":"x","read":["shared"],"write":[""]}`,
	} {
		f.mustErr(f.do("POST", "/v1/tokens", body), 400, api.CodeInvalidKey, "empty prefix", `"/"`)
	}
	var list api.TokenList
	f.must(f.do("GET", "/v1/tokens", ""), 200, &list)
	for _, ti := range list.Tokens {
		if ti.Name == "x" {
			t.Fatalf("a refused token request made a token: %+v", ti)
		}
	}
	// "/" is every key, given on purpose.
	all := f.newToken(api.TokenRequest{Name: "all", Read: []string{"/"}})
	f.must(f.doToken(all, "GET", "/v1/kv/appliances/db/secrets/pw", ""), 200, nil)
}

// A grant of every key is answered as it is given, "/", by the token's creation and the token
// list, so that it can be sent back as it reads. Before, both answered "", the empty prefix that
// a token request is refused for.
func TestAuth_RootGrantIsListedAsSlash(t *testing.T) {
	f := newFixture(t)
	var c api.TokenCreated
	f.must(f.do("POST", "/v1/tokens", `{"name":"all","read":["/"],"write":["shared","/"]}`), 201, &c)
	want := api.TokenRequest{Name: "all", Read: []string{"/"}, Write: []string{"shared", "/"}}
	if !reflect.DeepEqual(c.TokenRequest, want) {
		t.Fatalf("created %+v, want %+v", c.TokenRequest, want)
	}
	var list api.TokenList
	f.must(f.do("GET", "/v1/tokens", ""), 200, &list)
	for _, ti := range list.Tokens {
		if ti.Name == "all" {
			if !reflect.DeepEqual(ti.TokenRequest, want) {
				t.Fatalf("listed %+v, want %+v", ti.TokenRequest, want)
			}
			again := ti.TokenRequest
			again.Name = "all-again"
			body, _ := json.Marshal(again)
			f.must(f.do("POST", "/v1/tokens", string(body)), 201, nil)
			return
		}
	}
	t.Fatalf("token all not listed: %+v", list.Tokens)
}

// TestAuth_SecretInAnErrorIsRedacted: a token's secret pasted where a name goes (DELETE
// /v1/tokens/sl_…, as shoelace token revoke sl_… sent it) is not quoted back whole in the error,
// which a pipeline's log prints; nor is one at the end of a long name that the error cuts.
func TestAuth_SecretInAnErrorIsRedacted(t *testing.T) {
	f := newFixture(t)
	secret := f.newToken(api.TokenRequest{Name: "redact-me", Read: []string{"shared"}})
	for _, name := range []string{secret, strings.Repeat("a", 60) + "-" + secret} {
		r := f.do("DELETE", "/v1/tokens/"+name, "")
		if r.StatusCode != 404 && r.StatusCode != 400 {
			t.Fatalf("DELETE /v1/tokens/%s: %d %s", name, r.StatusCode, r.body)
		}
		if strings.Contains(string(r.body), secret[:12]) {
			t.Errorf("DELETE /v1/tokens/<secret>: the answer quotes the secret: %s", r.body)
		}
	}
	f.must(f.doToken(secret, "GET", "/v1/kv/shared?recurse", ""), 200, nil)
}

// An instance token's record set late with the revision of its write (an enrollment's own
// answer), after the watch brought a newer write of the same name (another replica's
// enrollment of the same instance), does not replace it: before, the older secret stood on
// this replica and the newer one was refused until the next event of that token (seen as
// TestEnroll_SameKeyAtOnceOneTokenStands timing out on a loaded machine). A reload read at a
// revision keeps out the records of older writes in the same way, for tokens gone too.
func TestAuthState_OlderRecordSetLateStaysOut(t *testing.T) {
	a := newAuthState(Config{})
	name := "instance:web:vm-1"
	older := &tokenRecord{Name: name, Hash: hashSecret("older"), Appliance: "web", Instance: "vm-1"}
	newer := &tokenRecord{Name: name, Hash: hashSecret("newer"), Appliance: "web", Instance: "vm-1"}
	a.set(older, 10) // the watch: the first enrollment's write
	a.set(newer, 11) // the watch: the second's, which replaced it
	a.set(older, 10) // the first enrollment's own answer, late
	if a.lookup("older") != nil || a.lookup("newer") == nil {
		t.Fatalf("older stands: %v, newer stands: %v; want only the newer", a.lookup("older") != nil, a.lookup("newer") != nil)
	}
	if !a.wasRevoked("older") {
		t.Error("the older secret is not known as gone: its holder is not told that its instance was enrolled again")
	}
	a.set(newer, 11) // the same write again changes nothing
	if a.lookup("newer") == nil {
		t.Fatal("the newer record set twice no longer stands")
	}

	// A reload at revision 20 that finds the token gone keeps out a record of revision 15.
	a.replace(nil, 20)
	a.set(&tokenRecord{Name: name, Hash: hashSecret("late"), Appliance: "web", Instance: "vm-1"}, 15)
	if a.lookup("late") != nil {
		t.Fatal("a record written before the reload that found its token gone stands")
	}
	// A record written after the reload stands.
	a.set(&tokenRecord{Name: name, Hash: hashSecret("later"), Appliance: "web", Instance: "vm-1"}, 21)
	if a.lookup("later") == nil {
		t.Fatal("a record written after the reload does not stand")
	}
	// The store went back to revision 5 (restored): a record written there again, at 8, stands.
	a.forgetRevocationsAbove(5)
	a.set(&tokenRecord{Name: name, Hash: hashSecret("rewound"), Appliance: "web", Instance: "vm-1"}, 8)
	if a.lookup("rewound") == nil {
		t.Fatal("a record written after the store went back, below the revisions of the history that is gone, does not stand")
	}
}
