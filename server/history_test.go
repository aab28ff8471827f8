package server

import (
	"encoding/json"
	"fmt"
	"maps"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/api"
)

func TestApplianceAt_PastRevisions(t *testing.T) {
	f := newFixture(t)
	var w1, w2 api.WriteResult
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"port":"80","tls":{"on":"false"}}}`), 200, &w1)
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"port":"8080"}}`), 200, &w2)
	f.put("appliances/web-frontend/port", "1") // never part of web's history (whole segments)

	var at ApplianceAt
	r := f.do("GET", fmt.Sprintf("/v1/appliances/web/at/%d", w1.Revision), "")
	f.must(r, 200, &at)
	if want := map[string]string{"port": "80", "tls/on": "false"}; !maps.Equal(at.Keys, want) || at.Revision != w1.Revision {
		t.Fatalf("web at %d = %+v, want %v", w1.Revision, at, want)
	}
	if r.index() <= w2.Revision {
		t.Errorf("X-Shoelace-Index %d is not the current revision", r.index())
	}
	// Rolling back is applying those keys again.
	body, _ := json.Marshal(api.Apply{Keys: at.Keys})
	f.must(f.do("PUT", "/v1/appliances/web", string(body)), 200, nil)
	var v api.View
	f.must(f.do("GET", "/v1/appliances/web", ""), 200, &v)
	if v.Keys["port"] != "80" || v.Keys["tls/on"] != "false" {
		t.Fatalf("after applying the old body: %v", v.Keys)
	}

	before := w1.Revision - 1 // web had no keys yet (its root is this test's own)
	f.mustErr(f.do("GET", fmt.Sprintf("/v1/appliances/web/at/%d", before), ""), 404, api.CodeNotFound, fmt.Sprintf("no keys at revision %d", before))
	f.mustErr(f.do("GET", "/v1/appliances/web/at/999999999", ""), 400, api.CodeInvalidRequest, "ahead of the store")
	f.mustErr(f.do("GET", "/v1/appliances/web/at/x", ""), 400, api.CodeInvalidRequest, "positive number")
	if err := f.st.Compact(t.Context(), w2.Revision); err != nil {
		t.Fatal(err)
	}
	// etcd no longer has w1: the release copy of the apply at w1 answers.
	at = ApplianceAt{}
	f.must(f.do("GET", fmt.Sprintf("/v1/appliances/web/at/%d", w1.Revision), ""), 200, &at)
	if want := map[string]string{"port": "80", "tls/on": "false"}; !maps.Equal(at.Keys, want) {
		t.Fatalf("web at compacted %d = %+v, want %v from its release", w1.Revision, at, want)
	}
	f.mustErr(f.do("GET", fmt.Sprintf("/v1/appliances/web/at/%d", before), ""), 410, api.CodeCompacted, "compacted",
		fmt.Sprintf("the oldest revision that can be restored is %d", w1.Revision))
}

// A name the store holds nothing of (a mistyped one) is not found at any revision, as its
// releases are, not "no keys at revision R" (or compacted) as of an appliance that had none
// then: `appliance rollback --to R` of such a name said so, as if it existed.
func TestApplianceAt_UnknownName(t *testing.T) {
	f := newFixture(t)
	var w api.WriteResult
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"port":"80"}}`), 200, &w)
	const unknown = `appliance "webb" not found: it has no keys, releases, instances, schema or rollout`
	f.mustErr(f.do("GET", fmt.Sprintf("/v1/appliances/webb/at/%d", w.Revision), ""), 404, api.CodeNotFound, unknown)
	// web itself had no keys before its apply: that is still what it says.
	f.mustErr(f.do("GET", fmt.Sprintf("/v1/appliances/web/at/%d", w.Revision-1), ""), 404, api.CodeNotFound, fmt.Sprintf(`appliance "web" had no keys at revision %d`, w.Revision-1))
	f.put("shared/x", "1")
	if err := f.st.Compact(t.Context(), w.Revision+1); err != nil {
		t.Fatal(err)
	}
	f.mustErr(f.do("GET", fmt.Sprintf("/v1/appliances/webb/at/%d", w.Revision), ""), 404, api.CodeNotFound, unknown)
}
