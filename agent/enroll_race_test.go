//go:build !windows

package agent

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestLoadInstanceToken_FIFOSwappedIn: the instance token file was looked at (Lstat: a regular
// file of the agent's, mode 0600) and then opened by name: a named pipe renamed over it in
// between held the open, and the agent's start, until a writer came. It is opened without
// blocking nor following a link, and judged by what was opened.
func TestLoadInstanceToken_FIFOSwappedIn(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "web.instance-token")
	good := []byte(`{"server":"http://x","appliance":"web","instance":"vm-1","token":"t"}`)
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			tmp := filepath.Join(dir, "tmp")
			_ = os.Remove(tmp)
			if i%2 == 0 {
				_ = os.WriteFile(tmp, good, 0o600)
			} else {
				_ = syscall.Mkfifo(tmp, 0o600)
			}
			_ = os.Rename(tmp, path)
		}
	}()
	defer func() { close(stop); <-done }()
	finished := make(chan int)
	go func() {
		read := 0
		for range 200000 {
			if it, err := loadInstanceToken(path); err == nil && it.Token == "t" {
				read++
			}
		}
		finished <- read
	}()
	select {
	case read := <-finished:
		if read == 0 {
			t.Fatal("the token file was never read")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("loadInstanceToken still blocked after 30s")
	}
}
