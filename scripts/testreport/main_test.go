package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/testbin"
)

// module writes a Go module with three packages into a temporary directory and makes it the
// working directory: a passes with skips, b fails (a log, a failed subtest and a panic in
// another binary would be the same path), c does not build.
func module(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"go.mod": "module example.com/m\n\ngo 1.22\n",
		"a/a_test.go": `package a

import "testing"

func TestPass(t *testing.T) { t.Log("quiet when it passes") }

func TestSkip(t *testing.T) { t.Skip("no widget here") }

func TestSub(t *testing.T) {
	t.Run("case", func(t *testing.T) { t.Skipf("needs %s", "root") })
	t.Run("runs", func(t *testing.T) {})
}
`,
		"b/b_test.go": `package b

import "testing"

func TestOK(t *testing.T) {}

func TestFail(t *testing.T) {
	t.Log("context before")
	t.Run("inner", func(t *testing.T) { t.Error("boom") })
}
`,
		"c/c_test.go": "package c\n\nimport \"testing\"\n\nfunc TestX(t *testing.T) { undefined() }\n",
		// d's tests pass, but the binary fails after them (as a race found after its test ended).
		"d/d_test.go": `package d

import (
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	m.Run()
	os.Exit(3)
}

func TestQuiet(t *testing.T) { t.Log("a clue from a passing test") }
`,
	}
	testbin.WriteFiles(t, dir, files)
	t.Chdir(dir)
	t.Setenv("GOWORK", "off")
	t.Setenv("GOFLAGS", "")
	t.Setenv(strictEnv, "")
}

func runReport(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code, err := run(args, &out, &errOut)
	if err != nil {
		t.Logf("run: %v", err)
	}
	return code, out.String() + errOut.String()
}

func TestReport_PassingWithSkips(t *testing.T) {
	module(t)
	code, out := runReport(t, "--", "go", "test", "-count=1", "-json", "./a")
	if code != 0 {
		t.Fatalf("exit %d, want 0\n%s", code, out)
	}
	for _, want := range []string{
		"ok  \texample.com/m/a\t",
		"\n2 skipped test(s):\n",
		"SKIP a TestSkip: a_test.go:7: no widget here\n",
		"SKIP a TestSub/case: a_test.go:10: needs root\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	for _, unwanted := range []string{"=== RUN", "quiet when it passes", "--- PASS", "not on the allow-list"} {
		if strings.Contains(out, unwanted) {
			t.Errorf("output has %q:\n%s", unwanted, out)
		}
	}
}

func TestReport_FailuresAndBuildErrorsFail(t *testing.T) {
	module(t)
	code, out := runReport(t, "--", "go", "test", "-count=1", "-json", "./...")
	if code == 0 {
		t.Fatalf("exit 0 with a failing test and a build error\n%s", out)
	}
	for _, want := range []string{
		"--- FAIL: TestFail/inner", "b_test.go:9: boom", "--- FAIL: TestFail ", "b_test.go:8: context before",
		"FAIL\texample.com/m/b", "undefined: undefined", "ok  \texample.com/m/a",
		"SKIP a TestSkip: a_test.go:7: no widget here",
		"example.com/m/d failed, yet none of its tests did", "a clue from a passing test",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "TestOK") {
		t.Errorf("a passing test's output is shown:\n%s", out)
	}
}

func TestReport_StrictFailsOnSkipsNotAllowed(t *testing.T) {
	module(t)
	list := "# skips CI accepts\n\na TestSkip  # no widget in CI\n"
	if err := os.WriteFile("allow", []byte(list), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out := runReport(t, "-allow", "allow", "-strict", "--", "go", "test", "-count=1", "-json", "./a")
	if code != 1 || !strings.Contains(out, "SKIP a TestSub/case: a_test.go:10: needs root  [not on the allow-list]") ||
		!strings.Contains(out, "FAIL: 1 skipped test(s) not on the allow-list allow") ||
		strings.Contains(out, "TestSkip: a_test.go:7: no widget here  [not") {
		t.Fatalf("exit %d, want 1 naming TestSub/case only:\n%s", code, out)
	}

	// The environment asks for it as -strict does; * matches any text.
	if err := os.WriteFile("allow", []byte(list+"a TestSub/*  # needs root\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv(strictEnv, "1")
	if code, out := runReport(t, "-allow", "allow", "--", "go", "test", "-count=1", "-json", "./a"); code != 0 || strings.Contains(out, "allow-list") {
		t.Fatalf("every skip allowed: exit %d, want 0:\n%s", code, out)
	}
	// Without strict, no allow-list is needed.
	t.Setenv(strictEnv, "")
	if code, out := runReport(t, "-allow", "missing", "--", "go", "test", "-count=1", "-json", "./a"); code != 0 {
		t.Fatalf("not strict: exit %d, want 0:\n%s", code, out)
	}
}

func TestReadAllowList(t *testing.T) {
	dir := t.TempDir()
	for body, wantErr := range map[string]string{
		"a TestX # why\n# comment\n\n":  "",
		"a TestX\n":                     "say why",
		"a TestX #   \n":                "say why",
		"a # why\n":                     "want PACKAGE TEST",
		"a TestX extra # why\n":         "want PACKAGE TEST",
		"server/* Test*Slow* # why\n":   "",
		"./a TestX # a ./ is literal\n": "",
	} {
		file := filepath.Join(dir, "list")
		if err := os.WriteFile(file, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := readAllowList(file)
		if (wantErr == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), wantErr) {
			t.Errorf("%q: %v, want %q", body, err, wantErr)
		}
	}
	a := []allowed{{pkg: glob("server/*"), test: glob("Test*Slow*")}}
	for _, c := range []struct {
		pkg, test string
		want      bool
	}{
		{"server/store", "TestVerySlowThing", true},
		{"server", "TestVerySlowThing", false},
		{"server/store", "TestFast", false},
		{"server/store", "TestSlow/sub", true},
	} {
		if got := isAllowed(a, c.pkg, c.test); got != c.want {
			t.Errorf("isAllowed(%s, %s) = %v, want %v", c.pkg, c.test, got, c.want)
		}
	}
}
