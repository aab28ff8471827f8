package agent

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/atomicfile"
	"github.com/shoelace-dev/shoelace/templates"
)

// tmpl is one configured template, parsed, with what its last render read.
type tmpl struct {
	cfg *Template
	t   *templates.Template
	// allowed is its config's checkInstall, bound once here: a method value made at each
	// install would be allocated at each one.
	allowed func(resolved string) error

	last     *templates.Result // last successful render; nil before one
	lastData templates.Data    // the view last rendered from, or found to render the same (pass.unchanged)
	inPlace  bool              // the destination holds last's output
	err      error             // the last failure, if any
	revision int64             // revision the destination was last confirmed at
	stage    string            // where err happened: api.StageRender, StageCheck, StageCommand, StageHealth
	// failedReads are the local files that its last render read before it failed (a file not
	// there yet): run watches them as it watches last's (readFiles).
	failedReads []string
	// retry says that err is the file system's refusal of a rendered file (a full disk): the
	// loop tries the install again after a pause (loop.retryInstalls).
	retry bool
	// failed remembers the inputs whose reload failed: they are not tried again until the
	// group's inputs change, its source is edited or the config is reloaded.
	failed *reloadFailure
	// failedAt orders err among the failures of the agent's passes: the report names the
	// first failure of the last pass, not the first template (in config order) that failed,
	// which may have failed only because another of its group did.
	failedAt uint64
	// disk is the destination as the agent left it holding last's output, stamped right after
	// the install or before the comparison that found it so: while an lstat of the destination
	// gives the same Stamp, the file is taken to hold it still. The zero Stamp: not known (the
	// next pass reads the file).
	disk atomicfile.Stamp
	// cand is what the install of a rollout's candidate replaced at the destination, kept
	// while the file may hold the candidate's content: a view of no rollout (or of another)
	// that cannot render the template puts it back (pass.undoCandidate).
	cand *candidateFile
}

// candidateFile is what the first install of a rollout's candidate replaced at a destination.
type candidateFile struct {
	rollout string
	prev    *atomicfile.Previous
	// sums are the SHA-256s (hex) of what the rollout's candidate installed at the destination,
	// newest last (candidateSum): the undo puts prev back only over one of them, never over an
	// operator's edit. None: not known (a record of an agent before them), undone as it is.
	sums []string
	// unrecorded says that prev is not in cache_dir's record (candidate.go): too large.
	unrecorded bool
}

// name is how messages and logs name the template.
func (t *tmpl) name() string { return t.cfg.Destination }

// installOptions are the mode and owner t's file is installed with.
func (t *tmpl) installOptions() atomicfile.Options {
	return atomicfile.Options{Perm: t.cfg.Mode(), UID: t.cfg.UID(), GID: t.cfg.GID()}
}

// parseTemplate reads and parses one template entry.
func parseTemplate(tc *Template) (*templates.Template, error) {
	text := tc.Contents
	name := tc.Destination
	if tc.Source != "" {
		// A source larger than what a render may write is a file named by mistake (a log, an
		// image), not a template: it is not read into memory.
		// What it holds is written as the agent (root as a rule): judged as the config is.
		b, err := atomicfile.ReadInputCheck(tc.Source, templates.DefaultMaxOutputBytes, commandFileCheck(tc.Source, tc.judge))
		var tooLarge *atomicfile.TooLargeError
		if errors.As(err, &tooLarge) {
			return nil, fmt.Errorf("%s: source %s is over %d bytes (64 MiB), the most a render may write", tc.where(), tc.Source, templates.DefaultMaxOutputBytes)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: read source: %w", tc.where(), err)
		}
		text = string(b)
		name = tc.Source
		if tc.Functions == templates.ModeConfd {
			// confd names a resource's template by its file's name (template.New(filepath.Base(src))):
			// a template that executes itself by that name ({{template "r.tmpl" .}}) works, and
			// errors name it so. Where the template comes from is in tc.where().
			name = filepath.Base(tc.Source)
		}
	}
	t, err := templates.Parse(text, templates.Options{Name: name, LeftDelim: tc.LeftDelimiter, RightDelim: tc.RightDelimiter, AllowFile: tc.AllowFile, DenyFiles: tc.denyFiles,
		Functions: tc.Functions, ErrorOnMissingKey: tc.ErrorOnMissingKey, Prefix: tc.Prefix, ConfdKeys: tc.Keys, ConfdPrefixes: tc.confdPrefixes, FunctionDenylist: tc.FunctionDenylist})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", tc.where(), err)
	}
	return t, nil
}

// view is one view of the appliance the agent renders from.
type view struct {
	Store     string
	Revision  int64
	Keys      map[string]string
	FromCache bool
	Rollout   string // the rollout whose candidate the view is ("" for the live view)

	sorted *templates.Sorted // Keys in order, shared by every template rendered from the view
}

// data is what a's templates render from v.
func (v *view) data(a *Agent) templates.Data {
	if v.sorted == nil {
		v.sorted = templates.NewSorted(v.Keys)
	}
	return templates.Data{Appliance: a.cfg.Appliance, Instance: a.instance, Revision: v.Revision, Keys: v.Keys, Sorted: v.sorted}
}

// redactMin is the length from which a secret value (or a line of one) is masked in logs:
// shorter ones would mask common words everywhere.
const redactMin = 4

// redactMask replaces a secret value in what the agent logs.
const redactMask = "[redacted]"

// secretsIn lists what to mask of the secret keys' values: each value, the value without the
// white space around it (output trimmed of its last newline still holds it), the value as %q
// quotes it, and each line of a multi-line value (a check that quotes one line of a key file);
// longest first, so that a value holding another is masked whole. more are earlier views.
// Encoded forms are added: the value as template functions most often change it before an error
// quotes it (`parsing "DBUSER:SUP3RS3CRETPW"`): upper- and lower-cased, base64 and hex.
// whole holds every form, to mask wherever found; exact the exact forms, and encoded the
// others, whose parts an error may quote too (see redact).
func secretsIn(all bool, keys map[string]string, more ...map[string]string) (whole, exact, encoded []string) {
	seen := map[*[]string]map[string]bool{&exact: {}, &encoded: {}} // a map: thousands of secrets were a quadratic search
	add := func(to *[]string, s string) {
		if len(s) >= redactMin && !seen[to][s] {
			seen[to][s] = true
			*to = append(*to, s)
		}
	}
	for _, m := range append([]map[string]string{keys}, more...) {
		for k, v := range m {
			if !all && !api.IsSecret(k) {
				continue
			}
			t := strings.TrimSpace(v)
			add(&exact, v)
			add(&exact, t)
			if q := strconv.Quote(v); len(q) != len(v)+2 {
				add(&exact, q[1:len(q)-1]) // as an error message quotes it
			}
			if strings.Contains(v, "\n") {
				for _, line := range strings.Split(v, "\n") {
					add(&exact, strings.TrimSpace(line))
				}
			}
			if len(t) < redactMin {
				continue
			}
			for _, e := range []string{strings.ToUpper(t), strings.ToLower(t),
				base64.StdEncoding.EncodeToString([]byte(t)), base64.URLEncoding.EncodeToString([]byte(t)),
				base64.RawStdEncoding.EncodeToString([]byte(t)), hex.EncodeToString([]byte(t))} {
				add(&encoded, e)
			}
		}
	}
	longestFirst := func(a, b string) int { return len(b) - len(a) }
	whole = append(slices.Clone(exact), encoded...)
	slices.SortFunc(whole, longestFirst)
	return whole, exact, encoded
}

// encodedPartMin is the length from which a quoted part of an encoded form of a secret is
// masked: a lower-cased key file holds words ("private", "begin") that errors quote.
const encodedPartMin = 8

// allSecret reports whether every key of the agent's view is a secret: an appliance named
// "secrets" has a secrets segment in every key's whole path (appliances/secrets/…).
func (a *Agent) allSecret() bool { return api.IsSecret(api.ApplianceRoot(a.cfg.Appliance)) }

// redact replaces the values of secret keys found in s (an error message, a command's
// output) with [redacted], so that logs never carry them.
func redact(s string, keys map[string]string, all bool) string {
	whole, exact, encoded := secretsIn(all, keys)
	if len(whole) == 0 {
		return s
	}
	s = maskAll(s, whole)
	// A part of a secret (a field split out of it, its start), or of one of its encoded forms,
	// that an error quotes as the input it refused: `invalid key "admin:Hunter2Pa"`.
	partOf := func(u string, forms []string) bool {
		for _, v := range forms {
			if strings.Contains(v, u) {
				return true
			}
		}
		return false
	}
	return quotedRE.ReplaceAllStringFunc(s, func(q string) string {
		if u, err := strconv.Unquote(q); err == nil && len(u) >= redactMin &&
			(partOf(u, exact) || len(u) >= encodedPartMin && partOf(u, encoded)) {
			return `"` + redactMask + `"`
		}
		return q
	})
}

// quotedRE finds a string as %q quotes it.
var quotedRE = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)

// redactOutput is redact of a command's output, masking the secrets of keys and of the earlier
// views in before. When the output was cut at maxOutputBytes, the start of a secret that the
// cut split is masked too.
func redactOutput(r CommandResult, keys map[string]string, all bool, before ...map[string]string) string {
	secrets, _, _ := secretsIn(all, keys, before...)
	out, tail := r.Output, ""
	if i := strings.LastIndex(out, cutNotePrefix); r.Dropped > 0 && i >= 0 {
		out, tail = out[:i], out[i:]
		// The longest end of what was kept that starts a secret, before any whole one is
		// masked (which could leave the rest of that start).
		cut := 0
		for _, v := range secrets {
			for n := min(len(v)-1, len(out)); n > cut; n-- {
				if strings.HasSuffix(out, v[:n]) {
					cut = n
					break
				}
			}
		}
		if cut > 0 {
			out, tail = out[:len(out)-cut], redactMask+tail
		}
	}
	return maskAll(out, secrets) + tail
}

// maskAll replaces in s each of forms (at least redactMin bytes each, longest first) with
// redactMask, in one pass: the union of every place a form is found, overlapping ones masked as
// one (a form's end is masked too where another form began inside it). A ReplaceAll per form
// took seconds on a command's output when an appliance held thousands of secrets (each with
// its encoded forms).
func maskAll(s string, forms []string) string {
	if len(forms) == 0 || len(s) < redactMin {
		return s
	}
	byStart := make(map[string][]string, len(forms)) // by their first redactMin bytes, longest first
	for _, f := range forms {
		byStart[f[:redactMin]] = append(byStart[f[:redactMin]], f)
	}
	var b strings.Builder
	last, from, to := 0, -1, 0 // s[last:] is not yet written; s[from:to] is to mask
	for i := 0; i+redactMin <= len(s); i++ {
		for _, f := range byStart[s[i:i+redactMin]] {
			if strings.HasPrefix(s[i:], f) {
				if from < 0 || i > to {
					if from >= 0 {
						b.WriteString(s[last:from])
						b.WriteString(redactMask)
						last = to
					}
					from = i
				}
				to = max(to, i+len(f))
				break
			}
		}
	}
	if from < 0 {
		return s
	}
	b.WriteString(s[last:from])
	b.WriteString(redactMask)
	b.WriteString(s[to:])
	return b.String()
}

// installStaged is Staged.Install; tests replace it to inject a fault at one step.
var installStaged = (*atomicfile.Staged).Install

// destDir makes sure the destination's directory is there: it creates the missing directories
// (ensureDir), but for a resource of confd_dir, whose directory confd v0.16.0 never made (its
// staged file is created in it, and a missing one fails the resource): there a missing
// directory fails the install, as it failed confd's, so that a mistyped dest is not installed
// into a new directory while the service reads the old file.
func (t *Template) destDir() error {
	dir := filepath.Dir(t.Destination)
	if t.confdDir == "" {
		return ensureDir(dir)
	}
	if _, err := os.Stat(dir); err != nil {
		return fmt.Errorf("the directory of dest: %w (confd makes no directory either: create it, or correct dest in %s:%d)", err, t.File, t.Line)
	}
	return nil
}

// confdDirMissing reports whether t is a resource of confd_dir whose destination's directory
// does not exist: its install fails (destDir), and validate and render --dry say so.
func (t *Template) confdDirMissing() bool {
	if t.confdDir == "" {
		return false
	}
	_, err := os.Stat(filepath.Dir(t.Destination))
	return errors.Is(err, fs.ErrNotExist)
}

// ensureDir creates a destination's missing parent directories, mode 0755, following only the
// symbolic links an install follows (not another user's).
func ensureDir(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	if err := atomicfile.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create directory: %w", err)
	}
	return nil
}

// RenderStats is what one render pass did and cost.
type RenderStats struct {
	Executed int // templates executed: those whose inputs changed
	Rendered int // files installed: those whose output changed
	Failed   int // templates not in place
	// Render is the time spent deciding which templates to render and executing them; Write
	// the time spent staging their files (temp file, fsync, check) and installing them
	// (rename, directory fsync).
	Render, Write time.Duration
}

// RenderView renders the agent's templates from keys at revision rev as Run renders each view
// its long-poll brings: only the templates whose inputs changed since their last render (all
// of them the first time), their files installed, no command run. It says what the pass did
// and cost. Benchmarks of the render path call it (tests/bench); the agent does not.
func (a *Agent) RenderView(ctx context.Context, rev int64, keys map[string]string) RenderStats {
	res := a.renderPass(ctx, &view{Revision: rev, Keys: keys}, a.tmpls, false, true)
	return RenderStats{Executed: res.executed, Rendered: len(res.rendered), Failed: len(res.failures), Render: res.render, Write: res.write}
}
