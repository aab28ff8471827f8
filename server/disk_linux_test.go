package server

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/testutil"
	"github.com/shoelace-dev/shoelace/server/store"
)

// While the file system of the embedded etcd's data has less free space than etcd needs to go
// on, writes are refused (503 unavailable, Retry-After, nothing applied), reads go on, and
// /health/deps is 200 degraded with the LOWDISK alarm; once space is freed, writes are taken
// again, without a restart. Before, writes went on until etcd failed to write its database
// and stopped the process (under a 150 MiB tmpfs: the 33rd put of 930 KB).
// The test fills the file system of a directory of its own with a preallocated file, its
// bound set 1 GiB under the space free then.
func TestWrites_RefusedWhileDiskNearlyFull(t *testing.T) {
	dir := t.TempDir()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	if free < 4<<30 {
		t.Skipf("%d MiB free under %s: the test takes 2 GiB", free>>20, dir)
	}
	cfg := testutil.StoreConfig(t)
	cfg.DiskDir = dir
	cfg.MinFreeDisk = free - 1<<30
	f := newFixtureOn(t, testutil.OpenStore(t, cfg))
	f.put("shared/a", "1")

	fill := filepath.Join(dir, "fill")
	fd, err := os.Create(fill)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Fallocate(int(fd.Fd()), 0, 0, 2<<30); err != nil {
		fd.Close()
		t.Skipf("fallocate: %v", err)
	}
	fd.Close()
	defer os.Remove(fill)
	time.Sleep(300 * time.Millisecond) // past the last answer of the file system, which stands 250 ms

	r := f.do("PUT", "/v1/kv/shared/a", "2")
	f.mustErr(r, 503, api.CodeUnavailable, "MiB free", "writes are refused (not applied)", dir)
	if r.Header.Get("Retry-After") == "" {
		t.Fatal("503 without Retry-After")
	}
	f.mustErr(f.do("POST", "/v1/txn", `{"ops":[{"op":"put","key":"shared/b","value":"1"}]}`), 503, api.CodeUnavailable)
	var kv api.KV
	f.must(f.do("GET", "/v1/kv/shared/a", ""), 200, &kv)
	if kv.Value != "1" {
		t.Fatalf("shared/a = %q after a refused write, want 1", kv.Value)
	}
	var h DepsHealth
	f.must(f.doToken("", "GET", "/health/deps", ""), 200, &h)
	if !h.Degraded || strings.Join(h.Alarms, ",") != store.LowDiskAlarm || !strings.Contains(h.Error, "writes are refused") {
		b, _ := json.Marshal(h)
		t.Fatalf("/health/deps with the disk nearly full: %s", b)
	}

	os.Remove(fill)
	waitFor(t, "writes taken once space is freed, and /health/deps not degraded", func() bool {
		var h DepsHealth
		f.must(f.doToken("", "GET", "/health/deps", ""), 200, &h)
		return !h.Degraded && len(h.Alarms) == 0 && f.do("PUT", "/v1/kv/shared/a", "3").StatusCode == 200
	})
}

// --min-free-disk 0 turns the check off (the store's own 0 is its default, 256 MiB): a
// server whose operator turned it off takes writes whatever the disk has free, and one whose
// bound is above what any disk has refuses them.
func TestMinFreeDisk_ZeroTurnsTheCheckOff(t *testing.T) {
	if got := (Config{MinFreeDisk: 0}).storeConfig(nil).MinFreeDisk; got >= 0 {
		t.Fatalf("--min-free-disk 0 gave the store MinFreeDisk %d, want a negative one (no check)", got)
	}
	if got := DefaultConfig().storeConfig(nil).MinFreeDisk; got != store.DefaultMinFreeDisk {
		t.Fatalf("the default gave the store MinFreeDisk %d, want %d", got, store.DefaultMinFreeDisk)
	}
	for _, c := range []struct {
		min  int64
		code int
	}{{-1, 200}, {1 << 62, 503}} {
		cfg := testutil.StoreConfig(t)
		cfg.DiskDir = t.TempDir()
		cfg.MinFreeDisk = c.min
		f := newFixtureOn(t, testutil.OpenStore(t, cfg))
		if r := f.do("PUT", "/v1/kv/shared/min-free", "1"); r.StatusCode != c.code {
			t.Errorf("MinFreeDisk %d: PUT %d %s, want %d", c.min, r.StatusCode, r.body, c.code)
		}
	}
}
