//go:build windows

package agent

// checkCacheParents is Unix's check of the modes above cache_dir; Windows checks cache_dir's
// ACL instead (othersMay), and the directory is used as it is named.
func checkCacheParents(dir string) (string, error) { return dir, nil }
