package client

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// An older server refuses the stream parameter with 400; a proxy that buffers the answer
// delivers no first line in time: both are ErrNoStream.
func TestStreamView_NoStream(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/appliances/old":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			w.Write([]byte(`{"error":{"code":"invalid_request","message":"unknown query parameter \"stream\": this route takes [index wait]"}}`))
		case "/v1/appliances/buffered":
			// The headers and a line are written, but held (as a buffering proxy would).
			w.Header().Set("Content-Type", api.ContentTypeStream)
			select {
			case <-release:
			case <-r.Context().Done():
			}
		case "/v1/appliances/plain":
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"appliance":"plain","revision":3,"keys":{}}`))
		}
	}))
	defer srv.Close()
	c, err := New(srv.URL, Options{StreamFirstLine: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"old", "buffered", "plain"} {
		start := time.Now()
		_, err := c.StreamView(context.Background(), name, Poll{Index: 1}, func(*api.View, Meta) error {
			t.Fatalf("%s: a view", name)
			return nil
		})
		if !errors.Is(err, ErrNoStream) {
			t.Fatalf("%s: err %v, want ErrNoStream", name, err)
		}
		if time.Since(start) > 5*time.Second {
			t.Fatalf("%s: took %s", name, time.Since(start))
		}
	}
	// The caller's own cancellation is not ErrNoStream.
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	if _, err := c.StreamView(ctx, "buffered", Poll{Index: 1}, nil); err == nil || errors.Is(err, ErrNoStream) {
		t.Fatalf("canceled: err %v", err)
	}
}

// StreamView applies deltas, skips heartbeats, and reads the full view when a delta's sum does
// not match.
func TestStreamView_Deltas(t *testing.T) {
	base := api.View{Appliance: "web", Revision: 5, Keys: map[string]string{"a": "1", "b": "2"}}
	next := api.View{Appliance: "web", Revision: 7, Keys: map[string]string{"a": "1", "b": "3"}}
	bad := api.Diff(next, api.View{Appliance: "web", Revision: 9, Keys: map[string]string{"c": "1"}})
	bad.Sum = api.ViewSum(map[string]string{"wrong": ""})
	full := api.View{Appliance: "web", Revision: 9, Keys: map[string]string{"c": "1"}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		markAnswer(w)
		if !r.URL.Query().Has("index") {
			json.NewEncoder(w).Encode(full)
			return
		}
		if !r.URL.Query().Has("stream") || !r.URL.Query().Has("delta") {
			t.Errorf("query %s", r.URL.RawQuery)
		}
		w.Header().Set("Content-Type", api.ContentTypeStream)
		enc := json.NewEncoder(w)
		enc.Encode(api.Update{Heartbeat: true, Revision: 6})
		enc.Encode(api.Diff(base, next))
		enc.Encode(bad)
	}))
	defer srv.Close()
	c, _ := New(srv.URL, Options{})
	var got []api.View
	m, err := c.StreamView(context.Background(), "web", Poll{Index: 5, Delta: true, Base: &base}, func(v *api.View, _ Meta) error {
		got = append(got, *v)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !maps.Equal(got[0].Keys, next.Keys) || got[0].Revision != 7 || !maps.Equal(got[1].Keys, full.Keys) {
		t.Fatalf("views %+v", got)
	}
	if m.Index != 9 || base.Keys["b"] != "2" {
		t.Fatalf("meta %+v, base %v", m, base.Keys)
	}
}
