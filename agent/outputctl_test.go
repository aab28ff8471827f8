//go:build !windows

package agent_test

import (
	"context"
	"strings"
	"testing"

	"github.com/shoelace-dev/shoelace/agent"
)

// A check's or command's output that holds terminal control sequences (a line of a file another
// user controls, printed by the check) reaches the error that once prints and that status shows
// with its control characters escaped: it cannot retitle, clear or recolour the operator's
// terminal. Before, they went through raw.
func TestAgent_CommandOutputControlCharsEscapedInErrors(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	a, dir, _ := testAgent(t, srv, header+`templates:
  - contents: "a={{ key \"a\" }}"
    destination: $DIR/x
    check: 'printf "bad line\033]0;PWNED\007\033[2J\033[31mred\n"; exit 1'
  - contents: "a={{ key \"a\" }}"
    destination: $DIR/y
    command: 'printf "oops\033[2J\n"; exit 1'
`)
	err := a.Once(context.Background(), "", false)
	if err == nil {
		t.Fatal("once passed")
	}
	st, lerr := agent.LoadStatus(dir+"/cache", "web")
	if lerr != nil {
		t.Fatal(lerr)
	}
	texts := []string{err.Error(), st.LastError}
	for _, ts := range st.Templates {
		texts = append(texts, ts.Error)
	}
	for _, s := range texts {
		if strings.ContainsAny(s, "\x1b\x07") {
			t.Fatalf("control characters of the output reach the error: %q", s)
		}
	}
	if all := strings.Join(texts, "\n"); !strings.Contains(err.Error(), `bad line\x1b]0;PWNED\x07\x1b[2J\x1b[31mred`) || !strings.Contains(all, `oops\x1b[2J`) {
		t.Fatalf("the outputs are not in the errors, escaped: %q", all)
	}
}

// A failed check's error carries the end of its output, as a failed command's does: once
// printed 35 KB over 1,642 lines as its last message (and the status file and the report
// carried them) for a check that printed that much. The whole output is in the log.
func TestAgent_CheckOutputEndInTheError(t *testing.T) {
	srv := newViewServer(t, map[string]string{"a": "1"})
	a, dir, logs := testAgent(t, srv, header+`templates:
  - contents: "a={{ key \"a\" }}"
    destination: $DIR/x
    check: 'echo first-$((40+2)); seq 1 2000; echo the reason it failed; exit 1'
`)
	err := a.Once(context.Background(), "", false)
	if err == nil {
		t.Fatal("once passed")
	}
	st, lerr := agent.LoadStatus(dir+"/cache", "web")
	if lerr != nil {
		t.Fatal(lerr)
	}
	for _, s := range []string{err.Error(), st.LastError} {
		if !strings.Contains(s, "the reason it failed") || strings.Contains(s, "first-42") || len(s) > 1000 {
			t.Errorf("error of %d bytes, want the end of the output only (under 1000 bytes): %.300q", len(s), s)
		}
	}
	if l := logs.String(); !strings.Contains(l, `"msg":"check failed"`) || !strings.Contains(l, "first-42") {
		t.Errorf("the check's whole output is not in the log:\n%.2000s", l)
	}
}
