package store

import (
	"fmt"
	"math"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
	"time"
)

// releaseKeyAt writes the id as fmt.Sprintf("%020d-%08x", t.UnixNano(), n) does, after its
// prefix, for times of every sign and size.
func TestReleaseKeyAt_AsSprintf(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	times := []int64{0, 1, -1, 9, 10, math.MaxInt64, math.MinInt64, math.MinInt64 + 1, time.Now().UnixNano()}
	for range 2000 {
		times = append(times, r.Int64()>>r.IntN(64), -(r.Int64() >> r.IntN(64)))
	}
	id := regexp.MustCompile(`^(-?[0-9]+)-([0-9a-f]{8})$`)
	for _, ns := range times {
		for _, prefix := range []string{"", "/root/sys/releases/"} {
			key := releaseKeyAt(prefix, time.Unix(0, ns))
			rest, ok := strings.CutPrefix(key, prefix)
			m := id.FindStringSubmatch(rest)
			if !ok || m == nil {
				t.Fatalf("releaseKeyAt(%q, %d) = %q", prefix, ns, key)
			}
			var n uint32
			if _, err := fmt.Sscanf(m[2], "%x", &n); err != nil {
				t.Fatal(err)
			}
			if want := fmt.Sprintf("%020d-%08x", ns, n); rest != want {
				t.Fatalf("releaseKeyAt(%q, %d) = %q, want %q after the prefix", prefix, ns, key, want)
			}
		}
	}
}
