package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/shoelace-dev/shoelace/internal/atomicfile"
	"github.com/shoelace-dev/shoelace/templates"
)

// DryOptions configure Render.
type DryOptions struct {
	// Stage selects templates ("" for all).
	Stage string
	// ShowSecrets shows the diff of templates that read secrets instead of masking it.
	ShowSecrets bool
}

// dryChecked runs once Render has judged a destination, before it reads the file there: a
// test plants a link at that moment.
var dryChecked = func(dest string) {}

// Render prints to w what rendering would change: for each selected template a diff against
// the current file (or "unchanged"), mode and owner changes, and the commands that would run.
// It writes nothing and runs nothing. It uses a fresh view, or the cached one (saying so)
// when the server cannot be reached. It returns an error when a template cannot be rendered.
func (a *Agent) Render(ctx context.Context, w io.Writer, o DryOptions) error {
	sel, err := a.selectStage(o.Stage)
	if err != nil {
		return err
	}
	v, err := a.fetch(ctx)
	if err != nil {
		c, cerr := LoadCache(a.cfg.cacheDir(), a.cfg.Appliance)
		if cerr != nil {
			return err
		}
		fmt.Fprintf(w, "# no view from the server (%v): using the cached view at revision %d\n", err, c.Revision)
		v = &view{Store: c.Store, Revision: c.Revision, Keys: c.Keys, FromCache: true}
	}
	fmt.Fprintf(w, "# appliance %s, revision %d\n", a.cfg.Appliance, v.Revision)
	if st, err := LoadStatus(a.cfg.cacheDir(), a.cfg.Appliance); err == nil && st.Rollout != "" && v.Rollout == "" {
		// render sends no instance token: it gets the live view, not the candidate that run
		// installed, and its diff is no change run would make.
		fmt.Fprintf(w, "# this instance runs the candidate of rollout %s (shoelace-agent status): this is the live view, which its files go back to if the rollout is halted or aborted\n", st.Rollout)
	}
	var failed []string
	// Each template's section is printed once every template is rendered: a template whose
	// group (its command) has another that fails is not installed, as once and run install a
	// group whole or not at all, and its command does not run.
	type section struct {
		t       *tmpl
		text    strings.Builder
		failed  bool
		changes bool
	}
	secs := make([]*section, 0, len(sel))
	for _, t := range sel {
		sec := &section{t: t}
		secs = append(secs, sec)
		w := &sec.text // within the loop, what is printed goes to the template's section
		r, err := t.t.Execute(v.data(a))
		if err != nil {
			msg := err.Error()
			if !o.ShowSecrets {
				msg = redact(msg, v.Keys, a.allSecret())
			}
			failed, sec.failed = append(failed, msg), true
			fmt.Fprintf(w, "\n!!! %s: %s\n", t.name(), msg)
			continue
		}
		if err := a.cfg.installProblem(t.cfg.Destination); err != nil {
			// once and run refuse this install (a link another user owns on the way, one
			// planted to the agent's token, outside allowed_dirs, another user's directory
			// where others may write): say so, and read nothing through the link.
			msg := fmt.Sprintf("%s: %v: a file cannot be installed there", t.cfg.Destination, err)
			failed, sec.failed = append(failed, msg), true
			fmt.Fprintf(w, "\n!!! %s: %s\n", t.name(), msg)
			continue
		}
		if t.cfg.confdDirMissing() {
			// once and run fail this install (confd makes no directory): say so here too.
			msg := fmt.Sprintf("%s: the directory of dest does not exist, and confd makes none: a file cannot be installed there", t.cfg.Destination)
			failed, sec.failed = append(failed, msg), true
			fmt.Fprintf(w, "\n!!! %s: %s\n", t.name(), msg)
			continue
		}
		if p, fi := notADirOnTheWay(t.cfg.Destination); fi != nil {
			// once and run fail this install (no directory can be made there): say so here too.
			msg := fmt.Sprintf("%s: %s is %s, not a directory: a file cannot be installed there", t.cfg.Destination, p, atomicfile.TypeName(fi.Mode()))
			failed, sec.failed = append(failed, msg), true
			fmt.Fprintf(w, "\n!!! %s: %s\n", t.name(), msg)
			continue
		}
		dryChecked(t.cfg.Destination)
		// Read as the install reaches the file, not by name: a link that another user planted
		// since the check above (where the destination's link leads to no file yet, in /tmp) is
		// not followed, and what it leads to is not printed.
		old, fi, oldErr := atomicfile.ReadDestination(t.cfg.Destination, templates.DefaultMaxOutputBytes)
		if nr := (*atomicfile.NotRegularError)(nil); errors.As(oldErr, &nr) {
			// once and run refuse to install over it: say so here too, as a failure.
			msg := fmt.Sprintf("%s is %s: a file cannot be installed there", t.cfg.Destination, atomicfile.TypeName(nr.Mode))
			failed, sec.failed = append(failed, msg), true
			fmt.Fprintf(w, "\n!!! %s: %s\n", t.name(), msg)
			continue
		}
		if tl := (*atomicfile.PreviousTooLargeError)(nil); errors.As(oldErr, &tl) {
			// once and run do not replace it either (see stageOne), and it is not diffed.
			failed, sec.failed = append(failed, tl.Error()), true
			fmt.Fprintf(w, "\n!!! %s: %s\n", t.name(), tl.Error())
			continue
		}
		var notes []string
		switch {
		case errors.Is(oldErr, fs.ErrNotExist):
			notes = append(notes, "new file")
		case oldErr != nil:
			notes = append(notes, fmt.Sprintf("current file unreadable: %v", oldErr))
		}
		if fi != nil {
			if m := t.cfg.Mode(); m != 0 && fi.Mode().Perm() != m {
				notes = append(notes, fmt.Sprintf("mode %04o -> %04o", fi.Mode().Perm(), m))
			}
			if uid, gid, ok := atomicfile.Owner(fi); ok {
				if t.cfg.UID() >= 0 && uid != t.cfg.UID() {
					notes = append(notes, fmt.Sprintf("owner %d -> %d", uid, t.cfg.UID()))
				}
				if t.cfg.GID() >= 0 && gid != t.cfg.GID() {
					notes = append(notes, fmt.Sprintf("group %d -> %d", gid, t.cfg.GID()))
				}
			}
		}
		same := oldErr == nil && string(old) == string(r.Output)
		if same && len(notes) == 0 {
			fmt.Fprintf(w, "\n=== %s: unchanged\n", t.name())
			continue
		}
		if bak, err := os.Lstat(t.cfg.Destination + ".bak"); t.cfg.Backup && fi != nil && err == nil && bak.IsDir() {
			// The previous file is renamed to that name: once and run fail this install.
			msg := fmt.Sprintf("backup keeps the previous content as %s.bak, which is a directory: a file cannot be installed there", t.cfg.Destination)
			failed, sec.failed = append(failed, msg), true
			fmt.Fprintf(w, "\n!!! %s: %s\n", t.name(), msg)
			continue
		}
		if d := readOnlyWay(t.cfg.Destination); d != "" {
			// once and run fail this install (nothing unchanged is written: not above).
			msg := fmt.Sprintf("%s: %s is on a read-only file system: the change cannot be installed there", t.cfg.Destination, d)
			failed, sec.failed = append(failed, msg), true
			fmt.Fprintf(w, "\n!!! %s: %s\n", t.name(), msg)
			continue
		}
		sec.changes = true
		fmt.Fprintf(w, "\n=== %s: would change", t.name())
		if len(notes) > 0 {
			fmt.Fprintf(w, " (%s)", strings.Join(notes, ", "))
		}
		fmt.Fprintln(w)
		if t.cfg.Check != "" {
			fmt.Fprintf(w, "check: %s\n", t.cfg.Check)
		}
		switch {
		case same:
		case r.Secret && !o.ShowSecrets:
			fmt.Fprintf(w, "(content hidden: the template reads secrets; use --show-secrets to see the diff)\n")
		default:
			fmt.Fprint(w, Diff(t.cfg.Destination, string(old), string(r.Output)))
		}
	}
	blocked := map[string][]string{} // command -> the templates of its group that fail
	for _, sec := range secs {
		if c := sec.t.cfg.Command; c != "" && sec.failed {
			blocked[c] = append(blocked[c], sec.t.name())
		}
	}
	var cmds []string
	seenCmd := map[string]bool{}
	for _, sec := range secs {
		text, c := sec.text.String(), sec.t.cfg.Command
		if !sec.changes {
			fmt.Fprint(w, text)
			continue
		}
		if bad := blocked[c]; len(bad) > 0 {
			// After the header line: the diff is what the template renders, but nothing of its
			// group is installed.
			head, rest, _ := strings.Cut(strings.TrimPrefix(text, "\n"), "\n")
			fmt.Fprintf(w, "\n%s\n(not installed: %s of its group (command %q) fails, and a group is installed whole or not at all; its command does not run)\n%s",
				head, strings.Join(bad, ", "), c, rest)
			continue
		}
		fmt.Fprint(w, text)
		if c != "" && !seenCmd[c] {
			seenCmd[c] = true
			cmds = append(cmds, c)
		}
	}
	if len(cmds) > 0 {
		fmt.Fprintf(w, "\n# commands that would run:\n")
		for _, c := range cmds {
			fmt.Fprintf(w, "%s\n", c)
		}
	} else {
		fmt.Fprintf(w, "\n# no commands would run\n")
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d of %d templates cannot be rendered: %s", len(failed), len(sel), strings.Join(failed, "; "))
	}
	return nil
}

// Diff returns a unified diff of old and new ("" when equal): one hunk with up to three lines
// of context each side, whose header counts them as diff -u does, so that patch applies it;
// a last line without a newline is marked "\ No newline at end of file", as diff marks it.
func Diff(name, old, new string) string {
	if old == new {
		return ""
	}
	a, b := splitLines(old), splitLines(new)
	// Trim the common head and tail; diff the middle with an LCS when it is small enough.
	p := 0
	for p < len(a) && p < len(b) && a[p] == b[p] {
		p++
	}
	s := 0
	for s < len(a)-p && s < len(b)-p && a[len(a)-1-s] == b[len(b)-1-s] {
		s++
	}
	am, bm := a[p:len(a)-s], b[p:len(b)-s]
	ctx := max(p-3, 0)
	tail := a[len(a)-s : min(len(a)-s+3, len(a))]
	var sb strings.Builder
	fmt.Fprintf(&sb, "--- %s\n+++ %s (rendered)\n", name, name)
	fmt.Fprintf(&sb, "@@ -%s +%s @@\n", hunkRange(ctx, p-ctx+len(am)+len(tail)), hunkRange(ctx, p-ctx+len(bm)+len(tail)))
	for _, l := range a[ctx:p] {
		writeLine(&sb, " ", l)
	}
	if len(am)*len(bm) <= 4_000_000 {
		writeLCS(&sb, am, bm)
	} else {
		for _, l := range am {
			writeLine(&sb, "-", l)
		}
		for _, l := range bm {
			writeLine(&sb, "+", l)
		}
	}
	for _, l := range tail {
		writeLine(&sb, " ", l)
	}
	return sb.String()
}

// hunkRange is a hunk header's range of n lines after the first skip lines of a file: the
// first line's number, or the line before when n is 0, as diff -u writes it.
func hunkRange(skip, n int) string {
	if n == 0 {
		return fmt.Sprintf("%d,0", skip)
	}
	return fmt.Sprintf("%d,%d", skip+1, n)
}

// splitLines splits s after each newline: the last line of a file that does not end in one
// has none, so that it differs from the same text with its newline.
func splitLines(s string) []string {
	if s == "" {
		return nil
	}
	l := strings.SplitAfter(s, "\n")
	if l[len(l)-1] == "" {
		l = l[:len(l)-1]
	}
	return l
}

// writeLine writes one line of a hunk (l as splitLines gives it), and diff's mark after a last
// line without a newline.
func writeLine(sb *strings.Builder, prefix, l string) {
	sb.WriteString(prefix)
	sb.WriteString(l)
	if !strings.HasSuffix(l, "\n") {
		sb.WriteString("\n\\ No newline at end of file\n")
	}
}

func writeLCS(sb *strings.Builder, a, b []string) {
	n, m := len(a), len(b)
	t := make([][]int32, n+1)
	for i := range t {
		t[i] = make([]int32, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if a[i] == b[j] {
				t[i][j] = t[i+1][j+1] + 1
			} else {
				t[i][j] = max(t[i+1][j], t[i][j+1])
			}
		}
	}
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && a[i] == b[j]:
			writeLine(sb, " ", a[i])
			i++
			j++
		case i < n && (j == m || t[i+1][j] >= t[i][j+1]):
			writeLine(sb, "-", a[i])
			i++
		default:
			writeLine(sb, "+", b[j])
			j++
		}
	}
}
