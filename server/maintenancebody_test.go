package server

import (
	"testing"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// TestMaintenance_BadBodiesLeaveItOn: a PUT /v1/maintenance body that does not say on or off
// is refused and leaves the mode as it was; before, {} and {"on":null} read as "off" and lifted
// the read-only mode of a restore in progress, and data after the object was ignored.
func TestMaintenance_BadBodiesLeaveItOn(t *testing.T) {
	f := newFixture(t)
	f.put("shared/a", "1")
	f.must(f.do("PUT", "/v1/maintenance", `{"on":true}`), 200, nil)
	waitFor(t, "maintenance on", func() bool { return f.s.maintenance.Load() })
	cases := []struct {
		name, body string
		words      []string
	}{
		{"empty object", `{}`, []string{`"on"`, "missing"}},
		{"null", `{"on":null}`, []string{`"on"`, "null"}},
		{"data after the object", `{"on":false} off`, []string{"after the JSON object"}},
		{"two objects", `{"on":false}{"on":false}`, []string{"after the JSON object"}},
		// Said in the body's words, not Go's ("EOF", "into Go value of type struct { On *bool … }").
		{"empty", ``, []string{"body is empty: send a JSON object"}},
		{"cut short", `{"on":`, []string{"ends before it is complete"}},
		{"an array", `[]`, []string{"must be a JSON object, not a JSON array"}},
		{"a string for on", `{"on":"off"}`, []string{`"on" must be true or false, not a JSON string`}},
		{"unknown field", `{"enabled":false}`, []string{`unknown field "enabled"`}},
		// Taken for "on" by encoding/json, which matches names regardless of case.
		{"on in another case", `{"on":true,"ON":false}`, []string{`member "ON"`, `is not "on"`}},
	}
	for _, c := range cases {
		f.mustErr(f.do("PUT", "/v1/maintenance", c.body), 400, api.CodeInvalidBody, c.words...)
		var m Maintenance
		f.must(f.do("GET", "/v1/maintenance", ""), 200, &m)
		if !m.On || !f.s.maintenance.Load() {
			t.Fatalf("%s: maintenance is off after a refused body %q", c.name, c.body)
		}
		f.mustErr(f.do("PUT", "/v1/kv/shared/a", "2"), 503, api.CodeMaintenance)
	}
	f.must(f.do("PUT", "/v1/maintenance", `{"on":false}`), 200, nil)
	waitFor(t, "maintenance off", func() bool { return !f.s.maintenance.Load() })
	f.put("shared/a", "2")
}
