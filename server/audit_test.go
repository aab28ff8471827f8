package server

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/testutil"
)

// auditLines returns the audit lines logged since offset, and the new offset.
func auditLines(t *testing.T, logs *syncBuffer, offset int) ([]map[string]any, int) {
	t.Helper()
	all := logs.String()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(all[offset:]), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line is not JSON: %s", line)
		}
		if m["audit"] == true {
			out = append(out, m)
		}
	}
	return out, len(all)
}

func TestAudit_OneLinePerWrite(t *testing.T) {
	parallelShared(t)
	var logs syncBuffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	f := newFixtureLog(t, testutil.Store(t), log)
	const value = "audit-value-never-logged"
	f.put("appliances/web/b/c", value)
	_, off := auditLines(t, &logs, 0)

	type write struct {
		op, method, path, body string
		status                 int
		keys, deleted          []string
	}
	writes := []write{
		{"put", "PUT", "/v1/kv/appliances/web/secrets/pw", value, 200, []string{"appliances/web/secrets/pw"}, nil},
		{"delete", "DELETE", "/v1/kv/appliances/web/secrets/pw", "", 200, []string{"appliances/web/secrets/pw"}, nil},
		{"delete-recurse", "DELETE", "/v1/kv/appliances/web/b?recurse", "", 200, []string{"appliances/web/b"}, nil},
		{"txn", "POST", "/v1/txn", `{"ops":[{"op":"put","key":"shared/x","value":"` + value + `"},{"op":"put","key":"shared/y","value":"1"}]}`, 200, []string{"shared/x", "shared/y"}, nil},
		{"apply", "PUT", "/v1/appliances/web", `{"keys":{"a":"` + value + `","s":{"t":"1"}}}`, 200, []string{"appliances/web/a", "appliances/web/s/t"}, nil},
		// An apply deletes the keys it leaves out: its line names them (it named only the body's).
		{"apply", "PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`, 200, []string{"appliances/web/a"}, []string{"appliances/web/s/t"}},
		{"token-create", "POST", "/v1/tokens", `{"name":"ci","read":["shared"]}`, 201, []string{"ci"}, nil},
		{"token-revoke", "DELETE", "/v1/tokens/ci", "", 200, []string{"ci"}, nil},
		{"maintenance-on", "PUT", "/v1/maintenance", `{"on":true}`, 200, []string{}, nil},
		{"maintenance-off", "PUT", "/v1/maintenance", `{"on":false}`, 200, []string{}, nil},
		{"snapshot", "GET", "/v1/snapshot", "", 200, []string{}, nil},
	}
	for _, w := range writes {
		start := time.Now().Add(-time.Second)
		r := f.do(w.method, w.path, w.body, "X-Shoelace-Message", "audit test")
		if r.StatusCode != w.status {
			t.Fatalf("%s: %d %s", w.op, r.StatusCode, r.body)
		}
		var lines []map[string]any
		lines, off = auditLines(t, &logs, off)
		if len(lines) != 1 {
			t.Fatalf("%s: %d audit lines, want 1: %v", w.op, len(lines), lines)
		}
		m := lines[0]
		if m["op"] != w.op || m["token"] != "admin" || !strings.HasPrefix(m["remote"].(string), "127.0.0.1:") || m["message"] != "audit test" {
			t.Errorf("%s: audit line %v", w.op, m)
		}
		ts, err := time.Parse(time.RFC3339Nano, m["time"].(string))
		if err != nil || ts.Before(start) {
			t.Errorf("%s: audit time %v (%v)", w.op, m["time"], err)
		}
		if rev, _ := m["revision"].(float64); rev <= 0 || strconv.FormatInt(int64(rev), 10) != r.Header.Get("X-Shoelace-Index") {
			t.Errorf("%s: audit revision %v, answer's index %s", w.op, m["revision"], r.Header.Get("X-Shoelace-Index"))
		}
		keys, _ := json.Marshal(m["keys"])
		want, _ := json.Marshal(w.keys)
		if string(keys) != string(want) {
			t.Errorf("%s: audit keys %s, want %s", w.op, keys, want)
		}
		deleted, _ := json.Marshal(m["deleted"])
		if want, _ := json.Marshal(w.deleted); string(deleted) != string(want) {
			t.Errorf("%s: audit deleted %s, want %s", w.op, deleted, want)
		}
	}
	// Refused writes are not audited: they changed nothing.
	f.mustErr(f.do("PUT", "/v1/kv/shared/x?cas=1", "v"), 409, "conflict")
	f.mustErr(f.do("POST", "/v1/txn", `{"ops":[]}`), 400, "invalid_body")
	if lines, _ := auditLines(t, &logs, off); len(lines) != 0 {
		t.Fatalf("refused writes audited: %v", lines)
	}
	if strings.Contains(logs.String(), value) {
		t.Fatal("a value reached the log")
	}
}

// Audit lines are written at any log level; the rest of the log keeps to its level.
func TestAudit_WrittenAtEveryLogLevel(t *testing.T) {
	var logs syncBuffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelError}))
	f := newFixtureLog(t, testutil.Store(t), log)
	f.put("appliances/web/b/c", "1")
	lines, _ := auditLines(t, &logs, 0)
	if len(lines) != 1 || lines[0]["op"] != "put" || lines[0]["level"] != "INFO" {
		t.Fatalf("audit lines at --log-level error = %v, want one INFO put line\n%s", lines, logs.String())
	}
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if !strings.Contains(line, `"audit":true`) && !strings.Contains(line, `"level":"ERROR"`) {
			t.Errorf("a non-audit line below the level was written: %s", line)
		}
	}
}

// A client that goes away while its write is on its way to etcd does not leave a write applied
// without its audit line: the write is seen through, and audited, whoever reads the answer.
func TestAudit_ClientGoneMidWrite(t *testing.T) {
	var logs syncBuffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	f := newFixtureLog(t, testutil.Store(t), log)
	addr := strings.TrimPrefix(f.srv.URL, "http://")
	const n = 60
	for i := range n {
		c := rawConn(t, addr)
		fmt.Fprintf(c, "PUT /v1/kv/appliances/gone/k%d HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: 1\r\n\r\nv", i, f.token)
		// Gone at once, or a little later: some writes are cut before etcd, some within it.
		time.Sleep(time.Duration(i%6) * 100 * time.Microsecond)
		c.Close()
	}
	time.Sleep(time.Second) // the writes seen through after their clients left
	applied := map[string]bool{}
	for _, k := range f.keys() {
		if strings.HasPrefix(k, "appliances/gone/") {
			applied[k] = true
		}
	}
	audited := map[string]bool{}
	lines, _ := auditLines(t, &logs, 0)
	for _, l := range lines {
		for _, k := range l["keys"].([]any) {
			audited[k.(string)] = true
		}
	}
	for k := range applied {
		if !audited[k] {
			t.Errorf("%s was written without an audit line", k)
		}
	}
	t.Logf("%d of %d writes applied, all audited", len(applied), n)
}

// A rollout promoted at the end of its bake (a write the server makes by itself) logs the
// audit line of a write, as documented: "msg":"write", with the token, message and source of
// the request that started it, no remote address, and the rollout's id. It was "msg":"audit"
// without message or source, and "rollout <id>" as its remote address.
func TestAudit_PromotionAtTheEndOfItsBake(t *testing.T) {
	var logs syncBuffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	f := newFixtureLog(t, testutil.Store(t), log)
	f.put("appliances/web/port", "80")
	fleet := enrollFleet(t, f, 1)
	var st api.RolloutStatus
	f.must(f.do("PUT", "/v1/appliances/web?canary=100%25&bake=20ms", `{"keys":{"port":"8080"}}`, api.HeaderMessage, "new port", api.HeaderSource, "ci-42"), http.StatusAccepted, &st)
	waitFor(t, "the canary to get the candidate", func() bool { return viewOf(t, f, fleet[0]).Rollout == st.ID })
	report(t, f, fleet[0], viewOf(t, f, fleet[0]), "")
	waitFor(t, "the rollout to be promoted", func() bool { return rolloutStatus(t, f).State == api.RolloutPromoted })
	var promoted []map[string]any
	waitFor(t, "the promotion's audit line", func() bool {
		lines, _ := auditLines(t, &logs, 0)
		promoted = slices.DeleteFunc(lines, func(m map[string]any) bool { return m["op"] != "rollout-promote" })
		return len(promoted) > 0
	})
	m := promoted[0]
	keys, _ := json.Marshal(m["keys"])
	if len(promoted) != 1 || m["msg"] != "write" || m["token"] != "admin" || m["remote"] != "" || m["source"] != "ci-42" || m["rollout"] != st.ID ||
		!strings.Contains(m["message"].(string), "new port") || string(keys) != `["appliances/web"]` {
		t.Fatalf("the promotion's audit lines: %v", promoted)
	}
	if rev, _ := m["revision"].(float64); int64(rev) != viewOf(t, f, "").Revision {
		t.Fatalf("audit revision %v, the live view's %d", m["revision"], viewOf(t, f, "").Revision)
	}
}
