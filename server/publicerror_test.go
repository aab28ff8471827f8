package server

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// A store failure's text reaches operators whole and agents or unknown callers as a fixed text
// by its code, whatever words it holds (the check was once for "etcd" in the message: an error
// naming an address without that word went through); the server's own 5xx texts stay.
func TestPublicError_StoreFailuresByCode(t *testing.T) {
	leaky := "read the keys a write touches: rpc error: dial tcp 10.1.2.3:2379: connect: connection refused"
	as := func(p *principal) *http.Request {
		r := httptest.NewRequest("GET", "/v1/appliances/web", nil)
		if p != nil {
			r = r.WithContext(context.WithValue(r.Context(), principalKey{}, p))
		}
		return r
	}
	agent, anon := as(&principal{name: "agent", appliance: "web"}), as(nil)
	for _, c := range []struct {
		code, want string
		retry      int
	}{
		{api.CodeInternal, "internal error; the server logged it as request", 0},
		{api.CodeUnavailable, "the store is unavailable; retry later", 1},
		{api.CodeOutcomeUnknown, "the store did not confirm the write; its outcome is unknown", 0},
	} {
		e := &api.Error{Code: c.code, Message: leaky}
		for _, r := range []*http.Request{agent, anon} {
			msg, retry := publicError(r, e, e.HTTPStatus())
			if strings.Contains(msg, "10.1.2.3") || !strings.HasPrefix(msg, c.want) || retry != c.retry {
				t.Errorf("%s to a non-operator: %q, Retry-After %d; want %q…, %d", c.code, msg, retry, c.want, c.retry)
			}
		}
		for _, p := range []*principal{{admin: true}, {read: []string{"appliances/web/"}}, {write: []string{"shared/"}}} {
			if msg, _ := publicError(as(p), e, e.HTTPStatus()); msg != leaky {
				t.Errorf("%s to an operator (%+v): %q, want the whole error", c.code, p, msg)
			}
		}
	}
	// The server's own words: an agent needs them, and they name nothing of the deployment.
	for _, code := range []string{api.CodeMaintenance, api.CodeShuttingDown, api.CodeTooManyWaiters} {
		e := &api.Error{Code: code, Message: "in maintenance: etcd defrag until 03:00"}
		if msg, _ := publicError(agent, e, e.HTTPStatus()); msg != e.Message {
			t.Errorf("%s to an agent: %q, want %q", code, msg, e.Message)
		}
	}
	// 4xx are the caller's own errors, told whole.
	e := &api.Error{Code: api.CodeInvalidKey, Message: "invalid key \"a//b\": empty segment"}
	if msg, _ := publicError(anon, e, e.HTTPStatus()); msg != e.Message {
		t.Errorf("a 4xx to an unknown caller: %q, want %q", msg, e.Message)
	}
}
