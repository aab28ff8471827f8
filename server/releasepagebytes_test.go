package server

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// A page of releases ends once its JSON reaches maxReleasePageBytes, as one of limit releases
// does, its next going on from there: a release names up to 1000 keys of each change, and a
// page of 1000 of them was built whole, as large as the records retained (twenty pages of 23 MB
// asked at once took a replica from 0.9 to 1.8 GB). Paging with next still gives every release
// once, and the bound holds for every route that pages them.
func TestReleases_PageBoundedInBytes(t *testing.T) {
	f := newFixture(t)
	old := maxReleasePageBytes
	maxReleasePageBytes = 256 << 10
	t.Cleanup(func() { maxReleasePageBytes = old })
	seg := strings.Repeat("n", 120)
	const releases = 12
	for n := range releases {
		var ops []string
		for i := range 200 {
			ops = append(ops, fmt.Sprintf(`{"op":"put","key":"appliances/rel/%s/%s/x%03d-%02d","value":"1"}`, seg, seg, i, n))
		}
		f.must(f.do("POST", "/v1/txn", `{"ops":[`+strings.Join(ops, ",")+`]}`, "Content-Type", "application/json"), 200, nil)
	}
	reader := f.newToken(api.TokenRequest{Name: "rel-reader", Read: []string{"appliances/rel"}})
	for _, route := range []string{"/v1/releases?prefix=appliances/rel&limit=1000", "/v1/appliances/rel/releases?limit=1000"} {
		seen, pages := map[string]bool{}, 0
		for next := int64(0); ; pages++ {
			path := route
			if next > 0 {
				path += fmt.Sprintf("&before=%d", next)
			}
			r := f.doToken(reader, "GET", path, "")
			var out api.Releases
			f.must(r, 200, &out)
			if len(r.body) > maxReleasePageBytes+60<<10 {
				t.Fatalf("%s: a page of %d bytes (%d releases), over the bound of %d and one release", path, len(r.body), len(out.Releases), maxReleasePageBytes)
			}
			for _, rel := range out.Releases {
				if seen[rel.ID] {
					t.Fatalf("%s: release %s on two pages", path, rel.ID)
				}
				seen[rel.ID] = true
				var sized api.Release
				b, _ := json.Marshal(rel)
				json.Unmarshal(b, &sized)
				if n := releaseJSONLen(&sized); n < len(b) {
					t.Fatalf("releaseJSONLen %d under the JSON's %d bytes", n, len(b))
				}
			}
			if next = out.Next; next == 0 {
				break
			}
		}
		if len(seen) != releases || pages+1 < 3 {
			t.Fatalf("%s: %d releases on %d pages, want %d on several", route, len(seen), pages+1, releases)
		}
	}
}
