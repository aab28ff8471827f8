package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
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

	last     *templates.Result // last successful render; nil before one
	lastData templates.Data    // the data it rendered from
	inPlace  bool              // the destination holds last's output
	err      error             // the last failure, if any
	revision int64             // revision the destination was last confirmed at
}

// name is how messages and logs name the template.
func (t *tmpl) name() string { return t.cfg.Destination }

// parseTemplate reads and parses one template entry.
func parseTemplate(tc *Template) (*templates.Template, error) {
	text := tc.Contents
	name := tc.Destination
	if tc.Source != "" {
		b, err := os.ReadFile(tc.Source)
		if err != nil {
			return nil, fmt.Errorf("%s: read source: %w", tc.where(), err)
		}
		text = string(b)
		name = tc.Source
	}
	t, err := templates.Parse(text, templates.Options{Name: name, LeftDelim: tc.LeftDelimiter, RightDelim: tc.RightDelimiter, AllowFile: tc.AllowFile})
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

	sorted *templates.Sorted // Keys in order, shared by every template rendered from the view
}

// data is what a's templates render from v.
func (v *view) data(a *Agent) templates.Data {
	if v.sorted == nil {
		v.sorted = templates.NewSorted(v.Keys)
	}
	return templates.Data{Appliance: a.cfg.Appliance, Instance: a.instance, Revision: v.Revision, Keys: v.Keys, Sorted: v.sorted}
}

// passResult is what one render pass did.
type passResult struct {
	rendered []string // destinations written
	failed   []string // "destination: error"
	commands int      // commands run
	cmdFail  int      // commands that failed
}

func (p passResult) ok() bool { return len(p.failed) == 0 }

// pendingCommand is a command to run after a pass, for the files it changed.
type pendingCommand struct {
	command  string
	timeout  time.Duration
	dests    []string
	revision int64
}

// renderPass renders sel from v. Without force, a template whose inputs did not change since
// its last successful render is skipped. Commands of changed templates run afterwards, each
// distinct command once, unless noCommands; so do the commands a previous run owed.
func (a *Agent) renderPass(ctx context.Context, v *view, sel []*tmpl, force, noCommands bool) passResult {
	var res passResult
	data := v.data(a)
	// The views the changed files were rendered from before: a command may print the old file
	// (a diff against the .bak), so the secrets it held are masked in the output too.
	var before []map[string]string
	beforeRevs := map[int64]bool{}
	var cmds []*pendingCommand
	byCmd := map[string]*pendingCommand{}
	queue := func(command string, timeout time.Duration, dests []string, rev int64) {
		p := byCmd[command]
		if p == nil {
			p = &pendingCommand{command: command}
			byCmd[command] = p
			cmds = append(cmds, p)
		}
		p.timeout, p.revision = max(p.timeout, timeout), max(p.revision, rev)
		for _, d := range dests {
			if !slices.Contains(p.dests, d) {
				p.dests = append(p.dests, d)
			}
		}
	}
	if !noCommands {
		for _, o := range a.owed {
			queue(o.Command, o.timeout(), o.Destinations, o.Revision)
		}
	}
	for _, t := range sel {
		if ctx.Err() != nil {
			// Stopping: leave the rest for the next start; commands of what changed still run.
			err := fmt.Errorf("render %s: interrupted by shutdown", t.name())
			t.inPlace, t.err = false, err
			res.failed = append(res.failed, err.Error())
			continue
		}
		if !force && t.inPlace && t.last != nil && !t.last.NeedsRender(t.lastData, data) {
			t.revision = v.Revision
			continue
		}
		if t.lastData.Keys != nil && t.lastData.Revision != v.Revision && !beforeRevs[t.lastData.Revision] {
			beforeRevs[t.lastData.Revision] = true
			before = append(before, t.lastData.Keys)
		}
		changed, err := a.renderOne(ctx, t, data)
		if err != nil {
			t.inPlace, t.err = false, err
			a.metrics.renderFailures.Add(1)
			res.failed = append(res.failed, err.Error())
			a.log.Error("template not installed", "template", t.name(), "revision", v.Revision, "error", err.Error())
			continue
		}
		t.inPlace, t.err, t.revision = true, nil, v.Revision
		if !changed {
			continue
		}
		res.rendered = append(res.rendered, t.name())
		a.metrics.renders.Add(1)
		if t.cfg.Command != "" {
			queue(t.cfg.Command, t.cfg.Timeout(), []string{t.name()}, v.Revision)
		}
	}
	for _, p := range cmds {
		if noCommands {
			a.log.Info("command skipped (--no-commands)", "command", p.command, "templates", p.dests)
			continue
		}
		env := []string{
			"SHOELACE_APPLIANCE=" + a.cfg.Appliance,
			"SHOELACE_INSTANCE=" + a.instance,
			"SHOELACE_REVISION=" + strconv.FormatInt(p.revision, 10),
			"SHOELACE_DESTINATIONS=" + strings.Join(p.dests, " "),
		}
		// A reload command started for a changed file finishes (within its timeout) even
		// when the agent is stopping: the file is already in place.
		r, err := RunCommand(context.WithoutCancel(ctx), p.command, p.timeout, env)
		res.commands++
		a.metrics.commands.Add(1)
		if err != nil {
			res.cmdFail++
			a.metrics.commandFailures.Add(1)
			a.log.Error("command failed", "command", p.command, "templates", p.dests, "error", err.Error(),
				"exit_code", r.ExitCode, "output", redactOutput(r, v.Keys, a.allSecret(), before...), "duration_ms", r.Duration.Milliseconds())
			continue
		}
		a.log.Info("command ran", "command", p.command, "templates", p.dests, "output", redactOutput(r, v.Keys, a.allSecret(), before...),
			"duration_ms", r.Duration.Milliseconds())
	}
	if !noCommands {
		// Every command owed is run (a failed one too: it is logged, not retried).
		a.paid()
	}
	return res
}

// renderOne renders t and installs it. It reports whether the destination changed.
func (a *Agent) renderOne(ctx context.Context, t *tmpl, data templates.Data) (bool, error) {
	r, err := t.t.Execute(data)
	if err != nil {
		return false, fmt.Errorf("render %s: %s", t.name(), redact(err.Error(), data.Keys, a.allSecret()))
	}
	opts := atomicfile.Options{Perm: t.cfg.Mode(), UID: t.cfg.UID(), GID: t.cfg.GID(), Backup: t.cfg.Backup}
	if t.cfg.Check != "" {
		opts.Check = func(staged string) error {
			// A check in progress finishes even when the agent is stopping (bounded by its
			// timeout), so that the render it belongs to completes instead of being cut short.
			cr, err := RunCommand(context.WithoutCancel(ctx), t.cfg.Check, t.cfg.Timeout(), []string{
				"SHOELACE_STAGED=" + staged,
				"SHOELACE_DESTINATION=" + t.cfg.Destination,
				"SHOELACE_APPLIANCE=" + a.cfg.Appliance,
				"SHOELACE_INSTANCE=" + a.instance,
				"SHOELACE_REVISION=" + strconv.FormatInt(data.Revision, 10),
			})
			if err != nil {
				out := cr.Output
				if r.Secret {
					out = "(hidden: the template reads secrets)"
				}
				return fmt.Errorf("%q %w: %s", t.cfg.Check, err, redact(out, data.Keys, a.allSecret()))
			}
			return nil
		}
	}
	if err := a.cfg.checkAllowed(t.cfg.Destination); err != nil {
		return false, fmt.Errorf("install %s: %w; old file kept", t.name(), err)
	}
	if len(a.cfg.AllowedDirs) > 0 {
		// Again on the path the install really replaces, resolved by the install itself: no
		// link is left on it to follow (one at the .bak name is replaced by the rename).
		opts.Allowed = a.cfg.checkReal
	}
	if err := ensureDir(filepath.Dir(t.cfg.Destination)); err != nil {
		return false, fmt.Errorf("install %s: %w", t.name(), err)
	}
	if a.recordOwed && t.cfg.Command != "" {
		opts.BeforeRename = func() error {
			a.owe(t, data.Revision)
			return nil
		}
	}
	changed, err := installFile(t.cfg.Destination, r.Output, opts)
	var se *atomicfile.SyncDirError
	if errors.As(err, &se) {
		// Renamed into place: readers see it, so it is installed and its command runs. Only a
		// crash could still bring the old file back, and the next start renders it again.
		a.log.Warn("installed, but its directory was not fsynced", "template", t.name(), "error", err.Error())
		changed, err = true, nil
	}
	if err != nil {
		var ce *atomicfile.CheckError
		if errors.As(err, &ce) {
			a.metrics.checkFailures.Add(1)
			return false, fmt.Errorf("check of %s failed, old file kept: %w", t.name(), ce.Err)
		}
		return false, fmt.Errorf("install %s: %w", t.name(), err)
	}
	t.last, t.lastData = r, data
	if changed {
		a.log.Info("rendered", "template", t.name(), "revision", data.Revision, "bytes", len(r.Output), "keys", len(r.Keys))
	}
	return changed, nil
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
func secretsIn(all bool, keys map[string]string, more ...map[string]string) []string {
	var out []string
	add := func(s string) {
		if len(s) >= redactMin && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	for _, m := range append([]map[string]string{keys}, more...) {
		for k, v := range m {
			if !all && !api.IsSecret(k) {
				continue
			}
			add(v)
			add(strings.TrimSpace(v))
			if q := strconv.Quote(v); len(q) != len(v)+2 {
				add(q[1 : len(q)-1]) // as an error message quotes it
			}
			if strings.Contains(v, "\n") {
				for _, line := range strings.Split(v, "\n") {
					add(strings.TrimSpace(line))
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b string) int { return len(b) - len(a) })
	return out
}

// allSecret reports whether every key of the agent's view is a secret: an appliance named
// "secrets" has a secrets segment in every key's whole path (appliances/secrets/…).
func (a *Agent) allSecret() bool { return api.IsSecret(api.ApplianceRoot(a.cfg.Appliance)) }

// redact replaces the values of secret keys found in s (an error message, a command's
// output) with [redacted], so that logs never carry them.
func redact(s string, keys map[string]string, all bool) string {
	for _, v := range secretsIn(all, keys) {
		s = strings.ReplaceAll(s, v, redactMask)
	}
	return s
}

// redactOutput is redact of a command's output, masking the secrets of keys and of the earlier
// views in before. When the output was cut at maxOutputBytes, the start of a secret that the
// cut split is masked too.
func redactOutput(r CommandResult, keys map[string]string, all bool, before ...map[string]string) string {
	secrets := secretsIn(all, keys, before...)
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
	for _, v := range secrets {
		out = strings.ReplaceAll(out, v, redactMask)
	}
	return out + tail
}

// installFile is atomicfile.Write; tests replace it to inject a fault at one step.
var installFile = atomicfile.Write

// ensureDir creates a destination's missing parent directories, mode 0755.
func ensureDir(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create directory: %w", err)
	}
	return nil
}

// logPass logs a summary of a pass when something happened.
func (a *Agent) logPass(v *view, res passResult, took time.Duration) {
	if len(res.rendered) == 0 && len(res.failed) == 0 && res.commands == 0 {
		a.log.Debug("nothing changed", "revision", v.Revision)
		return
	}
	lvl := slog.LevelInfo
	if !res.ok() {
		lvl = slog.LevelError
	}
	a.log.Log(context.Background(), lvl, "sync", "revision", v.Revision, "store", v.Store, "from_cache", v.FromCache,
		"rendered", len(res.rendered), "failed", len(res.failed), "commands", res.commands, "commands_failed", res.cmdFail,
		"took_ms", took.Milliseconds())
}
