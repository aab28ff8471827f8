package agent

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/atomicfile"
	"github.com/shoelace-dev/shoelace/templates"
)

// A pass renders the selected templates from one view as transactions, one per group: the
// templates that share a command (a template without one is a group of its own).
//
//  1. stage:   each template of the group whose inputs changed is rendered, written to a temp
//              file and checked. Any failure discards every staged file of the group.
//  2. install: the group's command is recorded as owed, then every staged file is renamed
//              into place (an install that fails puts back the ones renamed before it).
//  3. reload:  once every group is installed, each group that changed runs its command once,
//              then its health commands.
//  4. undo:    a failed reload puts the group's previous files back (on_command_failure:
//              rollback, when one of them existed) and runs the command again. Its inputs are
//              remembered and not tried again until they change (no flapping).
//
// Then the commands a killed run owed, that no group ran, run.

// failure is why a template of a pass is not in place, or was installed but not reloaded.
type failure struct {
	template string
	stage    string // api.StageRender, StageCheck, StageCommand, StageHealth
	err      error
	inPlace  bool // the new file stays (on_command_failure: keep, or a first install)
	retry    bool // the install failed, not the render or the check: tried again on a timer
}

func (f failure) String() string { return f.err.Error() }

// reloadFailure is a failed reload of a template's inputs.
type reloadFailure struct {
	result *templates.Result
	data   templates.Data
	failure
}

// passResult is what one pass did.
type passResult struct {
	rendered []string  // destinations written
	failures []failure // in the order they happened
	commands int       // commands run
	cmdFail  int       // commands that failed
	// executed counts the templates executed; render is the time spent deciding which to
	// render and executing them, write the time spent staging and installing their files.
	executed      int
	render, write time.Duration
	// leftCandidate: a file that held the candidate of another rollout than the view's holds
	// it no more (undone, or the view's install over it): that candidate is not what is applied.
	leftCandidate bool
}

func (p passResult) ok() bool { return len(p.failures) == 0 }

// failed lists the failures' messages.
func (p passResult) failed() []string {
	out := make([]string, len(p.failures))
	for i, f := range p.failures {
		out[i] = f.String()
	}
	return out
}

// group is one transaction of a pass.
type group struct {
	command string
	tmpls   []*tmpl   // the group's templates among those selected, in config order
	members []*member // those rendered in this pass
	// undone are the destinations whose rollout's candidate file the pass put back
	// (undoCandidate): the command runs for them.
	undone []string
}

// member is a template of a group rendered in this pass.
type member struct {
	t      *tmpl
	r      *templates.Result
	staged *atomicfile.Staged   // nil: the file holds r already
	prev   *atomicfile.Previous // what the install replaced, once installed
	// good, set before the install, is what a failed reload puts back instead of what the
	// install replaces: the last file known good, when that is a file whose reload a killed run
	// never completed (owedGood).
	good  *atomicfile.Previous
	err   error
	stage string
	retry bool // err is the install's, not the render's or the check's
	// stamp is the destination holding r: stamped before Stage found it so, or right after
	// the install (tmpl.disk). Zero: not known.
	stamp atomicfile.Stamp
	// drift says how its file changed on disk since the agent left it ("edited", "deleted"),
	// when that, not its inputs, is why it is rendered in this pass.
	drift string
}

// installed lists the members whose file the pass replaced.
func (g *group) installed() []*member {
	var out []*member
	for _, m := range g.members {
		if m.prev != nil {
			out = append(out, m)
		}
	}
	return out
}

func (g *group) names() []string {
	var out []string
	for _, m := range g.installed() {
		out = append(out, m.t.name())
	}
	return out
}

// reloads says whether an install of g's files is followed by a reload: its command, or the
// health checks of its templates.
func (g *group) reloads() bool {
	return g.command != "" || slices.ContainsFunc(g.tmpls, func(t *tmpl) bool { return t.cfg.Health != "" })
}

// dests are the destinations of g's templates, installed in this pass or not.
func (g *group) dests() []string {
	out := make([]string, len(g.tmpls))
	for i, t := range g.tmpls {
		out[i] = t.name()
	}
	return out
}

// policy is the group's on_command_failure (Validate made its templates agree).
func (g *group) policy() string { return g.tmpls[0].cfg.OnFailure() }

// groupsOf splits sel into groups, in the order of their first template.
func groupsOf(sel []*tmpl) []*group {
	var out []*group
	byCmd := map[string]*group{}
	for _, t := range sel {
		if c := t.cfg.Command; c != "" {
			if g := byCmd[c]; g != nil {
				g.tmpls = append(g.tmpls, t)
				continue
			}
			byCmd[c] = &group{command: c}
			out = append(out, byCmd[c])
			byCmd[c].tmpls = append(byCmd[c].tmpls, t)
			continue
		}
		out = append(out, &group{tmpls: []*tmpl{t}})
	}
	return out
}

// pass is the state of one renderPass.
type pass struct {
	a          *Agent
	v          *view
	data       templates.Data
	force      bool
	noCommands bool
	res        passResult
	// before are the views the changed files were rendered from: a command may print the old
	// file (a diff against the .bak), so the secrets it held are masked in its output too.
	before     []map[string]string
	beforeRevs map[int64]bool
	// ranOwed are the owed reloads (indexes in a.owed) that a group ran in this pass.
	ranOwed map[int]bool
	// diffs are the keys that changed since each earlier view a template was rendered from:
	// most templates were rendered from the same one, and comparing two views costs their
	// size, so each pair is compared once.
	diffs []viewDiff
}

// viewDiff is templates.Diff(old, the pass's view).
type viewDiff struct {
	old     map[string]string
	changed []string
}

// changedSince returns the keys that differ between old and the pass's view, sorted.
func (p *pass) changedSince(old templates.Data) []string {
	for _, d := range p.diffs {
		if templates.SameKeys(d.old, old.Keys) {
			return d.changed
		}
	}
	c := templates.Diff(old.Keys, p.data.Keys)
	if len(p.diffs) == 0 && p.res.executed == 0 && !templates.SameKeys(old.Keys, p.data.Keys) {
		// The view's names in order, for the listings, follow from old's and the changes
		// (before any template has used them).
		p.v.sorted = templates.NewSortedFrom(old.Sorted, p.data.Keys, c)
		p.data.Sorted = p.v.sorted
	}
	p.diffs = append(p.diffs, viewDiff{old: old.Keys, changed: c})
	return c
}

// renderPass renders sel from v. Without force, a group none of whose inputs changed since
// its last render (or its last failed reload) is skipped. Commands run unless noCommands;
// so do the commands a previous run owed.
func (a *Agent) renderPass(ctx context.Context, v *view, sel []*tmpl, force, noCommands bool) passResult {
	p := &pass{a: a, v: v, data: v.data(a), force: force, noCommands: noCommands, beforeRevs: map[int64]bool{}, ranOwed: map[int]bool{}}
	groups := groupsOf(sel)
	for _, g := range groups {
		if p.stage(ctx, g) {
			p.install(g)
		} else if ctx.Err() == nil {
			p.undoCandidate(g)
		}
	}
	a.flushCandidates() // before the commands: the undos of the pass, one write
	for _, g := range groups {
		p.reload(ctx, g)
	}
	a.flushCandidates() // the rollbacks of failed reloads
	if !noCommands {
		p.runOwed(ctx)
		// Every command owed is run (a failed one too: it is logged, not retried).
		a.paid()
	}
	a.releaseMemory()
	return p.res
}

// releaseDelay is how long after a render pass the agent gives back to the system the memory
// the pass used and freed (the old view, the executions) and the pages of its code it made
// resident: a burst of changes, each a pass, costs one release once it is over.
const releaseDelay = 2 * time.Second

// releaseMemory schedules freeMemory for releaseDelay from now, or postpones the one
// scheduled. Idle on its long-poll, the agent then holds what it needs, not the heap's
// high-water mark nor every page of code that ran once.
func (a *Agent) releaseMemory() {
	a.releaseMu.Lock()
	defer a.releaseMu.Unlock()
	if a.release == nil {
		a.release = time.AfterFunc(releaseDelay, freeMemory)
		return
	}
	a.release.Reset(releaseDelay)
}

// needsRender says whether t's inputs changed since its last render, or since the failed
// reload it remembers.
func (p *pass) needsRender(t *tmpl) bool {
	defer func(t0 time.Time) { p.res.render += time.Since(t0) }(time.Now())
	switch {
	case p.force:
		return true
	case t.failed != nil:
		return t.failed.result.NeedsRenderChanged(t.failed.data, p.data, p.changedSince(t.failed.data))
	default:
		return !t.inPlace || t.last == nil || t.last.NeedsRenderChanged(t.lastData, p.data, p.changedSince(t.lastData))
	}
}

// drifted says how t's file changed on disk since the agent installed it or last found it
// holding t's output ("" when it did not): an lstat that differs from the one recorded then
// (tmpl.disk), then a read that finds other bytes, mode or owner than t's output asks for, or
// no file. A file whose lstat alone differs (touched, or the stamp unknown) is stamped again
// and not rendered. Only for a template in place, not failed, whose inputs did not change.
func (p *pass) drifted(t *tmpl) string {
	if p.force || !t.inPlace || t.last == nil || t.failed != nil {
		return ""
	}
	defer func(t0 time.Time) { p.res.render += time.Since(t0) }(time.Now())
	dst := t.cfg.Destination
	now, err := atomicfile.StampOf(dst)
	if err == nil && now.Exists() && now == t.disk {
		return ""
	}
	if err == nil && !now.Exists() {
		p.a.log.Debug("destination deleted since the agent installed it", "template", t.name())
		return "deleted"
	}
	same, rerr := atomicfile.Unchanged(dst, t.last.Output, t.installOptions())
	if err == nil && rerr == nil && same {
		t.disk = now // stamped before the read: a change since differs from it
		return ""
	}
	p.a.log.Debug("destination changed on disk since the agent installed it", "template", t.name())
	return "edited"
}

// unchanged records that t's file, in place, is what t renders from the pass's view too: what
// it read is the same in both views. Its last render now stands for this view, so that the
// next pass compares the next view with this one, which every template then shares.
func (p *pass) unchanged(t *tmpl) {
	t.revision = p.v.Revision
	var out []byte // what the file holds, when known
	if t.inPlace && t.last != nil {
		out = t.last.Output
		t.lastData = p.data
	}
	p.settleCandidate(t, out)
}

// settleCandidate ends the undo of t's candidate of another rollout than the pass's view, whose
// render (out; nil: not known) t's file holds: that file holds nothing that is only the
// candidate's, and a later view that cannot render t leaves it as it is. But when the view is
// another rollout's candidate rendering what the last one installed (no live view rendered
// between them), the file holds nothing live yet: the undo goes on, for the new rollout.
func (p *pass) settleCandidate(t *tmpl, out []byte) {
	c := t.cand
	if c == nil || c.rollout == p.v.Rollout {
		return
	}
	if p.v.Rollout != "" && out != nil && (len(c.sums) == 0 || slices.Contains(c.sums, candidateSum(out))) {
		p.a.setCandidate(t, &candidateFile{rollout: p.v.Rollout, prev: c.prev, sums: c.sums, unrecorded: c.unrecorded})
		return
	}
	p.a.setCandidate(t, nil)
}

// fail records f for t.
func (p *pass) fail(t *tmpl, f failure) {
	p.a.failures++
	t.err, t.stage, t.failedAt, t.retry = f.err, f.stage, p.a.failures, f.retry
	if !f.inPlace {
		t.inPlace = false
	}
	p.res.failures = append(p.res.failures, f)
}

// stage renders and stages the members of g whose inputs changed (all of them when one
// changed and another's reload failed before), and those whose file changed on disk since the
// agent left it (drifted). It reports whether the whole group is staged; when it is not,
// nothing of it is installed.
func (p *pass) stage(ctx context.Context, g *group) bool {
	changed := slices.ContainsFunc(g.tmpls, p.needsRender)
	for _, t := range g.tmpls {
		var drift string
		switch {
		case !changed && t.failed != nil:
			// The same inputs as the failed reload: not tried again, the failure stands (its
			// file changed on disk or not).
			p.fail(t, t.failed.failure)
			continue
		case !changed || len(g.tmpls) > 1 && !p.needsRender(t) && t.failed == nil:
			// Its inputs did not change (a group of one that changed needs rendering, asked
			// above already): its file holds what the view renders, unless it changed on
			// disk since.
			if drift = p.drifted(t); drift == "" {
				p.unchanged(t)
				continue
			}
		}
		m := &member{t: t, drift: drift}
		g.members = append(g.members, m)
		if ctx.Err() != nil {
			// Stopping: leave the rest for the next start; the groups installed still reload.
			m.err, m.stage = fmt.Errorf("render %s: interrupted by shutdown", t.name()), api.StageRender
			continue
		}
		if t.lastData.Keys != nil && t.lastData.Revision != p.v.Revision && !p.beforeRevs[t.lastData.Revision] {
			p.beforeRevs[t.lastData.Revision] = true
			p.before = append(p.before, t.lastData.Keys)
		}
		p.a.stageOne(ctx, m, p.data, &p.res)
	}
	ok, retry := true, true
	for _, m := range g.members {
		if m.err != nil {
			ok, retry = false, retry && m.retry
			p.a.metrics.renderFailures.Add(1)
			p.a.log.Error("template not installed", "template", m.t.name(), "revision", p.v.Revision, "error", m.err.Error())
			p.fail(m.t, failure{template: m.t.name(), stage: m.stage, err: m.err, retry: m.retry})
		}
	}
	if ok {
		return true
	}
	var bad []string
	for _, m := range g.members {
		if m.err != nil {
			bad = append(bad, m.t.name())
		}
	}
	for _, m := range g.members {
		if m.staged != nil {
			m.staged.Discard()
			m.staged = nil
			err := fmt.Errorf("%s not installed: %s of its group (command %q) failed; %s", m.t.name(), strings.Join(bad, ", "), g.command, keptText(m.t.cfg.Destination))
			p.fail(m.t, failure{template: m.t.name(), stage: api.StageRender, err: err, retry: retry})
			p.a.log.Error("template not installed", "template", m.t.name(), "revision", p.v.Revision, "error", err.Error())
		} else if m.err == nil {
			p.inPlace(m) // its file holds its output already
		}
	}
	return false
}

// install records g's command as owed, then renames every staged file of g into place. An
// install that fails puts back the files renamed before it.
func (p *pass) install(g *group) {
	defer func(t0 time.Time) { p.res.write += time.Since(t0) }(time.Now())
	var dests []string
	for _, m := range g.members {
		if m.staged != nil {
			dests = append(dests, m.t.name())
		}
	}
	var owedBefore []owedCommand
	if len(dests) > 0 && g.reloads() && p.a.recordOwed {
		owedBefore = p.a.owedCopy()
		p.a.owe(g.command, maxTimeout(g), dests, p.v.Revision, p.previousOf(g))
	}
	// What a rollout's candidate replaces is recorded before any of its files is renamed into
	// place: an agent killed right after the rename still undoes it.
	// So is the fingerprint of each file of the rollout's candidate, so that the undo never
	// puts the previous bytes back over an operator's edit since.
	var was map[*tmpl]*candidateFile
	for _, m := range g.members {
		if m.staged == nil {
			continue
		}
		if e := p.owedGood(g, m); e != nil && (e.Existed || p.v.Rollout == "") {
			// It replaces a file whose reload a killed run never completed: a failed reload goes
			// back to the last file known good, what that run's install replaced, and so does the
			// undo of a rollout's candidate. When that run's install created the file (none was
			// known good), a live view's failed reload keeps the new file, as a first install's
			// does, and a candidate's undo puts back the killed run's: the live view's file, which
			// the undo's command then reloads, where a removal would last only until the next live
			// view renders it again.
			m.good = e.undo().prev
		}
		c := m.t.cand
		if p.v.Rollout == "" {
			continue
		}
		var n *candidateFile
		switch sum := candidateSum(m.r.Output); {
		case c != nil && c.rollout != p.v.Rollout && candidateReplaced(c, m.staged.Previous()):
			// Another rollout's candidate replaces the last one's (no live view rendered
			// between them): its undo is still to what the file held before the first.
			data, _, _, _ := m.staged.Previous().Kept()
			n = withSum(withSum(c, p.v.Rollout, nil, candidateSum(data)), p.v.Rollout, nil, sum)
		case c == nil || c.rollout != p.v.Rollout:
			n = withSum(nil, p.v.Rollout, cmp.Or(m.good, m.staged.Previous()), sum)
		case len(c.sums) > 0 && !slices.Contains(c.sums, sum):
			n = withSum(c, p.v.Rollout, nil, sum)
		default:
			continue // known already (or a record without fingerprints: undone as it is)
		}
		if was == nil {
			was = map[*tmpl]*candidateFile{}
		}
		was[m.t] = c
		m.t.cand = n
	}
	if was != nil {
		p.a.recordCandidates()
	}
	// left: a file that held a halted or aborted rollout's candidate holds this view's now (the
	// pass's leftCandidate), once the whole group is installed: a put back gives the candidate back.
	left := false
	for i, m := range g.members {
		if m.staged == nil {
			p.inPlace(m)
			continue
		}
		prev := m.staged.Previous()
		// The file holds the candidate of a rollout that ended (its content hashed once here).
		ended := m.t.cand
		if ended != nil && (ended.rollout == p.v.Rollout || !candidateReplaced(ended, prev)) {
			ended = nil
		}
		if ended != nil {
			// The .bak keeps what the candidate replaced, as after an undo, not the candidate's
			// content.
			m.staged.SkipBackup()
		}
		err := installStaged(m.staged)
		var se *atomicfile.SyncDirError
		if errors.As(err, &se) {
			// Renamed into place: readers see it, so it is installed and its command runs. Only a
			// crash could still bring the old file back, and the next start renders it again.
			p.a.log.Warn("installed, but its directory was not fsynced", "template", m.t.name(), "error", err.Error())
			err = nil
		}
		if err != nil {
			err = installError(m.t.name(), err)
			p.a.log.Error("template not installed", "template", m.t.name(), "revision", p.v.Revision, "error", err.Error())
			p.a.metrics.renderFailures.Add(1)
			p.fail(m.t, failure{template: m.t.name(), stage: api.StageRender, err: err, retry: true})
			kept := false
			for _, o := range g.members[i:] {
				if c, ok := was[o.t]; ok {
					o.t.cand, kept = c, true // not replaced
				}
			}
			if kept {
				p.a.recordCandidates()
			}
			for _, o := range g.members[i+1:] {
				if o.staged != nil {
					o.staged.Discard()
					p.fail(o.t, failure{template: o.t.name(), stage: api.StageRender, retry: true,
						err: fmt.Errorf("%s not installed: the install of %s of its group failed", o.t.name(), m.t.name())})
				}
			}
			putBack, undone := true, false
			for _, o := range slices.Backward(g.members[:i]) {
				if o.prev != nil {
					// What the install replaced goes back, not what a failed reload would put back:
					// the file of a killed run whose reload is still owed, not the last file known
					// good (no reload of it failed); a halted rollout's candidate, which the service
					// runs, not what the candidate replaced (its undo comes back with it).
					o.prev = o.staged.Previous()
					rerr := p.restore(o)
					msg := fmt.Sprintf("%s put back: the install of %s of its group failed", o.t.name(), m.t.name())
					if rerr != nil {
						msg += "; " + rerr.Error()
						putBack = false
						if _, ok := was[o.t]; ok && p.v.Rollout == "" {
							p.res.leftCandidate = true // it holds this view's file, not the candidate
						}
					} else if c, ok := was[o.t]; ok {
						// It holds what it held before the install, and so its undo goes back to what
						// it was then (none, or the entry of what it holds), not an undo of a
						// candidate no longer there. Not put back, it holds the candidate: the new
						// entry stays, the one that undoes it.
						o.t.cand, undone = c, true
					}
					o.t.last = nil
					p.fail(o.t, failure{template: o.t.name(), stage: api.StageRender, err: errors.New(msg), retry: true})
				}
				o.prev = nil
			}
			if undone {
				p.a.recordCandidates()
			}
			if owedBefore != nil && putBack {
				// No file of the group changed: nothing is owed for this install.
				p.a.unowe(owedBefore)
			}
			return
		}
		m.prev = cmp.Or(m.good, prev)
		if ended != nil {
			// This view is the live one (another rollout's took the undo over above): a failed
			// reload goes back to what the candidate replaced, not to the candidate, whose undo
			// this install ends.
			m.prev = ended.prev
			left = true
		}
		if p.v.Rollout == "" {
			if c := m.t.cand; c != nil {
				// Given back if a later file of the group fails and this one is put back.
				if was == nil {
					was = map[*tmpl]*candidateFile{}
				}
				was[m.t] = c
			}
			p.a.setCandidate(m.t, nil)
		}
		// The file just installed, unless it changed since the rename (then not known).
		if st, err := atomicfile.StampOf(m.t.cfg.Destination); err == nil && m.staged.Wrote(st) {
			m.stamp = st
		} else {
			m.stamp = atomicfile.Stamp{}
		}
		p.inPlace(m)
		p.res.rendered = append(p.res.rendered, m.t.name())
		p.a.metrics.renders.Add(1)
		p.a.log.Info("rendered", "template", m.t.name(), "revision", p.v.Revision, "bytes", len(m.r.Output), "keys", len(m.r.Keys))
		if m.drift != "" {
			p.a.metrics.restores.Add(1)
			p.a.log.Warn("file put back", "template", m.t.name(), "why", "changed on disk since the agent installed it", "change", m.drift,
				"revision", p.v.Revision)
		}
	}
	if left {
		p.res.leftCandidate = true
	}
}

// previousOf is what the install of g's staged files replaces, for the owed record: the
// rollback of a failed reload owed across a restart (on_command_failure rollback, outside a
// rollout: a rollout's candidate has its own record). Files over maxCandidateBytes in all are
// left out: their rollback lasts only while this run does. A file whose reload is owed already
// and that holds what the install owed for installed (owedGood) is not what the rollback puts
// back: the entry of that install is kept, what it replaced, with the fingerprint of what this
// install installs added to those of what it installed. Nor is a file that holds a halted or
// aborted rollout's candidate: what the candidate replaced is, as for a failed reload in this
// run (install's ended), since the candidate's record is cleared before the reload.
func (p *pass) previousOf(g *group) []candidateEntry {
	if g.policy() != OnFailureRollback || p.v.Rollout != "" {
		return nil
	}
	var out []candidateEntry
	total := 0
	for _, m := range g.members {
		if m.staged == nil || m.staged.Previous() == nil {
			continue
		}
		sum := candidateSum(m.r.Output)
		prev := m.staged.Previous()
		if c := m.t.cand; c != nil && candidateReplaced(c, prev) {
			prev = c.prev
		} else if e := p.owedGood(g, m); e != nil {
			if total += len(e.Data); total > maxCandidateBytes {
				continue
			}
			kept := *e
			kept.Installed = slices.DeleteFunc(slices.Clone(e.Installed), func(s string) bool { return s == sum })
			if kept.Installed = append(kept.Installed, sum); len(kept.Installed) > maxCandidateSums {
				kept.Installed = kept.Installed[len(kept.Installed)-maxCandidateSums:]
			}
			out = append(out, kept)
			continue
		}
		data, perm, uid, gid := prev.Kept()
		if total += len(data); total > maxCandidateBytes {
			continue // rolled back only while this run lasts
		}
		out = append(out, candidateEntry{Destination: m.t.cfg.Destination, Path: prev.Path(), Existed: prev.Existed(), Data: data,
			Mode: uint32(perm), UID: uid, GID: gid, Installed: []string{sum}})
	}
	return out
}

// owedGood is the entry of the reload owed for g that kept what m's destination held before
// the install it is owed for, when m's install replaces what that install (or a later one
// owed with it) installed: a file whose reload never completed, as a killed run left it. The
// rollback of a failed reload then goes to the entry's, the last file known good (the one
// whose reload succeeded, or the file before the agent first wrote it), never to a file
// whose reload never completed, however many runs were killed in their reload. Nil when
// there is none: m's install replaces a file whose reload is not owed, one that an owed
// install never renamed into place (a kill before the rename), or an operator's.
func (p *pass) owedGood(g *group, m *member) *candidateEntry {
	prev := m.staged.Previous()
	if prev == nil || !prev.Existed() || g.policy() != OnFailureRollback {
		return nil
	}
	i := slices.IndexFunc(p.a.owed, func(o owedCommand) bool { return o.owedBy(g.command, g.dests()) })
	if i < 0 || !slices.Contains(p.a.owed[i].Destinations, m.t.name()) {
		return nil
	}
	e := p.a.owed[i].previous(m.t.cfg.Destination)
	if e == nil || e.Path != prev.Path() {
		return nil
	}
	// A record without fingerprints (of an agent before them) is taken to be what it installed,
	// as the restore at a start takes it.
	if data, _, _, _ := prev.Kept(); len(e.Installed) > 0 && !slices.Contains(e.Installed, candidateSum(data)) {
		return nil
	}
	return e
}

// inPlace records that m's file holds its output.
func (p *pass) inPlace(m *member) {
	t := m.t
	p.settleCandidate(t, m.r.Output)
	t.last, t.lastData, t.inPlace, t.err, t.stage, t.failed, t.revision = m.r, p.data, true, nil, "", nil, p.v.Revision
	t.retry = false
	t.disk = m.stamp
}

// reload runs g's command once (with the destinations a killed run owed it for), then its
// health commands, when the pass replaced a file of g; a failure undoes g.
func (p *pass) reload(ctx context.Context, g *group) {
	if len(g.undone) > 0 && g.command != "" && !p.noCommands {
		// The command owed for the undone files (and what a killed run owed it) runs now.
		dests, rev, timeout := g.undone, p.v.Revision, maxTimeout(g)
		if owed := p.takeOwed(g); owed != nil {
			for _, d := range owed.Destinations {
				if !slices.Contains(dests, d) {
					dests = append(dests, d)
				}
			}
			rev, timeout = max(rev, owed.Revision), max(timeout, owed.timeout())
		}
		p.a.syncDirs()
		p.command(ctx, g.command, timeout, dests, rev)
	}
	installed := g.installed()
	owed := p.takeOwed(g)
	if len(installed) == 0 && owed == nil {
		return
	}
	if p.noCommands {
		if g.command != "" {
			p.a.log.Info("command skipped (--no-commands)", "command", g.command, "templates", g.names())
		}
		return
	}
	if g.reloads() {
		p.a.syncDirs() // the files are durable before a command sees them
	}
	var f *failure
	dests, rev, timeout := g.names(), p.v.Revision, maxTimeout(g)
	if len(installed) == 0 {
		// Only what a killed run owed, at the revision it was owed for (this pass's when that
		// is not known: its record was unreadable).
		dests = nil
		if owed.Revision != 0 {
			rev = owed.Revision
		}
	}
	if owed != nil {
		for _, d := range owed.Destinations {
			if !slices.Contains(dests, d) {
				dests = append(dests, d)
			}
		}
		rev, timeout = max(rev, owed.Revision), max(timeout, owed.timeout())
	}
	if g.command != "" {
		f = p.command(ctx, g.command, timeout, dests, rev)
	}
	if f == nil {
		// An owed reload is the command and the health checks: a run killed while they ran
		// (the command done) left the record, and its files are not known to be healthy.
		f = p.health(ctx, g, rev, dests)
	}
	switch {
	case f == nil:
	case len(installed) == 0:
		p.owedFailed(ctx, g, owed, *f)
	default:
		if owed != nil {
			// The files of the killed run that this pass did not replace failed with them: they go
			// back to the last file known good too, as without an install in the pass, not left
			// beside the files put back with content whose reload never completed.
			p.owedPrevious(g, owed)
		}
		p.undo(ctx, g, *f)
	}
}

// owedFailed handles f, the failure of g's reload (its command or a health check) owed by a
// killed run (no file of g changed in this pass). Its files were installed by that run: those
// whose previous content the record kept are rolled back as in the run that installed them
// (undo), while they hold what it installed. The others stay. The reload failed all the same:
// the templates it was owed for fail the pass (their revision is not applied, the report names
// the failure) and, as after any failed reload, their inputs are not tried again until they
// change.
func (p *pass) owedFailed(ctx context.Context, g *group, owed *owedCommand, f failure) {
	if p.owedPrevious(g, owed) {
		p.undo(ctx, g, f)
		return
	}
	f.inPlace = true
	var named []*tmpl
	for _, t := range g.tmpls {
		if t.inPlace && t.err == nil && slices.Contains(owed.Destinations, t.name()) {
			named = append(named, t)
		}
	}
	if len(named) == 0 {
		p.res.failures = append(p.res.failures, f)
		return
	}
	for _, t := range named {
		mf := failure{template: t.name(), stage: f.stage, inPlace: true, err: fmt.Errorf(
			"reload of %s at revision %d, owed by the last run (stopped before its reload was done), failed; the files stay (what they replaced was not kept across the restart): %w",
			strings.Join(owed.Destinations, ", "), owed.Revision, f.err)}
		p.fail(t, mf)
		if t.last != nil {
			t.failed = &reloadFailure{result: t.last, data: t.lastData, failure: mf}
		}
	}
}

// owedPrevious gives the members of g whose file the owed reload's record kept the previous
// content of, and that hold what the killed run installed (not after a kill before the rename,
// nor an operator's edit since), what they replaced (member.prev), as if this pass had
// installed them; it reports whether there is one. A member this pass installed keeps its own.
func (p *pass) owedPrevious(g *group, owed *owedCommand) bool {
	found := false
	for _, t := range g.tmpls {
		var m *member
		for _, o := range g.members {
			if o.t == t {
				m = o
			}
		}
		e := owed.previous(t.cfg.Destination)
		if e == nil || m != nil && m.prev != nil || g.policy() != OnFailureRollback || !t.inPlace || t.err != nil || t.last == nil ||
			!slices.Contains(owed.Destinations, t.name()) || !sameFile(e.Path, t.cfg.Destination) {
			continue
		}
		c := e.undo()
		if held, err := candidateHeld(c); err != nil || held != heldCandidate {
			continue
		}
		if m == nil {
			m = &member{t: t, r: t.last}
			g.members = append(g.members, m)
		}
		m.prev, found = c.prev, true
	}
	return found
}

// command runs command for dests at revision rev and logs what it did.
func (p *pass) command(ctx context.Context, command string, timeout time.Duration, dests []string, rev int64) *failure {
	env := []string{
		"SHOELACE_APPLIANCE=" + p.a.cfg.Appliance,
		"SHOELACE_INSTANCE=" + p.a.instance,
		"SHOELACE_REVISION=" + strconv.FormatInt(rev, 10),
	}
	env = p.withDestinations(env, fmt.Sprintf("command %q", command), dests)
	// A reload command started for a changed file finishes (within its timeout) even when the
	// agent is stopping: the file is already in place.
	r, err := RunShell(context.WithoutCancel(ctx), p.a.shellOf(command), command, timeout, p.a.withEnv(env))
	p.res.commands++
	p.a.metrics.commands.Add(1)
	out := redactOutput(r, p.v.Keys, p.a.allSecret(), p.before...)
	if err != nil {
		p.res.cmdFail++
		p.a.metrics.commandFailures.Add(1)
		p.a.log.Error("command failed", "command", command, "templates", dests, "error", err.Error(),
			"exit_code", r.ExitCode, "output", out, "duration_ms", r.Duration.Milliseconds())
		return &failure{template: dests[0], stage: api.StageCommand, err: fmt.Errorf("command %q %w%s", command, err, outputTail(out))}
	}
	p.a.log.Info("command ran", "command", command, "templates", dests, "output", out, "duration_ms", r.Duration.Milliseconds())
	return nil
}

// withDestinations is env with SHOELACE_DESTINATIONS, dests separated by spaces, for what runs
// for them (a command, health checks); without it, and a warning, when the variable would be
// longer than the system starts a program with (maxEnvVar): nothing could run ("argument list
// too long"), and every reload of so large a group would fail.
func (p *pass) withDestinations(env []string, what string, dests []string) []string {
	v := "SHOELACE_DESTINATIONS=" + strings.Join(dests, " ")
	if len(v) <= maxEnvVar {
		return append(env, v)
	}
	p.a.log.Warn("SHOELACE_DESTINATIONS not set for the "+what+": the names of its files are longer than an environment variable may be",
		"destinations", len(dests), "bytes", len(v), "max", maxEnvVar)
	return env
}

// health runs the distinct health commands of g's templates, each until it passes or its
// retries are spent; rev is the revision they run for (SHOELACE_REVISION).
func (p *pass) health(ctx context.Context, g *group, rev int64, dests []string) *failure {
	seen := map[string]bool{}
	env := []string{
		"SHOELACE_APPLIANCE=" + p.a.cfg.Appliance,
		"SHOELACE_INSTANCE=" + p.a.instance,
		"SHOELACE_REVISION=" + strconv.FormatInt(rev, 10),
	}
	for _, t := range g.tmpls {
		h := t.cfg.Health
		if h == "" || seen[h] {
			continue
		}
		if len(seen) == 0 {
			env = p.withDestinations(env, "health checks", dests)
		}
		seen[h] = true
		for try := 0; ; try++ {
			// Like the command: a health check started finishes even when the agent is stopping.
			r, err := RunShell(context.WithoutCancel(ctx), t.cfg.Shell, h, t.cfg.HealthTimeoutOrDefault(), p.a.withEnv(env))
			if err == nil {
				p.a.log.Info("health passed", "health", h, "templates", g.names(), "tries", try+1)
				break
			}
			out := redactOutput(r, p.v.Keys, p.a.allSecret(), p.before...)
			if try < t.cfg.Retries() {
				p.a.log.Debug("health failed; trying again", "health", h, "error", err.Error(), "output", out, "try", try+1)
				time.Sleep(t.cfg.Interval())
				continue
			}
			p.a.metrics.healthFailures.Add(1)
			p.a.log.Error("health failed", "health", h, "templates", g.names(), "error", err.Error(), "output", out, "tries", try+1)
			return &failure{template: t.name(), stage: api.StageHealth, err: fmt.Errorf("health %q %w after %d tries%s", h, err, try+1, outputTail(out))}
		}
	}
	return nil
}

// undo handles g's failed reload f: with on_command_failure rollback and a previous file to go
// back to, or a rollout's candidate (whose failure halts the rollout, and the halt undoes the
// candidate's files: a file it created is removed), it restores every file the pass installed
// and runs the command again; otherwise the new files stay. Either way the inputs are
// remembered as failed.
func (p *pass) undo(ctx context.Context, g *group, f failure) {
	installed := g.installed()
	existed := slices.ContainsFunc(installed, func(m *member) bool { return m.prev != nil && m.prev.Existed() })
	rollback := g.policy() == OnFailureRollback && (existed || p.v.Rollout != "")
	what := "the new files are kept (on_command_failure: keep)"
	if !rollback && g.policy() == OnFailureRollback {
		what = "the new files are kept (a first install: no previous file to go back to)"
	}
	var notRestored map[*member]bool
	if rollback {
		var problems []string
		for _, m := range slices.Backward(installed) {
			if err := p.restore(m); err != nil {
				problems = append(problems, err.Error())
				if notRestored == nil {
					notRestored = map[*member]bool{}
				}
				notRestored[m] = true
			}
		}
		p.a.metrics.rollbacks.Add(1)
		switch {
		case len(problems) == 0:
			what = "previous files restored"
		case len(problems) == len(installed):
			what = "previous files not restored: " + strings.Join(problems, "; ")
		default:
			what = "previous files restored but for: " + strings.Join(problems, "; ")
		}
		p.a.log.Warn("reload failed: "+what, "templates", g.names(), "revision", p.v.Revision)
		if g.command != "" {
			switch again := p.command(ctx, g.command, maxTimeout(g), g.names(), p.v.Revision); {
			case again == nil:
			case len(problems) == 0:
				p.a.log.Error("command failed again on the restored files", "command", g.command, "templates", g.names())
			default:
				// Not on the previous files: a file not put back holds what failed the first time.
				p.a.log.Error("command failed again after a rollback that could not restore every file", "command", g.command,
					"templates", g.names(), "not_restored", strings.Join(problems, "; "))
			}
		}
	} else {
		p.a.log.Warn("reload failed: "+what, "templates", g.names(), "revision", p.v.Revision)
	}
	// The member the failure names first: the report names the first failure of a pass.
	slices.SortStableFunc(installed, func(x, y *member) int {
		return boolRank(x.t.name() != f.template) - boolRank(y.t.name() != f.template)
	})
	for _, m := range installed {
		if rollback && !notRestored[m] && m.t.cand != nil && m.t.cand.prev == m.prev {
			// What the candidate replaced is back. Not put back, the file holds the candidate:
			// its undo is kept, for the next pass that cannot install the group to try again.
			p.a.setCandidate(m.t, nil)
		}
		mf := failure{template: m.t.name(), stage: f.stage, err: fmt.Errorf("reload of %s at revision %d failed, %s: %w", strings.Join(g.names(), ", "), p.v.Revision, what, f.err), inPlace: !rollback}
		p.fail(m.t, mf)
		m.t.failed = &reloadFailure{result: m.r, data: p.data, failure: mf}
		if rollback {
			m.t.last = nil // the file holds what it held before, not m.r
		}
	}
}

func boolRank(b bool) int {
	if b {
		return 1
	}
	return 0
}

// restore puts back what m's install replaced.
func (p *pass) restore(m *member) error {
	opts := atomicfile.Options{Allowed: m.t.allowed}
	_, err := restoreFile(m.prev, opts)
	var se *atomicfile.SyncDirError
	if errors.As(err, &se) {
		p.a.log.Warn("restored, but its directory was not fsynced", "template", m.t.name(), "error", err.Error())
		err = nil
	}
	if err != nil {
		p.a.log.Error("previous file not restored", "template", m.t.name(), "error", err.Error())
		return fmt.Errorf("restore %s: %w", m.t.name(), err)
	}
	p.a.log.Info("previous file restored", "template", m.t.name(), "existed", m.prev.Existed())
	return nil
}

// undoCandidate puts back what a rollout's candidate replaced in g's files when g could not be
// installed from a view of no rollout, or of another (the live view after the rollout halted
// or was aborted, which cannot render a key the candidate added): the halt undoes the
// candidate's files, and they must not keep its content. A file the candidate created is
// removed. The group's command runs for them (reload).
func (p *pass) undoCandidate(g *group) {
	for _, t := range g.tmpls {
		c := t.cand
		if c == nil || c.rollout == p.v.Rollout {
			continue
		}
		if !sameFile(c.prev.Path(), t.cfg.Destination) {
			// A link put at the destination, or one there re-pointed, since the candidate's
			// install: not the file recorded, whichever undo it would take (as at a start).
			p.a.setCandidate(t, nil)
			p.res.leftCandidate = true
			t.last, t.inPlace = nil, false
			p.a.log.Warn("undo of the rollout's candidate dropped: its destination leads to another file now", "template", t.name(), "rollout", c.rollout)
			continue
		}
		held, err := candidateHeld(c)
		if err != nil {
			// Kept: the next pass that cannot install the group tries again, the retry timer's
			// too (a failed install's), not only the next change of the view.
			t.retry = true
			p.a.log.Error("file of the rollout's candidate not undone", "template", t.name(), "rollout", c.rollout, "error", err.Error())
			continue
		}
		if held != heldCandidate {
			// Its file holds what the undo puts back already (a halt cut short by a crash), what
			// the candidate was to replace (its run killed before the rename), or what the
			// operator put there since the candidate installed it: kept as it is.
			p.a.setCandidate(t, nil)
			p.res.leftCandidate = true
			t.last, t.inPlace = nil, false
			switch {
			case held != heldOther:
			case p.neverInstalled(t, c):
				p.a.log.Info("undo of the rollout's candidate dropped: the candidate was never installed (its run stopped before the rename)",
					"template", t.name(), "rollout", c.rollout, "revision", p.v.Revision)
			default:
				p.a.log.Warn("file of the rollout's candidate kept: changed since the candidate installed it", "template", t.name(),
					"rollout", c.rollout, "revision", p.v.Revision)
			}
			continue
		}
		var owedBefore []owedCommand
		if g.command != "" && p.a.recordOwed && !p.noCommands {
			// The undo's reload is owed as an install's is: an agent killed between the
			// restore and the command runs it at its next start, when nothing is left to undo.
			owedBefore = p.a.owedCopy()
			p.a.owe(g.command, maxTimeout(g), []string{t.name()}, p.v.Revision, nil)
		}
		changed, err := restoreFile(c.prev, atomicfile.Options{Allowed: t.allowed})
		if se := (*atomicfile.SyncDirError)(nil); errors.As(err, &se) {
			p.a.log.Warn("restored, but its directory was not fsynced", "template", t.name(), "error", err.Error())
			err = nil
		}
		if owedBefore != nil && (err != nil || !changed) {
			p.a.unowe(owedBefore) // the file did not change: no reload is owed for it
		}
		if err != nil {
			// Kept: the next pass that cannot install the group tries again, the retry timer's
			// too (a failed install's), not only the next change of the view.
			t.retry = true
			p.a.log.Error("file of the rollout's candidate not undone", "template", t.name(), "rollout", c.rollout, "error", err.Error())
			continue
		}
		p.a.setCandidate(t, nil)
		p.res.leftCandidate = true
		t.last, t.inPlace = nil, false
		if !changed {
			continue // it holds what the candidate replaced already
		}
		g.undone = append(g.undone, t.name())
		p.a.log.Warn("file of the rollout's candidate undone: the view after the rollout does not render it", "template", t.name(),
			"rollout", c.rollout, "existed", c.prev.Existed(), "revision", p.v.Revision)
	}
}

// neverInstalled says whether t's file holds what c's candidate was to replace, where c's undo
// is not that file: the candidate's install over a file whose reload a killed run owed keeps
// the owed record's last file known good as its undo (owedGood), and a run killed before the
// candidate's rename leaves the killed run's file, which the owed record fingerprints. Nothing
// of the candidate is there to undo: the undo is dropped as after a halt done, and the reload
// still owed for that file runs, as it would without the candidate.
func (p *pass) neverInstalled(t *tmpl, c *candidateFile) bool {
	for i := range p.a.owed {
		e := p.a.owed[i].previous(t.cfg.Destination)
		if e == nil || len(e.Installed) == 0 || !e.Existed || e.Path != c.prev.Path() {
			continue
		}
		// The undo the owed record gave the candidate, and the file the killed run installed.
		data, _, _, _ := c.prev.Kept()
		held, err := candidateHeld(e.undo())
		return c.prev.Existed() && bytes.Equal(data, e.Data) && err == nil && held == heldCandidate
	}
	return false
}

// restoreFile is Previous.Restore; tests replace it to inject a fault.
var restoreFile = (*atomicfile.Previous).Restore

// takeOwed returns the reload a killed run owed g (nil when none), which the caller runs: the
// one of g's command, or, for a group without one (its health checks alone), the one owed for
// its files.
func (p *pass) takeOwed(g *group) *owedCommand {
	if !g.reloads() || p.noCommands {
		return nil
	}
	for i := range p.a.owed {
		if o := &p.a.owed[i]; !p.ranOwed[i] && o.owedBy(g.command, g.dests()) {
			p.ranOwed[i] = true
			return o
		}
	}
	return nil
}

// runOwed runs the owed commands that no group ran in this pass: their files were installed by
// a killed run, so there is nothing to undo. A failure is reported, not retried.
func (p *pass) runOwed(ctx context.Context) {
	for i, o := range p.a.owed {
		if p.ranOwed[i] || o.Command == "" {
			// A group's health checks alone are run with the group (its templates' health).
			continue
		}
		p.ranOwed[i] = true
		rev := o.Revision
		if rev == 0 {
			rev = p.v.Revision // not known (its record was unreadable)
		}
		if f := p.command(ctx, o.Command, o.timeout(), o.Destinations, rev); f != nil {
			f.inPlace = true
			p.res.failures = append(p.res.failures, *f)
		}
	}
}

func maxTimeout(g *group) time.Duration {
	var d time.Duration
	for _, t := range g.tmpls {
		d = max(d, t.cfg.Timeout())
	}
	return d
}

// outputTail is the end of a command's (redacted) output for an error message: enough to say
// why, short enough for a report.
func outputTail(out string) string {
	const keep = 400
	out = strings.TrimSpace(out)
	if out == "" {
		return ""
	}
	if len(out) > keep {
		i := len(out) - keep
		for i < len(out) && !utf8.RuneStart(out[i]) {
			i++ // not inside a character
		}
		out = "…" + out[i:]
	}
	return ": " + printable(out)
}

// printable is a command's output for an error message (which once prints, and status and the
// report show): its control characters but newline and tab escaped (\x1b), so that what a
// check printed (a line of a file another user controls) cannot drive the terminal it is read
// on.
func printable(s string) string {
	if !strings.ContainsFunc(s, isControl) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if isControl(r) {
			fmt.Fprintf(&b, `\x%02x`, r)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// oneLine is printable with newlines and tabs escaped too (\n, \t).
func oneLine(s string) string {
	return strings.NewReplacer("\n", `\n`, "\t", `\t`).Replace(printable(s))
}

// isControl reports whether r is a control character (C0, DEL or C1) other than newline and tab.
func isControl(r rune) bool {
	return r != '\n' && r != '\t' && (r < 0x20 || r >= 0x7f && r < 0xa0)
}

// stageOne renders m's template and stages its file (checked), adding the time each step
// took to res.
func (a *Agent) stageOne(ctx context.Context, m *member, data templates.Data, res *passResult) {
	t := m.t
	t0 := time.Now()
	r, err := t.t.Execute(data)
	t1 := time.Now()
	res.executed++
	res.render += t1.Sub(t0)
	defer func() { res.write += time.Since(t1) }()
	t.failedReads = nil
	if fe := (*templates.FilesError)(nil); errors.As(err, &fe) {
		t.failedReads = fe.Files
	}
	if err != nil {
		// On one line, its control characters escaped: what it quotes may be a key's value (fail,
		// required), which a log read as text or a terminal would take for lines and escapes.
		m.err, m.stage = fmt.Errorf("render %s: %s", t.name(), oneLine(redact(err.Error(), data.Keys, a.allSecret()))), api.StageRender
		return
	}
	m.r = r
	opts := t.installOptions()
	opts.Backup, opts.KeepPrevious, opts.DirSyncs, opts.Spare = t.cfg.Backup, true, a.dirSyncs, a.spares
	// What the agent renders is at most this: a larger file there is none of its own, and read
	// whole to be put back it took the agent's memory (a sparse file of gigabytes).
	opts.MaxPrevious = templates.DefaultMaxOutputBytes
	if t.cfg.Check != "" {
		opts.Check = func(staged string) error {
			// A check in progress finishes even when the agent is stopping (bounded by its
			// timeout), so that the render it belongs to completes instead of being cut short.
			cr, err := runShell(context.WithoutCancel(ctx), t.cfg.Shell, t.cfg.Check, t.cfg.Timeout(), a.withEnv([]string{
				"SHOELACE_STAGED=" + staged,
				"SHOELACE_DESTINATION=" + t.cfg.Destination,
				"SHOELACE_APPLIANCE=" + a.cfg.Appliance,
				"SHOELACE_INSTANCE=" + a.instance,
				"SHOELACE_REVISION=" + strconv.FormatInt(data.Revision, 10),
			}), true)
			if err != nil {
				out := cr.Output
				if strings.TrimSpace(out) == "" {
					// It printed nothing: no colon left hanging after its status.
					return fmt.Errorf("%q %w", t.cfg.Check, err)
				}
				if r.Secret {
					out = "(hidden: the template reads secrets)"
				}
				out = redact(out, data.Keys, a.allSecret())
				// The whole output (up to maxOutputBytes) goes to the log, its end to the error,
				// as a command's: the error is what once prints last, and the status file and
				// the report carry it.
				a.log.Error("check failed", "template", t.name(), "check", t.cfg.Check, "error", err.Error(),
					"exit_code", cr.ExitCode, "output", out, "duration_ms", cr.Duration.Milliseconds())
				return fmt.Errorf("%q %w%s", t.cfg.Check, err, outputTail(out))
			}
			return nil
		}
	}
	if err := a.cfg.checkAllowed(t.cfg.Destination); err != nil {
		m.err, m.stage = fmt.Errorf("install %s: %w; %s", t.name(), err, keptText(t.cfg.Destination)), api.StageRender
		return
	}
	// Again on the path the install really replaces, resolved by the install itself: no link
	// is left on it to follow (one at the .bak name is replaced by the rename). It is neither
	// one of the agent's own files (a link planted at the destination since the config was
	// loaded) nor outside allowed_dirs.
	opts.Allowed = t.allowed
	if err := t.cfg.destDir(); err != nil {
		m.err, m.stage, m.retry = fmt.Errorf("install %s: %w", t.name(), err), api.StageRender, true
		return
	}
	// Stamped before Stage compares it: when Stage finds it holding r, a change since the
	// comparison differs from this stamp (tmpl.disk).
	m.stamp, _ = atomicfile.StampOf(t.cfg.Destination)
	s, err := atomicfile.Stage(t.cfg.Destination, r.Output, opts)
	if err != nil {
		var ce *atomicfile.CheckError
		if errors.As(err, &ce) {
			a.metrics.checkFailures.Add(1)
			m.err, m.stage = fmt.Errorf("check of %s failed, %s: %w", t.name(), keptText(t.cfg.Destination), ce.Err), api.StageCheck
			return
		}
		m.err, m.stage, m.retry = installError(t.name(), err), api.StageRender, true
		return
	}
	m.staged = s
}

// installError is err of the install of name's file, saying "install name" once: Stage's
// error says it already when the directory could not be opened.
func installError(name string, err error) error {
	if strings.HasPrefix(err.Error(), "install "+name+": ") {
		return err
	}
	return fmt.Errorf("install %s: %w", name, err)
}

// logPass logs a summary of a pass when something happened.
func (a *Agent) logPass(v *view, res passResult, took time.Duration) {
	if len(res.rendered) == 0 && len(res.failures) == 0 && res.commands == 0 {
		a.log.Debug("nothing changed", "revision", v.Revision)
		return
	}
	lvl := slog.LevelInfo
	if !res.ok() {
		lvl = slog.LevelError
	}
	a.log.Log(context.Background(), lvl, "sync", "revision", v.Revision, "store", v.Store, "from_cache", v.FromCache,
		"rendered", len(res.rendered), "failed", len(res.failures), "commands", res.commands, "commands_failed", res.cmdFail,
		"took_ms", took.Milliseconds())
}

// shellOf is the shell of the templates whose command is command (they agree; a command owed
// by a run whose config had it is run in the system's shell when no template has it now).
func (a *Agent) shellOf(command string) string {
	for _, t := range a.tmpls {
		if t.cfg.Command == command {
			return t.cfg.Shell
		}
	}
	return ""
}

// keptText says what a template that is not installed leaves at its destination: the old file,
// or none, when there was no file yet ("old file kept" of a file never made misled).
func keptText(dest string) string {
	if _, err := os.Lstat(dest); errors.Is(err, fs.ErrNotExist) {
		return "no file made"
	}
	return "old file kept"
}
