package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/server/store"
)

// An apply sent with X-Shoelace-Rollback: R and a body, where R is a revision a snapshot restore
// lost, was written as a release saying "rollback of web to revision R": a revision of no state
// in the restored store's history, as one ahead of the store is (400). The CLI and the console
// refuse such a rollback before they send it; any other client's is now refused alike, 410
// naming the restore, nothing written. The same keys without the header are an apply.
func TestRollback_WithABodyToARevisionARestoreLost(t *testing.T) {
	parallelShared(t)
	f := newFixture(t)
	snap := f.put("appliances/web/port", "80")
	lost := f.put("appliances/web/port", "81")
	rec, err := json.Marshal(store.LostRange{Snapshot: snap, Restored: lost, Time: time.Now().UTC().Truncate(time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.SysPut(t.Context(), fmt.Sprintf("%s%020d", store.RestorePrefix, lost), rec, 0); err != nil {
		t.Fatal(err)
	}
	f.put("appliances/web/port", "82")
	n := len(f.history("/v1/appliances/web/releases").Releases)

	body := `{"keys":{"port":"81"}}`
	f.mustErr(f.do("PUT", "/v1/appliances/web", body, "Content-Type", "application/json", api.HeaderRollback, fmt.Sprint(lost)),
		http.StatusGone, api.CodeCompacted, fmt.Sprintf("revision %d was lost by a restore", lost), "without "+api.HeaderRollback)
	var v api.View
	f.must(f.do("GET", "/v1/appliances/web", ""), 200, &v)
	if v.Keys["port"] != "82" || len(f.history("/v1/appliances/web/releases").Releases) != n {
		t.Fatalf("a refused rollback wrote: port %q, %d releases (was %d)", v.Keys["port"], len(f.history("/v1/appliances/web/releases").Releases), n)
	}
	// The snapshot's own revision is not lost: a rollback to it goes through.
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"port":"80"}}`, "Content-Type", "application/json", api.HeaderRollback, fmt.Sprint(snap)), 200, nil)
	// The tree without the header is an apply.
	f.must(f.do("PUT", "/v1/appliances/web", body, "Content-Type", "application/json"), 200, nil)
}
