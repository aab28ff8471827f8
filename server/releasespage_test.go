package server

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// Writes to different appliances that reach the server together are committed in one etcd
// transaction (group commit) and share a revision, each with a release of its own. Paging
// GET /v1/releases with limit and next (the before= of the next page) must still list every
// release once: a page that ended between two releases of one revision made the next page,
// before that revision, leave out the rest of them.
func TestReleases_PagesKeepReleasesOfOneRevision(t *testing.T) {
	f := newFixture(t)
	var all []api.Release
	shared := int64(0)
	for round := 0; round < 30 && shared == 0; round++ {
		const writers = 48
		var wg sync.WaitGroup
		start := make(chan struct{})
		errs := make(chan error, writers)
		for i := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, err := http.NewRequest("PUT", fmt.Sprintf("%s/v1/kv/appliances/gc%d-%d/k", f.srv.URL, round, i), strings.NewReader("v"))
				if err != nil {
					errs <- err
					return
				}
				req.Header.Set("Authorization", "Bearer "+f.token)
				<-start
				r, err := testClient.Do(req)
				if err != nil {
					errs <- err
					return
				}
				r.Body.Close()
				if r.StatusCode != 200 {
					errs <- fmt.Errorf("PUT %s: status %d", req.URL.Path, r.StatusCode)
				}
			}()
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		all = f.history("/v1/releases?limit=1000").Releases
		for i := 1; i < len(all); i++ {
			if all[i].Revision == all[i-1].Revision {
				shared = all[i].Revision
				break
			}
		}
	}
	if shared == 0 {
		t.Skip("no two writes were committed together (group commit) in 30 rounds")
	}
	// A limit that ends the first page on the first release of the shared revision.
	first := 0
	for all[first].Revision != shared {
		first++
	}
	for _, limit := range []int{first + 1, 1, 2, 3} {
		seen := map[string]int{}
		before := int64(0)
		for pages := 0; ; pages++ {
			if pages > len(all)+1 {
				t.Fatalf("limit %d: more pages than releases", limit)
			}
			path := fmt.Sprintf("/v1/releases?limit=%d", limit)
			if before > 0 {
				path += fmt.Sprintf("&before=%d", before)
			}
			p := f.history(path)
			for _, r := range p.Releases {
				seen[r.ID]++
			}
			if p.Next == 0 {
				break
			}
			if before > 0 && p.Next >= before {
				t.Fatalf("limit %d: next %d after before %d", limit, p.Next, before)
			}
			before = p.Next
		}
		for _, r := range all {
			if seen[r.ID] != 1 {
				t.Errorf("limit %d: release %s (revision %d, %d releases share revision %d) listed %d times over the pages, want once",
					limit, r.ID, r.Revision, countRevision(all, shared), shared, seen[r.ID])
			}
		}
		if len(seen) != len(all) {
			t.Errorf("limit %d: %d releases over the pages, want %d", limit, len(seen), len(all))
		}
	}
}

func countRevision(all []api.Release, rev int64) int {
	n := 0
	for _, r := range all {
		if r.Revision == rev {
			n++
		}
	}
	return n
}
