//go:build !windows

package atomicfile_test

import (
	"bytes"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/atomicfile"
)

// A write that the file system refuses (here EFBIG, past a child process's RLIMIT_FSIZE, as
// ENOSPC would be on a full disk) says the temp file's path once, not "write P: write P: …",
// and leaves nothing behind: no destination, no temp file.
func TestStage_WriteErrorNamesThePathOnce(t *testing.T) {
	if dir := os.Getenv("SHOELACE_TEST_FSIZE_DIR"); dir != "" {
		signal.Ignore(syscall.SIGXFSZ) // a write past the limit fails with EFBIG instead
		lim := syscall.Rlimit{Cur: 64 << 10, Max: 64 << 10}
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
			os.Stdout.WriteString("setrlimit: " + err.Error() + "\n")
			os.Exit(0)
		}
		_, err := atomicfile.Stage(filepath.Join(dir, "dest"), bytes.Repeat([]byte("x"), 1<<20), keep())
		if err == nil {
			os.Stdout.WriteString("staged\n")
		} else {
			os.Stdout.WriteString("error: " + err.Error() + "\n")
		}
		os.Exit(0)
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestStage_WriteErrorNamesThePathOnce$")
	cmd.Env = append(os.Environ(), "SHOELACE_TEST_FSIZE_DIR="+dir)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v, output %q", err, out)
	}
	line := strings.TrimSpace(string(out))
	msg, ok := strings.CutPrefix(line, "error: ")
	if !ok || !strings.Contains(msg, "file too large") {
		t.Fatalf("child said %q, want an error saying the file is too large", line)
	}
	tmp := filepath.Join(dir, ".dest.shoelace-")
	if strings.Count(msg, tmp) != 1 || !strings.HasPrefix(msg, "write "+tmp) {
		t.Errorf("error %q: want \"write %s…\" naming it once", msg, tmp)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("left in the directory: %v", left)
	}
}
