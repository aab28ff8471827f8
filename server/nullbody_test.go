package server

import (
	"net/http"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// A body of JSON null, where an object is read (enrollment, report, token, rollout action,
// maintenance), is refused as a body (400 invalid_body, "body is null"), as an array or a
// string is. Before, null decoded as an object with every field missing, and each endpoint
// refused its first field: an enrollment's null was an empty instance name (invalid_name), a
// token's an empty token name, a rollout action's an action "" (invalid_request).
func TestBodies_NullRefusedAsABody(t *testing.T) {
	f := newFixture(t)
	f.put("appliances/web/port", "80")
	var tok api.TokenCreated
	f.must(f.do("POST", "/v1/tokens", `{"name":"web-agent","appliance":"web"}`, "Content-Type", "application/json"), 201, &tok)
	for _, c := range []struct{ token, method, path string }{
		{tok.Token, "POST", "/v1/appliances/web/enroll"},
		{tok.Token, "POST", "/v1/appliances/web/report"},
		{"", "POST", "/v1/tokens"},
		{"", "POST", "/v1/appliances/web/rollout"},
		{"", "PUT", "/v1/maintenance"},
	} {
		token := c.token
		if token == "" {
			token = f.token
		}
		for _, body := range []string{"null", " null\n"} {
			f.mustErr(f.doToken(token, c.method, c.path, body, "Content-Type", "application/json", api.HeaderInstance, "vm-1"),
				http.StatusBadRequest, api.CodeInvalidBody, "body is null: send a JSON object")
		}
	}
}
