package main

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The runbook's "Log events worth alerting on" are what operators put into their log alerts, as
// written: each must be a message the server (or the agent) logs. The agent's line when it renders
// from its cache at start was quoted as "rendering from cache: server unreachable at start" long
// after it became "rendering from cache: no view from the server at start", so an alert on the
// runbook's words never fired.
func TestRunbookLogEvents_LoggedAsWritten(t *testing.T) {
	b, err := os.ReadFile("../../docs/RUNBOOK.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	head := "Log events worth alerting on (server):"
	i := strings.Index(text, head)
	if i < 0 {
		t.Fatalf("docs/RUNBOOK.md has no paragraph starting %q", head)
	}
	para := text[i+len(head):]
	if j := strings.Index(para, "\n\n"); j >= 0 {
		para = para[:j]
	}
	para = strings.Join(strings.Fields(para), " ")
	serverPart, agentPart, ok := strings.Cut(para, " Agent: ")
	if !ok {
		t.Fatalf("the paragraph has no agent part (%q):\n%s", " Agent: ", para)
	}
	parts := []struct {
		what    string
		events  string
		sources []string
	}{
		{"server", serverPart, []string{"../../server", "../../cmd/shoelace"}},
		{"agent", agentPart, []string{"../../agent", "../../cmd/shoelace-agent"}},
	}
	quoted := regexp.MustCompile("`([^`]+)`")
	for _, p := range parts {
		src := goSources(t, p.sources...)
		n := 0
		for _, m := range quoted.FindAllStringSubmatch(p.events, -1) {
			event := m[1]
			if !strings.Contains(event, " ") {
				continue // a field of the line (`problem`, `action`), not its message
			}
			n++
			for _, piece := range strings.Split(event, "…") {
				if piece = strings.TrimSpace(piece); piece != "" && !strings.Contains(src, piece) {
					t.Errorf("docs/RUNBOOK.md quotes the %s log event %q, but no %s code logs %q", p.what, event, p.what, piece)
				}
			}
		}
		if n == 0 {
			t.Errorf("docs/RUNBOOK.md quotes no %s log event:\n%s", p.what, p.events)
		}
	}
}

// goSources is the text of the Go files (tests left out) below dirs.
func goSources(t *testing.T, dirs ...string) string {
	t.Helper()
	var sb strings.Builder
	for _, dir := range dirs {
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			b, err := os.ReadFile(path)
			sb.Write(b)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return sb.String()
}
