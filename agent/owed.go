package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/shoelace-dev/shoelace/internal/atomicfile"
)

// A command is owed from the moment its file is about to be renamed into place until it has
// run, and its group's health checks with it (a group without a command owes them alone). `run` records what it owes in cache_dir (fsynced) right before the rename and clears
// the record once the pass's commands ran, so that an agent killed in between runs them at
// its next start: a command runs at least once for every change of its files.
//
// With the reload goes what the install replaced (Previous, a group whose on_command_failure
// is rollback, outside a rollout, whose candidate record keeps its own): written and fsynced
// with the record before the rename, and gone with it once the reload ran, so that an owed
// reload that fails at the next start puts the previous files back and runs the command
// again, as a failed reload does in the run that installed them. As the candidate's record,
// it keeps the SHA-256s of what was installed: the restore puts a file back only while it
// holds one of them (not when the kill came before the rename, nor over an operator's edit).
//
// What a rollback puts back is the last file known good: the one whose reload succeeded, or
// the file before the agent first wrote it, never one whose reload never completed, however
// many runs were killed in their reload. An install over a file that holds what an owed
// reload's install put there (a restarted run's, the view changed while the agent was down)
// keeps that install's previous file in the record, adding the fingerprint of what it installs
// (pass.previousOf, owedGood), and a failed reload of it in this run goes back to that file
// too; an install over anything else records what it replaces. The record is still written
// once, fsynced, before the rename. A rollout's candidate installed over such a file has that
// file in its own record, the candidate's undo (a failed reload of it, the halt), and goes back
// to it as well; when the killed run's install created the file, to the killed run's file. A run
// killed before the candidate's rename leaves the killed run's file: the halt finds there what
// the candidate was to replace (pass.neverInstalled), not an edit, and leaves it to the reload
// still owed.

// owedCommand is one command owed for installed files.
type owedCommand struct {
	Command      string   `json:"command"`
	TimeoutMS    int64    `json:"timeout_ms"`
	Destinations []string `json:"destinations"`
	Revision     int64    `json:"revision"`
	// Previous is what the install replaced at each destination, for the rollback of a failed
	// owed reload (Rollout unused); none with on_command_failure keep.
	Previous []candidateEntry `json:"previous,omitempty"`
}

type owedRecord struct {
	Appliance string        `json:"appliance"`
	Commands  []owedCommand `json:"commands"`
}

// OwedPath is the file holding the commands owed for appliance's installed files.
func OwedPath(cacheDir, appliance string) string {
	return filepath.Join(cacheDir, appliance+".owed.json")
}

// saveOwed records cmds durably (mode 0600); none removes the record. The removal is not
// fsynced: a crash right after it may run the commands once more, never lose one.
func saveOwed(cacheDir, appliance string, cmds []owedCommand) error {
	return saveRecord(cacheDir, OwedPath(cacheDir, appliance), "owed commands", owedRecord{Appliance: appliance, Commands: cmds}, len(cmds) > 0)
}

// loadOwed reads the commands a previous run owed; none when there is no record.
func loadOwed(cacheDir, appliance string) ([]owedCommand, error) {
	var r owedRecord
	if err := loadRecord(OwedPath(cacheDir, appliance), maxCacheBytes, "owed commands", appliance, &r); err != nil {
		return nil, err
	}
	return r.Commands, nil
}

func (r *owedRecord) owner() string { return r.Appliance }

// saveRecord writes rec as JSON at path, a record of the agent's own in cacheDir, durably
// (mode 0600, fsynced); with keep false it removes it instead (not fsynced). what names the
// record in errors.
func saveRecord(cacheDir, path, what string, rec any, keep bool) error {
	if !keep {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("clear %s: %w", what, err)
		}
		return nil
	}
	if err := mkdirPrivate(cacheDir); err != nil {
		return fmt.Errorf("cache dir: %w", err)
	}
	data, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encode %s: %w", what, err)
	}
	if _, err := atomicfile.Write(path, data, ownFile(false)); err != nil {
		return fmt.Errorf("record %s: %w", what, err)
	}
	return nil
}

// loadRecord reads the record at path (the agent's own regular file, as the cached view, of at
// most limit bytes) into rec, which must be appliance's; rec is left empty when there is none.
func loadRecord(path string, limit int64, what, appliance string, rec interface{ owner() string }) error {
	data, err := readOwnFileMax(path, limit)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, rec); err != nil {
		return fmt.Errorf("%s %s: %w", what, path, err)
	}
	if rec.owner() != appliance {
		return fmt.Errorf("%s %s are appliance %q's, not %q", what, path, rec.owner(), appliance)
	}
	return nil
}

// loadOwedAtStart takes over what a previous run owed. Only commands that a configured
// template still has are kept: the record is not a way to have the agent run anything else.
func (a *Agent) loadOwedAtStart() {
	owed, err := loadOwed(a.cfg.cacheDir(), a.cfg.Appliance)
	if err != nil {
		// What the last run owed is not known (a record truncated, filled with garbage, or not
		// the agent's): every reload is owed, so that none is lost, as a record removed and
		// not fsynced may run one once more. The record is cleared once they ran.
		a.owed = a.everyReload()
		a.log.Error("owed commands unreadable: every template's command and health checks are owed instead, and run once now",
			"error", err.Error(), "commands", len(a.owed))
		return
	}
	for _, o := range owed {
		if o.Command == "" {
			// The health checks of a group without a command: a template of the files still has one.
			if !slices.ContainsFunc(a.tmpls, func(t *tmpl) bool {
				return t.cfg.Command == "" && t.cfg.Health != "" && slices.Contains(o.Destinations, t.name())
			}) {
				a.log.Warn("owed health checks dropped: no template of their files has one any more", "templates", o.Destinations)
				continue
			}
			a.log.Warn("health checks owed by the last run: its files were installed but they did not pass", "templates", o.Destinations,
				"revision", o.Revision)
			a.owed = append(a.owed, o)
			continue
		}
		if !slices.ContainsFunc(a.tmpls, func(t *tmpl) bool { return t.cfg.Command == o.Command }) {
			a.log.Warn("owed command dropped: no template has it any more", "command", o.Command, "templates", o.Destinations)
			continue
		}
		a.log.Warn("command owed by the last run: its files were installed but it did not run", "command", o.Command,
			"templates", o.Destinations, "revision", o.Revision)
		a.owed = append(a.owed, o)
	}
}

// everyReload is a reload owed for each group of the configured templates that has one (its
// command, or its health checks alone), at no known revision (0: the pass's that runs it).
func (a *Agent) everyReload() []owedCommand {
	var out []owedCommand
	for _, g := range groupsOf(a.tmpls) {
		if g.reloads() {
			out = append(out, owedCommand{Command: g.command, TimeoutMS: maxTimeout(g).Milliseconds(), Destinations: g.dests()})
		}
	}
	return out
}

// removeLeftovers removes the temp files that a killed run left next to the destinations (a
// file staged while its check or its group's command ran, a backup's temp): they would stay for
// good, and a service that reads every file of its directory would read them. Only files
// older than before (this run's start) go: another process's install in progress stays. So do
// those of the agent's own files in cache_dir, which hold the view's secrets or a token.
func (a *Agent) removeLeftovers(before time.Time) {
	done := map[string]bool{}
	for _, t := range a.tmpls {
		dest := t.cfg.Destination
		if done[dest] {
			continue
		}
		done[dest] = true
		removed, err := atomicfile.RemoveLeftovers(dest, before)
		if len(removed) > 0 {
			a.log.Warn("removed temp files a killed run left", "template", dest, "files", removed)
		}
		if err != nil {
			a.log.Warn("temp files a killed run left not removed", "template", dest, "error", err.Error())
		}
	}
	dir, app := a.cfg.cacheDir(), a.cfg.Appliance
	for _, own := range []string{CachePath(dir, app), StatusPath(dir, app), OwedPath(dir, app), CandidatePath(dir, app), InstanceTokenPath(dir, app), EnrollKeyPath(dir, app)} {
		removed, err := atomicfile.RemoveLeftovers(own, before)
		if len(removed) > 0 {
			a.log.Warn("removed temp files a killed run left", "file", own, "files", removed)
		}
		if err != nil {
			a.log.Warn("temp files a killed run left not removed", "file", own, "error", err.Error())
		}
	}
}

// owe records, before the files dests are renamed into place at revision rev, that command is
// owed for them, and what they replace (prev, by destination). On a reload owed already, an
// entry of prev replaces the one of its destination: the caller (pass.previousOf) gives the
// one the record keeps, with the new fingerprint, when the file replaced holds what an install
// owed for installed (its reload never completed), and what the file holds otherwise. The
// record is written once (fsynced), before the rename. A record that cannot be written is
// logged, not fatal: the install goes on.
func (a *Agent) owe(command string, timeout time.Duration, dests []string, rev int64, prev []candidateEntry) {
	ms := timeout.Milliseconds()
	i := slices.IndexFunc(a.owed, func(o owedCommand) bool { return o.owedBy(command, dests) })
	if i < 0 {
		a.owed = append(a.owed, owedCommand{Command: command, TimeoutMS: ms, Destinations: slices.Clone(dests), Revision: rev, Previous: prev})
	} else {
		o := &a.owed[i]
		merged := mergePrevious(o.Previous, prev)
		if o.Revision == rev && o.TimeoutMS >= ms && !slices.ContainsFunc(dests, func(d string) bool { return !slices.Contains(o.Destinations, d) }) &&
			samePrevious(o.Previous, merged) {
			return
		}
		o.Revision, o.TimeoutMS, o.Previous = max(o.Revision, rev), max(o.TimeoutMS, ms), merged
		for _, d := range dests {
			if !slices.Contains(o.Destinations, d) {
				o.Destinations = append(o.Destinations, d)
			}
		}
	}
	if err := saveOwed(a.cfg.cacheDir(), a.cfg.Appliance, a.owed); err != nil {
		a.log.Warn("owed command not recorded: if the agent stops before it runs, it will not run", "command", command, "error", err.Error())
	}
}

// mergePrevious is old with each entry of prev in place of the one of its destination (a new
// slice: old, which owedCopy may share, is left as it is).
func mergePrevious(old, prev []candidateEntry) []candidateEntry {
	if len(prev) == 0 {
		return old
	}
	out := make([]candidateEntry, 0, len(old)+len(prev))
	for _, o := range old {
		if !slices.ContainsFunc(prev, func(e candidateEntry) bool { return e.Destination == o.Destination }) {
			out = append(out, o)
		}
	}
	return append(out, prev...)
}

// samePrevious says whether x and y keep the same files with the same fingerprints.
func samePrevious(x, y []candidateEntry) bool {
	if len(x) != len(y) {
		return false
	}
	for i := range x {
		a, b := &x[i], &y[i]
		if a.Destination != b.Destination || a.Path != b.Path || a.Existed != b.Existed || a.Mode != b.Mode || a.UID != b.UID ||
			a.GID != b.GID || !bytes.Equal(a.Data, b.Data) || !slices.Equal(a.Installed, b.Installed) {
			return false
		}
	}
	return true
}

// owedCopy is a copy of what is owed, for unowe.
func (a *Agent) owedCopy() []owedCommand {
	out := make([]owedCommand, len(a.owed))
	for i, o := range a.owed {
		o.Destinations = slices.Clone(o.Destinations)
		out[i] = o
	}
	return out
}

// unowe goes back to before, what was owed (owedCopy) before an install that then changed no
// file (it failed, and what it had renamed was put back): its command is not owed, and a
// reload of files that did not change would reload the service for nothing (at each try again
// of the install).
func (a *Agent) unowe(before []owedCommand) {
	if slices.EqualFunc(before, a.owed, func(x, y owedCommand) bool {
		return x.Command == y.Command && x.TimeoutMS == y.TimeoutMS && x.Revision == y.Revision && slices.Equal(x.Destinations, y.Destinations) &&
			samePrevious(x.Previous, y.Previous)
	}) {
		return
	}
	a.owed = before
	if err := saveOwed(a.cfg.cacheDir(), a.cfg.Appliance, a.owed); err != nil {
		a.log.Warn("owed command not cleared: it may run at the next start for files that did not change", "error", err.Error())
	}
}

// paid clears the record once every owed command ran.
func (a *Agent) paid() {
	if len(a.owed) == 0 {
		return
	}
	a.owed = nil
	if err := saveOwed(a.cfg.cacheDir(), a.cfg.Appliance, nil); err != nil {
		a.log.Warn("owed commands not cleared: they may run once more at the next start", "error", err.Error())
	}
}

// owedBy says whether o is the reload owed for a group of command (of files dests): the one of
// that command, or, without one (the group's health checks alone), the one owed for its files.
func (o owedCommand) owedBy(command string, dests []string) bool {
	if command != "" || o.Command != "" {
		return o.Command == command
	}
	return slices.ContainsFunc(dests, func(d string) bool { return slices.Contains(o.Destinations, d) })
}

// previous is the entry of o.Previous for destination dest; nil when there is none.
func (o *owedCommand) previous(dest string) *candidateEntry {
	for i := range o.Previous {
		if o.Previous[i].Destination == dest {
			return &o.Previous[i]
		}
	}
	return nil
}

// undo is e as the undo of a candidate's file: what the file held, and what was installed.
func (e *candidateEntry) undo() *candidateFile {
	return &candidateFile{prev: atomicfile.NewPrevious(e.Path, e.Existed, e.Data, os.FileMode(e.Mode), e.UID, e.GID), sums: e.Installed}
}

// timeout is the timeout the command was owed with.
func (o owedCommand) timeout() time.Duration { return time.Duration(o.TimeoutMS) * time.Millisecond }
