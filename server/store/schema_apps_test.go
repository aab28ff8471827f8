package store

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// appliancesOf finds the appliances a write touches as a plain set does, for writes touching
// one appliance to many (past the point where it switches to a map).
func TestAppliancesOf_AsASet(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := range 300 {
		e := edits{}
		want := map[string]bool{}
		wantAll := false
		apps := 1 + r.IntN(1+n/8) // up to 38 appliances
		for range r.IntN(120) {
			app := fmt.Sprintf("a%d", r.IntN(apps))
			switch r.IntN(6) {
			case 0:
				e.puts = append(e.puts, keyValue{"shared/" + app, "v"}) // not an appliance's
			case 1:
				e.puts = append(e.puts, keyValue{"appliances/" + app, "v"}) // the appliance's name as a key: not its tree
			case 2:
				e.dels = append(e.dels, api.Op{Key: "appliances/" + app, Recurse: true})
				want[app] = true
			case 3:
				if r.IntN(20) == 0 {
					e.dels = append(e.dels, api.Op{Key: "appliances", Recurse: true})
					wantAll = true
				}
			default:
				e.puts = append(e.puts, keyValue{"appliances/" + app + "/k/" + fmt.Sprint(r.IntN(5)), "v"})
				want[app] = true
			}
		}
		if r.IntN(4) == 0 {
			e.applyName = fmt.Sprintf("a%d", r.IntN(apps))
			want[e.applyName] = true
		}
		names, all := appliancesOf(e)
		wantNames := make([]string, 0, len(want))
		for a := range want {
			wantNames = append(wantNames, a)
		}
		slices.Sort(wantNames)
		if !slices.Equal(names, wantNames) || all != wantAll {
			t.Fatalf("case %d: %v %v, want %v %v (puts %v, dels %v, apply %q)", n, names, all, wantNames, wantAll,
				strings.Join(slices.Sorted(func(y func(string) bool) {
					for _, p := range e.puts {
						if !y(p.key) {
							return
						}
					}
				}), " "), e.dels, e.applyName)
		}
	}
}
