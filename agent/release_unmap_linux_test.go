package agent

import (
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestFreeMemory_LeavesMemoryMappedWhereAFileWas has freeMemory run while another thread maps a
// file, unmaps it and maps anonymous memory at the same address (as C's malloc may, in a cgo
// build, after the resolver's dlclose): the range freeMemory read as a file's, and drops
// after the heap went back, may by then hold writes, which MADV_DONTNEED would zero.
func TestFreeMemory_LeavesMemoryMappedWhereAFileWas(t *testing.T) {
	const size = 64 * 4096
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, make([]byte, size), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lost atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			m, err := syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ, syscall.MAP_PRIVATE)
			if err != nil {
				t.Error(err)
				return
			}
			_ = m[0]
			addr := uintptr(unsafe.Pointer(&m[0]))
			time.Sleep(200 * time.Microsecond)
			syscall.Munmap(m)
			// As malloc may: anonymous memory where the file was, written.
			p, _, e := syscall.Syscall6(syscall.SYS_MMAP, addr, size, syscall.PROT_READ|syscall.PROT_WRITE,
				syscall.MAP_PRIVATE|syscall.MAP_ANONYMOUS|unix.MAP_FIXED_NOREPLACE, ^uintptr(0), 0)
			if e != 0 || p != addr {
				if e == 0 { // a kernel before 4.17 took the address as a hint
					syscall.Syscall(syscall.SYS_MUNMAP, p, size, 0)
				}
				continue
			}
			a := m // the same addresses, now the anonymous mapping's
			for i := 0; i < size; i += 4096 {
				a[i] = 'x'
			}
			time.Sleep(2 * time.Millisecond)
			for i := 0; i < size; i += 4096 {
				if a[i] != 'x' {
					lost.Add(1)
					break
				}
			}
			syscall.Syscall(syscall.SYS_MUNMAP, p, size, 0)
		}
	}()
	end := time.Now().Add(2 * time.Second)
	for time.Now().Before(end) && lost.Load() == 0 {
		freeMemory()
	}
	close(stop)
	<-done
	if n := lost.Load(); n > 0 {
		t.Fatalf("freeMemory zeroed anonymous memory written %d times", n)
	}
}
