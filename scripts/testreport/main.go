// Command testreport runs `go test -json` and prints what `go test` prints without -v (the
// output of each failed test, one line per package), then one line per skipped test with its
// reason. With -strict, or SHOELACE_STRICT_SKIPS=1 in the environment (.ci/run sets it), it
// also fails when a test skipped that the allow-list does not name, so that a check CI never
// runs cannot hide behind a skip. It exits with the status of go test, or 1 for such a skip.
//
//	go run ./scripts/testreport [-allow .ci/skips-allowed] [-strict] -- go test -json ./...
//
// `make test` runs the tests through it.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"sort"
	"strings"
	"syscall"
)

func main() {
	code, err := run(os.Args[1:], os.Stdout, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testreport:", err)
		if code == 0 {
			code = 2
		}
	}
	os.Exit(code)
}

// strictEnv, set to 1, makes an unlisted skip a failure, as -strict does.
const strictEnv = "SHOELACE_STRICT_SKIPS"

func run(args []string, stdout, stderr io.Writer) (int, error) {
	fs := flag.NewFlagSet("testreport", flag.ContinueOnError)
	fs.SetOutput(stderr)
	allowFile := fs.String("allow", ".ci/skips-allowed", "the allow-list of skips: lines `PACKAGE TEST # why`, * for any text")
	strict := fs.Bool("strict", os.Getenv(strictEnv) == "1", "fail when a test skips that the allow-list does not name (default from "+strictEnv+"=1)")
	if err := fs.Parse(args); err != nil {
		return 2, err
	}
	cmdArgs := fs.Args()
	if len(cmdArgs) == 0 {
		return 2, errors.New("no command: give it after --, e.g. -- go test -json ./...")
	}
	var allow []allowed
	if *strict {
		var err error
		if allow, err = readAllowList(*allowFile); err != nil {
			return 2, err
		}
	}

	cmd := exec.Command(cmdArgs[0], cmdArgs[1:]...)
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 2, err
	}
	if err := cmd.Start(); err != nil {
		return 2, err
	}
	// An interrupt reaches go test through the terminal's process group; a signal sent to this
	// process alone is passed on, so that go test ends its test binaries itself.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		for s := range sigs {
			_ = cmd.Process.Signal(s)
		}
	}()

	rep := newReport(stdout, modulePath())
	if err := rep.read(out); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return 2, err
	}
	waitErr := cmd.Wait()
	code := 0
	var exit *exec.ExitError
	switch {
	case errors.As(waitErr, &exit):
		code = max(exit.ExitCode(), 1)
	case waitErr != nil:
		return 2, waitErr
	case rep.failed:
		code = 1 // a test failed, yet go test exited 0: trust the events
	}
	unlisted := rep.printSkips(allow, *strict)
	if unlisted > 0 {
		fmt.Fprintf(stdout, "FAIL: %d skipped test(s) not on the allow-list %s: make them run in CI, or add them there with the reason\n", unlisted, *allowFile)
		code = max(code, 1)
	}
	return code, nil
}

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Action     string
	Package    string
	ImportPath string // build-output and build-fail events
	Test       string
	Output     string
}

// skip is a skipped test and what it printed.
type skip struct {
	pkg, test, reason string
}

type report struct {
	w       io.Writer
	module  string
	buf     map[string]map[string]*bytes.Buffer // package → test ("" for the package) → output
	skips   []skip
	failed  bool
	started map[string]bool
	// passed keeps what passed tests printed, and failures counts failed tests, per package: a
	// package that fails with no failed test (a race or an exit after the tests, TestMain) shows
	// all of it, since the cause may be anywhere.
	passed   map[string]map[string]string
	failures map[string]int
}

func newReport(w io.Writer, module string) *report {
	return &report{w: w, module: module, buf: map[string]map[string]*bytes.Buffer{}, started: map[string]bool{},
		passed: map[string]map[string]string{}, failures: map[string]int{}}
}

// read consumes the event stream; a line that is not an event is printed as it is.
func (r *report) read(in io.Reader) error {
	br := bufio.NewReader(in)
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			var e event
			if json.Unmarshal(line, &e) != nil || e.Action == "" {
				_, _ = r.w.Write(line)
			} else {
				r.handle(e)
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (r *report) output(pkg, test string) *bytes.Buffer {
	m := r.buf[pkg]
	if m == nil {
		m = map[string]*bytes.Buffer{}
		r.buf[pkg] = m
	}
	b := m[test]
	if b == nil {
		b = &bytes.Buffer{}
		m[test] = b
	}
	return b
}

func (r *report) handle(e event) {
	switch e.Action {
	case "build-output":
		fmt.Fprint(r.w, e.Output)
		return
	case "build-fail":
		r.failed = true
		return
	case "output":
		r.output(e.Package, e.Test).WriteString(e.Output)
		return
	}
	if e.Test == "" {
		if e.Action == "pass" || e.Action == "fail" || e.Action == "skip" {
			r.endPackage(e.Package, e.Action)
		}
		return
	}
	switch e.Action {
	case "pass":
		if r.passed[e.Package] == nil {
			r.passed[e.Package] = map[string]string{}
		}
		r.passed[e.Package][e.Test] += r.output(e.Package, e.Test).String()
		delete(r.buf[e.Package], e.Test)
	case "skip":
		r.skips = append(r.skips, skip{pkg: e.Package, test: e.Test, reason: skipReason(r.output(e.Package, e.Test).String())})
		delete(r.buf[e.Package], e.Test)
	case "fail":
		r.failed = true
		r.failures[e.Package]++
		r.printTest(r.output(e.Package, e.Test).String())
		delete(r.buf[e.Package], e.Test)
	}
}

// printTest prints a failed test's output as go test does without -v: its "--- FAIL" line
// first, then what it logged, without the progress lines of -v (=== RUN…).
func (r *report) printTest(out string) {
	var head, rest []string
	for _, l := range strings.SplitAfter(out, "\n") {
		switch {
		case strings.HasPrefix(l, "=== "):
		case strings.HasPrefix(l, "--- "):
			head = append(head, l)
		default:
			rest = append(rest, l)
		}
	}
	fmt.Fprint(r.w, strings.Join(head, "")+strings.Join(rest, ""))
}

// endPackage prints a passed package's summary line ("ok  pkg 1.2s"), or for a failed one all
// it printed outside tests and the output of tests that never ended (a panic, a timeout).
func (r *report) endPackage(pkg, action string) {
	bufs := r.buf[pkg]
	delete(r.buf, pkg)
	passed := r.passed[pkg]
	delete(r.passed, pkg)
	own := ""
	if b := bufs[""]; b != nil {
		own = b.String()
	}
	if action != "fail" {
		for _, l := range strings.SplitAfter(own, "\n") {
			if strings.HasPrefix(l, "ok ") || strings.HasPrefix(l, "?") {
				fmt.Fprint(r.w, l)
			}
		}
		return
	}
	r.failed = true
	open := make([]string, 0, len(bufs))
	for t := range bufs {
		if t != "" {
			open = append(open, t)
		}
	}
	sort.Strings(open)
	for _, t := range open {
		r.printTest(bufs[t].String())
	}
	if r.failures[pkg] == 0 && len(open) == 0 && len(passed) > 0 {
		names := make([]string, 0, len(passed))
		for t := range passed {
			names = append(names, t)
		}
		sort.Strings(names)
		fmt.Fprintf(r.w, "%s failed, yet none of its tests did: what its tests printed follows\n", pkg)
		for _, t := range names {
			if out := passed[t]; strings.TrimSpace(out) != "" {
				fmt.Fprint(r.w, out)
			}
		}
	}
	r.printTest(own)
}

// skipReason is what a skipped test logged, on one line: its t.Skip message and any t.Log.
func skipReason(out string) string {
	var parts []string
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "=== ") || strings.HasPrefix(l, "--- SKIP") {
			continue
		}
		parts = append(parts, l)
	}
	if len(parts) == 0 {
		return "(no reason given)"
	}
	reason := strings.Join(parts, " | ")
	if len(reason) > 300 {
		reason = reason[:300] + "…"
	}
	return reason
}

// printSkips prints one line per skipped test and, when strict, marks those the allow-list
// does not name; it returns how many it marked.
func (r *report) printSkips(allow []allowed, strict bool) int {
	if len(r.skips) == 0 {
		return 0
	}
	sort.Slice(r.skips, func(i, j int) bool {
		a, b := r.skips[i], r.skips[j]
		return a.pkg < b.pkg || a.pkg == b.pkg && a.test < b.test
	})
	fmt.Fprintf(r.w, "\n%d skipped test(s):\n", len(r.skips))
	unlisted := 0
	for _, s := range r.skips {
		pkg := r.short(s.pkg)
		mark := ""
		if strict && !isAllowed(allow, pkg, s.test) {
			mark = "  [not on the allow-list]"
			unlisted++
		}
		fmt.Fprintf(r.w, "SKIP %s %s: %s%s\n", pkg, s.test, s.reason, mark)
	}
	return unlisted
}

// short is a package's path relative to the module ("server/store"; "." for its root).
func (r *report) short(pkg string) string {
	if r.module == "" {
		return pkg
	}
	if pkg == r.module {
		return "."
	}
	if rest, ok := strings.CutPrefix(pkg, r.module+"/"); ok {
		return rest
	}
	return pkg
}

// modulePath is the module of go.mod in the working directory, or "".
func modulePath() string {
	b, err := os.ReadFile("go.mod")
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(l), "module "); ok {
			return strings.Trim(strings.TrimSpace(rest), `"`)
		}
	}
	return ""
}

// allowed is one line of the allow-list.
type allowed struct {
	pkg, test *regexp.Regexp
}

// readAllowList reads lines "PACKAGE TEST # why": a package relative to the module, a test
// name (subtests with '/'), * for any text in either. Every entry must say why; blank lines
// and lines that start with '#' are comments.
func readAllowList(file string) ([]allowed, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("allow-list: %w", err)
	}
	var out []allowed
	for i, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		entry, why, _ := strings.Cut(l, "#")
		f := strings.Fields(entry)
		if len(f) != 2 {
			return nil, fmt.Errorf("%s:%d: want PACKAGE TEST # why, got %q", file, i+1, l)
		}
		if strings.TrimSpace(why) == "" {
			return nil, fmt.Errorf("%s:%d: %s %s: say why the skip is allowed after a #", file, i+1, f[0], f[1])
		}
		out = append(out, allowed{pkg: glob(f[0]), test: glob(f[1])})
	}
	return out, nil
}

// glob compiles a pattern where * stands for any text, anchored at both ends.
func glob(p string) *regexp.Regexp {
	parts := strings.Split(p, "*")
	for i := range parts {
		parts[i] = regexp.QuoteMeta(parts[i])
	}
	return regexp.MustCompile(`\A` + strings.Join(parts, ".*") + `\z`)
}

func isAllowed(allow []allowed, pkg, test string) bool {
	for _, a := range allow {
		if a.pkg.MatchString(pkg) && a.test.MatchString(test) {
			return true
		}
	}
	return false
}
