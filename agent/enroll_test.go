//go:build !windows

package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/agent"
	"github.com/shoelace-dev/shoelace/internal/api"
)

// serveEnroll answers POST /v1/appliances/{name}/enroll as the server does: with the
// appliance token, a new instance token (s.mu held).
func (s *viewServer) serveEnroll(w http.ResponseWriter, r *http.Request) {
	s.enrollTries++
	if s.auth != s.applianceToken() {
		http.Error(w, `{"error":{"code":"forbidden","message":"not the appliance token"}}`, 403)
		return
	}
	if s.enrollFail != 0 {
		w.WriteHeader(s.enrollFail)
		seen := ""
		if s.enrollFailSeen {
			seen = fmt.Sprintf(" (last seen 2026-12-04T%02d:%02d:00Z)", 10+s.enrollTries/60, s.enrollTries%60)
		}
		fmt.Fprintf(w, `{"error":{"code":"conflict","message":"instance \"vm-1\" of appliance \"web\" is enrolled already%s"}}`, seen)
		return
	}
	var req api.Enroll
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Instance != "vm-1" {
		http.Error(w, `{"error":{"code":"invalid_body","message":"bad"}}`, 400)
		return
	}
	s.enrolls++
	s.enrollAddrs = append(s.enrollAddrs, r.RemoteAddr)
	s.enrollKeys = append(s.enrollKeys, r.Header.Get(api.HeaderEnrollKey))
	tok := fmt.Sprintf("instance-token-%d", s.enrolls)
	if s.enrollToken != "" {
		tok = s.enrollToken
	}
	if s.instanceTokens == nil {
		s.instanceTokens = map[string]bool{}
	}
	s.instanceTokens[tok] = true
	if s.enrollLose > 0 {
		s.enrollLose--
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close() // enrolled, but the answer never reaches the agent
		}
		return
	}
	w.WriteHeader(http.StatusCreated)
	json.NewEncoder(w).Encode(api.Enrolled{Appliance: "web", Instance: req.Instance, Token: tok, Enrolled: time.Now().UTC()})
}

// reported10 reports whether the server took a report of revision 10 applied, made with token.
func (s *viewServer) reported10(token string) func() bool {
	return func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		for i, r := range s.reports {
			if s.reportTokens[i] == token && r.Applied == 10 {
				return true
			}
		}
		return false
	}
}

// lastAuth is the token of the server's last request, and how many enrollments it made.
func (s *viewServer) lastAuth() (string, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.auth, s.enrolls
}

const enrollTemplate = "templates:\n  - contents: \"a={{ key \\\"a\\\" }}\"\n    destination: $DIR/a\n"

// run enrolls once: the token is kept in cache_dir (0600) and used for every request; a
// restart uses it again without enrolling.
func TestAgent_RunEnrolls(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	a, dir, _ := testAgent(t, srv, header+enrollTemplate)
	stop := runAgent(t, a)
	waitFor(t, "first render", fileIs(dir+"/a", "a=1"))
	path := agent.InstanceTokenPath(dir+"/cache", "web")
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("instance token file mode %04o, want 0600", fi.Mode().Perm())
	}
	if !strings.Contains(read(t, path), `"token":"instance-token-1"`) {
		t.Fatalf("instance token file: %s", read(t, path))
	}
	// The enrollment's connection does not stay open beside the agent's own.
	waitFor(t, "the enrollment's connection closed", func() bool {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return len(srv.enrollAddrs) == 1 && srv.closed[srv.enrollAddrs[0]]
	})
	srv.set(map[string]*string{"a": str("2")})
	waitFor(t, "a re-rendered", fileIs(dir+"/a", "a=2"))
	if auth, n := srv.lastAuth(); auth != "instance-token-1" || n != 1 {
		t.Fatalf("requests carry %q after %d enrollments, want the instance token after 1", auth, n)
	}
	stop()

	b, _, _ := testAgentIn(t, srv, dir, header+enrollTemplate)
	stop = runAgent(t, b)
	defer stop()
	srv.set(map[string]*string{"a": str("3")})
	waitFor(t, "a re-rendered after the restart", fileIs(dir+"/a", "a=3"))
	if auth, n := srv.lastAuth(); auth != "instance-token-1" || n != 1 {
		t.Fatalf("after a restart requests carry %q after %d enrollments, want the saved token and no new enrollment", auth, n)
	}
}

// An agent that cannot enroll still renders, with the appliance token, and says why.
func TestAgent_RunEnrollRefusedStillRenders(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	srv.enrollFail = http.StatusConflict
	a, dir, logs := testAgent(t, srv, header+enrollTemplate)
	stop := runAgent(t, a)
	defer stop()
	waitFor(t, "first render", fileIs(dir+"/a", "a=1"))
	srv.set(map[string]*string{"a": str("2")})
	waitFor(t, "a re-rendered", fileIs(dir+"/a", "a=2"))
	if auth, _ := srv.lastAuth(); auth != "secret-token" {
		t.Fatalf("requests carry %q, want the appliance token", auth)
	}
	waitFor(t, "the reason logged", func() bool {
		return strings.Contains(logs.String(), `"level":"WARN","msg":"not enrolled: rendering with the appliance token; will try again","reason":"the server refused to enroll: instance \"vm-1\" of appliance \"web\" is enrolled already"`)
	})
	if _, err := os.Stat(agent.InstanceTokenPath(dir+"/cache", "web")); !os.IsNotExist(err) {
		t.Fatalf("an instance token file without enrollment: %v", err)
	}
}

// An agent refused enrollment renders and reports with the appliance token, which the server
// does not record for an enrolled name; once it enrolls, its last report goes again with its
// instance token, its outcome unchanged. Before, the agent waited for its next change to
// report: `appliance wait` named it behind while its files were on disk.
func TestAgent_RunEnrolledLateReportsAgain(t *testing.T) {
	defer agent.SetEnrollEvery(50 * time.Millisecond)()
	srv := newViewServer(t, map[string]string{"a": "1"})
	srv.enrollFail = http.StatusConflict
	a, dir, _ := testAgent(t, srv, header+enrollTemplate)
	stop := runAgent(t, a)
	defer stop()
	waitFor(t, "first render", fileIs(dir+"/a", "a=1"))
	waitFor(t, "revision 10 reported with the appliance token", srv.reported10("secret-token"))
	srv.mu.Lock()
	srv.enrollFail = 0
	srv.mu.Unlock()
	waitFor(t, "enrolled", func() bool { _, n := srv.lastAuth(); return n == 1 })
	waitFor(t, "revision 10 reported again with the instance token", srv.reported10("instance-token-1"))
	if _, err := os.Stat(dir + "/a"); err != nil {
		t.Fatal(err)
	}
}

// An agent whose instance token was revoked (its instance forgotten) and whose config was then
// reloaded (a new token file, SIGHUP, as the runbook's agent-token-deploy does) reports its
// applied revision with its new instance token once it enrolls again, though nothing changed.
// Before, the report sent again after the enrollment was the last one the server had taken,
// with the client of the config before the reload and its revoked token: refused, so that the
// server showed the instance at applied 0 until the appliance changed.
func TestAgent_RunEnrolledAgainAfterAReloadReportsItsRevision(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	dir, path := writeConfig(t, strings.ReplaceAll(header+enrollTemplate, "$URL", srv.URL))
	a, logs, reload := reloadableAgent(t, path)
	stop := runAgent(t, a)
	defer stop()
	waitFor(t, "first render", fileIs(dir+"/a", "a=1"))
	waitFor(t, "revision 10 reported with the instance token", srv.reported10("instance-token-1"))
	// The runbook's appliance-agents-stop: the appliance token revoked, the instance forgotten.
	srv.mu.Lock()
	srv.appToken = "new-token"
	delete(srv.instanceTokens, "instance-token-1")
	srv.maxWait = 50 * time.Millisecond // the next long-poll, refused, tells the agent
	srv.mu.Unlock()
	waitFor(t, "the instance token refused", func() bool {
		return strings.Contains(logs.String(), `"msg":"instance token refused`)
	})
	// Then agent-token-deploy: the new appliance token in the token file, SIGHUP.
	if err := os.WriteFile(dir+"/token", []byte("new-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	reload <- struct{}{}
	waitFor(t, "enrolled again", func() bool { _, n := srv.lastAuth(); return n == 2 })
	waitFor(t, "revision 10 reported with the new instance token", srv.reported10("instance-token-2"))
}

// A refusal that names the holder's last report differs at each try only in that time: it is
// one reason, said at warn once, and at debug after that.
func TestAgent_RunEnrollRefusedWarnedOnce(t *testing.T) {
	defer agent.SetEnrollEvery(20 * time.Millisecond)()
	srv := newViewServer(t, map[string]string{"a": "1"})
	srv.enrollFail, srv.enrollFailSeen = http.StatusConflict, true
	a, dir, logs := testAgent(t, srv, header+enrollTemplate)
	stop := runAgent(t, a)
	defer stop()
	waitFor(t, "first render", fileIs(dir+"/a", "a=1"))
	for i := 2; i <= 8; i++ { // each view answered lets the agent try to enroll again
		srv.set(map[string]*string{"a": str(fmt.Sprint(i))})
		waitFor(t, "a re-rendered", fileIs(dir+"/a", fmt.Sprintf("a=%d", i)))
		time.Sleep(30 * time.Millisecond)
	}
	srv.mu.Lock()
	tries := srv.enrollTries
	srv.mu.Unlock()
	if tries < 3 {
		t.Fatalf("%d enrollment tries, want at least 3 for the test to tell", tries)
	}
	if n := strings.Count(logs.String(), `"level":"WARN","msg":"not enrolled`); n != 1 {
		t.Fatalf("%d refusals that differ only in the holder's last report logged %d times at warn, want once:\n%s", tries, n, logs.String())
	}
	if n := strings.Count(logs.String(), `"level":"DEBUG","msg":"not enrolled`); n == 0 {
		t.Errorf("%d tries, none logged at debug after the first", tries)
	}
}

// An instance token refused (forgotten, revoked) is dropped: back to the appliance token, and
// a new enrollment at once.
func TestAgent_RunInstanceTokenRefusedEnrollsAgain(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	a, dir, _ := testAgent(t, srv, header+enrollTemplate)
	stop := runAgent(t, a)
	defer stop()
	waitFor(t, "first render", fileIs(dir+"/a", "a=1"))
	srv.mu.Lock()
	delete(srv.instanceTokens, "instance-token-1")
	srv.mu.Unlock()
	srv.set(map[string]*string{"a": str("2")})
	waitFor(t, "a re-rendered", fileIs(dir+"/a", "a=2"))
	waitFor(t, "a new enrollment", func() bool {
		// The refused token's file is removed before the new one is saved.
		b, _ := os.ReadFile(agent.InstanceTokenPath(dir+"/cache", "web"))
		return strings.Contains(string(b), `"token":"instance-token-2"`)
	})
	srv.set(map[string]*string{"a": str("3")})
	waitFor(t, "a re-rendered", fileIs(dir+"/a", "a=3"))
	if auth, n := srv.lastAuth(); auth != "instance-token-2" || n != 2 {
		t.Fatalf("requests carry %q after %d enrollments, want the new token after 2", auth, n)
	}
}

// A report refused 401 because the instance was enrolled again by another holder (the server
// names it) drops the instance token: the agent says why once, with the server's words, enrolls
// again once, is refused (409: the name is held) and goes on with the appliance token, trying
// again only after enrollEvery, not at each report or view.
func TestAgent_RunReportOfAReplacedTokenEnrollsOnce(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	why := `the instance token of instance "vm-1" of appliance "web" was replaced: the instance was enrolled again since`
	srv.mu.Lock()
	srv.replaced = why
	srv.mu.Unlock()
	a, dir, logs := testAgent(t, srv, header+enrollTemplate)
	stop := runAgent(t, a)
	defer stop()
	waitFor(t, "first render", fileIs(dir+"/a", "a=1"))
	waitFor(t, "the refused enrollment logged", func() bool {
		return strings.Contains(logs.String(), `"msg":"not enrolled: rendering with the appliance token; will try again"`)
	})
	for i := 2; i <= 6; i++ {
		srv.set(map[string]*string{"a": str(fmt.Sprint(i))})
		waitFor(t, "a re-rendered", fileIs(dir+"/a", fmt.Sprintf("a=%d", i)))
	}
	waitFor(t, "a report with the appliance token", func() bool {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return len(srv.reports) > 0 && srv.reports[len(srv.reports)-1].Applied > 0
	})
	srv.mu.Lock()
	tries, auth := srv.enrollTries, srv.auth
	srv.mu.Unlock()
	if tries != 2 || auth != "secret-token" {
		t.Fatalf("%d enrollments, requests with %q; want 2 (the first, and once after the refusal) and the appliance token", tries, auth)
	}
	if n := strings.Count(logs.String(), `"msg":"instance token refused: back to the appliance token; enrolling again","reason":`+strconv.Quote(why)); n != 1 {
		t.Fatalf("the refusal logged %d times with the server's reason, want once:\n%s", n, logs.String())
	}
	if n := strings.Count(logs.String(), `"level":"WARN","msg":"not enrolled`); n != 1 {
		t.Fatalf("the failed enrollment logged %d times at warn, want once", n)
	}
	if _, err := os.Stat(agent.InstanceTokenPath(dir+"/cache", "web")); !os.IsNotExist(err) {
		t.Fatalf("the refused token's file: %v", err)
	}
}

// A token file others could read is not used; once never enrolls nor writes one.
func TestAgent_InstanceTokenFileChecked(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	a, dir, _ := testAgent(t, srv, header+enrollTemplate)
	if err := a.Once(context.Background(), "", false); err != nil {
		t.Fatal(err)
	}
	path := agent.InstanceTokenPath(dir+"/cache", "web")
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("once wrote an instance token file: %v", err)
	}
	if _, n := srv.lastAuth(); n != 0 {
		t.Fatal("once enrolled")
	}
	if err := os.WriteFile(path, []byte(`{"server":"`+srv.URL+`","appliance":"web","instance":"vm-1","token":"planted"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	b, _, logs := testAgentIn(t, srv, dir, header+enrollTemplate)
	stop := runAgent(t, b)
	defer stop()
	waitFor(t, "the file refused", func() bool {
		return strings.Contains(logs.String(), "has mode 0644: group and others must not have access")
	})
	waitFor(t, "a new enrollment", func() bool { _, n := srv.lastAuth(); return n == 1 })
	// The server counts the enrollment before the agent has saved its answer.
	waitFor(t, "the new instance token saved, mode 0600", func() bool {
		fi, err := os.Stat(path)
		b, _ := os.ReadFile(path)
		return err == nil && fi.Mode().Perm() == 0o600 && strings.Contains(string(b), "instance-token-1")
	})
}

// testAgentIn is testAgent with the directory of an earlier agent (its cache_dir, its files).
func testAgentIn(t *testing.T, srv *viewServer, dir, text string) (*agent.Agent, string, *syncBuffer) {
	t.Helper()
	text = strings.ReplaceAll(strings.ReplaceAll(text, "$URL", srv.URL), "$DIR", dir)
	path := dir + "/agent-2.yaml"
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
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

// An enrollment whose answer is lost is asked again with the same enrollment key (saved, 0600,
// before the first was sent), which the server takes for the holder of a token never used;
// the agent then holds the second token.
func TestAgent_RunEnrollAnswerLostAskedAgainWithItsKey(t *testing.T) {
	defer agent.SetEnrollEvery(100 * time.Millisecond)()
	srv := newViewServer(t, map[string]string{"a": "1"})
	srv.enrollLose = 1
	a, dir, _ := testAgent(t, srv, header+enrollTemplate)
	stop := runAgent(t, a)
	defer stop()
	waitFor(t, "first render", fileIs(dir+"/a", "a=1"))
	path := agent.InstanceTokenPath(dir+"/cache", "web")
	waitFor(t, "the second enrollment saved", func() bool {
		b, _ := os.ReadFile(path)
		return strings.Contains(string(b), `"token":"instance-token-2"`)
	})
	srv.mu.Lock()
	keys := append([]string(nil), srv.enrollKeys...)
	srv.mu.Unlock()
	if len(keys) != 2 || len(keys[0]) != 64 || keys[0] != keys[1] {
		t.Fatalf("enrollment keys sent %q, want one 64-digit key twice", keys)
	}
	fi, err := os.Stat(agent.EnrollKeyPath(dir+"/cache", "web"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("enrollment key file: %v, mode %v, want 0600", err, fi)
	}
	if got := strings.TrimSpace(read(t, agent.EnrollKeyPath(dir+"/cache", "web"))); got != keys[0] {
		t.Fatalf("enrollment key file holds %q, sent %q", got, keys[0])
	}
}

// The instance token is bound to the server it came from, compared as the URL it is: the
// config's server written again with a trailing slash, or its scheme or host in capitals,
// named another server, so that the agent enrolled again, was refused (the name is held, 409)
// and its reports were not taken until --instance-stale (1 h) let it take its own name over.
func TestAgent_RunKeepsItsTokenForTheSameServerWrittenAnotherWay(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	a, dir, _ := testAgent(t, srv, header+enrollTemplate)
	stop := runAgent(t, a)
	waitFor(t, "first render", fileIs(dir+"/a", "a=1"))
	stop()
	srv.mu.Lock()
	srv.enrollFail = http.StatusConflict // the name is held from now on, as the server's is
	srv.mu.Unlock()
	for i, url := range []string{srv.URL + "/", strings.ToUpper(strings.TrimPrefix(srv.URL, "http://")), "HTTP://" + strings.TrimPrefix(srv.URL, "http://") + "/"} {
		if i == 1 {
			url = "http://" + url
		}
		b, _, _ := testAgentIn(t, srv, dir, strings.Replace(header, "$URL", url, 1)+enrollTemplate)
		stop = runAgent(t, b)
		srv.set(map[string]*string{"a": str(fmt.Sprint(i + 2))})
		waitFor(t, "a re-rendered with server "+url, fileIs(dir+"/a", fmt.Sprintf("a=%d", i+2)))
		stop()
		if auth, n := srv.lastAuth(); auth != "instance-token-1" || n != 1 {
			t.Fatalf("with server %s requests carry %q after %d enrollments, want the saved token and no new enrollment", url, auth, n)
		}
	}
}

// An agent refused enrollment whose view request then waits (a stream, or a long-poll with
// nothing to answer, for a minute or more) tries again once enrollEvery has passed, not at the
// next answer: DESIGN.md says at most once a minute, and before, the first try after a refusal
// at start came with the second stream, about 110 s later.
func TestAgent_RunEnrollTriedAgainDuringALongWait(t *testing.T) {
	defer agent.SetEnrollEvery(300 * time.Millisecond)()
	srv := newViewServer(t, map[string]string{"a": "1"})
	srv.enrollFail = http.StatusConflict
	srv.maxWait = time.Minute
	a, dir, _ := testAgent(t, srv, header+enrollTemplate)
	stop := runAgent(t, a)
	defer stop()
	waitFor(t, "first render", fileIs(dir+"/a", "a=1"))
	srv.mu.Lock()
	srv.enrollFail = 0
	srv.mu.Unlock()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, n := srv.lastAuth(); n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("not enrolled again 15 s after the refusal, its long-poll still waiting")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A run whose first fetch fails (the server away) and that has no cached view writes a status
// from the last one's: it keeps
// its templates, but not the last run's refusal of enrollment, which is not this run's (it
// has not been refused; status said NOT enrolled with the other run's words).
func TestAgent_RunFetchFailedStatusKeepsNoOldRefusal(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	srv.enrollFail = http.StatusConflict
	a, dir, _ := testAgent(t, srv, header+enrollTemplate)
	stop := runAgent(t, a)
	waitFor(t, "first render", fileIs(dir+"/a", "a=1"))
	waitFor(t, "the refusal in the status", func() bool {
		st, err := agent.LoadStatus(dir+"/cache", "web")
		return err == nil && strings.Contains(st.NotEnrolled, "is enrolled already")
	})
	stop()
	srv.CloseClientConnections()
	srv.Close()
	if err := os.Remove(agent.CachePath(dir+"/cache", "web")); err != nil { // no view to render from
		t.Fatal(err)
	}
	b, _, _ := testAgentIn(t, srv, dir, header+enrollTemplate)
	stop = runAgent(t, b)
	defer stop()
	var st *agent.Status
	waitFor(t, "the failed fetch in the status", func() bool {
		var err error
		st, err = agent.LoadStatus(dir+"/cache", "web")
		return err == nil && st.LastError != ""
	})
	if strings.Contains(st.NotEnrolled, "is enrolled already") {
		t.Fatalf("status of a run that was never refused says %q", st.NotEnrolled)
	}
}
