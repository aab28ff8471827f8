//go:build !windows

package agent

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/client"
)

// A burst of reports costs two requests: the first at once, then the last one put within
// every of it; the server's taking them is noted for the poller.
func TestReporterPacesABurst(t *testing.T) {
	var mu sync.Mutex
	var got []int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var rep api.Report
		if err := json.NewDecoder(r.Body).Decode(&rep); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		got = append(got, rep.Applied)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set(api.HeaderIndex, "10") // as every answer of a Shoelace server
		w.Header().Set(api.HeaderStore, "store-1")
		w.Write([]byte("{}"))
	}))
	defer srv.Close()
	c, err := client.New(srv.URL, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var taken atomic.Bool
	// Longer than the burst below takes, whatever the machine's speed.
	p := startReporterEvery(slog.New(slog.DiscardHandler), &taken, 3*time.Second)
	defer p.close()
	reports := func() []int64 { mu.Lock(); defer mu.Unlock(); return append([]int64(nil), got...) }
	p.put(c, "web", api.Report{Instance: "vm-1", Revision: 1, Applied: 1})
	for deadline := time.Now().Add(20 * time.Second); len(reports()) == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the first report was not sent")
		}
	}
	// A burst with pauses: the reporter wakes for each put.
	for rev := int64(2); rev <= 50; rev++ {
		p.put(c, "web", api.Report{Instance: "vm-1", Revision: rev, Applied: rev})
		time.Sleep(time.Millisecond)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(time.Millisecond) {
		r := reports()
		if r[len(r)-1] == 50 {
			if len(r) != 2 || r[0] != 1 {
				t.Fatalf("reports sent: %v, want [1 50]", r)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the burst's last report was not sent: %v", r)
		}
	}
	if !taken.Load() {
		t.Fatal("the server's taking the reports was not noted")
	}
}
