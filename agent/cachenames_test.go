package agent

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// cacheNames, which cacheClash judges by, are the names the agent gives its files in cache_dir.
func TestCacheNames_AreTheAgentsFiles(t *testing.T) {
	var got []string
	for _, p := range []string{CachePath("", "a"), StatusPath("", "a"), CandidatePath("", "a"), OwedPath("", "a"), InstanceTokenPath("", "a"), EnrollKeyPath("", "a")} {
		got = append(got, strings.TrimPrefix(filepath.Base(p), "a"))
	}
	want := slices.Clone(cacheNames)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("the agent's files in cache_dir end %v, cacheNames %v", got, want)
	}
}
