package server

import (
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/testutil"
)

// TestSecrets_NeverInLogsOrAnswers writes a secret through every write path, well formed and
// malformed, and looks for it in every answer (headers and body) and in the server's log.
func TestSecrets_NeverInLogsOrAnswers(t *testing.T) {
	var logs syncBuffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f := newFixtureLog(t, testutil.Store(t), log, func(c *Config) { c.MaxValueBytes = 200 })
	const s = "Hunter2xyzzy"
	yaml := []string{"Content-Type", "application/yaml"}
	cases := []struct {
		method, path, body string
		hdr                []string
	}{
		{"PUT", "/v1/kv/appliances/web/secrets/pw", s, nil},
		{"PUT", "/v1/kv/appliances/web/secrets/pw?cas=1", s, nil},
		{"PUT", "/v1/kv/appliances/web/secrets/pw", s + "\xff", nil},
		{"PUT", "/v1/kv/appliances/web/secrets/pw", s + strings.Repeat("x", 300), nil},
		{"PUT", "/v1/kv/appliances/web/secrets/pw?bogus=" + "1", s, nil},
		{"POST", "/v1/txn", `{"ops":[{"op":"put","key":"appliances/web/secrets/pw","value":"` + s + `"}]}`, nil},
		{"POST", "/v1/txn", `{"ops":[{"op":"put","key":"appliances/web/secrets/pw","value":"` + s + `\q"}]}`, nil},
		{"POST", "/v1/txn", `{"ops":[{"op":"put","key":"appliances/web/secrets/pw","value":` + s + `}]}`, nil},
		{"POST", "/v1/txn", `{"ops":[{"op":"put","key":"appliances/web/secrets/pw","value":"` + s + `"`, nil},
		{"POST", "/v1/txn", `{"ops":[{"op":"put","key":"appliances/web/secrets/pw","value":"` + s + "\xff" + `"}]}`, nil},
		{"POST", "/v1/txn", `{"ops":[{"op":"put","key":"appliances/web/secrets/pw","value":"` + s + strings.Repeat("x", 300) + `"}]}`, nil},
		{"POST", "/v1/txn", `{"ops":[{"op":"put","key":"appliances/web/secrets/pw ` + s + `","value":"x"}]}`, nil},
		{"POST", "/v1/txn", `{"ops":[{"op":"delete","key":"appliances/web/secrets/pw","value":"` + s + `"}]}`, nil},
		{"POST", "/v1/txn", `{"ops":[{"op":"put","key":"appliances/web/secrets/pw","value":["` + s + `"]}]}`, nil},
		{"POST", "/v1/txn", `{"ops":[{"op":"put","key":"appliances/web/secrets/pw","value":{"a":"` + s + `"}}]}`, nil},
		{"POST", "/v1/txn", `{"ops":[{"op":"put","key":"appliances/web/secrets/pw","value":"` + s + `"}]} trailing`, nil},
		{"PUT", "/v1/appliances/web", `{"keys":{"secrets":{"pw":"` + s + `"}}}`, nil},
		{"PUT", "/v1/appliances/web", `{"keys":{"secrets":{"pw":` + s + `}}}`, nil},
		{"PUT", "/v1/appliances/web", `{"keys":{"secrets":{"pw":"` + s + `\q"}}}`, nil},
		{"PUT", "/v1/appliances/web", `{"keys":{"secrets":{"pw":"` + s + `"`, nil},
		{"PUT", "/v1/appliances/web", `{"keys":{"secrets":{"pw":["` + s + `"]}}}`, nil},
		{"PUT", "/v1/appliances/web", `{"keys":{"secrets":{"pw":"` + s + strings.Repeat("x", 300) + `"}}}`, nil},
		{"PUT", "/v1/appliances/web", `{"keys":{"secrets":{"pw":"` + s + "\xff" + `"}}}`, nil},
		{"PUT", "/v1/appliances/web", `{"keys":{"secrets":{"` + s + `":null}}}`, nil},
		{"PUT", "/v1/appliances/web", `{"keys":{"secrets":{"pw ` + s + `":"x"}}}`, nil},
		{"PUT", "/v1/appliances/web", `{"keys":{"secrets":{"` + s + `":{}}}}`, nil},
		{"PUT", "/v1/appliances/web", `{"keys":{"secrets":{"pw":"` + s + `","pw":"` + s + `"}}}`, nil},
		{"PUT", "/v1/appliances/web", "keys:\n  secrets:\n    pw: " + s + "\n", yaml},
		{"PUT", "/v1/appliances/web", "keys:\n  secrets:\n    pw: \"" + s + "\n", yaml},
		{"PUT", "/v1/appliances/web", "keys:\n  secrets:\n    pw: '" + s + "\n", yaml},
		{"PUT", "/v1/appliances/web", "keys:\n  secrets:\n    pw: " + s + ": x: y\n", yaml},
		{"PUT", "/v1/appliances/web", "keys:\n  secrets:\n    pw: " + s + "\n   bad: indent\n", yaml},
		{"PUT", "/v1/appliances/web", "keys:\n  secrets:\n\tpw: " + s + "\n", yaml},
		{"PUT", "/v1/appliances/web", "keys:\n  secrets: {pw " + s + "}\n", yaml},
		{"PUT", "/v1/appliances/web", "keys:\n  secrets: {" + s + "}\n", yaml},
		{"PUT", "/v1/appliances/web", "keys:\n  secrets:\n    pw: [" + s + "]\n", yaml},
		{"PUT", "/v1/appliances/web", "keys:\n  secrets:\n    pw: !!int " + s + "\n", yaml},
		{"PUT", "/v1/appliances/web", "keys:\n  secrets:\n    pw: !" + s + " x\n", yaml},
		{"PUT", "/v1/appliances/web", "keys:\n  secrets:\n    pw: &" + s + " x\n    q: *" + s + "\n", yaml},
		{"PUT", "/v1/appliances/web", "keys:\n  secrets:\n    pw: *" + s + "\n", yaml},
		{"PUT", "/v1/appliances/web", "keys:\n  secrets:\n    pw: \"" + s + "\\q\"\n", yaml},
		{"PUT", "/v1/appliances/web", "keys:\n  secrets:\n    pw: " + s + "\n    pw: " + s + "\n", yaml},
		{"PUT", "/v1/appliances/web", "keys:\n  secrets:\n    pw: " + s + "\n---\nkeys: {}\n", yaml},
		{"PUT", "/v1/appliances/web", "keys:\n  secrets:\n    pw: |\n  " + s + "\n", yaml},
		{"PUT", "/v1/appliances/web", "keys:\n  secrets:\n    " + s + ":\n", yaml},
		{"PUT", "/v1/appliances/web", "keys:\n  secrets:\n    ? [" + s + "]\n    : x\n", yaml},
		{"PUT", "/v1/appliances/web", "keys:\n  secrets:\n    pw: " + s + "\xff\n", yaml},
		{"PUT", "/v1/appliances/web", "keys:\n  secrets:\n    pw: %" + s + "\n", yaml},
		{"PUT", "/v1/appliances/web", "keys:\n  secrets:\n    pw: `" + s + "\n", yaml},
		{"PUT", "/v1/appliances/web", "keys:\n  secrets:\n    pw: @" + s + "\n", yaml},
		{"PUT", "/v1/appliances/web", "%YAML 9.9\n---\nkeys:\n  secrets:\n    pw: " + s + "\n", yaml},
		{"PUT", "/v1/appliances/web", "keys:\n  secrets:\n    pw: " + s, []string{"Content-Type", "text/" + s}},
	}
	for _, c := range cases {
		r := f.do(c.method, c.path, c.body, c.hdr...)
		var hdr strings.Builder
		r.Header.Write(&hdr)
		if strings.Contains(string(r.body), s) || strings.Contains(hdr.String(), s) {
			t.Errorf("%s %s with body %q: the answer holds the secret: %d %s", c.method, c.path, c.body, r.StatusCode, r.body)
		}
		if r.StatusCode == http.StatusInternalServerError {
			t.Errorf("%s %s with body %q: %d %s", c.method, c.path, c.body, r.StatusCode, r.body)
		}
	}
	if strings.Contains(logs.String(), s) {
		for _, line := range strings.Split(logs.String(), "\n") {
			if strings.Contains(line, s) {
				t.Errorf("log line holds the secret: %s", line)
			}
		}
	}
	// Well-formed writes do store it.
	f.must(f.do("PUT", "/v1/appliances/web", "keys:\n  secrets:\n    pw: "+s+"\n", yaml...), 200, nil)
	if kv, _, err := f.st.Get(t.Context(), "appliances/web/secrets/pw"); err != nil || kv.Value != s {
		t.Fatalf("the secret was not stored: %+v %v", kv, err)
	}
}
