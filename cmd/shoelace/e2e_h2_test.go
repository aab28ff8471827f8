package main

import (
	"net/http"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/testutil/h2reset"
)

// A write without a body (kv rm, token revoke, an empty kv put) that went out whole over
// HTTP/2 and whose stream was then reset (a load balancer that passed it on, then broke the
// stream with PROTOCOL_ERROR) was sent again by net/http itself, which resends a request with
// no body without asking anyone: kv rm deleted twice (exit 0, or the second answered 404:
// exit 3 for a delete that was done). The CLI speaks HTTP/1.1, on which net/http never sends
// a write again once any of it was written: the write reaches the server once.
func TestE2E_WriteWithoutBodyNotResentOverHTTP2(t *testing.T) {
	srv := h2reset.Start(t, func(method, path string) (int, string) {
		return http.StatusOK, `{"revision":7,"deleted":1}`
	})
	c := &runner{t: t, env: []string{"SHOELACE_ADDR=" + srv.URL, "SHOELACE_TOKEN=x", "SHOELACE_CA_FILE=" + srv.CAFile}}
	for _, args := range [][]string{{"kv", "rm", "shared/a"}, {"kv", "put", "shared/b", ""}} {
		r := c.run(args...)
		path := "/v1/kv/" + args[2]
		method := map[string]string{"rm": http.MethodDelete, "put": http.MethodPut}[args[1]]
		if n := srv.Seen(method, path); n != 1 {
			t.Errorf("shoelace %q: the server received %s %s %d times, want once (%s)", args, method, path, n, r)
		}
	}
}
