package store

import (
	"sync"
	"time"
)

// DefaultMinFreeDisk is the free space the embedded etcd's file system must keep for writes
// to be taken: etcd exits when a write of its WAL or database fails (a full disk ended the
// server), and it preallocates its WAL 64 MiB at a time and grows its database 16 MiB at a
// time, besides the writes under way.
const DefaultMinFreeDisk = 256 << 20

// diskCheckEvery is how long LowDisk's answer stands.
const diskCheckEvery = 250 * time.Millisecond

// LowDiskAlarm is the alarm Health reports, with etcd's own, while LowDisk holds.
const LowDiskAlarm = "LOWDISK"

type diskCheck struct {
	mu     sync.Mutex
	at     time.Time
	free   int64
	low    bool
	warned bool
}

// LowDisk reports whether the file system under DiskDir (the embedded etcd's data) has less
// than MinFreeDisk free, with what it has; false when there is nothing to check (an external
// etcd, a negative MinFreeDisk) or the system cannot say. It asks the file system at most every 250 ms.
func (s *Store) LowDisk() (free int64, low bool) {
	if s.cfg.DiskDir == "" || s.cfg.MinFreeDisk < 0 {
		return 0, false
	}
	d := &s.disk
	d.mu.Lock()
	defer d.mu.Unlock()
	if time.Since(d.at) < diskCheckEvery {
		return d.free, d.low
	}
	d.at = time.Now()
	f, err := freeBytes(s.cfg.DiskDir)
	if err != nil {
		d.free, d.low = 0, false
		return 0, false
	}
	d.free, d.low = f, f < s.cfg.MinFreeDisk
	if d.low != d.warned {
		d.warned = d.low
		if d.low {
			s.log.Error("the embedded etcd's disk is nearly full: writes are refused until there is more free space",
				"data_dir", s.cfg.DiskDir, "free_mib", f>>20, "needed_mib", s.cfg.MinFreeDisk>>20)
		} else {
			s.log.Info("the embedded etcd's disk has room again: writes are taken", "data_dir", s.cfg.DiskDir, "free_mib", f>>20)
		}
	}
	return d.free, d.low
}

// MinFreeDisk is the free space LowDisk wants, and DiskDir the directory it checks.
func (s *Store) MinFreeDisk() (int64, string) { return s.cfg.MinFreeDisk, s.cfg.DiskDir }
