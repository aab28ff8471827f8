//go:build !windows

package agent_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/agent"
	"github.com/shoelace-dev/shoelace/internal/api"

	"github.com/shoelace-dev/shoelace/internal/testbin"
	"github.com/shoelace-dev/shoelace/internal/testutil/openfiles"
)

// viewServer is a small HTTP server speaking the view part of the API (GET
// /v1/appliances/{name}, with ?index&wait long-polls), so that the agent's loop can be tested
// against real HTTP, outages included. The e2e tests run the real server.
type viewServer struct {
	*httptest.Server
	mu       sync.Mutex
	cond     *sync.Cond
	store    string
	rev      int64
	keys     map[string]string
	fail     int // status to answer with when not 0
	retry    string
	applied  []string // X-Shoelace-Applied headers seen
	instance string
	requests int
	maxWait  time.Duration // cap of a long-poll's wait (default 2s, to keep tests quick)
	rollout  string        // sent as the view's rollout when set
	// reports are the bodies POSTed to /v1/appliances/{name}/report (the real server's route
	// is another part's); rollouts the X-Shoelace-Rollout headers of the long-polls, with the
	// applied revision ("applied/rollout").
	reports      []api.Report
	reportTokens []string // the token of each report
	rollouts     []string
	// noReports answers 404 to reports, as a server without the route does.
	noReports bool
	// Enrollment (POST .../enroll): enrollFail is the status to refuse it with (0: enroll);
	// instanceTokens are the instance tokens issued and not revoked; auth the last token seen.
	enrollFail     int
	enrolls        int
	enrollAddrs    []string        // the client addresses of the enroll requests
	enrollKeys     []string        // their enrollment keys (api.HeaderEnrollKey)
	enrollLose     int             // enrollments whose answer is lost (the connection closed instead)
	enrollToken    string          // when set, the token every enrollment answers (a broken server's)
	closed         map[string]bool // the client addresses of the connections closed
	instanceTokens map[string]bool
	auth           string
	enrollTries    int // enroll requests, refused ones too
	// enrollFailSeen adds to each refusal the holder's "last seen" time, a minute later each
	// time, as the server's 409 for a held name does.
	enrollFailSeen bool
	// replaced, when set, answers a report made with an instance token 401 with it, as the
	// server answers a token whose instance was enrolled again: the token is revoked, and
	// the name stays held (enrollFail becomes 409). Every later request with that token (a
	// long-poll sent before the agent read the report's answer) is answered 401 with it too,
	// as the server's instanceTokenGone answers it.
	replaced       string
	replacedTokens map[string]bool
	// appToken, when set, is the appliance token the server takes instead of "secret-token"
	// (that one revoked).
	appToken string
	// redirect, when set, answers every GET with a 307 to the same path under it.
	redirect string
	// hostile, when set, answers every request (s.mu held).
	hostile http.HandlerFunc
}

func newViewServer(t *testing.T, keys map[string]string) *viewServer {
	s := &viewServer{store: "store-1", rev: 10, keys: keys}
	s.cond = sync.NewCond(&s.mu)
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.Server.Config.ConnState = func(c net.Conn, st http.ConnState) {
		if st == http.StateClosed {
			s.mu.Lock()
			if s.closed == nil {
				s.closed = map[string]bool{}
			}
			s.closed[c.RemoteAddr().String()] = true
			s.mu.Unlock()
		}
	}
	s.Server.Start()
	t.Cleanup(func() {
		s.mu.Lock()
		s.cond.Broadcast()
		s.mu.Unlock()
		s.CloseClientConnections()
		s.Close()
	})
	return s
}

// applianceToken is the appliance token the server takes (s.mu held).
func (s *viewServer) applianceToken() string {
	if s.appToken != "" {
		return s.appToken
	}
	return "secret-token"
}

// answerReplaced answers a request with a replaced instance token 401 with the server's
// reason (s.mu held).
func (s *viewServer) answerReplaced(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusUnauthorized)
	json.NewEncoder(w).Encode(api.ErrorBody{Error: &api.Error{Code: api.CodeUnauthorized, Message: s.replaced}})
}

func (s *viewServer) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests++
	// What every answer of a Shoelace server carries (the client refuses a 2xx without).
	w.Header().Set(api.HeaderIndex, strconv.FormatInt(s.rev, 10))
	w.Header().Set(api.HeaderStore, s.store)
	if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/report") {
		if s.noReports {
			http.Error(w, "404 page not found", http.StatusNotFound)
			return
		}
		var rep api.Report
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		if s.replaced != "" && s.instanceTokens[tok] {
			delete(s.instanceTokens, tok)
			if s.replacedTokens == nil {
				s.replacedTokens = map[string]bool{}
			}
			s.replacedTokens[tok] = true
			s.enrollFail = http.StatusConflict
		}
		if s.replacedTokens[tok] {
			s.answerReplaced(w)
			return
		}
		if err := json.NewDecoder(r.Body).Decode(&rep); err != nil || (tok != s.applianceToken() && !s.instanceTokens[tok]) {
			http.Error(w, `{"error":{"code":"invalid_body","message":"bad report"}}`, 400)
			return
		}
		rep.AppliedRollout = r.Header.Get(api.HeaderRollout) // sent beside X-Shoelace-Applied, not in the body
		s.reports = append(s.reports, rep)
		s.reportTokens = append(s.reportTokens, tok)
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if a := r.Header.Get(api.HeaderApplied); a != "" {
		s.applied = append(s.applied, a)
		s.rollouts = append(s.rollouts, a+"/"+r.Header.Get(api.HeaderRollout))
	}
	s.instance = r.Header.Get(api.HeaderInstance)
	s.auth = strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/enroll") {
		s.serveEnroll(w, r)
		return
	}
	if s.hostile != nil {
		s.hostile(w, r)
		return
	}
	if s.redirect != "" && r.Method == http.MethodGet {
		http.Redirect(w, r, s.redirect+r.URL.RequestURI(), http.StatusTemporaryRedirect)
		return
	}
	if s.replacedTokens[s.auth] {
		s.answerReplaced(w)
		return
	}
	if !s.instanceTokens[s.auth] && r.Header.Get("Authorization") != "Bearer "+s.applianceToken() {
		http.Error(w, `{"error":{"code":"unauthorized","message":"no token"}}`, 401)
		return
	}
	if s.fail != 0 {
		if s.retry != "" {
			w.Header().Set("Retry-After", s.retry)
		}
		w.WriteHeader(s.fail)
		fmt.Fprintf(w, `{"error":{"code":"unavailable","message":"down"}}`)
		return
	}
	if idx := r.URL.Query().Get("index"); idx != "" {
		i, _ := strconv.ParseInt(idx, 10, 64)
		wait, _ := time.ParseDuration(r.URL.Query().Get("wait"))
		if s.maxWait == 0 {
			s.maxWait = 2 * time.Second
		}
		wait = min(wait, s.maxWait)
		deadline := time.Now().Add(wait)
		sameStore := r.Header.Get(api.HeaderStore) == "" || r.Header.Get(api.HeaderStore) == s.store
		timer := time.AfterFunc(wait, func() { s.mu.Lock(); s.cond.Broadcast(); s.mu.Unlock() })
		defer timer.Stop()
		for sameStore && s.rev <= i && time.Now().Before(deadline) && s.fail == 0 && r.Context().Err() == nil {
			s.cond.Wait()
		}
		if s.fail != 0 {
			if s.retry != "" {
				w.Header().Set("Retry-After", s.retry)
			}
			w.WriteHeader(s.fail)
			return
		}
		if sameStore && s.rev <= i {
			w.Header().Set(api.HeaderIndex, strconv.FormatInt(s.rev, 10))
			w.Header().Set(api.HeaderStore, s.store)
			w.WriteHeader(http.StatusNotModified)
			return
		}
	}
	if len(s.keys) == 0 {
		w.WriteHeader(404)
		fmt.Fprintf(w, `{"error":{"code":"not_found","message":"appliance web has no keys"}}`)
		return
	}
	w.Header().Set(api.HeaderIndex, strconv.FormatInt(s.rev, 10))
	w.Header().Set(api.HeaderStore, s.store)
	// The appliance the request names (tests use web, and secrets for a secret scope).
	json.NewEncoder(w).Encode(api.View{Appliance: path.Base(r.URL.Path), Revision: s.rev, Keys: s.keys, Rollout: s.rollout})
}

// set changes keys (nil value deletes) at a new revision.
func (s *viewServer) set(kv map[string]*string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := map[string]string{}
	for k, v := range s.keys {
		keys[k] = v
	}
	for k, v := range kv {
		if v == nil {
			delete(keys, k)
		} else {
			keys[k] = *v
		}
	}
	s.keys = keys
	s.rev++
	s.cond.Broadcast()
}

func (s *viewServer) setFail(status int, retry string) {
	s.mu.Lock()
	s.fail, s.retry = status, retry
	s.cond.Broadcast()
	s.mu.Unlock()
}

func str(s string) *string { return &s }

// testAgent builds an agent of the config text (see writeConfig), with $URL the server.
func testAgent(t *testing.T, srv *viewServer, text string) (*agent.Agent, string, *syncBuffer) {
	t.Helper()
	text = strings.ReplaceAll(text, "$URL", srv.URL)
	dir, path := writeConfig(t, text)
	cfg, err := agent.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	a, err := agent.New(cfg, agent.Options{Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), ConfigPath: path})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent logs:\n%s", logs.String())
		}
	})
	return a, dir, logs
}

// syncBuffer collects a child's (or a logger's) output while the test reads it.
type syncBuffer = testbin.Buffer

const header = "server: $URL\ntoken_file: $DIR/token\nappliance: web\ninstance: vm-1\ncache_dir: $DIR/cache\n"

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func lines(t *testing.T, path string) []string {
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(b))
}

func TestAgent_Once(t *testing.T) {
	srv := newViewServer(t, map[string]string{"port": "80", "system/ntp": "pool.ntp.org"})
	a, dir, _ := testAgent(t, srv, header+`templates:
  - contents: "listen {{ key \"port\" }}\n"
    destination: $DIR/app.conf
    perms: "0600"
    command: echo app >> $DIR/commands
  - contents: "server {{ key \"system/ntp\" }}\n"
    destination: $DIR/ntp.conf
    stage: system
    command: echo ntp >> $DIR/commands
  - contents: "listen2 {{ key \"port\" }}\n"
    destination: $DIR/app2.conf
    command: echo app >> $DIR/commands
`)
	ctx := context.Background()
	applied := func() int64 {
		t.Helper()
		st, err := agent.LoadStatus(dir+"/cache", "web")
		if err != nil {
			t.Fatalf("once recorded no status: %v", err)
		}
		return st.Applied
	}
	if err := a.Once(ctx, agent.StageSystem, false); err != nil {
		t.Fatal(err)
	}
	if got := applied(); got != 0 {
		t.Fatalf("status applied %d after once --stage system, want 0: the application templates are not in place", got)
	}
	if got := read(t, dir+"/ntp.conf"); got != "server pool.ntp.org\n" {
		t.Fatalf("ntp.conf = %q", got)
	}
	if _, err := os.Stat(dir + "/app.conf"); !os.IsNotExist(err) {
		t.Fatal("an application template was rendered by --stage system")
	}
	if got := lines(t, dir+"/commands"); strings.Join(got, ",") != "ntp" {
		t.Fatalf("commands = %v", got)
	}
	// Application stage: the shared command runs once for both templates.
	if err := a.Once(ctx, agent.StageApplication, false); err != nil {
		t.Fatal(err)
	}
	if got := lines(t, dir+"/commands"); strings.Join(got, ",") != "ntp,app" {
		t.Fatalf("commands = %v, want ntp,app (the shared command once)", got)
	}
	srv.mu.Lock()
	rev := srv.rev
	srv.mu.Unlock()
	if got := applied(); got != rev {
		t.Fatalf("status applied %d after every template was installed by once, want the view's revision %d", got, rev)
	}
	if fi, _ := os.Stat(dir + "/app.conf"); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode = %v", fi.Mode().Perm())
	}
	// Nothing changed: nothing written, nothing run.
	if err := a.Once(ctx, "", false); err != nil {
		t.Fatal(err)
	}
	if got := lines(t, dir+"/commands"); len(got) != 2 {
		t.Fatalf("commands ran for unchanged files: %v", got)
	}
	// --no-commands renders but runs nothing.
	srv.set(map[string]*string{"port": str("81")})
	if err := a.Once(ctx, "", true); err != nil {
		t.Fatal(err)
	}
	if got := read(t, dir+"/app.conf"); got != "listen 81\n" {
		t.Fatalf("app.conf = %q", got)
	}
	if got := lines(t, dir+"/commands"); len(got) != 2 {
		t.Fatalf("--no-commands ran commands: %v", got)
	}
	// Once never writes the view's cache, but records its status for `status`.
	if _, err := os.Stat(agent.CachePath(dir+"/cache", "web")); !os.IsNotExist(err) {
		t.Fatalf("once wrote the view cache: %v", err)
	}
	st, err := agent.LoadStatus(dir+"/cache", "web")
	if err != nil {
		t.Fatalf("once recorded no status: %v", err)
	}
	if len(st.Templates) != 3 || !st.Templates[0].InPlace || st.Revision == 0 {
		t.Fatalf("status after once = %+v, want three templates in place", st)
	}
}

func TestAgent_OnceNoTemplateSelected(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	a, _, _ := testAgent(t, srv, header+"templates:\n  - contents: x\n    destination: $DIR/x\n")
	err := a.Once(context.Background(), agent.StageSystem, false)
	if err == nil || !strings.Contains(err.Error(), `no templates with stage "system"`) {
		t.Fatalf("err = %v", err)
	}
}

// once and run without a template say where the agent looked: templates_dir and confd_dir,
// set or not. once said only "no templates configured", and run named templates_dir but not
// confd_dir, whose conf.d may be empty or misnamed.
func TestAgent_NoTemplatesSaysWhereItLooked(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	a, dir, _ := testAgent(t, srv, header+"templates_dir: $DIR/tpl\n")
	want := `: no templates configured: templates: is empty, templates_dir "` + dir + `/tpl" holds no *.yaml file, confd_dir is not set`
	if err := a.Once(context.Background(), "", false); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("once: %v, want %q", err, want)
	}
	if err := a.Run(context.Background()); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("run: %v, want %q", err, want)
	}
}

func TestAgent_OnceMissingKeyKeepsOldFile(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	a, dir, _ := testAgent(t, srv, header+`templates:
  - contents: "{{ key \"a\" }} {{ key \"b\" }}"
    destination: $DIR/x
    command: touch $DIR/ran
  - contents: "{{ keyOr \"b\" \"dflt\" }}"
    destination: $DIR/y
`)
	os.WriteFile(dir+"/x", []byte("old"), 0o644)
	err := a.Once(context.Background(), "", false)
	if err == nil || !strings.Contains(err.Error(), `key "b"`) || !strings.Contains(err.Error(), "1 of 2 templates not in place") {
		t.Fatalf("err = %v", err)
	}
	if got := read(t, dir+"/x"); got != "old" {
		t.Fatalf("x = %q, want the old file", got)
	}
	if got := read(t, dir+"/y"); got != "dflt" {
		t.Fatalf("y = %q", got)
	}
	if _, err := os.Stat(dir + "/ran"); !os.IsNotExist(err) {
		t.Fatal("the command of a failed template ran")
	}
}

// A template whose file was never made, refused by its check or with its group, says that no
// file was made: "old file kept" of a file that did not exist sent the operator looking for it.
func TestAgent_OnceFailingCheckOfANewFileSaysNoFile(t *testing.T) {
	srv := newViewServer(t, map[string]string{"conf": "bad"})
	a, dir, _ := testAgent(t, srv, header+`templates:
  - contents: "{{ key \"conf\" }}"
    destination: $DIR/x
    check: grep -q good "$SHOELACE_STAGED"
    command: touch $DIR/ran
  - contents: "y"
    destination: $DIR/y
    command: touch $DIR/ran
`)
	err := a.Once(context.Background(), "", false)
	if err == nil || !strings.Contains(err.Error(), "check of "+dir+"/x failed, no file made") ||
		!strings.Contains(err.Error(), "(command \"touch "+dir+"/ran\") failed; no file made") || strings.Contains(err.Error(), "old file kept") {
		t.Fatalf("err = %v", err)
	}
	for _, n := range []string{"x", "y", "ran"} {
		if _, err := os.Lstat(filepath.Join(dir, n)); !os.IsNotExist(err) {
			t.Errorf("%s made: %v", n, err)
		}
	}
}

func TestAgent_OnceFailingCheck(t *testing.T) {
	srv := newViewServer(t, map[string]string{"conf": "bad"})
	a, dir, _ := testAgent(t, srv, header+`templates:
  - contents: "{{ key \"conf\" }}"
    destination: $DIR/x
    check: 'grep -q good "$SHOELACE_STAGED" || { echo "syntax error in $SHOELACE_STAGED"; exit 1; }'
    command: touch $DIR/ran
    backup: true
`)
	os.WriteFile(dir+"/x", []byte("good old"), 0o644)
	err := a.Once(context.Background(), "", false)
	if err == nil || !strings.Contains(err.Error(), "check of "+dir+"/x failed, old file kept") || !strings.Contains(err.Error(), "syntax error in "+dir+"/.x.") {
		t.Fatalf("err = %v", err)
	}
	if got := read(t, dir+"/x"); got != "good old" {
		t.Fatalf("x = %q", got)
	}
	if _, err := os.Stat(dir + "/ran"); !os.IsNotExist(err) {
		t.Fatal("the command ran after a failed check")
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			t.Fatalf("temp file left: %s", e.Name())
		}
	}
	srv.set(map[string]*string{"conf": str("good new")})
	if err := a.Once(context.Background(), "", false); err != nil {
		t.Fatal(err)
	}
	if got := read(t, dir+"/x"); got != "good new" {
		t.Fatalf("x = %q", got)
	}
	if got := read(t, dir+"/x.bak"); got != "good old" {
		t.Fatalf("x.bak = %q", got)
	}
	if _, err := os.Stat(dir + "/ran"); err != nil {
		t.Fatal("the command did not run after the install")
	}
}

func TestAgent_RenderDry(t *testing.T) {
	srv := newViewServer(t, map[string]string{"port": "80", "db/secrets/password": "hunter2"})
	a, dir, _ := testAgent(t, srv, header+`templates:
  - contents: "a\nlisten {{ key \"port\" }}\nb\n"
    destination: $DIR/app.conf
    command: systemctl reload app
  - contents: "pw={{ key \"db/secrets/password\" }}\n"
    destination: $DIR/db.conf
    command: systemctl reload db
  - contents: "same\n"
    destination: $DIR/same.conf
`)
	os.WriteFile(dir+"/app.conf", []byte("a\nlisten 8080\nb\n"), 0o644)
	os.WriteFile(dir+"/same.conf", []byte("same\n"), 0o644)
	var out bytes.Buffer
	if err := a.Render(context.Background(), &out, agent.DryOptions{}); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{"-listen 8080\n+listen 80\n", dir + "/db.conf: would change (new file)", "content hidden", "same.conf: unchanged",
		"commands that would run:\nsystemctl reload app\nsystemctl reload db\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "hunter2") {
		t.Fatalf("secret shown without --show-secrets:\n%s", got)
	}
	if read(t, dir+"/app.conf") != "a\nlisten 8080\nb\n" {
		t.Fatal("--dry wrote app.conf")
	}
	if _, err := os.Stat(dir + "/db.conf"); !os.IsNotExist(err) {
		t.Fatal("--dry wrote db.conf")
	}
	out.Reset()
	a.Render(context.Background(), &out, agent.DryOptions{ShowSecrets: true})
	if !strings.Contains(out.String(), "+pw=hunter2") {
		t.Fatalf("--show-secrets hides the diff:\n%s", out.String())
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func fileIs(path, want string) func() bool {
	return func() bool { b, err := os.ReadFile(path); return err == nil && string(b) == want }
}

func inode(t *testing.T, path string) uint64 {
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

func runAgent(t *testing.T, a *agent.Agent) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	return func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run = %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("Run did not stop")
		}
	}
}

func TestAgent_RunRerendersOnlyChangedTemplates(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1", "b": "1", "list/x": "1"})
	a, dir, _ := testAgent(t, srv, header+`templates:
  - contents: "a={{ key \"a\" }}"
    destination: $DIR/a
    command: echo a >> $DIR/commands
  - contents: "b={{ key \"b\" }}"
    destination: $DIR/b
    command: echo b >> $DIR/commands
  - contents: "{{ range ls \"list\" }}{{ .Key }}={{ .Value }} {{ end }}"
    destination: $DIR/list
`)
	stop := runAgent(t, a)
	defer stop()
	waitFor(t, "first render", fileIs(dir+"/b", "b=1"))
	waitFor(t, "first render", fileIs(dir+"/list", "x=1 "))
	inoB := inode(t, dir+"/b")
	srv.set(map[string]*string{"a": str("2")})
	waitFor(t, "a re-rendered", fileIs(dir+"/a", "a=2"))
	srv.set(map[string]*string{"list/y": str("2")})
	waitFor(t, "list re-rendered", fileIs(dir+"/list", "x=1 y=2 "))
	if inode(t, dir+"/b") != inoB {
		t.Fatal("b was rewritten though its input did not change")
	}
	waitFor(t, "commands", func() bool { return len(lines(t, dir+"/commands")) == 3 })
	if got := strings.Join(lines(t, dir+"/commands"), ","); got != "a,b,a" {
		t.Fatalf("commands = %s, want a,b,a", got)
	}
	// The agent reports the applied revision and its instance, and caches the view.
	waitFor(t, "applied header", func() bool {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return len(srv.applied) > 0 && srv.applied[len(srv.applied)-1] == "12" && srv.instance == "vm-1"
	})
	waitFor(t, "the cache at revision 12", func() bool { c, err := agent.LoadCache(dir+"/cache", "web"); return err == nil && c.Revision == 12 })
	c, err := agent.LoadCache(dir+"/cache", "web")
	if err != nil || c.Revision != 12 || c.Keys["list/y"] != "2" || c.Store != "store-1" {
		t.Fatalf("cache = %+v, %v", c, err)
	}
	if fi, _ := os.Stat(agent.CachePath(dir+"/cache", "web")); fi.Mode().Perm() != 0o600 {
		t.Fatalf("cache mode %v", fi.Mode().Perm())
	}
}

func TestAgent_RunOutageKeepsFilesAndRecovers(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	a, dir, logs := testAgent(t, srv, header+"templates:\n  - contents: \"a={{ key \\\"a\\\" }}\"\n    destination: $DIR/a\n")
	stop := runAgent(t, a)
	defer stop()
	waitFor(t, "first render", fileIs(dir+"/a", "a=1"))
	srv.setFail(503, "1")
	waitFor(t, "a retry", func() bool { return strings.Contains(logs.String(), "server unavailable; keeping files") })
	// Retry-After: 1 makes the agent wait a second, longer than its first backoff step.
	if !strings.Contains(logs.String(), `"retry_in_ms":1000`) {
		t.Fatalf("Retry-After not honoured:\n%s", logs.String())
	}
	if read(t, dir+"/a") != "a=1" {
		t.Fatal("file changed during the outage")
	}
	// The appliance vanishing (404) never empties the files either.
	srv.mu.Lock()
	srv.fail, srv.keys = 0, nil
	srv.rev++
	srv.cond.Broadcast()
	srv.mu.Unlock()
	waitFor(t, "a 404", func() bool { return strings.Contains(logs.String(), "appliance not found on the server") })
	if read(t, dir+"/a") != "a=1" {
		t.Fatal("file changed when the appliance vanished")
	}
	srv.set(map[string]*string{"a": str("2")})
	waitFor(t, "render after the outage", fileIs(dir+"/a", "a=2"))
}

// TestAgent_RunStartsFromCache: a server unavailable (503) or refusing the agent's token (401)
// at start, the agent renders from its cache and says why: not "unreachable" for a server that
// answered.
func TestAgent_RunStartsFromCache(t *testing.T) {
	for _, c := range []struct {
		status int
		reason string
	}{{503, "server unavailable"}, {401, "server refused the token"}} {
		t.Run(strconv.Itoa(c.status), func(t *testing.T) { testRunStartsFromCache(t, c.status, c.reason) })
	}
}

func testRunStartsFromCache(t *testing.T, status int, reason string) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	cfg := header + "templates:\n  - contents: \"a={{ key \\\"a\\\" }}\"\n    destination: $DIR/a\n"
	a, dir, _ := testAgent(t, srv, cfg)
	stop := runAgent(t, a)
	waitFor(t, "first render", fileIs(dir+"/a", "a=1"))
	waitFor(t, "cache", func() bool { _, err := agent.LoadCache(dir+"/cache", "web"); return err == nil })
	stop()
	os.Remove(dir + "/a")

	// The server is down, or refuses: a new agent on the same cache dir renders from the cache.
	srv.setFail(status, "")
	text := strings.ReplaceAll(cfg, "$URL", srv.URL)
	text = strings.ReplaceAll(text, "$DIR", dir)
	os.WriteFile(dir+"/agent.yaml", []byte(text), 0o644)
	c, err := agent.LoadConfig(dir + "/agent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	a2, err := agent.New(c, agent.Options{Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	stop2 := runAgent(t, a2)
	defer stop2()
	waitFor(t, "render from cache", fileIs(dir+"/a", "a=1"))
	line := lineOf(logs.String(), "rendering from cache")
	if line == "" {
		t.Fatalf("no log says the cache was used:\n%s", logs.String())
	}
	if !strings.Contains(line, reason) {
		t.Errorf("the line that says the cache was used gives another reason than %q for a %d:\n%s", reason, status, line)
	}
	srv.setFail(0, "")
	srv.set(map[string]*string{"a": str("3")})
	waitFor(t, "render after the server is back", fileIs(dir+"/a", "a=3"))
}

func TestAgent_RunStoreReplaced(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1", "b": "1"})
	a, dir, logs := testAgent(t, srv, header+`templates:
  - contents: "a={{ key \"a\" }}"
    destination: $DIR/a
  - contents: "b={{ key \"b\" }}"
    destination: $DIR/b
`)
	stop := runAgent(t, a)
	defer stop()
	waitFor(t, "first render", fileIs(dir+"/b", "b=1"))
	// Someone edits b by hand; only a full re-render restores it.
	os.WriteFile(dir+"/b", []byte("hand edit"), 0o644)
	srv.mu.Lock()
	srv.store, srv.rev = "store-2", 3 // restored from a snapshot: a new id, lower revisions
	srv.keys = map[string]string{"a": "9", "b": "1"}
	srv.cond.Broadcast()
	srv.mu.Unlock()
	waitFor(t, "a from the new store", fileIs(dir+"/a", "a=9"))
	waitFor(t, "b re-rendered in full", fileIs(dir+"/b", "b=1"))
	if !strings.Contains(logs.String(), "store changed") {
		t.Fatal("no log of the store change")
	}
	srv.set(map[string]*string{"a": str("10")})
	waitFor(t, "a after the store change", fileIs(dir+"/a", "a=10"))
}

// A burst of changes is rendered once, with a quiet time and a deadline, and with a deadline
// alone ({max: D}: rendered D after the burst's first change).
func TestAgent_RunWaitCoalesces(t *testing.T) {
	for _, wait := range []string{"{min: 300ms, max: 2s}", "{max: 2s}"} {
		t.Run(wait, func(t *testing.T) {
			srv := newViewServer(t, map[string]string{"a": "0"})
			a, dir, _ := testAgent(t, srv, header+`wait: `+wait+`
templates:
  - contents: "a={{ key \"a\" }}"
    destination: $DIR/a
    command: cat $DIR/a >> $DIR/commands && echo >> $DIR/commands
`)
			stop := runAgent(t, a)
			defer stop()
			waitFor(t, "first render", fileIs(dir+"/a", "a=0"))
			for i := 1; i <= 5; i++ {
				srv.set(map[string]*string{"a": str(strconv.Itoa(i))})
			}
			waitFor(t, "coalesced render", fileIs(dir+"/a", "a=5"))
			// A later change is the barrier: commands run in order, so once its command ran,
			// every command of the burst has too.
			srv.set(map[string]*string{"a": str("6")})
			waitFor(t, "the command after the burst", func() bool { return slices.Contains(lines(t, dir+"/commands"), "a=6") })
			if got := strings.Join(lines(t, dir+"/commands"), ","); got != "a=0,a=5,a=6" {
				t.Fatalf("commands ran for %s, want a=0,a=5,a=6 (first render, one coalesced burst, the change after it)", got)
			}
		})
	}
}

func TestAgent_RunReloadsEditedSource(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	dir0 := t.TempDir()
	src := filepath.Join(dir0, "a.tmpl")
	os.WriteFile(src, []byte(`v1 {{ key "a" }}`), 0o644)
	a, dir, logs := testAgent(t, srv, header+"templates:\n  - source: "+src+"\n    destination: $DIR/a\n")
	stop := runAgent(t, a)
	defer stop()
	waitFor(t, "first render", fileIs(dir+"/a", "v1 1"))
	os.WriteFile(src, []byte(`v2 {{ key "a" }}`), 0o644)
	waitFor(t, "render of the edited source", fileIs(dir+"/a", "v2 1"))
	// A broken edit keeps the previous template and file.
	os.WriteFile(src, []byte(`v3 {{ key "a" `), 0o644)
	waitFor(t, "the broken edit noticed", func() bool { return strings.Contains(logs.String(), "template source edited but not usable") })
	srv.set(map[string]*string{"a": str("2")})
	waitFor(t, "render with the previous template", fileIs(dir+"/a", "v2 2"))
}

func TestAgent_RunReloadConfig(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	text := header + "templates:\n  - contents: \"a={{ key \\\"a\\\" }}\"\n    destination: $DIR/a\n"
	text = strings.ReplaceAll(text, "$URL", srv.URL)
	dir, path := writeConfig(t, text)
	cfg, err := agent.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	reload := make(chan struct{}, 1)
	logs := &syncBuffer{}
	a, err := agent.New(cfg, agent.Options{Logger: slog.New(slog.NewJSONHandler(logs, nil)), ConfigPath: path, Reload: reload})
	if err != nil {
		t.Fatal(err)
	}
	stop := runAgent(t, a)
	defer stop()
	waitFor(t, "first render", fileIs(dir+"/a", "a=1"))
	os.WriteFile(path, []byte(strings.ReplaceAll(text, "$DIR", dir)+"  - contents: \"b={{ key \\\"a\\\" }}\"\n    destination: "+dir+"/b\n"), 0o644)
	reload <- struct{}{}
	waitFor(t, "template added by reload", fileIs(dir+"/b", "b=1"))
	// A broken config is refused; the running one goes on.
	os.WriteFile(path, []byte("server: nope\n"), 0o644)
	reload <- struct{}{}
	waitFor(t, "refused reload", func() bool { return strings.Contains(logs.String(), "config not reloaded") })
	srv.set(map[string]*string{"a": str("2")})
	waitFor(t, "b after a refused reload", fileIs(dir+"/b", "b=2"))
}

func TestAgent_RunServesMetrics(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	a, dir, _ := testAgent(t, srv, header+"metrics_listen: "+addr+"\ntemplates:\n  - contents: \"a={{ key \\\"a\\\" }}\"\n    destination: $DIR/a\n    command: \"false\"\n")
	stop := runAgent(t, a)
	defer stop()
	waitFor(t, "first render", fileIs(dir+"/a", "a=1"))
	var body string
	waitFor(t, "metrics", func() bool {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		// The pass's gauges are set once its commands ran: wait for both. A failed reload is a
		// failed pass: nothing is applied (the file stays: a first install has no previous one).
		return strings.Contains(body, "shoelace_agent_command_failures_total 1") && strings.Contains(body, "shoelace_agent_view_revision 10\n")
	})
	for _, want := range []string{"shoelace_agent_renders_total 1\n", "shoelace_agent_applied_revision 0\n", "shoelace_agent_view_revision 10\n",
		"shoelace_agent_rollbacks_total 0\n", "shoelace_agent_health_failures_total 0\n",
		"shoelace_agent_from_cache 0\n", "shoelace_agent_check_failures_total 0\n", "shoelace_agent_seconds_since_last_sync "} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q:\n%s", want, body)
		}
	}
}

func TestAgent_SecretsNeverInErrors(t *testing.T) {
	srv := newViewServer(t, map[string]string{"db/secrets/password": "hunter2-very-secret"})
	a, dir, logs := testAgent(t, srv, header+`templates:
  - contents: "{{ fail (key \"db/secrets/password\") }}"
    destination: $DIR/x
  - contents: "{{ key \"db/secrets/password\" }}"
    destination: $DIR/y
    check: cat "$SHOELACE_STAGED"; exit 1
`)
	err := a.Once(context.Background(), "", false)
	if err == nil {
		t.Fatal("Once succeeded")
	}
	if strings.Contains(err.Error(), "hunter2") || strings.Contains(logs.String(), "hunter2") {
		t.Fatalf("a secret value reached the error or the logs:\n%v\n%s", err, logs.String())
	}
	if !strings.Contains(err.Error(), "[redacted]") && !strings.Contains(err.Error(), "hidden") {
		t.Fatalf("err = %v", err)
	}
	var out bytes.Buffer
	a.Render(context.Background(), &out, agent.DryOptions{})
	if strings.Contains(out.String(), "hunter2") {
		t.Fatalf("render --dry showed a secret:\n%s", out.String())
	}
	_ = dir
}

func TestAgent_RunTemplatesDirEdited(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	a, dir, _ := testAgent(t, srv, header+"templates_dir: $DIR/conf.d\ntemplates:\n  - contents: \"a={{ key \\\"a\\\" }}\"\n    destination: $DIR/a\n")
	os.Mkdir(dir+"/conf.d", 0o755)
	stop := runAgent(t, a)
	defer stop()
	waitFor(t, "first render", fileIs(dir+"/a", "a=1"))
	os.WriteFile(dir+"/conf.d/b.yaml", []byte("- contents: \"b={{ key \\\"a\\\" }}\"\n  destination: "+dir+"/b\n"), 0o644)
	waitFor(t, "template added in templates_dir", fileIs(dir+"/b", "b=1"))
	srv.set(map[string]*string{"a": str("2")})
	waitFor(t, "both after a change", func() bool { return fileIs(dir+"/a", "a=2")() && fileIs(dir+"/b", "b=2")() })
}

// A templates_dir that does not exist yet when run starts (a package or cloud-init that makes
// it comes later) is watched from the moment it is made: the files put in it are loaded as
// they are in one that existed. Before, run logged "directory not watched" once and loaded
// them only at SIGHUP or a restart.
func TestAgent_RunTemplatesDirMadeLater(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	a, dir, _ := testAgent(t, srv, header+"templates_dir: $DIR/conf.d\ntemplates:\n  - contents: \"a={{ key \\\"a\\\" }}\"\n    destination: $DIR/a\n")
	stop := runAgent(t, a)
	defer stop()
	waitFor(t, "first render", fileIs(dir+"/a", "a=1"))
	if err := os.Mkdir(dir+"/conf.d", 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(dir+"/conf.d/b.yaml", []byte("- contents: \"b={{ key \\\"a\\\" }}\"\n  destination: "+dir+"/b\n"), 0o644)
	waitFor(t, "a template of the templates_dir made since the start", fileIs(dir+"/b", "b=1"))
	os.WriteFile(dir+"/conf.d/c.yaml", []byte("- contents: \"c={{ key \\\"a\\\" }}\"\n  destination: "+dir+"/c\n"), 0o644)
	waitFor(t, "a template added to it later", fileIs(dir+"/c", "c=1"))
}

// A templates_dir file added while the pass that follows a reload of the config runs (here: its
// command, which takes a while) is loaded too. Before, the watcher was started again only after
// that pass, and what changed during it waited for the next edit, SIGHUP or a restart.
func TestAgent_RunTemplatesDirEditedDuringAReloadsPass(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	a, dir, _ := testAgent(t, srv, header+"templates_dir: $DIR/conf.d\ntemplates:\n  - contents: \"a={{ key \\\"a\\\" }}\"\n    destination: $DIR/a\n")
	os.Mkdir(dir+"/conf.d", 0o755)
	stop := runAgent(t, a)
	defer stop()
	waitFor(t, "first render", fileIs(dir+"/a", "a=1"))
	// b's first install runs a command that holds the pass until the test lets it go.
	os.WriteFile(dir+"/conf.d/b.yaml", []byte("- contents: \"b={{ key \\\"a\\\" }}\"\n  destination: "+dir+"/b\n  command: touch "+dir+"/started; while [ ! -e "+dir+"/go ]; do sleep 0.05; done\n"), 0o644)
	waitFor(t, "the command of b's pass to start", func() bool { _, err := os.Stat(dir + "/started"); return err == nil })
	os.WriteFile(dir+"/conf.d/c.yaml", []byte("- contents: \"c={{ key \\\"a\\\" }}\"\n  destination: "+dir+"/c\n"), 0o644)
	time.Sleep(300 * time.Millisecond) // the watcher's events of c.yaml have come by now
	os.WriteFile(dir+"/go", nil, 0o644)
	waitFor(t, "c.yaml, added during b's pass, loaded", fileIs(dir+"/c", "c=1"))
}

// confd_dir's resources are read from conf.d and below, as confd reads them: one added or edited
// in a subdirectory of conf.d while run runs (or in a subdirectory made since) is loaded as one
// in conf.d is. Before, only conf.d itself was watched: such an edit waited for SIGHUP or a
// restart.
func TestAgent_RunConfdSubdirectoryEdited(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	dir := t.TempDir()
	if err := os.WriteFile(dir+"/token", []byte("secret-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	resource := func(name, dest string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
			t.Fatal(err)
		}
		body := "[template]\nsrc = \"a.tmpl\"\ndest = \"" + dest + "\"\nkeys = [\"/a\"]\n"
		if err := os.WriteFile(name, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(dir+"/confd/templates", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir+"/confd/templates/a.tmpl", []byte(`a={{getv "/a"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	resource(dir+"/confd/conf.d/web/a.toml", dir+"/a")
	a, _, _ := testAgentIn(t, srv, dir, header+"confd_dir: $DIR/confd\n")
	stop := runAgent(t, a)
	defer stop()
	waitFor(t, "first render", fileIs(dir+"/a", "a=1"))
	resource(dir+"/confd/conf.d/web/b.toml", dir+"/b")
	waitFor(t, "a resource added in conf.d/web", fileIs(dir+"/b", "a=1"))
	resource(dir+"/confd/conf.d/web/a.toml", dir+"/a2")
	waitFor(t, "a resource of conf.d/web edited", fileIs(dir+"/a2", "a=1"))
	resource(dir+"/confd/conf.d/db/c.toml", dir+"/c")
	waitFor(t, "a resource in a new subdirectory of conf.d", fileIs(dir+"/c", "a=1"))
	resource(dir+"/confd/conf.d/db/deeper/d.toml", dir+"/d")
	waitFor(t, "a resource two levels below conf.d", fileIs(dir+"/d", "a=1"))
}

// A confd_dir without conf.d when run starts (confd finds no resources there) is watched for
// one: the resources put in a conf.d made later are loaded as they are in one that existed.
// Before, conf.d was not watched until SIGHUP or a restart.
func TestAgent_RunConfdDirConfDMadeLater(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	dir := t.TempDir()
	if err := os.WriteFile(dir+"/token", []byte("secret-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir+"/confd/templates", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir+"/confd/templates/a.tmpl", []byte(`a={{getv "/a"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	a, _, _ := testAgentIn(t, srv, dir, header+"confd_dir: $DIR/confd\ntemplates:\n  - contents: \"x={{ key \\\"a\\\" }}\"\n    destination: $DIR/x\n")
	stop := runAgent(t, a)
	defer stop()
	waitFor(t, "first render", fileIs(dir+"/x", "x=1"))
	if err := os.Mkdir(dir+"/confd/conf.d", 0o755); err != nil {
		t.Fatal(err)
	}
	body := "[template]\nsrc = \"a.tmpl\"\ndest = \"" + dir + "/a\"\nkeys = [\"/a\"]\n"
	if err := os.WriteFile(dir+"/confd/conf.d/a.toml", []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a resource of the conf.d made since the start", fileIs(dir+"/a", "a=1"))
}

// The applied revision reaches the server as soon as it advances, even while a long-poll is
// open (here: a render deferred by wait, and a server that holds long-polls for a minute): by
// a report, or, from a server that takes none, by cutting the long-poll short to ask again.
func TestAgent_RunReportsAppliedWithoutWaitingForThePoll(t *testing.T) {
	for _, reports := range []bool{true, false} {
		t.Run(fmt.Sprintf("reports=%v", reports), func(t *testing.T) {
			srv := newViewServer(t, map[string]string{"a": "1"})
			srv.maxWait = time.Minute
			srv.noReports = !reports
			a, dir, _ := testAgent(t, srv, header+"wait: {min: 100ms, max: 1s}\ntemplates:\n  - contents: \"a={{ key \\\"a\\\" }}\"\n    destination: $DIR/a\n")
			stop := runAgent(t, a)
			defer stop()
			waitFor(t, "first render", fileIs(dir+"/a", "a=1"))
			srv.set(map[string]*string{"a": str("2")})
			waitFor(t, "deferred render", fileIs(dir+"/a", "a=2"))
			waitFor(t, "the server to hear applied 11", func() bool {
				srv.mu.Lock()
				defer srv.mu.Unlock()
				if reports {
					return len(srv.reports) > 0 && srv.reports[len(srv.reports)-1].Applied == 11
				}
				return len(srv.applied) > 0 && srv.applied[len(srv.applied)-1] == "11"
			})
		})
	}
}

// allowed_dirs is checked again before each install: a symbolic link made after the config was
// loaded cannot lead the agent outside, and nothing is written there.
func TestAgent_AllowedDirsCheckedAtInstall(t *testing.T) {
	srv := newViewServer(t, map[string]string{"port": "80"})
	a, dir, _ := testAgent(t, srv, header+`allowed_dirs: [$DIR/allowed]
templates:
  - contents: "listen {{ key \"port\" }}\n"
    destination: $DIR/allowed/sub/app.conf
`)
	ctx := context.Background()
	if err := a.Once(ctx, "", false); err != nil {
		t.Fatal(err)
	}
	if got := read(t, dir+"/allowed/sub/app.conf"); got != "listen 80\n" {
		t.Fatalf("app.conf = %q", got)
	}
	// sub becomes a link to a directory outside allowed_dirs.
	outside := filepath.Join(dir, "outside")
	if err := os.MkdirAll(outside, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(dir + "/allowed/sub"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, dir+"/allowed/sub"); err != nil {
		t.Fatal(err)
	}
	srv.set(map[string]*string{"port": str("81")})
	err := a.Once(ctx, "", false)
	if err == nil || !strings.Contains(err.Error(), "resolves to "+outside+"/app.conf through a symbolic link, outside allowed_dirs") {
		t.Fatalf("err = %v, want the link named", err)
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Fatalf("the agent wrote outside allowed_dirs: %v", entries)
	}
	// The destination itself a link to a file outside: its target would be replaced; refused too.
	os.Remove(dir + "/allowed/sub")
	os.MkdirAll(dir+"/allowed/sub", 0o755)
	os.WriteFile(outside+"/target", []byte("keep\n"), 0o644)
	if err := os.Symlink(outside+"/target", dir+"/allowed/sub/app.conf"); err != nil {
		t.Fatal(err)
	}
	if err := a.Once(ctx, "", false); err == nil || !strings.Contains(err.Error(), "outside allowed_dirs") {
		t.Fatalf("err = %v, want a refusal", err)
	}
	if got := read(t, outside+"/target"); got != "keep\n" {
		t.Fatalf("the link's target outside allowed_dirs was replaced: %q", got)
	}
}

// A directory of allowed_dirs itself swapped for a link to another directory (by whoever may
// write its parent) does not move the allowed place with it: the install is refused and nothing
// is written where the link leads.
func TestAgent_AllowedDirSwappedForLink(t *testing.T) {
	srv := newViewServer(t, map[string]string{"port": "80"})
	a, dir, _ := testAgent(t, srv, header+`allowed_dirs: [$DIR/allowed]
templates:
  - contents: "listen {{ key \"port\" }}\n"
    destination: $DIR/allowed/app.conf
`)
	ctx := context.Background()
	if err := a.Once(ctx, "", false); err != nil {
		t.Fatal(err)
	}
	outside := filepath.Join(dir, "outside")
	if err := os.MkdirAll(outside, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(dir+"/allowed", dir+"/allowed.old"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, dir+"/allowed"); err != nil {
		t.Fatal(err)
	}
	srv.set(map[string]*string{"port": str("81")})
	err := a.Once(ctx, "", false)
	if err == nil || !strings.Contains(err.Error(), "outside allowed_dirs") {
		t.Fatalf("err = %v, want a refusal", err)
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Fatalf("the agent wrote where the swapped allowed directory leads: %v", entries)
	}
}

// A failure that lasts is logged at warn once (and again once a minute), each retry at debug.
func TestAgent_LastingFailureLoggedOnce(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	a, _, logs := testAgent(t, srv, header+"templates:\n  - contents: x\n    destination: $DIR/x\n")
	srv.setFail(http.StatusServiceUnavailable, "")
	stop := runAgent(t, a)
	waitFor(t, "four failed retries", func() bool { return strings.Contains(logs.String(), `"failures":4`) })
	stop()
	var warned, retried int
	for _, line := range strings.Split(logs.String(), "\n") {
		if !strings.Contains(line, `"failures":`) || strings.Contains(line, "after_failures") {
			continue
		}
		retried++
		if strings.Contains(line, `"level":"WARN"`) {
			warned++
		}
	}
	if warned != 1 || retried < 4 {
		t.Fatalf("%d of %d failed retries logged at warn, want 1\n%s", warned, retried, logs.String())
	}
}

// A run killed while a staged file waited for its check (or its group's command) left it next
// to the destination, for good; the next run removes such leftovers, older than its start, and
// says so, leaving what is not its own and what another process stages now.
func TestAgent_RunRemovesWhatAKilledRunLeft(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	a, dir, logs := testAgent(t, srv, header+`templates:
  - contents: "a={{ key \"a\" }}"
    destination: $DIR/out/a.conf
`)
	if err := os.MkdirAll(dir+"/out", 0o755); err != nil {
		t.Fatal(err)
	}
	plant := func(name string, age time.Duration) string {
		p := dir + "/out/" + name
		if err := os.WriteFile(p, []byte("half"), 0o600); err != nil {
			t.Fatal(err)
		}
		mt := time.Now().Add(-age)
		if err := os.Chtimes(p, mt, mt); err != nil {
			t.Fatal(err)
		}
		return p
	}
	left := []string{plant(".a.conf.shoelace-1234567", time.Minute), plant(".a.conf.bak.shoelace-42", time.Hour)}
	kept := []string{plant(".a.conf.shoelace-99", -time.Minute), plant(".b.conf.shoelace-1", time.Hour), plant("notes", time.Hour)}
	stop := runAgent(t, a)
	defer stop()
	waitFor(t, "first render", fileIs(dir+"/out/a.conf", "a=1"))
	for _, p := range left {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s left by a killed run is still there (%v)", p, err)
		}
	}
	for _, p := range kept {
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("%s was removed: %v", p, err)
		}
	}
	if !strings.Contains(logs.String(), "removed temp files a killed run left") || !strings.Contains(logs.String(), ".a.conf.shoelace-1234567") {
		t.Errorf("the removal is not logged:\n%s", logs.String())
	}
}

// The next change to a file is written into the spare its install kept (on Linux a file without
// a name that the agent holds open in the file's directory: the file installed is the spare's
// inode), and a new spare is kept; nothing is left beside the file.
func TestAgent_RunFillsTheSpare(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("unnamed spares are Linux's; elsewhere the spare is a file, which internal/atomicfile's tests cover")
	}
	srv := newViewServer(t, map[string]string{"a": "1"})
	a, dir, _ := testAgent(t, srv, header+`templates:
  - contents: "a={{ key \"a\" }}"
    destination: $DIR/out/a.conf
    perms: "0640"
`)
	if err := os.MkdirAll(dir+"/out", 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := filepath.EvalSymlinks(dir + "/out")
	if err != nil {
		t.Fatal(err)
	}
	stop := runAgent(t, a)
	defer stop()
	waitFor(t, "first render", fileIs(dir+"/out/a.conf", "a=1"))
	var spare uint64
	waitFor(t, "a spare", func() bool {
		s := openfiles.Unnamed(t, out)
		if len(s) == 1 {
			spare = s[0]
		}
		return len(s) == 1
	})
	two := "2"
	srv.set(map[string]*string{"a": &two})
	waitFor(t, "second render", fileIs(dir+"/out/a.conf", "a=2"))
	got, err := os.Lstat(dir + "/out/a.conf")
	if err != nil {
		t.Fatal(err)
	}
	if got.Sys().(*syscall.Stat_t).Ino != spare || got.Mode().Perm() != 0o640 {
		t.Fatalf("a.conf is %v (mode %v), want the spare (inode %d) filled, mode 0640", got.Sys(), got.Mode(), spare)
	}
	waitFor(t, "a new spare", func() bool {
		s := openfiles.Unnamed(t, out)
		return len(s) == 1 && s[0] != spare
	})
	if ents, _ := os.ReadDir(out); len(ents) != 1 {
		t.Fatalf("%s holds %d files, want a.conf alone", out, len(ents))
	}
}

// once leaves no spare beside the files it installs: it has no next change to fill one, and a
// VM template baked with it holds its files alone.
func TestAgent_OnceLeavesNoSpare(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	a, dir, _ := testAgent(t, srv, header+`templates:
  - contents: "a={{ key \"a\" }}"
    destination: $DIR/out/a.conf
`)
	if err := os.MkdirAll(dir+"/out", 0o755); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"1", "2"} {
		srv.set(map[string]*string{"a": &v})
		if err := a.Once(context.Background(), "", false); err != nil {
			t.Fatal(err)
		}
		if !fileIs(dir+"/out/a.conf", "a="+v)() {
			t.Fatalf("a.conf is not a=%s", v)
		}
		if names, _ := os.ReadDir(dir + "/out"); len(names) != 1 {
			t.Fatalf("out holds %v, want a.conf alone", names)
		}
	}
}

// A list of templates saved in templates_dir as c.yml is not read (only *.yaml files are): run
// said nothing when one appeared, and its templates were simply never rendered. It logs the
// file and the name to give it now.
func TestAgent_RunTemplatesDirYmlLogged(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	a, dir, logs := testAgent(t, srv, header+"templates_dir: $DIR/conf.d\ntemplates:\n  - contents: \"a={{ key \\\"a\\\" }}\"\n    destination: $DIR/a\n")
	os.Mkdir(dir+"/conf.d", 0o755)
	stop := runAgent(t, a)
	defer stop()
	waitFor(t, "first render", fileIs(dir+"/a", "a=1"))
	os.WriteFile(dir+"/conf.d/c.yml", []byte("- contents: c\n  destination: "+dir+"/c\n"), 0o644)
	waitFor(t, "the .yml file named in the log", func() bool {
		return strings.Contains(logs.String(), "conf.d/c.yml is not read: only *.yaml files are (rename it c.yaml)")
	})
	if _, err := os.Stat(dir + "/c"); err == nil {
		t.Fatal("a template of the .yml file was rendered")
	}
}

func TestAgent_SilentCheckFailureEndsCleanly(t *testing.T) {
	srv := newViewServer(t, map[string]string{"conf": "bad"})
	a, dir, _ := testAgent(t, srv, header+`templates:
  - contents: "{{ key \"conf\" }}"
    destination: $DIR/x
    check: 'exit 1'
`)
	os.WriteFile(dir+"/x", []byte("old"), 0o644)
	err := a.Once(context.Background(), "", false)
	// The check printed nothing: no colon is left hanging after its exit status.
	if err == nil || !strings.Contains(err.Error(), `"exit 1" exited with status 1`) || strings.Contains(err.Error(), "status 1:") {
		t.Fatalf("err = %v, want the check's exit status without a dangling colon", err)
	}
	if got := read(t, dir+"/x"); got != "old" {
		t.Fatalf("x = %q, want the old file", got)
	}
}

// lineOf is the first line of logs that holds s, or "".
func lineOf(logs, s string) string {
	for line := range strings.Lines(logs) {
		if strings.Contains(line, s) {
			return line
		}
	}
	return ""
}

// A confd resource whose dest is in a directory that does not exist fails, as it failed confd
// v0.16.0 (which creates its staged file in that directory and makes none): once exits with
// an error naming the directory and the resource, and no directory is made, so that a
// mistyped dest is not installed where no service reads it. A native template's missing
// directories are still made.
func TestAgent_OnceConfdDestDirNotMade(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	dir := t.TempDir()
	if err := os.WriteFile(dir+"/token", []byte("secret-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	testbin.WriteFiles(t, dir, map[string]string{
		"confd/templates/a.tmpl": `a={{getv "/a"}}`,
		"confd/conf.d/a.toml":    "[template]\nsrc = \"a.tmpl\"\ndest = \"" + dir + "/missing/a.conf\"\nkeys = [\"/a\"]\n",
		"confd/conf.d/b.toml":    "[template]\nsrc = \"a.tmpl\"\ndest = \"" + dir + "/b.conf\"\nkeys = [\"/a\"]\n",
	})
	a, _, _ := testAgentIn(t, srv, dir, header+"confd_dir: $DIR/confd\ntemplates:\n  - contents: \"x={{ key \\\"a\\\" }}\"\n    destination: $DIR/made/x\n")
	// validate warns, and render --dry fails it, as once does.
	if w := strings.Join(a.Warnings(), "\n"); !strings.Contains(w, dir+"/missing/a.conf does not exist, and confd makes none") || strings.Contains(w, "b.conf") || strings.Contains(w, "made/x") {
		t.Errorf("warnings %q do not name a.conf's missing directory alone", w)
	}
	var dry bytes.Buffer
	if err := a.Render(context.Background(), &dry, agent.DryOptions{}); err == nil || !strings.Contains(err.Error(), dir+"/missing/a.conf: the directory of dest does not exist") {
		t.Errorf("render --dry = %v, want a.conf's missing directory:\n%s", err, dry.String())
	}
	err := a.Once(context.Background(), "", false)
	if err == nil || !strings.Contains(err.Error(), dir+"/missing: no such file or directory") || !strings.Contains(err.Error(), "confd/conf.d/a.toml:1") {
		t.Fatalf("once = %v, want the missing directory of conf.d/a.toml's dest", err)
	}
	if _, err := os.Stat(dir + "/missing"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the directory of a confd dest was made: %v", err)
	}
	for name, want := range map[string]string{dir + "/b.conf": "a=1", dir + "/made/x": "x=1"} {
		if b, err := os.ReadFile(name); err != nil || string(b) != want {
			t.Errorf("%s = %q, %v; want %q", name, b, err, want)
		}
	}
}

// A destination with setgid (or setuid, sticky) set by hand, 2755: an install gives the
// permission bits alone, so the next one left it 0755 without a word (consul-template kept
// them). validate warns, naming the mode it has and the one it will have; a plain file, and
// one whose perms are set, say what they will be.
func TestValidate_DestinationWithSpecialBits(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	dir := t.TempDir()
	if err := os.WriteFile(dir+"/token", []byte("secret-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, mode := range map[string]os.FileMode{"sgid": 0o755 | os.ModeSetgid, "suid": 0o750 | os.ModeSetuid, "plain": 0o755} {
		if err := os.WriteFile(dir+"/"+name, []byte("old"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir+"/"+name, mode); err != nil {
			t.Fatal(err)
		}
	}
	if fi, err := os.Stat(dir + "/sgid"); err != nil || fi.Mode()&os.ModeSetgid == 0 {
		t.Skipf("no setgid bit here: %v", err)
	}
	a, _, _ := testAgentIn(t, srv, dir, header+"templates:\n"+
		"  - contents: x\n    destination: $DIR/sgid\n"+
		"  - contents: x\n    destination: $DIR/suid\n    perms: \"0700\"\n"+
		"  - contents: x\n    destination: $DIR/plain\n")
	w := strings.Join(a.Warnings(), "\n")
	for _, want := range []string{
		dir + "/sgid has mode 2755: an install never gives setuid, setgid or sticky bits, and the next one leaves it 0755",
		dir + "/suid has mode 4750: an install never gives setuid, setgid or sticky bits, and the next one leaves it 0700",
	} {
		if !strings.Contains(w, want) {
			t.Errorf("warnings do not say %q:\n%s", want, w)
		}
	}
	if strings.Contains(w, dir+"/plain has mode") {
		t.Errorf("a plain file warned of:\n%s", w)
	}
}
