package scripts

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Two `make release` runs of one commit give the same bytes: every binary, package and the SBOM,
// so SHA256SUMS is the same.
func TestRelease_Reproducible(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: two whole releases take a few minutes (.ci/run runs this)")
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	release := func(out string) map[string]string {
		t.Helper()
		cmd := exec.Command("bash", "scripts/release.sh")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "VERSION=v0.0.0-reprotest", "OUT="+out)
		start := time.Now()
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("release.sh: %v\n%s", err, b)
		}
		t.Logf("release into %s took %s", out, time.Since(start).Round(time.Second))
		f, err := os.Open(filepath.Join(out, "SHA256SUMS"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		sums := map[string]string{}
		for sc := bufio.NewScanner(f); sc.Scan(); {
			sum, name, _ := strings.Cut(sc.Text(), "  ")
			sums[name] = sum
		}
		return sums
	}
	a := release(filepath.Join(t.TempDir(), "a"))
	b := release(filepath.Join(t.TempDir(), "b"))
	for _, want := range []string{"shoelace-agent_v0.0.0-reprotest_windows_amd64.exe", "shoelace-agent_v0.0.0-reprotest_darwin_arm64",
		"shoelace_v0.0.0-reprotest_linux_arm64", "shoelace-agent_0.0.0~reprotest_amd64.deb", "shoelace-server_0.0.0~reprotest_arm64.rpm", "sbom.cdx.json"} {
		if a[want] == "" {
			t.Errorf("the release has no %s: %v", want, a)
		}
	}
	if len(a) != 15 {
		t.Errorf("the release has %d files, want 15: %v", len(a), a)
	}
	for name, sum := range a {
		if b[name] != sum {
			t.Errorf("%s differs between two releases of one commit: %s and %s", name, sum, b[name])
		}
	}
}
