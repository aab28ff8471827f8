package agent

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"unsafe"
)

// TestFreeMemory_DropsCleanFilePagesOnly maps a file three ways, reads or writes every page,
// and has freeMappingsOf give back what it can: the pages of the read-only private mapping leave
// the resident set and read the same after; a private mapping with a page written since it was
// mapped (as relocated data is, before it is made read-only) keeps that page; a shared one is
// left as it is.
func TestFreeMemory_DropsCleanFilePagesOnly(t *testing.T) {
	const size = 4 * 4096
	path := filepath.Join(t.TempDir(), "pages")
	if err := os.WriteFile(path, bytes.Repeat([]byte{'a'}, size), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mmap := func(prot, flags int) []byte {
		m, err := syscall.Mmap(int(f.Fd()), 0, size, prot, flags)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { syscall.Munmap(m) })
		return m
	}
	clean := mmap(syscall.PROT_READ, syscall.MAP_PRIVATE)
	written := mmap(syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE)
	shared := mmap(syscall.PROT_READ, syscall.MAP_SHARED)
	var sum int
	for i := 0; i < size; i += 4096 {
		sum += int(clean[i]) + int(shared[i]) + int(written[i])
	}
	if sum != 3*4*'a' {
		t.Fatalf("the mappings read %d, not the file's bytes", sum)
	}
	written[4096] = 'w'
	if err := syscall.Mprotect(written, syscall.PROT_READ); err != nil {
		t.Fatal(err)
	}
	for i, m := range [][]byte{clean, written, shared} {
		if rss := residentKiB(t, m); rss != size/1024 {
			t.Fatalf("before: %d KiB of mapping %d resident, want all %d", rss, i, size/1024)
		}
	}

	freeMappingsOf(path)

	if rss := residentKiB(t, clean); rss != 0 {
		t.Errorf("the read-only private mapping keeps %d KiB resident, want 0", rss)
	}
	if rss := residentKiB(t, written); rss != size/1024 {
		t.Errorf("the mapping with a written page has %d KiB resident, want %d: it must be left alone", rss, size/1024)
	}
	if rss := residentKiB(t, shared); rss != size/1024 {
		t.Errorf("the shared mapping has %d KiB resident, want %d", rss, size/1024)
	}
	if !bytes.Equal(clean, bytes.Repeat([]byte{'a'}, size)) {
		t.Error("the dropped mapping reads other bytes than the file's")
	}
	if written[4096] != 'w' || written[0] != 'a' {
		t.Errorf("the written page reads %q, want 'w': the write was lost", written[4096])
	}
}

// residentKiB is the Rss of the mapping that starts at m, from /proc/self/smaps.
func residentKiB(t *testing.T, m []byte) int {
	t.Helper()
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	start := fmt.Sprintf("%x-", uintptr(unsafe.Pointer(&m[0])))
	_, after, ok := strings.Cut("\n"+string(smaps), "\n"+start)
	if !ok {
		t.Fatalf("no mapping at %s in /proc/self/smaps", start)
	}
	var kib int
	_, rss, _ := strings.Cut(after, "\nRss:")
	if _, err := fmt.Sscanf(rss, "%d kB", &kib); err != nil {
		t.Fatalf("Rss of the mapping at %s: %v", start, err)
	}
	return kib
}

// freeMemory gives back the pages of the agent's own executable (here the test binary): its
// read-only mappings hold fewer resident pages after it than before.
func TestFreeMemory_DropsTheExecutablesPages(t *testing.T) {
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/self/exe", &st); err != nil {
		t.Fatal(err)
	}
	resident := func() int {
		smaps, err := os.ReadFile("/proc/self/smaps")
		if err != nil {
			t.Fatal(err)
		}
		kib, ours := 0, false
		for _, l := range strings.Split(string(smaps), "\n") {
			f := strings.Fields(l)
			switch {
			case len(f) >= 5 && !strings.HasSuffix(f[0], ":"):
				ours = f[1] == "r--p" && f[4] == fmt.Sprint(st.Ino)
			case ours && len(f) > 1 && f[0] == "Rss:":
				var n int
				fmt.Sscan(f[1], &n)
				kib += n
			}
		}
		return kib
	}
	before := resident()
	freeMemory()
	if after := resident(); before == 0 || after >= before {
		t.Errorf("the executable's read-only data: %d KiB resident before freeMemory, %d KiB after", before, after)
	}
}
