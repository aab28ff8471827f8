package server

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/testutil"
)

// A put or txn of what the store already holds writes nothing: no revision, no release, and
// no wake-up for the agents. Before, a pipeline that wrote the same value on every run bumped
// the store's revision, recorded a release that named no change, and woke every long-poll of
// the key's appliance (every agent of the fleet, for a shared/ key), each of which then ran
// a pass that changed nothing and reported.
func TestKV_WriteOfWhatIsHeldWritesNothing(t *testing.T) {
	var logs syncBuffer
	f := newFixtureLog(t, testutil.Store(t), slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo})))
	ctx := context.Background()
	first := f.put("appliances/web/port", "80")
	shared := f.put("shared/ntp", "pool")
	nrel := func() int {
		var rs api.Releases
		f.must(f.do("GET", "/v1/releases", ""), 200, &rs)
		return len(rs.Releases)
	}
	before, n := f.st.Revision, nrel()
	rev0, err := before(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, off := auditLines(t, &logs, 0)

	// An agent of web waits at the store's revision: nothing may wake it.
	polled := make(chan resp, 1)
	go func() { polled <- f.do("GET", fmt.Sprintf("/v1/appliances/web?index=%d&wait=2s", rev0), "") }()
	for _, w := range []struct {
		method, path, body string
		rev                int64
	}{
		{"PUT", "/v1/kv/appliances/web/port", "80", first},
		{"PUT", fmt.Sprintf("/v1/kv/appliances/web/port?cas=%d", first), "80", first},
		{"PUT", "/v1/kv/shared/ntp", "pool", shared},
		{"POST", "/v1/txn", `{"ops":[{"op":"put","key":"appliances/web/port","value":"80"},{"op":"put","key":"shared/ntp","value":"pool"},{"op":"delete","key":"appliances/web/gone"}]}`, shared},
	} {
		var res api.WriteResult
		r := f.do(w.method, w.path, w.body, "Content-Type", "application/json")
		f.must(r, 200, &res)
		if !res.Unchanged || res.Revision != w.rev || r.index() != w.rev {
			t.Errorf("%s %s: %+v, index %d; want unchanged at %d", w.method, w.path, res, r.index(), w.rev)
		}
	}
	if now, _ := before(ctx); now != rev0 {
		t.Errorf("the store went from revision %d to %d", rev0, now)
	}
	if got := nrel(); got != n {
		t.Errorf("%d releases, %d before", got, n)
	}
	lines, _ := auditLines(t, &logs, off)
	if len(lines) != 4 {
		t.Fatalf("%d audit lines for 4 writes: %v", len(lines), lines)
	}
	for _, l := range lines {
		if l["unchanged"] != true {
			t.Errorf("audit line of a write that changed nothing: %v", l)
		}
	}
	if r := <-polled; r.StatusCode != http.StatusNotModified {
		t.Errorf("the agent's long-poll was answered %d (%s), want 304: nothing changed", r.StatusCode, r.body)
	}

	// A cas that fails refuses it, as it would the write.
	f.mustErr(f.do("PUT", fmt.Sprintf("/v1/kv/appliances/web/port?cas=%d", first-1), "80"), http.StatusConflict, api.CodeConflict)
	f.mustErr(f.do("POST", "/v1/txn", fmt.Sprintf(`{"ops":[{"op":"put","key":"shared/ntp","value":"pool"}],"guards":[{"key":"shared/ntp","mod_revision":%d}]}`, shared-1),
		"Content-Type", "application/json"), http.StatusConflict, api.CodeConflict, "shared/ntp")
}

// A write of what is held is refused as its write would be: in maintenance, while a rollout
// of the appliance runs, and when the appliance's schema refuses the value.
func TestKV_WriteOfWhatIsHeldRefusedAsAWrite(t *testing.T) {
	f := newFixture(t)
	f.put("appliances/web/port", "80")
	f.must(f.do("PUT", "/v1/maintenance", `{"on":true}`), 200, nil)
	waitFor(t, "maintenance on this replica", func() bool {
		return f.do("PUT", "/v1/kv/appliances/web/port", "80").StatusCode == http.StatusServiceUnavailable
	})
	f.must(f.do("PUT", "/v1/maintenance", `{"on":false}`), 200, nil)
	waitFor(t, "maintenance off on this replica", func() bool {
		return f.do("PUT", "/v1/kv/appliances/web/port", "80").StatusCode == http.StatusOK
	})

	enrollFleet(t, f, 3)
	f.must(f.do("PUT", "/v1/appliances/web?canary=34%25&manual", `{"keys":{"port":"8080"}}`), http.StatusAccepted, nil)
	f.mustErr(f.do("PUT", "/v1/kv/appliances/web/port", "80"), http.StatusConflict, api.CodeRolloutInProgress)
	f.mustErr(f.do("POST", "/v1/txn", `{"ops":[{"op":"put","key":"appliances/web/port","value":"80"}]}`, "Content-Type", "application/json"),
		http.StatusConflict, api.CodeRolloutInProgress)
	f.must(f.do("POST", "/v1/appliances/web/rollout", `{"action":"abort"}`, "Content-Type", "application/json"), 200, nil)

	f.must(f.do("PUT", "/v1/appliances/web/schema", `{"type":"object","properties":{"port":{"type":"string","pattern":"^[0-9]{4}$"}}}`), 200, nil)
	f.mustErr(f.do("PUT", "/v1/kv/appliances/web/port", "80"), 422, api.CodeSchemaViolation, "port")
}
