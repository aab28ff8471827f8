package server

import (
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// TestAuth_TwoAuthorizationHeadersRefused: a request with two Authorization headers is refused
// whatever their order, so that no header is silently ignored (net/http's Get reads the first).
func TestAuth_TwoAuthorizationHeadersRefused(t *testing.T) {
	f := newFixture(t)
	f.put("shared/a", "1")
	for name, headers := range map[string][]string{
		"valid first":  {"Bearer " + f.token, "Bearer sl_not-a-token"},
		"valid second": {"Bearer sl_not-a-token", "Bearer " + f.token},
		"both valid":   {"Bearer " + f.token, "Bearer " + f.token},
		"basic first":  {"Basic dXNlcjpwdw==", "Bearer " + f.token},
	} {
		t.Run(name, func(t *testing.T) {
			req, err := http.NewRequest("GET", f.srv.URL+"/v1/kv/shared/a", nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, h := range headers {
				req.Header.Add("Authorization", h)
			}
			r := f.send(req)
			res, body := r.Response, r.body
			if res.StatusCode != http.StatusBadRequest || r.errCode() != api.CodeInvalidRequest ||
				!strings.Contains(r.errMessage(), "2 Authorization headers: send exactly one") {
				t.Fatalf("got %d %s, want 400 %s naming the rule", res.StatusCode, body, api.CodeInvalidRequest)
			}
			if strings.Contains(string(body), f.token) {
				t.Fatalf("the answer repeats the token: %s", body)
			}
		})
	}
	// One header still works.
	f.must(f.do("GET", "/v1/kv/shared/a", ""), 200, nil)
}

// TestAuth_TwoInstanceHeadersRefused: a request with two X-Shoelace-Instance headers is refused
// (400, naming the rule), whatever the token: before, the first counted and the other was
// ignored unseen, so an instance token sent with its own name and another's was answered and
// its report recorded, as what a proxy in front may have checked was the other.
func TestAuth_TwoInstanceHeadersRefused(t *testing.T) {
	f := newFixture(t)
	f.put("appliances/web/port", "80")
	agent := f.newToken(api.TokenRequest{Name: "web-agent", Appliance: "web"})
	inst := f.enroll(agent, "web", "vm-1").Token
	report := `{"instance":"vm-1","applied":1}`
	for name, c := range map[string]struct {
		token, method, path, body string
		instances                 []string
	}{
		"instance token, own first":    {inst, "GET", "/v1/appliances/web", "", []string{"vm-1", "vm-2"}},
		"instance token, own second":   {inst, "GET", "/v1/appliances/web", "", []string{"vm-2", "vm-1"}},
		"instance token, twice itself": {inst, "GET", "/v1/appliances/web", "", []string{"vm-1", "vm-1"}},
		"agent token":                  {agent, "GET", "/v1/appliances/web", "", []string{"vm-3", "vm-4"}},
		"instance token report":        {inst, "POST", "/v1/appliances/web/report", report, []string{"vm-1", "vm-2"}},
	} {
		t.Run(name, func(t *testing.T) {
			req, err := http.NewRequest(c.method, f.srv.URL+c.path, strings.NewReader(c.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+c.token)
			req.Header.Set("Content-Type", "application/json")
			for _, in := range c.instances {
				req.Header.Add(api.HeaderInstance, in)
			}
			r := f.send(req)
			res, body := r.Response, r.body
			if res.StatusCode != http.StatusBadRequest || r.errCode() != api.CodeInvalidRequest ||
				!strings.Contains(r.errMessage(), "2 X-Shoelace-Instance headers: send at most one") {
				t.Fatalf("got %d %s, want 400 %s naming the rule", res.StatusCode, body, api.CodeInvalidRequest)
			}
		})
	}
	if rec, ok := f.record("web", "vm-1"); ok && rec.Applied != 0 {
		t.Fatalf("the refused report was recorded: %+v", rec)
	}
	// One header still works, as does none for an instance token.
	f.must(f.doToken(inst, "GET", "/v1/appliances/web", "", api.HeaderInstance, "vm-1"), 200, nil)
	f.must(f.doToken(inst, "GET", "/v1/appliances/web", ""), 200, nil)
	f.must(f.doToken(agent, "GET", "/v1/appliances/web", "", api.HeaderInstance, "vm-3"), 200, nil)
}

// A report's X-Shoelace-Applied or X-Shoelace-Rollout given twice is refused (400, naming the
// rule), as a second X-Shoelace-Instance is: the first counted and the second was ignored
// unseen, though a proxy in front may have judged it.
func TestAuth_TwoReportHeadersRefused(t *testing.T) {
	f := newFixture(t)
	f.put("appliances/web/port", "80")
	inst := f.enroll(f.newToken(api.TokenRequest{Name: "web-agent", Appliance: "web"}), "web", "vm-1").Token
	for _, h := range []string{api.HeaderApplied, api.HeaderRollout} {
		req, err := http.NewRequest("GET", f.srv.URL+"/v1/appliances/web", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+inst)
		req.Header.Set(api.HeaderInstance, "vm-1")
		req.Header.Add(h, "1")
		req.Header.Add(h, "2")
		r := f.send(req)
		if r.StatusCode != http.StatusBadRequest || r.errCode() != api.CodeInvalidRequest ||
			!strings.Contains(r.errMessage(), "2 "+h+" headers: send at most one") {
			t.Fatalf("two %s headers: %d %s, want 400 naming the rule", h, r.StatusCode, r.body)
		}
	}
	if rec, ok := f.record("web", "vm-1"); ok && rec.Applied != 0 {
		t.Fatalf("the refused report was recorded: %+v", rec)
	}
	f.must(f.doToken(inst, "GET", "/v1/appliances/web", "", api.HeaderInstance, "vm-1", api.HeaderApplied, "1"), 200, nil)
}

// TestAuth_InvalidInstanceNamesTakeNoPlace: a request of an agent token whose
// X-Shoelace-Instance is no instance name is refused (400, naming the rule) without taking one
// of the token's --max-instances places. Before, each such name took a place for 10 minutes
// before the handler refused it, so that three bad names (a hostname with a '/' or an accent,
// a name over 128 bytes) left a token with --max-instances 3 answered 429 for its real agents.
func TestAuth_InvalidInstanceNamesTakeNoPlace(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.RateLimit = 1000; c.MaxInstances = 3 })
	f.put("appliances/web/a", "1")
	agent := f.s.testToken(t, api.TokenRequest{Name: "agent", Appliance: "web"})
	for _, bad := range []string{"bad/name", "é", "<script>", "..", "-x", strings.Repeat("x", 200)} {
		f.mustErr(f.doToken(agent, "GET", "/v1/appliances/web", "", api.HeaderInstance, bad), 400, api.CodeInvalidName, "X-Shoelace-Instance")
	}
	for i := 1; i <= 3; i++ {
		f.must(f.doToken(agent, "GET", "/v1/appliances/web", "", api.HeaderInstance, "vm-"+strconv.Itoa(i)), 200, nil)
	}
	// The cap still holds for real names.
	f.mustErr(f.doToken(agent, "GET", "/v1/appliances/web", "", api.HeaderInstance, "vm-4"), 429, api.CodeRateLimited, "--max-instances")
}

// A bearer token over 512 bytes (the limit of what is looked up) is refused as too long, not
// as missing: before, "missing token: send Authorization: Bearer <token>" to a client that
// sent one, such as a CLI given the wrong file. The answer does not repeat it.
func TestAuth_OverlongTokenSaysSo(t *testing.T) {
	f := newFixture(t)
	long := "sl_" + strings.Repeat("x", 600)
	req, err := http.NewRequest("GET", f.srv.URL+"/v1/kv/shared/a", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+long)
	r := f.send(req)
	if r.StatusCode != http.StatusUnauthorized || !strings.Contains(r.errMessage(), "the bearer token is 603 bytes, over the 512 a token may have") {
		t.Fatalf("got %d %s, want 401 saying the token is too long", r.StatusCode, r.body)
	}
	if strings.Contains(string(r.body), long) {
		t.Fatalf("the answer repeats the token: %s", r.body)
	}
}
