package server

import (
	"context"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/server/rollout"
)

// The history and the instances of an appliance the store holds nothing of (a mistyped name)
// answered 200 with an empty list, as for an appliance without releases or agents yet. They
// answer 404 not_found now; an appliance with anything of its own (keys, releases, instance
// records, a schema, a rollout record) answers as before, and the agents' view keeps its own
// 404.
func TestAppliances_UnknownNameIsNotFound(t *testing.T) {
	f := newFixture(t)
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"port":"80"}}`), 200, nil)
	f.must(f.do("PUT", "/v1/appliances/web-frontend", `{"keys":{"port":"81"}}`), 200, nil)
	f.must(f.do("PUT", "/v1/kv/shared/dns", "10.0.0.1"), 200, nil)
	// gone: its keys were all deleted; it keeps its releases.
	f.must(f.do("PUT", "/v1/appliances/gone", `{"keys":{"a":"1","b":"2"}}`), 200, nil)
	f.must(f.do("DELETE", "/v1/kv/appliances/gone?recurse", ""), 200, nil)
	// Appliances that hold one thing only, and no key nor release.
	f.must(f.do("PUT", "/v1/appliances/schemaonly/schema", `{"type":"object"}`), 200, nil)
	putRecord(t, f.st, api.Instance{Appliance: "agentsonly", Instance: "vm-1", Token: "agent", LastSeen: time.Now(), Applied: 1})
	if _, err := f.st.SysPut(context.Background(), rollout.Prefix+"rolloutonly", []byte(`{"id":"r1","state":"aborted"}`), -1); err != nil {
		t.Fatal(err)
	}

	for _, name := range []string{"nope", "we", "web-front"} { // never written; prefixes of names are other names
		for _, path := range []string{"/v1/appliances/" + name + "/releases", "/v1/appliances/" + name + "/releases?include_shared", "/v1/appliances/" + name + "/instances"} {
			f.mustErr(f.do("GET", path, ""), 404, api.CodeNotFound, `appliance "`+name+`" not found`)
		}
		f.mustErr(f.do("GET", "/v1/appliances/"+name, ""), 404, api.CodeNotFound, "has no keys") // the view's own
	}

	for _, tc := range []struct {
		name     string
		releases int
	}{{"web", 1}, {"gone", 2}, {"schemaonly", 0}, {"agentsonly", 0}, {"rolloutonly", 0}} {
		if got := len(f.history("/v1/appliances/" + tc.name + "/releases").Releases); got != tc.releases {
			t.Errorf("%s: %d releases, want %d", tc.name, got, tc.releases)
		}
		var ins api.Instances
		f.must(f.do("GET", "/v1/appliances/"+tc.name+"/instances", ""), 200, &ins)
		if want := tc.name == "agentsonly"; want != (len(ins.Instances) == 1) || ins.Instances == nil {
			t.Errorf("%s: instances %+v", tc.name, ins)
		}
	}
	// A page before the appliance's first release is empty, not a 404.
	if got := f.history("/v1/appliances/web/releases?before=1").Releases; len(got) != 0 {
		t.Errorf("web before revision 1: %+v", got)
	}
}

// A rollout's promote or abort of an appliance the store holds nothing of answered 409 "no
// rollout running" (CLI exit 4, as for an appliance between rollouts): it is 404 not_found now.
// An appliance with keys, or with a rollout that ended, still answers 409.
func TestRollouts_ActionOnUnknownApplianceIsNotFound(t *testing.T) {
	f := newFixture(t)
	f.must(f.do("PUT", "/v1/appliances/web", `{"keys":{"port":"80"}}`), 200, nil)
	if _, err := f.st.SysPut(context.Background(), rollout.Prefix+"ended", []byte(`{"id":"r1","state":"aborted"}`), -1); err != nil {
		t.Fatal(err)
	}
	act := func(name, action string) resp {
		return f.do("POST", "/v1/appliances/"+name+"/rollout", `{"action":"`+action+`"}`, "Content-Type", "application/json")
	}
	for _, action := range []string{"promote", "abort"} {
		f.mustErr(act("nope", action), 404, api.CodeNotFound, `appliance "nope" not found`)
		f.mustErr(act("we", action), 404, api.CodeNotFound, `appliance "we" not found`)
		f.mustErr(act("web", action), 409, api.CodeConflict, "nothing to "+action)
		f.mustErr(act("ended", action), 409, api.CodeConflict, "nothing to "+action)
	}
}
