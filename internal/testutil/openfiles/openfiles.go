//go:build !windows

// Package openfiles tells tests what files their process holds open, from /proc/self/fd. Import
// it only from _test files.
package openfiles

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// Unnamed returns the inodes of the files without a name in dir that the process holds open:
// files made with O_TMPFILE and not linked (the agent's spares), which /proc shows as
// "dir/#inode (deleted)". dir must be free of symbolic links.
func Unnamed(t testing.TB, dir string) []uint64 {
	t.Helper()
	var inodes []uint64
	for _, fi := range UnnamedStats(t, dir) {
		inodes = append(inodes, fi.Sys().(*syscall.Stat_t).Ino)
	}
	return inodes
}

// UnnamedStats is Unnamed with each file's stat, taken through its descriptor.
func UnnamedStats(t testing.TB, dir string) []os.FileInfo {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var stats []os.FileInfo
	for _, e := range ents {
		to, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil || !strings.HasPrefix(to, dir+"/#") || !strings.HasSuffix(to, " (deleted)") {
			continue
		}
		if fi, err := os.Stat(filepath.Join("/proc/self/fd", e.Name())); err == nil {
			stats = append(stats, fi)
		}
	}
	return stats
}
