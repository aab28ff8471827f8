package server

import (
	"bytes"
	"compress/gzip"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// A request body sent with a Content-Encoding (gzip, say) is refused, 415, and nothing is
// written: the server reads bodies as they are sent. Before, the encoding was ignored: the
// compressed bytes were the value (refused only when they were not UTF-8 text, as "not valid
// UTF-8"), and a body sent as it is but labelled gzip was stored as if unlabelled.
func TestBodies_ContentEncodingRefused(t *testing.T) {
	f := newFixture(t)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte("80"))
	zw.Close()
	for _, c := range []struct{ enc, body, path string }{
		{"gzip", gz.String(), "/v1/kv/shared/gz"},
		{"gzip", "80", "/v1/kv/shared/labelled"},
		{"br", `{"ops":[{"op":"put","key":"shared/txn","value":"1"}]}`, "/v1/txn"},
	} {
		method := "PUT"
		if c.path == "/v1/txn" {
			method = "POST"
		}
		f.mustErr(f.do(method, c.path, c.body, "Content-Encoding", c.enc, "Content-Type", "application/json"), 415, api.CodeUnsupportedType, "Content-Encoding", c.enc)
	}
	for _, k := range []string{"shared/gz", "shared/labelled", "shared/txn"} {
		f.mustErr(f.do("GET", "/v1/kv/"+k, ""), 404, api.CodeNotFound)
	}
	// identity is no encoding at all.
	f.must(f.do("PUT", "/v1/kv/shared/id", "80", "Content-Encoding", "identity"), 200, nil)
	var kv api.KV
	f.must(f.do("GET", "/v1/kv/shared/id", ""), 200, &kv)
	if kv.Value != "80" {
		t.Fatalf("shared/id = %q, want 80", kv.Value)
	}
}

// Content-Encoding given twice, identity first, is refused as the encoding it ends with:
// before, only the first header was looked at, and a body labelled identity then gzip was
// stored as sent.
func TestBodies_ContentEncodingGivenTwiceRefused(t *testing.T) {
	f := newFixture(t)
	for _, path := range []string{"/v1/kv/shared/twice", "/v1/txn"} {
		method, body := "PUT", "80"
		if path == "/v1/txn" {
			method, body = "POST", `{"ops":[{"op":"put","key":"shared/twicetxn","value":"1"}]}`
		}
		req, err := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+f.token)
		req.Header.Add("Content-Encoding", "identity")
		req.Header.Add("Content-Encoding", "gzip")
		f.mustErr(f.send(req), 415, api.CodeUnsupportedType, "gzip")
	}
	for _, k := range []string{"shared/twice", "shared/twicetxn"} {
		f.mustErr(f.do("GET", "/v1/kv/"+k, ""), 404, api.CodeNotFound)
	}
	// identity said twice, or in a list, is still no encoding.
	f.must(f.do("PUT", "/v1/kv/shared/idid", "80", "Content-Encoding", "identity, Identity"), 200, nil)
}

// The console's forms are request bodies too: one labelled with a Content-Encoding is refused,
// 415, and nothing written. Before, a plain form labelled gzip was read as if unlabelled and
// its edit applied.
func TestUI_FormContentEncodingRefused(t *testing.T) {
	f := newFixture(t)
	uiSeed(f)
	b := newUIBrowser(t, f.srv.URL, nil)
	tok := b.signIn(f.token)
	var kv api.KV
	f.must(f.do("GET", "/v1/kv/appliances/web-frontend/port", ""), 200, &kv)
	r := b.post("/ui/appliances/web-frontend/edit", url.Values{"csrf": {tok}, "key": {"appliances/web-frontend/port"}, "value": {"81"}, "cas": {jsonNum(kv.ModRevision)}, "step": {"apply"}},
		"Content-Encoding", "gzip")
	mustStatus(t, r, http.StatusUnsupportedMediaType)
	f.must(f.do("GET", "/v1/kv/appliances/web-frontend/port", ""), 200, &kv)
	if kv.Value != "8080" {
		t.Fatalf("a form labelled gzip was written: port = %q", kv.Value)
	}
}
