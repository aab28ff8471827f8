package server

import (
	"io"
	"net/http"
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
			res, err := f.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			r := resp{Response: res, body: body}
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
