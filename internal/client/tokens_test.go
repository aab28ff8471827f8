package client

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
)

// A server that does not page GET /v1/tokens (one before pages: a replica not upgraded yet,
// behind the same load balancer as upgraded ones) refuses limit as an unknown parameter, and
// answers every token without it: token ls then lists them all from that one answer. Here it
// answers the first page as an upgraded replica would, and the second as an older one.
func TestTokens_AnOlderServerAnswersEveryTokenWithoutALimit(t *testing.T) {
	var asked []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		markAnswer(w)
		asked = append(asked, r.URL.RawQuery)
		w.Header().Set("Content-Type", "application/json")
		q := r.URL.Query()
		switch {
		case q.Has("limit") && q.Get("after") == "":
			fmt.Fprint(w, `{"revision":5,"tokens":[{"name":"a"},{"name":"b"}],"next":"b"}`)
		case q.Has("limit"):
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `{"error":{"code":"invalid_request","message":"unknown query parameter \"limit\""}}`)
		default:
			fmt.Fprint(w, `{"tokens":[{"name":"a"},{"name":"b"},{"name":"c"}]}`)
		}
	}))
	defer srv.Close()
	c, err := New(srv.URL, Options{Token: "t"})
	if err != nil {
		t.Fatal(err)
	}
	ts, err := c.AllTokens(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, ti := range ts {
		names = append(names, ti.Name)
	}
	if !slices.Equal(names, []string{"a", "b", "c"}) {
		t.Errorf("listed %v, want a, b and c once each", names)
	}
	if want := []string{"all=&limit=1000", "after=b&all=&limit=1000", "all="}; !slices.Equal(asked, want) {
		t.Errorf("asked %q, want %q", asked, want)
	}
}
