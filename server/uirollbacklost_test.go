package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/server/store"
)

// The console's confirmation of a rollback to a revision that a snapshot restore lost read the
// tree at it as the release copies give it and showed an ordinary confirmation, its diff and
// its Roll back button, where GET …/at/R and the rollback without a body are 410 compacted,
// naming the restore. It now says so, as they do, with no form that posts the rollback; the
// form posted anyway is refused alike, nothing written. The restore's record is written as
// a restore writes it (store.recordRestore): a restore from a snapshot at snap, which lost the
// revisions after it up to lost.
func TestUI_RollbackToARevisionARestoreLost(t *testing.T) {
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
	cur := f.put("appliances/web/port", "82")
	said := fmt.Sprintf("revision %d was lost by a restore", lost)
	f.mustErr(f.do("GET", fmt.Sprintf("/v1/appliances/web/at/%d", lost), ""), http.StatusGone, api.CodeCompacted, said)
	n := len(f.history("/v1/appliances/web/releases").Releases)

	b := newUIBrowser(t, f.srv.URL, nil)
	c := b.signIn(f.token)
	to := strconv.FormatInt(lost, 10)
	confirm := b.post("/ui/appliances/web/rollback", url.Values{"csrf": {c}, "to": {to}})
	mustStatus(t, confirm, http.StatusGone)
	page := string(confirm.body)
	if !strings.Contains(page, said) {
		t.Fatalf("the confirmation of a rollback to a lost revision does not say %q: %s", said, page)
	}
	if strings.Contains(page, `action="/ui/appliances/web/rollback"`) || strings.Contains(page, "Roll back") {
		t.Fatalf("the confirmation of a rollback to a lost revision offers the rollback: %s", page)
	}
	// The form a confirmation would have carried, posted anyway: refused, nothing written.
	r := b.post("/ui/appliances/web/rollback", url.Values{"csrf": {c}, "to": {to}, "cas": {strconv.FormatInt(cur, 10)}, "step": {"apply"}})
	mustStatus(t, r, http.StatusGone)
	if !strings.Contains(string(r.body), said) {
		t.Fatalf("the rollback to a lost revision posted anyway does not say %q: %s", said, r.body)
	}
	var v api.View
	f.must(f.do("GET", "/v1/appliances/web", ""), 200, &v)
	if v.Keys["port"] != "82" || len(f.history("/v1/appliances/web/releases").Releases) != n {
		t.Fatalf("the refused rollback wrote: port=%q", v.Keys["port"])
	}
}
