package server

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// FuzzAuthorizationHeader: bearer never panics, accepts only "Bearer <token>" (any case of the
// scheme) with a non-empty token of at most 512 bytes, and the token it returns has no spaces
// around it.
func FuzzAuthorizationHeader(f *testing.F) {
	for _, s := range []string{"Bearer sl_abc", "bearer  sl_abc ", "Basic dXNlcjpwdw==", "Bearer", "Bearer ",
		"Bearer " + strings.Repeat("a", 600), "Token x", "Bearer a b", "\x00Bearer x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		r := httptest.NewRequest("GET", "/v1/kv/x", nil)
		r.Header["Authorization"] = []string{header}
		tok, ok, err := bearer(r)
		if err != nil {
			t.Fatalf("one header %q: %v", header, err)
		}
		if !ok {
			if tok != "" && len(tok) <= 512 {
				t.Fatalf("refused %q but returned token %q", header, tok)
			}
			return
		}
		scheme, _, _ := strings.Cut(header, " ")
		if !strings.EqualFold(scheme, "Bearer") {
			t.Fatalf("accepted scheme %q", scheme)
		}
		if tok == "" || len(tok) > 512 || strings.TrimSpace(tok) != tok {
			t.Fatalf("accepted token %q from %q", tok, header)
		}
	})
}

// FuzzTokenRequest: a token body is either refused with a 4xx that says why, or it names a valid
// token with exactly one kind of grant whose prefixes follow the key rules.
func FuzzTokenRequest(f *testing.F) {
	for _, s := range []string{
		`{"name":"web-agents","appliance":"web"}`,
		`{"name":"ci","write":["appliances/web"],"read":["shared"]}`,
		`{"name":"root","admin":true}`,
		`{"name":"x","admin":true,"appliance":"web"}`,
		`{"name":"../x","admin":true}`,
		`{"name":"x","read":["a//b"]}`,
		`{"name":"x","read":[""]}`,
		`{"name":"x","admin":true,"extra":1}`,
		`{"name":"x","admin":true}{}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var req api.TokenRequest
		err := strictJSON(data, &req)
		if err == nil {
			err = validateTokenRequest(&req)
		}
		if err != nil {
			checkAPIError(t, err)
			return
		}
		if api.ValidateSegment("token name", req.Name) != nil {
			t.Fatalf("accepted token name %q", req.Name)
		}
		kinds := 0
		if req.Appliance != "" {
			kinds++
		}
		if len(req.Read)+len(req.Write) > 0 {
			kinds++
		}
		if req.Admin {
			kinds++
		}
		if kinds != 1 {
			t.Fatalf("accepted %d kinds of grant: %+v", kinds, req)
		}
		for _, p := range append(append([]string{}, req.Read...), req.Write...) {
			if p != "" && api.ValidateKey(p) != nil {
				t.Fatalf("accepted prefix %q", p)
			}
		}
	})
}
