package agent

import (
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
)

// freeMemory gives back what a render pass used: the heap it freed, then the pages of the
// agent's executable (its code and read-only data) that the pass made resident. Those pages
// stay in the page cache and are mapped again on their next use, from memory; until then the
// idle agent's resident set holds what its long-poll touches, not every page of code that ran
// once (start-up, the first render).
func freeMemory() { freeMappingsOf("/proc/self/exe") }

// freeMappingsOf is freeMemory for the read-only private mappings of the file at path. Only
// one file's, that stays mapped as long as the process lives: a mapping read in smaps may be
// gone by the time it is dropped (the heap goes back in between), and another mapping in its
// place (C's malloc after a dlclose, in a cgo build) would lose its writes. A mapping with a
// page of its own, resident or swapped out (one written since it was mapped, like relocated
// data), is left alone too: dropping it would lose the write.
func freeMappingsOf(path string) {
	// Read first, so that the garbage of the reading goes back with the heap.
	var st syscall.Stat_t
	if syscall.Stat(path, &st) != nil {
		debug.FreeOSMemory()
		return
	}
	var drop [][2]uint64
	smaps, _ := os.ReadFile("/proc/self/smaps")
	// The file by its inode only: in a container, smaps names the device of the file under
	// the overlay, stat the overlay's.
	ino := strconv.FormatUint(st.Ino, 10)
	var lo, hi uint64 // the mapping being read; hi is 0 when it is not to be dropped
	for _, l := range strings.Split(string(smaps), "\n") {
		// A mapping's first line is "lo-hi perms offset dev inode [path]"; the lines after it
		// are "Name: value [kB]", VmFlags last.
		switch f := strings.Fields(l); {
		case len(f) >= 5 && !strings.HasSuffix(f[0], ":"):
			a, b, _ := strings.Cut(f[0], "-")
			lo, _ = strconv.ParseUint(a, 16, 64)
			hi, _ = strconv.ParseUint(b, 16, 64)
			if len(f[1]) < 4 || f[1][1] != '-' || f[1][3] != 'p' || f[4] != ino {
				hi = 0 // writable, shared, or not the file's
			}
		case len(f) > 1 && (f[0] == "Anonymous:" || f[0] == "Swap:") && f[1] != "0":
			hi = 0
		case len(f) > 0 && f[0] == "VmFlags:" && hi > lo:
			drop = append(drop, [2]uint64{lo, hi})
		}
	}
	debug.FreeOSMemory()
	for _, m := range drop {
		syscall.Syscall(syscall.SYS_MADVISE, uintptr(m[0]), uintptr(m[1]-m[0]), syscall.MADV_DONTNEED)
	}
}
