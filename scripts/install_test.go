//go:build !windows

package scripts

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// installTree is a checkout's Makefile with bin/ holding the given fake binaries, and a PATH
// that has make and install but no go, as `sudo make install` runs (sudo's secure_path leaves
// out /usr/local/go/bin and ~/go/bin, where Go is installed).
func installTree(t *testing.T, bins map[string]string) (root, path string) {
	t.Helper()
	root = t.TempDir()
	copyFile(t, filepath.Join("..", "Makefile"), filepath.Join(root, "Makefile"))
	if err := os.Mkdir(filepath.Join(root, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range bins {
		if err := os.WriteFile(filepath.Join(root, "bin", name), []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	path = filepath.Join(root, "path")
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tool := range []string{"make", "install"} {
		p, err := exec.LookPath(tool)
		if err != nil {
			t.Fatalf("%s not installed", tool)
		}
		if err := os.Symlink(p, filepath.Join(path, tool)); err != nil {
			t.Fatal(err)
		}
	}
	return root, path
}

// `sudo make install` after `make build` copies what make build left in bin/: it rebuilt them
// first, and under sudo, whose PATH has no go, it stopped with "go: not found" (exit 2).
func TestMakeInstall_WithoutGoCopiesTheBuiltBinaries(t *testing.T) {
	bins := map[string]string{"shoelace": "#!/bin/sh\necho server\n", "shoelace-agent": "#!/bin/sh\necho agent\n"}
	root, path := installTree(t, bins)
	prefix := filepath.Join(root, "prefix")
	cmd := exec.Command("make", "install", "PREFIX="+prefix)
	cmd.Dir = root
	cmd.Env = []string{"PATH=" + path, "HOME=" + root}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make install without go on the PATH: %v\n%s", err, out)
	}
	for name, want := range bins {
		got, err := os.ReadFile(filepath.Join(prefix, "bin", name))
		if err != nil || string(got) != want {
			t.Errorf("%s/bin/%s = %q, %v; want the bytes of bin/%s", prefix, name, got, err, name)
		}
	}
}

// With nothing built and no go to build with, make install says what to do and installs nothing.
func TestMakeInstall_WithoutGoOrBinariesSaysToBuildFirst(t *testing.T) {
	root, path := installTree(t, map[string]string{"shoelace": "#!/bin/sh\n"})
	prefix := filepath.Join(root, "prefix")
	cmd := exec.Command("make", "install", "PREFIX="+prefix)
	cmd.Dir = root
	cmd.Env = []string{"PATH=" + path, "HOME=" + root}
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "make build") {
		t.Fatalf("make install with no shoelace-agent built and no go: %v\n%s\nwant a failure that says to run make build first", err, out)
	}
	if _, err := os.Stat(filepath.Join(prefix, "bin", "shoelace")); !os.IsNotExist(err) {
		t.Errorf("%s/bin/shoelace was installed (%v): nothing should be", prefix, err)
	}
}
