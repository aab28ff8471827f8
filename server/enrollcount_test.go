package server

import (
	"fmt"
	"testing"
	"time"
)

// The cap of an agent token's instance tokens (--max-instances) is checked against a count kept
// per agent token as tokens come and go (enrollment, take-over, revocation, a reload of them
// all), not by walking every token of the store at each enrollment (N² for a fleet of N). The
// count stays what a walk finds.
func TestEnroll_CountOfInstanceTokensKeptPerAgentToken(t *testing.T) {
	a := newAuthState(testConfig())
	walk := func(parent, except string) int {
		n := 0
		for name, rec := range a.byName {
			if rec.Parent == parent && name != except {
				n++
			}
		}
		return n
	}
	check := func(when string) {
		t.Helper()
		for _, parent := range []string{"agent-a", "agent-b", "agent-c"} { // an admin's enrollments are not capped
			for _, except := range []string{"", "instance:web:vm-1", "instance:web:vm-2", "instance:db:vm-1"} {
				if got, want := a.enrolledBy(parent, except), walk(parent, except); got != want {
					t.Fatalf("%s: enrolledBy(%q, %q) = %d, a walk counts %d", when, parent, except, got, want)
				}
			}
		}
	}
	rec := func(app, instance, parent, hash string) *tokenRecord {
		return &tokenRecord{Name: instanceTokenName(app, instance), Hash: hash, Appliance: app, Instance: instance, Parent: parent, Created: time.Unix(1, 0)}
	}
	var all []*tokenRecord
	for i := range 300 {
		r := rec("web", fmt.Sprintf("vm-%d", i), "agent-a", fmt.Sprintf("a%d", i))
		if i%3 == 0 {
			r = rec("db", fmt.Sprintf("vm-%d", i), "agent-b", fmt.Sprintf("b%d", i))
		}
		all = append(all, r)
		a.set(r, int64(i+1))
	}
	a.set(&tokenRecord{Name: "agent-a", Hash: "agent-a", Appliance: "web"}, 400)
	check("after enrollments")
	a.set(rec("web", "vm-1", "agent-a", "a1"), 401) // the same record again
	a.set(rec("web", "vm-2", "agent-c", "c2"), 402) // taken over through another agent token
	a.set(rec("web", "vm-4", "", "admin4"), 403)    // enrolled again by an admin
	check("after take-overs")
	for i := 5; i < 300; i += 7 {
		a.remove(all[i].Name, int64(500+i))
	}
	check("after revocations")
	a.replace(all[:100], 1000)
	check("after a reload")
	a.forgetStore()
	check("after another store")
	if len(a.children) != 0 {
		t.Fatalf("counts left for a store without tokens: %v", a.children)
	}
}
