package server

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// An apply of what the appliance already holds writes nothing: no revision, no release, no
// change for its agents. Before, every such apply (a pipeline run with no change) put every
// key again: a release in the history, a new revision on each key, a delta to every agent.
func TestAppliances_ApplyUnchangedWritesNothing(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	var first api.WriteResult
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"nginx":{"port":8080,"host":"web"},"motd":"hi"}}`), 200, &first)
	if first.Unchanged {
		t.Fatalf("the first apply says unchanged: %+v", first)
	}
	releases := func() int {
		var rs api.Releases
		f.must(f.do("GET", "/v1/appliances/web/releases", ""), 200, &rs)
		return len(rs.Releases)
	}
	// Writes that do not touch the appliance's view move the store's revision on: the answer's
	// revision stays that of the view's last change, which is what its agents report once they
	// have it (appliance wait --revision R would wait for ever for a revision no agent reports).
	f.put("appliances/other/x", "1")
	f.do("GET", "/v1/appliances/web", "") // an agent's view read, with its report
	view := first.Revision
	before, err := f.st.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if before <= view {
		t.Fatalf("the store is at revision %d, not past the view's %d", before, view)
	}
	nrel := releases()

	// The same keys, in another order and as YAML: unchanged.
	for _, b := range []struct{ body, ct string }{
		{`{"keys":{"motd":"hi","nginx":{"host":"web","port":"8080"}}}`, "application/json"},
		{"keys:\n  nginx/port: 8080\n  nginx/host: web\n  motd: hi\n", "application/yaml"},
	} {
		var w api.WriteResult
		r := f.do("PUT", "/v1/appliances/web", b.body, "Content-Type", b.ct)
		f.must(r, 200, &w)
		if !w.Unchanged || w.Revision != view || r.index() != view {
			t.Fatalf("apply of the same keys (%s): %+v, index %d; want unchanged at the view's revision %d (the store is at %d)", b.ct, w, r.index(), view, before)
		}
	}
	if now, _ := f.st.Revision(ctx); now != before {
		t.Fatalf("the store went from revision %d to %d on applies of the same keys", before, now)
	}
	// A change under shared/ is a change of the view.
	shared := f.put("shared/ntp", "pool")
	var w api.WriteResult
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"motd":"hi","nginx":{"host":"web","port":"8080"}}}`), 200, &w)
	if !w.Unchanged || w.Revision != shared {
		t.Fatalf("apply of the same keys after a shared/ change at %d: %+v", shared, w)
	}
	before, _ = f.st.Revision(ctx)
	if n := releases(); n != nrel {
		t.Fatalf("%d releases after the applies of the same keys, %d before", n, nrel)
	}

	// Anything else is a write: a value changed, a key fewer, a key more.
	for i, body := range []string{
		`{"keys":{"nginx":{"port":8081,"host":"web"},"motd":"hi"}}`,
		`{"keys":{"nginx":{"port":8081,"host":"web"}}}`,
		`{"keys":{"nginx":{"port":8081,"host":"web"},"extra":"x"}}`,
	} {
		var w api.WriteResult
		f.must(f.do("PUT", "/v1/appliances/web", body), 200, &w)
		if w.Unchanged || w.Revision <= before {
			t.Fatalf("apply %d (%s): %+v; want a write after %d", i, body, w, before)
		}
		before = w.Revision
	}
	if n := releases(); n != nrel+3 {
		t.Fatalf("%d releases after three changing applies, want %d", n, nrel+3)
	}

	// A cas that fails is refused as before, even when the keys are the same.
	f.mustErr(f.do("PUT", fmt.Sprintf("/v1/appliances/web?cas=%d", first.Revision), `{"keys":{"nginx":{"port":8081,"host":"web"},"extra":"x"}}`),
		http.StatusConflict, api.CodeConflict)
	f.must(f.do("PUT", fmt.Sprintf("/v1/appliances/web?cas=%d", before), `{"keys":{"nginx":{"port":8081,"host":"web"},"extra":"x"}}`), 200, &w)
	if !w.Unchanged {
		t.Fatalf("apply of the same keys with a cas that holds: %+v", w)
	}
}

// An unchanged apply is refused as its write would be: while a rollout runs (the pipeline's
// keys are not the candidate the rollout may promote), and when the appliance's schema refuses
// the keys it holds.
func TestAppliances_ApplyUnchangedRefusedAsAWrite(t *testing.T) {
	f := newFixture(t)
	f.put("appliances/web/port", "80")
	enrollFleet(t, f, 3)
	f.must(f.do("PUT", "/v1/appliances/web?canary=34%25&manual", `{"keys":{"port":"8080"}}`), http.StatusAccepted, nil)
	f.mustErr(f.do("PUT", "/v1/appliances/web", `{"keys":{"port":"80"}}`), http.StatusConflict, api.CodeRolloutInProgress)
	f.must(f.do("POST", "/v1/appliances/web/rollout", `{"action":"abort"}`, "Content-Type", "application/json"), 200, nil)
	var w api.WriteResult
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"port":"80"}}`), 200, &w)
	if !w.Unchanged {
		t.Fatalf("apply of the same keys after the rollout's abort: %+v", w)
	}

	// A schema set after the keys, which they break: the schema is set anyway (with a
	// warning), and the next write must fix the keys; applying them again is refused.
	f.must(f.do("PUT", "/v1/appliances/web/schema", `{"type":"object","properties":{"port":{"type":"string","pattern":"^[0-9]{4}$"}}}`), 200, nil)
	f.mustErr(f.do("PUT", "/v1/appliances/web", `{"keys":{"port":"80"}}`), 422, api.CodeSchemaViolation, "port")
}

// An apply of the keys the appliance holds writes nothing just after its schema was set,
// changed or removed, too. Before, the replica's cached schemas (the one it had before the
// change) failed the read-only check's guard, and the apply went on to write: a new revision
// and an apply release with no changes, once after each schema change.
func TestAppliances_ApplyUnchangedAfterSchemaChange(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	var first api.WriteResult
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"port":"80"}}`), 200, &first)
	for i, step := range []struct{ method, body string }{
		{"PUT", `{"type":"object"}`},
		{"PUT", `{"type":"object","required":["port"]}`},
		{"DELETE", ""},
	} {
		f.must(f.do(step.method, "/v1/appliances/web/schema", step.body), 200, nil)
		before, err := f.st.Revision(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var w api.WriteResult
		f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"port":"80"}}`), 200, &w)
		if !w.Unchanged || w.Revision != first.Revision {
			t.Fatalf("schema change %d (%s %s): apply of the same keys answered %+v; want unchanged at the view's revision %d", i, step.method, step.body, w, first.Revision)
		}
		if now, _ := f.st.Revision(ctx); now != before {
			t.Fatalf("schema change %d: the store went from revision %d to %d on an apply of the same keys", i, before, now)
		}
	}
}

// The revision of an unchanged apply counts the view's deletions. Before, it was the newest
// mod_revision among the view's keys: after a key was deleted (its own, one created and
// deleted again, or one of shared/), `appliance wait --revision R` on it passed for agents
// that had not applied the deletion.
func TestAppliances_ApplyUnchangedAfterADeletion(t *testing.T) {
	f := newFixture(t)
	var w api.WriteResult
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1","b":"2"}}`), 200, &w)
	f.put("shared/ntp", "pool")
	f.put("shared/dns", "1.1.1.1")
	deleted := func(key string) int64 {
		var d api.WriteResult
		f.must(f.do("DELETE", "/v1/kv/"+key, ""), 200, &d)
		return d.Revision
	}
	apply := func(want int64, what string) {
		t.Helper()
		var u api.WriteResult
		r := f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`)
		f.must(r, 200, &u)
		if !u.Unchanged || u.Revision != want || r.index() != want {
			t.Fatalf("apply of the keys the appliance holds after %s: %+v, index %d; want unchanged at %d", what, u, r.index(), want)
		}
	}
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"a":"1"}}`), 200, &w)
	if w.Unchanged {
		t.Fatalf("the apply that deletes b says unchanged: %+v", w)
	}
	apply(w.Revision, "an apply that deleted a key")
	f.put("appliances/web/tmp", "x")
	apply(deleted("appliances/web/tmp"), "a key created and deleted")
	apply(deleted("shared/dns"), "a deletion under shared/")
	// Another appliance's deletion is not a change of this view.
	f.put("appliances/other/x", "1")
	last := deleted("appliances/other/x") - 2
	apply(last, "another appliance's deletion")
}

// An apply with canary of the keys the appliance holds already writes nothing either: no
// rollout (its cohort would re-render the live tree, and the appliance's other writes would wait
// for it, or it would halt at its deadline for nothing), no release; 200 unchanged, as without
// canary. A rollback to the current state alike. A change still starts a rollout.
func TestAppliances_ApplyUnchangedWithCanaryStartsNoRollout(t *testing.T) {
	f := newFixture(t)
	var first api.WriteResult
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"port":"80"}}`), 200, &first)
	enrollFleet(t, f, 2)
	before := len(f.history("/v1/appliances/web/releases").Releases)
	for _, hdr := range [][]string{nil, {api.HeaderRollback, fmt.Sprint(first.Revision)}} {
		var w api.WriteResult
		f.must(f.do("PUT", "/v1/appliances/web?canary=50%25", `{"keys":{"port":"80"}}`, hdr...), 200, &w)
		if !w.Unchanged {
			t.Fatalf("apply with canary of the keys held (%v): %+v, want unchanged", hdr, w)
		}
	}
	f.mustErr(f.do("GET", "/v1/appliances/web/rollout", ""), http.StatusNotFound, api.CodeNotFound)
	if n := len(f.history("/v1/appliances/web/releases").Releases); n != before {
		t.Errorf("%d releases after the unchanged applies with canary, %d before", n, before)
	}
	// A cas ahead of what the apply read is still refused, unchanged or not.
	f.mustErr(f.do("PUT", fmt.Sprintf("/v1/appliances/web?canary=50%%25&cas=%d", first.Revision-1), `{"keys":{"port":"80"}}`), http.StatusConflict, api.CodeConflict)
	var st api.RolloutStatus
	f.must(f.do("PUT", "/v1/appliances/web?canary=50%25", `{"keys":{"port":"81"}}`), http.StatusAccepted, &st)
	if st.State != api.RolloutRunning {
		t.Fatalf("apply with canary of a change: %+v", st)
	}
}
