package server

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// A JSON apply body with more keys than the transaction limit is refused (413 too_large) as soon
// as its keys pass it, while the client is still sending: the replica does not wait for (nor
// hold) the rest of a body it can only refuse. Nothing is written.
func TestAppliances_TooManyKeysRefusedBeforeTheBodyEnds(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MaxTxnOps = 50 })
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"keep":"me"}}`), 200, nil)
	before := f.keys()

	pr, pw := io.Pipe()
	defer pw.Close()
	go func() {
		var b strings.Builder
		b.WriteString(`{"keys":{"nested":{"x":"1"},`)
		for i := range 60 {
			fmt.Fprintf(&b, `"k%d":"v",`, i)
		}
		pw.Write([]byte(b.String())) // and then nothing: the body never ends
	}()
	req, err := http.NewRequest("PUT", f.srv.URL+"/v1/appliances/web", pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+f.token)
	req.Header.Set("Content-Type", "application/json")
	type result struct {
		res *http.Response
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := testClient.Do(req)
		done <- result{res, err}
	}()
	select {
	case got := <-done:
		if got.err != nil {
			t.Fatal(got.err)
		}
		defer got.res.Body.Close()
		var e api.ErrorBody
		if err := json.NewDecoder(got.res.Body).Decode(&e); err != nil || e.Error == nil {
			t.Fatalf("status %d, body not an error: %v", got.res.StatusCode, err)
		}
		if got.res.StatusCode != http.StatusRequestEntityTooLarge || e.Error.Code != api.CodeTooLarge || !strings.Contains(e.Error.Message, "limit of 50") {
			t.Fatalf("status %d %+v, want 413 too_large naming the limit of 50", got.res.StatusCode, e.Error)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no answer 10 s after the body passed the limit of keys: the server waits for the rest of it")
	}
	pw.Close()
	if after := f.keys(); !slices.Equal(after, before) {
		t.Fatalf("the refused apply changed keys: %v, want %v", after, before)
	}
	// A body at the limit, nested maps and all, is applied as before.
	var b strings.Builder
	b.WriteString(`{"keys":{"nested":{"x":"1","y":{"z":"2"}}`)
	for i := range 48 {
		fmt.Fprintf(&b, `,"k%d":"v"`, i)
	}
	b.WriteString(`}}`)
	f.must(f.do("PUT", "/v1/appliances/web", b.String(), "Content-Type", "application/json"), 200, nil)
	if n := len(f.keys()) - len(before) + 1; n != 50 {
		t.Errorf("%d keys of web after the apply at the limit, want 50", n)
	}
}

// A JSON apply body nested deeper than encoding/json parses is refused (400) without the watch
// that counts its keys holding memory for each level: before, a 4 MiB body of '[' made the
// replica allocate some 250 MB to follow its nesting (a frame of its own and one of the JSON
// decoder per byte), before the whole-body parse refused it at depth 10,001; a few writers
// sending such bodies at once could exhaust the replica's memory.
func TestAppliances_DeepJSONBodyWatchBounded(t *testing.T) {
	f := newFixture(t)
	body := `{"keys":{"a":` + strings.Repeat("[", 4<<20)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	res := f.do("PUT", "/v1/appliances/deep", body, "Content-Type", "application/json")
	runtime.ReadMemStats(&after)
	if res.StatusCode != http.StatusBadRequest {
		t.Fatalf("status %d %s, want 400", res.StatusCode, res.body)
	}
	if got := (after.TotalAlloc - before.TotalAlloc) >> 20; got > 100 {
		t.Fatalf("the replica allocated %d MiB for a 4 MiB body", got)
	}
}
