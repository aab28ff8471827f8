//go:build !windows

package atomicfile_test

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/atomicfile"
)

// BenchmarkStageInstall_ChangedSameSize is the agent's install of a changed file (Stage with
// KeepPrevious, then Install, the directory fsync deferred to DirSyncs and made at once): a
// 4 KiB file that changes to another of the same size, so that the unchanged check has to read
// it. On tmpfs the system calls decide it; on the disk the fsyncs. cpu-ns/op is the process's
// user and system time: unlike ns/op, it leaves out the time the process waited for a CPU that
// other processes held (a noisy machine), and on the disk the time it waited for the fsyncs.
func BenchmarkStageInstall_ChangedSameSize(b *testing.B) {
	dirs := map[string]string{"disk": b.TempDir()}
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		dir, err := os.MkdirTemp("/dev/shm", "atomicfile-bench-")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(dir) })
		dirs["tmpfs"] = dir
	}
	for _, name := range []string{"tmpfs", "disk"} {
		dir, ok := dirs[name]
		if !ok {
			continue // no /dev/shm here
		}
		b.Run(name, func(b *testing.B) {
			dst := filepath.Join(dir, "app.conf")
			data := [][]byte{bytes.Repeat([]byte("a"), 4096), bytes.Repeat([]byte("b"), 4096)}
			if err := os.WriteFile(dst, data[0], 0o644); err != nil {
				b.Fatal(err)
			}
			ds := &atomicfile.DirSyncs{}
			opts := keep()
			opts.KeepPrevious, opts.DirSyncs = true, ds
			cpu0 := cpuTime(b)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				s, err := atomicfile.Stage(dst, data[(i+1)%2], opts)
				if err != nil || s == nil {
					b.Fatal(s, err)
				}
				if s.Previous() == nil || !s.Previous().Existed() {
					b.Fatal("no previous content kept")
				}
				if err := s.Install(); err != nil {
					b.Fatal(err)
				}
				if err := ds.Sync(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

// cpuTime is the user and system time the process has used, in nanoseconds.
func cpuTime(b *testing.B) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
