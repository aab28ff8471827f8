package main

import (
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// The runbook's table of API errors names every code the server answers with, and the CLI
// exit code each one gives. It named 18 of 25: an operator looking up a rollout_in_progress
// refusal found "409 conflict, exit 4", where the CLI exits 7; schema_violation (422),
// invalid_schema, compacted (410), unsupported_media_type, method_not_allowed and internal
// were missing.
func TestRunbookErrorTable_EveryCodeWithItsExit(t *testing.T) {
	b, err := os.ReadFile("../../docs/RUNBOOK.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	head := "| HTTP / code | CLI exit |"
	i := strings.Index(text, head)
	if i < 0 {
		t.Fatalf("docs/RUNBOOK.md has no table headed %q", head)
	}
	code := regexp.MustCompile("`([a-z_]+)`")
	documented := map[string]bool{}
	for _, line := range strings.Split(text[i:], "\n")[2:] {
		if !strings.HasPrefix(line, "|") {
			break
		}
		cells := strings.Split(line, "|")
		if len(cells) < 4 {
			t.Fatalf("row %q has too few cells", line)
		}
		exit, err := strconv.Atoi(strings.TrimSpace(cells[2]))
		if err != nil {
			t.Fatalf("row %q: the CLI exit %q is not a number", line, cells[2])
		}
		for _, m := range code.FindAllStringSubmatch(cells[1], -1) {
			c := m[1]
			documented[c] = true
			if got := exitCode(&api.Error{Code: c, Message: "refused"}); got != exit {
				t.Errorf("RUNBOOK says %s exits %d; the CLI exits %d", c, exit, got)
			}
		}
	}
	for _, c := range api.Codes() {
		if !documented[c] {
			t.Errorf("RUNBOOK's table of API errors does not name %s", c)
		}
	}
}

// README's table of exit codes names every API error code that --help names for the same exit:
// its row 7 said nothing of rollout_in_progress (a write refused while a rollout runs) nor of
// appliance wait's halted rollout, which --help and DESIGN.md put under exit 7.
func TestReadmeExitTable_NamesTheCodesHelpNames(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readmeRow, helpEntry := regexp.MustCompile(`^\| (\d+) \| (.*) \|$`), regexp.MustCompile(`^   (\d+)  (.*)$`)
	readme := map[int]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if m := readmeRow.FindStringSubmatch(line); m != nil {
			n, _ := strconv.Atoi(m[1])
			readme[n] = m[2]
		}
	}
	help := map[int]string{}
	exit := -1
	for _, line := range strings.Split(exitCodesHelp, "\n")[1:] {
		if m := helpEntry.FindStringSubmatch(line); m != nil {
			exit, _ = strconv.Atoi(m[1])
			line = m[2]
		}
		help[exit] += " " + strings.TrimSpace(line)
	}
	if len(help) < 9 {
		t.Fatalf("read %d exit codes from exitCodesHelp, want 9", len(help))
	}
	for n, text := range help {
		row, ok := readme[n]
		if !ok {
			t.Errorf("README's exit table has no row for %d", n)
			continue
		}
		for _, c := range api.Codes() {
			if strings.Contains(text, c) && !strings.Contains(row, c) {
				t.Errorf("--help puts %s under exit %d; README's row %d does not name it: %s", c, n, n, row)
			}
		}
		if strings.Contains(text, "appliance wait") && !strings.Contains(row, "appliance wait") {
			t.Errorf("--help puts appliance wait's halted rollout under exit %d; README's row does not", n)
		}
	}
}
