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
