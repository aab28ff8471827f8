package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/atomicfile"
	"github.com/shoelace-dev/shoelace/internal/client"
)

// Backoff bounds of the retries after a failed request.
const (
	backoffMin = 250 * time.Millisecond
	backoffMax = 15 * time.Second
	// retryAfterMax caps a server's Retry-After.
	retryAfterMax = 5 * time.Minute
	// ackWait bounds how long the poller waits for a view to be rendered before it asks again.
	ackWait = time.Second
	// failureLogEvery is how often a failure that lasts is logged again at warn.
	failureLogEvery = time.Minute
	// fsDebounce coalesces the burst of events of one editor save; fsSettleMax bounds the wait
	// after a burst's first event, so that a file changing without a pause (one rewritten every
	// 50 ms) still has its templates rendered: each event restarted the wait, and none came.
	fsDebounce  = 100 * time.Millisecond
	fsSettleMax = time.Second
	// dirSyncDelay bounds how long the fsync of the directories of installed files (and with
	// it the record of what is applied) waits, so that a burst of changes pays one.
	dirSyncDelay = 20 * time.Millisecond
)

// fetched is a view the poller got from the server.
type fetched struct {
	view  *view
	reset bool // the store changed: render everything
}

// ack is what the agent has applied, as its long-polls report it (X-Shoelace-Applied and
// X-Shoelace-Rollout).
type ack struct {
	applied int64
	rollout string
}

// Run renders every template, then long-polls the server and re-renders the templates whose
// inputs changed until ctx ends. When the server cannot be reached at start it renders the
// last-known-good view from cache_dir. It returns nil when ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	if len(a.tmpls) == 0 {
		return a.noTemplates()
	}
	if a.cfg.MetricsListen != "" {
		stopMetrics, err := a.serveMetrics(ctx, a.cfg.MetricsListen)
		if err != nil {
			return err
		}
		defer stopMetrics()
	}
	l := &loop{a: a, ctx: ctx, changedSources: map[string]bool{}, changedReads: map[string]bool{}, recheckReads: map[string]bool{},
		refetch: make(chan struct{}, 1)}
	l.start()
	defer l.close()
	for {
		ev := l.wait()
		if ev.kind == evStop {
			a.notify(a.opts.Notify.Stopping)
			a.log.Info("stopping")
			return nil
		}
		l.step(ev)
	}
}

// loop is the state of Run. Only step (and start) change it, in Run's goroutine; the poller,
// the persister and the reporter are goroutines it hands work to through channels. The state
// of one pass (staged groups, installed files, commands owed) is a pass's (group.go); what the
// server was told is the reporter's and, for long-polls, the poller's last ack.
type loop struct {
	a          *Agent
	stopEnroll func() // ends an enrollment still in flight
	ctx        context.Context

	// cur is the view the files were last rendered from (nil before one); pending is a view
	// waiting for wait's timers, quiet and deadline.
	cur             *view
	pending         *fetched
	quiet, deadline *time.Timer

	// Template sources and templates_dir edited, waiting for the burst to settle (fsTimer).
	changedSources map[string]bool
	configChanged  bool
	fsTimer        *time.Timer
	fsFirst        time.Time // the first event of the burst fsTimer waits out
	watcher        *fsnotify.Watcher
	// Local files that the templates' last renders read (file, fileExists), changed and
	// waiting for the burst to settle too; readDirs are their directories, and those of the
	// links their paths go through, that watcher watches (watchReads).
	changedReads map[string]bool
	// recheckReads are files read before their directory was watched (watchReads), rendered
	// again with the changed ones in case they changed in between.
	recheckReads map[string]bool
	// goneReadDirs are directories of files read that were gone when watchReads would have
	// watched them, their files rendered once more since (not again at each pass).
	goneReadDirs map[string]bool
	readDirs     map[string]bool
	// readLinks are the symbolic links that the paths of the files read go through (a
	// Kubernetes volume's cert.pem -> ..data/cert.pem and ..data -> ..2026_x), each with the
	// files read through it: a link replaced (its directory is watched) changes what they
	// read, though no event names them.
	readLinks map[string][]string
	// readEnds are the paths that the files read through links lead to (/srv/certs/ca.pem for
	// /etc/app/ca.pem -> /srv/certs/ca.pem), each with the files read through it: a change
	// there (its directory is watched) changes what they read, though no event names them.
	readEnds map[string][]string
	// sourceLinks are the symbolic links that the paths of the template sources, of the
	// files of templates_dir and of the confd resources go through (a Kubernetes configmap
	// volume's), and the files they lead to, each with the sources read through it ("" for a
	// file of the config): an update replaces them, or edits the file where it lies, and no
	// event names a source or a file of the config.
	sourceLinks map[string][]string
	// sourceDirs are the directories that watchFiles watched (of the sources, templates_dir,
	// conf.d), and those of their links: one whose path goes through a link replaced is
	// watched again where the link leads now (rewatchThrough).
	sourceDirs map[string]bool

	// poller long-polls the server; its acks say what the agent applied.
	poller *poller
	// refetch asks the poller (this one and those after a reload) for the whole view again:
	// the token the requests carry changed (enroll.go), and with it maybe the view served.
	refetch chan struct{}
	// reporter posts what each pass did to the server, in order.
	reporter *reporter
	// unsynced record the outcomes of the passes whose installs wait for the fsync of their
	// directories (a.dirSyncs), in order; next is what they and the batch syncing leave
	// applied; dirTimer hands them to a goroutine of their own (startSync), beside the loop,
	// so that a change arriving meanwhile is installed without waiting for that fsync.
	unsynced []func()
	next     *ack
	// beforeCandidate is what was applied before the candidate of the rollout applied now (the
	// first of several in a row): what the files hold again once that candidate is undone.
	beforeCandidate ack
	dirTimer        *time.Timer
	// syncing is the batch whose directories are being fsynced (nil when none); synced gets it
	// back once they are, and the loop then records its outcomes. syncDue: dirTimer fired while
	// a batch was syncing, so the next one starts when it is done.
	syncing *dirBatch
	synced  chan *dirBatch
	syncDue bool

	// retryTimer tries again the installs that failed (tmpl.retry) after retryWait.
	retryTimer *time.Timer
	retryWait  time.Duration
}

// dirBatch is the directories of the installs of one or more passes, fsynced beside the loop,
// and the records of those passes' outcomes, which the loop runs once they are.
type dirBatch struct {
	dirs    *atomicfile.DirSyncs
	records []func()
}

// event is what the loop waits for.
type event struct {
	kind  eventKind
	view  fetched        // evView
	file  fsnotify.Event // evFile
	err   error          // evWatchError
	batch *dirBatch      // evDirsSynced
}

type eventKind int

const (
	evStop         eventKind = iota // ctx ended
	evView                          // the poller fetched a new view
	evQuiet                         // wait.min passed since the last view
	evDeadline                      // wait.max passed since the first view waiting
	evFile                          // a template source or templates_dir changed
	evWatchError                    // the file watcher failed
	evFilesSettled                  // no file event for fsDebounce
	evReload                        // SIGHUP
	evDirSync                       // dirSyncDelay passed since a deferred directory fsync
	evDirsSynced                    // the batch syncing has its directories fsynced
	evRetry                         // retryWait passed since a pass whose installs failed
)

// step moves the loop's state for one event: every transition of Run is here.
func (l *loop) step(ev event) {
	switch ev.kind {
	case evView:
		// Render now, or once the view has been quiet for wait.min (at the latest wait.max).
		l.pending = mergeFetched(l.pending, ev.view)
		if !l.a.cfg.Wait.Enabled() {
			l.renderPending()
		} else {
			l.deferPending()
		}
		l.ackPoller() // the poller's next long-poll reports what is applied now
	case evQuiet, evDeadline:
		l.renderPending()
		l.ackPoller()
	case evFile:
		switch {
		case l.a.isConfigEvent(ev.file.Name):
			l.configChanged = true
		case l.a.isSource(ev.file.Name):
			l.changedSources[ev.file.Name] = true
		case len(l.sourceLinks[ev.file.Name]) > 0:
			for _, src := range l.sourceLinks[ev.file.Name] {
				if src == "" {
					l.configChanged = true // a file of templates_dir, or a confd resource
				} else {
					l.changedSources[src] = true
				}
			}
			// The volume may hold files that templates read too.
			for _, f := range l.readLinks[ev.file.Name] {
				l.changedReads[f] = true
			}
			l.rewatchThrough(ev.file.Name)
		case l.readDirs[filepath.Dir(ev.file.Name)] && l.a.isRead(ev.file.Name):
			l.changedReads[ev.file.Name] = true
		case len(l.readLinks[ev.file.Name]) > 0:
			for _, f := range l.readLinks[ev.file.Name] {
				l.changedReads[f] = true
			}
			l.rewatchThrough(ev.file.Name)
		case len(l.readEnds[ev.file.Name]) > 0:
			for _, f := range l.readEnds[ev.file.Name] {
				l.changedReads[f] = true
			}
		case l.readDirs[ev.file.Name] && ev.file.Has(fsnotify.Remove|fsnotify.Rename):
			// The directory of files read was removed or moved, and its watch with it: watched
			// again at the next pass (watchReads) once it is back, and the files read there,
			// gone, rendered again now.
			l.lostReadDir(ev.file.Name)
		default:
			return // another file in a watched directory, such as a rendered one
		}
		l.a.log.Debug("file event", "path", ev.file.Name, "op", ev.file.Op.String())
		l.settleFiles()
	case evWatchError:
		l.a.log.Warn("file watch error", "error", ev.err.Error())
	case evFilesSettled:
		l.fsTimer = nil
		if l.configChanged {
			l.configChanged = false
			clear(l.changedSources)
			clear(l.changedReads)
			clear(l.recheckReads)
			l.a.log.Info("config files changed: reloading config")
			l.reload()
			return
		}
		l.renderSources()
	case evReload:
		l.a.log.Info("reloading config (SIGHUP)")
		l.reload()
	case evDirSync:
		l.dirTimer = nil
		if l.syncing != nil {
			l.syncDue = true
			return
		}
		l.startSync()
	case evDirsSynced:
		l.doneSync(ev.batch)
	case evRetry:
		l.retryTimer = nil
		l.retryInstalls()
	}
}

// wait returns the next event.
func (l *loop) wait() event {
	var fsEvents <-chan fsnotify.Event
	var fsErrors <-chan error
	if l.watcher != nil {
		fsEvents, fsErrors = l.watcher.Events, l.watcher.Errors
	}
	select {
	case <-l.ctx.Done():
		return event{kind: evStop}
	case f := <-l.poller.updates:
		return event{kind: evView, view: f}
	case <-timerC(l.quiet):
		return event{kind: evQuiet}
	case <-timerC(l.deadline):
		return event{kind: evDeadline}
	case ev := <-fsEvents:
		return event{kind: evFile, file: ev}
	case err := <-fsErrors:
		return event{kind: evWatchError, err: err}
	case <-timerC(l.fsTimer):
		return event{kind: evFilesSettled}
	case <-l.a.opts.Reload:
		return event{kind: evReload}
	case <-timerC(l.dirTimer):
		return event{kind: evDirSync}
	case b := <-l.synced:
		return event{kind: evDirsSynced, batch: b}
	case <-timerC(l.retryTimer):
		return event{kind: evRetry}
	}
}

// start takes over what a killed run owed, starts the persister, the reporter and the file
// watcher, renders a first time (from the server, else from the cache) and starts the poller.
func (l *loop) start() {
	a := l.a
	// Commands a killed run owed join the first pass; from now on what is owed is recorded.
	a.loadOwedAtStart()
	a.loadCandidatesAtStart()
	a.removeLeftovers(time.Now())
	// The cache and status files are written off the render path, and so are reports.
	l.reporter = startReporter(a.log, &a.reportsTaken)
	// enroll.go: the instance token, from cache_dir or obtained now; once obtained, the last
	// report goes again with it, and the status file no longer says why it was not.
	a.persist = startPersister(a.log)
	p := a.persist
	l.stopEnroll = a.startEnrollment(l.ctx, func() { l.reporter.resend(); p.enrolledNow() }, func() { askAgain(l.refetch) })
	select {
	case <-l.refetch: // the enrollment before the first fetch: that fetch carries its token
	default:
	}
	a.recordOwed = true
	a.dirSyncs, a.spares = &atomicfile.DirSyncs{}, true
	l.synced = make(chan *dirBatch, 1)
	// Watch before the first render, so that an edit right after it is not missed.
	l.rewatch()

	if v, err := a.fetch(l.ctx); err == nil {
		l.render(v, true)
	} else {
		msg, _ := describeFetchError(err)
		a.log.Warn("first sync failed", "reason", msg, "error", err.Error())
		c, cerr := LoadCache(a.cfg.cacheDir(), a.cfg.Appliance)
		switch {
		case cerr == nil:
			// Not only an unreachable server: one that refuses the token or the view ends here too.
			a.log.Warn("rendering from cache: no view from the server at start", "reason", msg, "cache", CachePath(a.cfg.CacheDir, a.cfg.Appliance),
				"revision", c.Revision, "store", c.Store, "saved", c.Saved)
			l.render(c.view(), true)
		case errors.Is(cerr, os.ErrNotExist):
			a.log.Error("no cached view to render from; files left as they are until the server answers", "cache_dir", a.cfg.CacheDir)
			a.putStatus(a.fetchFailedStatus(err))
		default:
			a.log.Error("cached view unusable; files left as they are until the server answers", "error", cerr.Error())
			a.putStatus(a.fetchFailedStatus(err))
		}
	}
	a.notify(a.opts.Notify.Ready)
	l.startPoller()
}

// close stops what start started, writing what is pending.
func (l *loop) close() {
	l.stopPoller()
	if l.stopEnroll != nil {
		l.stopEnroll()
	}
	stopTimer(l.quiet)
	stopTimer(l.deadline)
	stopTimer(l.fsTimer)
	stopTimer(l.retryTimer)
	if l.watcher != nil {
		l.watcher.Close()
	}
	l.flushDirs() // the outcomes are recorded (the status written), the last report dropped
	l.a.dirSyncs, l.a.spares = nil, false
	l.reporter.close()
	l.a.persist.close()
	l.a.persist = nil
	l.a.recordOwed = false
}

// mergeFetched is the view to render when next arrives while old waits: next, keeping a reset.
func mergeFetched(old *fetched, next fetched) *fetched {
	if old != nil {
		next.reset = next.reset || old.reset
	}
	return &next
}

// deferPending (re)arms wait's timers for the pending view.
func (l *loop) deferPending() {
	minWait, maxWait := l.a.cfg.Wait.bounds()
	if minWait > 0 {
		stopTimer(l.quiet)
		l.quiet = time.NewTimer(minWait)
	}
	if l.deadline == nil && maxWait > 0 {
		l.deadline = time.NewTimer(maxWait)
	}
}

// renderPending renders the pending view: everything when the store changed, the view went
// back, or the files were rendered from the cache; else the templates whose inputs changed.
func (l *loop) renderPending() {
	f := l.pending
	l.pending = nil
	stopTimer(l.quiet)
	stopTimer(l.deadline)
	l.quiet, l.deadline = nil, nil
	if f == nil {
		return
	}
	cur := l.cur
	full := f.reset || cur == nil || cur.FromCache || cur.Store != f.view.Store || f.view.Revision < cur.Revision
	if full && cur != nil && cur.Store != f.view.Store {
		l.a.log.Info("store changed: full re-render", "old_store", cur.Store, "new_store", f.view.Store, "revision", f.view.Revision)
	}
	l.render(f.view, full)
}

// render renders every template from v (only those whose inputs changed unless full) and
// makes v the current view.
func (l *loop) render(v *view, full bool) {
	a := l.a
	l.cur = v
	a.metrics.viewRevision.Store(v.Revision)
	a.metrics.fromCache.Store(v.FromCache)
	if !v.FromCache {
		a.metrics.lastSync.Store(time.Now().Unix())
	}
	l.pass(v, a.tmpls, full)
	a.saveCache(v)
	if f := a.opts.Notify.Status; f != nil {
		src := "server"
		if v.FromCache {
			src = "cache (server unreachable)"
		}
		_ = f(fmt.Sprintf("revision %d from %s; applied %d; %d failed", v.Revision, src, a.applied.Load(), a.failing()))
	}
}

// renderSources re-parses the templates whose source changed and renders them.
func (l *loop) renderSources() {
	a := l.a
	// What changed until now; what the pass finds (a directory its reads have it watch anew,
	// watchReads) is for the next time the files settle. Cleared after the pass, a file to
	// render again once watched was dropped unrendered.
	changedSources, changedReads, recheckReads := l.changedSources, l.changedReads, l.recheckReads
	l.changedSources, l.changedReads, l.recheckReads = map[string]bool{}, map[string]bool{}, map[string]bool{}
	var sel []*tmpl
	for _, t := range a.tmpls {
		if t.cfg.Source == "" || !changedSources[t.cfg.Source] {
			continue
		}
		nt, err := parseTemplate(t.cfg)
		if err != nil {
			a.log.Error("template source edited but not usable; keeping the previous version", "template", t.name(), "error", err.Error())
			continue
		}
		a.log.Info("template source edited", "template", t.name(), "source", t.cfg.Source)
		t.t, t.last, t.inPlace, t.failed, t.disk = nt, nil, false, nil, atomicfile.Stamp{}
		sel = append(sel, t)
	}
	// A local file that a template read changed: it is rendered again, as consul-template
	// renders a template again when a file it reads with file changes.
	for _, t := range a.tmpls {
		if slices.Contains(sel, t) {
			continue
		}
		for _, f := range t.readFiles() {
			if changedReads[filepath.Clean(f)] {
				a.log.Info("file read by the template changed", "template", t.name(), "file", f)
				sel = append(sel, t)
				break
			}
			if recheckReads[filepath.Clean(f)] {
				a.log.Debug("file read by the template, watched now: rendered again", "template", t.name(), "file", f)
				sel = append(sel, t)
				break
			}
		}
	}
	if len(sel) == 0 || l.cur == nil {
		return
	}
	l.pass(l.cur, sel, true)
	l.ackPoller()
}

// pass renders sel from v, then records the outcome: the applied revision when every template
// is in place, the status file, and a report to the server. The fsync of the directories of the
// files it renamed is deferred (a.dirSyncs: at most dirSyncDelay, so that a burst of changes
// pays one per directory and none lands on the next change's path), and so is the outcome's
// record: nothing says a revision is applied before its files are durable.
func (l *loop) pass(v *view, sel []*tmpl, force bool) {
	a := l.a
	start := time.Now()
	res := a.renderPass(l.ctx, v, sel, force, false)
	a.logPass(v, res, time.Since(start))
	l.watchReads()
	prev := l.applied()
	k := prev
	switch {
	case a.failing() == 0:
		k = ack{applied: v.Revision, rollout: v.Rollout}
	case res.leftCandidate && k.rollout != "" && k.rollout != v.Rollout:
		// After the rollout, a view that failed undid the candidate applied (or installed over
		// it): the files hold what they held before it, not its revision.
		k = l.beforeCandidate
	}
	if k.rollout != "" && prev.rollout == "" {
		l.beforeCandidate = prev
	}
	st, rep := a.status(v, res, k.applied), a.report(v, k)
	l.unsynced = append(l.unsynced, func() {
		a.applied.Store(k.applied)
		a.appliedRollout = k.rollout
		a.putStatus(st)
		l.reporter.put(a.client, a.cfg.Appliance, rep)
	})
	l.next = &k
	l.armRetry()
	if !a.reportsTaken.Load() || !a.dirSyncs.Pending() && l.syncing == nil {
		// A server that takes no reports, told by the long-polls, which are not to wait for
		// the fsync; or nothing to wait for (or a command made them durable already).
		l.flushDirs()
		return
	}
	if a.dirSyncs.Pending() && l.dirTimer == nil && !l.syncDue {
		l.dirTimer = time.NewTimer(dirSyncDelay)
	}
	// Else the batch syncing is older than this pass: its end records this pass's outcome
	// (doneSync) after its own.
}

// armRetry arms retryTimer when an install failed (tmpl.retry), after retryPause of the
// last pause, and forgets the pause when none did. A render error or a failed check is not
// tried again on a timer: it depends on the view or the config, and their changes render it
// again.
func (l *loop) armRetry() {
	if !slices.ContainsFunc(l.a.tmpls, func(t *tmpl) bool { return t.retry }) {
		stopTimer(l.retryTimer)
		l.retryTimer, l.retryWait = nil, 0
		return
	}
	if l.retryTimer == nil {
		l.retryWait = retryPause(l.retryWait)
		l.retryTimer = time.NewTimer(l.retryWait)
	}
}

// retryInstalls renders again from the current view the templates whose install failed, with
// the others of their groups (a group is installed whole); what is in place stays, and the
// group's command runs when a file is installed.
func (l *loop) retryInstalls() {
	cmds := map[string]bool{}
	for _, t := range l.a.tmpls {
		if t.retry && t.cfg.Command != "" {
			cmds[t.cfg.Command] = true
		}
	}
	var sel []*tmpl
	for _, t := range l.a.tmpls {
		if t.retry || cmds[t.cfg.Command] {
			sel = append(sel, t)
		}
	}
	if len(sel) == 0 || l.cur == nil {
		return
	}
	l.a.log.Info("trying again the installs that failed", "templates", len(sel), "after", l.retryWait.String())
	l.pass(l.cur, sel, false)
	l.ackPoller()
}

// applied is what is applied once the pending outcomes are recorded.
func (l *loop) applied() ack {
	if l.next != nil {
		return *l.next
	}
	return ack{applied: l.a.applied.Load(), rollout: l.a.appliedRollout}
}

// startSync hands the directories of the files installed since the last batch, and the
// outcomes of the passes that installed them, to a goroutine that fsyncs them; doneSync
// records the outcomes. The installs that follow defer their fsyncs to a new a.dirSyncs.
func (l *loop) startSync() {
	a := l.a
	if !a.dirSyncs.Pending() {
		l.flushDirs() // outcomes only (their directories fsynced by a command's pass)
		return
	}
	b := &dirBatch{dirs: a.dirSyncs, records: l.unsynced}
	a.dirSyncs, l.unsynced, l.syncing, l.syncDue = &atomicfile.DirSyncs{}, nil, b, false
	stopTimer(l.dirTimer)
	l.dirTimer = nil
	go func() {
		a.syncDirsOf(b.dirs)
		l.synced <- b
	}()
}

// doneSync records the outcomes of b, whose directories are fsynced, then those of the passes
// since it whose installs need no fsync; a batch due meanwhile starts now.
func (l *loop) doneSync(b *dirBatch) {
	l.syncing = nil
	for _, record := range b.records {
		record()
	}
	switch {
	case l.syncDue:
		l.startSync()
	case !l.a.dirSyncs.Pending():
		l.flushDirs()
	default:
		l.ackPoller() // dirTimer, armed by the pass that installed them, starts the next batch
	}
}

// flushDirs waits for the batch syncing, records its outcomes, fsyncs the directories of the
// files installed since, then records the outcomes of the passes that installed them, in
// order, and tells the poller. It blocks the loop: for what must see the files durable or the
// outcomes recorded at once (a server that takes no reports, a reload, the stop).
func (l *loop) flushDirs() {
	stopTimer(l.dirTimer)
	l.dirTimer, l.syncDue = nil, false
	if b := l.syncing; b != nil {
		l.syncing = nil
		<-l.synced
		for _, record := range b.records {
			record()
		}
	}
	l.a.syncDirs()
	for _, record := range l.unsynced {
		record()
	}
	l.unsynced, l.next = nil, nil
	l.ackPoller()
}

// ackPoller tells the poller what is applied now.
func (l *loop) ackPoller() {
	if l.poller != nil {
		l.poller.ack(ack{applied: l.a.applied.Load(), rollout: l.a.appliedRollout})
	}
}

// reload loads the config again; on success it swaps it in, restarts the poller and renders
// everything (failed reloads are tried again). A bad config is logged and the running one kept.
func (l *loop) reload() {
	a := l.a
	if a.opts.ConfigPath == "" {
		a.log.Warn("reload asked but the agent has no config file")
		return
	}
	a.notify(a.opts.Notify.Reloading)
	defer a.notify(a.opts.Notify.Ready)
	l.flushDirs()
	cfg, err := LoadConfigWith(a.opts.ConfigPath, Overrides{ConfdDir: a.opts.ConfdDir})
	if err != nil {
		a.log.Error("config not reloaded; keeping the running one", "error", err.Error())
		return
	}
	old := a.cfg
	// The poller starts again from the view rendered: a view waiting for wait's timers is
	// fetched again at once.
	l.stopPoller()
	l.pending = nil
	stopTimer(l.quiet)
	stopTimer(l.deadline)
	l.quiet, l.deadline = nil, nil
	defer l.startPoller()
	oldClient, oldTmpls, oldInstance := a.client, a.tmpls, a.instance
	if err := a.configure(cfg); err != nil {
		a.client, a.tmpls, a.instance, a.cfg = oldClient, oldTmpls, oldInstance, old
		a.log.Error("config not reloaded; keeping the running one", "error", err.Error())
		return
	}
	// The applied revision was the old config's: as at a start, none is applied until every
	// template of this one is in place (the render below records it then). A template added
	// that cannot render must not leave a report claiming a revision applied.
	a.applied.Store(0)
	a.appliedRollout = ""
	a.keepCandidates(oldTmpls, CandidatePath(old.cacheDir(), old.Appliance))
	if cfg.Appliance != old.Appliance || cfg.Server != old.Server {
		l.cur = nil
		if v, err := a.fetch(l.ctx); err == nil {
			l.cur = v
		} else if c, cerr := LoadCache(a.cfg.cacheDir(), a.cfg.Appliance); cerr == nil {
			a.log.Warn("rendering from cache: server unreachable after reload", "error", err.Error(), "revision", c.Revision)
			l.cur = c.view()
		}
	}
	if cfg.MetricsListen != old.MetricsListen {
		a.log.Warn("metrics_listen changed: it takes effect at the next start", "serving", old.MetricsListen, "configured", cfg.MetricsListen)
	}
	a.log.Info("config reloaded", "templates", len(a.tmpls), "appliance", a.cfg.Appliance)
	for _, p := range cfg.Unparsed {
		a.log.Error(UnparsedMessage, "problem", p)
	}
	for _, w := range cfg.TemplatesDirWarnings() {
		a.log.Warn("templates_dir file not read", "problem", w)
	}
	// Watch the new config's directories before its pass, as start does: an edit made while the
	// pass runs (its commands may take minutes) is not missed.
	l.rewatch()
	if l.cur != nil {
		l.render(l.cur, true)
	}
}

// rewatch (re)starts the file watcher on the directories of the current templates.
func (l *loop) rewatch() {
	if l.watcher != nil {
		l.watcher.Close()
		l.watcher = nil
	}
	w, links, dirs, err := l.a.watchFiles()
	if err != nil {
		l.a.log.Warn("template files are not watched", "error", err.Error())
		return
	}
	l.watcher, l.sourceLinks, l.sourceDirs = w, links, dirs
	l.readDirs = nil
	l.watchReads()
}

// watchReads watches the directories of the local files that the templates' last renders read
// (file, fileExists), those of the symbolic links their paths go through, and those of the
// files such links lead to: a change to one renders them again. A template's own destination, or another's, is not watched: a template
// that reads it would render again at each install.
func (l *loop) watchReads() {
	if l.watcher == nil {
		return
	}
	if l.readDirs == nil {
		l.readDirs, l.goneReadDirs = map[string]bool{}, map[string]bool{}
	}
	l.readLinks, l.readEnds = map[string][]string{}, map[string][]string{}
	var added map[string]bool
	reads := l.a.reads()
	dirsOf := make(map[string][]string, len(reads))
	links := linkCache{}
	// A destination, as written or where its links lead, is not watched as the end of a read's
	// links: each install would render again (a template reading its own through a link).
	dests := map[string]bool{}
	for _, t := range l.a.tmpls {
		d := filepath.Clean(t.cfg.Destination)
		_, end := links.walk(d)
		dests[d], dests[end] = true, true
	}
	for _, t := range l.a.tmpls {
		for _, f := range t.readFiles() {
			f = filepath.Clean(f)
			if _, ok := dirsOf[f]; ok || !filepath.IsAbs(f) || !reads[f] {
				continue
			}
			dirs := []string{filepath.Dir(f)}
			through, end := links.walk(f)
			for _, link := range through {
				l.readLinks[link] = append(l.readLinks[link], f)
				// A link into another directory (a Kubernetes volume mounted elsewhere) is
				// replaced there: that directory is watched too.
				if d := filepath.Dir(link); !slices.Contains(dirs, d) {
					dirs = append(dirs, d)
				}
			}
			// The file a link leads to is rewritten where it lies (/srv/certs/ca.pem for
			// /etc/app/ca.pem): its directory is watched too.
			if len(through) > 0 && end != f && !dests[end] {
				l.readEnds[end] = append(l.readEnds[end], f)
				if d := filepath.Dir(end); !slices.Contains(dirs, d) {
					dirs = append(dirs, d)
				}
			}
			dirsOf[f] = dirs
			for _, d := range dirs {
				if l.readDirs[d] {
					continue
				}
				err := l.watcher.Add(d)
				if err != nil {
					l.a.log.Debug("directory of a file read not watched", "dir", d, "error", err.Error())
					// Gone since the render read it (removed before it could be watched): its
					// files are rendered once more, as a removal seen is (lostReadDir), once.
					if !errors.Is(err, fs.ErrNotExist) || l.goneReadDirs[d] {
						continue
					}
					l.goneReadDirs[d] = true
				} else {
					l.readDirs[d] = true
					delete(l.goneReadDirs, d)
				}
				if added == nil {
					added = map[string]bool{}
				}
				added[d] = true
			}
		}
	}
	if added == nil {
		return
	}
	// A file read before its directory (or a link's on its path) was watched may have changed
	// in between (the render read it, then installed, then came here), unseen, or the
	// directory may be gone: the templates that read files there are rendered once more, now
	// that a change is seen (the same bytes write and run nothing).
	for f, dirs := range dirsOf {
		if slices.ContainsFunc(dirs, func(d string) bool { return added[d] }) {
			l.recheckReads[f] = true
		}
	}
	l.settleFiles()
}

// settleFiles (re)starts the wait for a burst of file events to settle (evFilesSettled):
// fsDebounce after the last event, at the latest fsSettleMax after the first.
func (l *loop) settleFiles() {
	now := time.Now()
	if l.fsTimer == nil {
		l.fsFirst = now
	}
	stopTimer(l.fsTimer)
	l.fsTimer = time.NewTimer(max(0, min(fsDebounce, l.fsFirst.Add(fsSettleMax).Sub(now))))
}

// maxLinkHops bounds the symbolic links that a walk follows (a loop of links ends there).
const maxLinkHops = 40

// linkCache holds what one watchReads (or watchFiles) learned of each path it lstat'ed: the
// files read share their directories, which are looked at once, not once per file.
type linkCache map[string]linkStep

// linkStep is a path's link target ("" when it is not a link), or that it could not be read.
type linkStep struct {
	target string
	err    bool
}

// of returns the symbolic links that resolving name, an absolute clean path, goes through, in
// the order met (name itself first when it is one), each path lstat'ed (and read, when a link)
// once for c's lifetime. It stops at a component it cannot read.
func (c linkCache) of(name string) []string {
	links, _ := c.walk(name)
	return links
}

// walk is of, and also returns the path that name leads to through the links (name when it
// goes through none): as far as they were followed, when a component cannot be read.
func (c linkCache) walk(name string) (links []string, end string) {
	path := name
	for hop := 0; hop < maxLinkHops; hop++ {
		vol := filepath.VolumeName(path)
		parts := strings.Split(strings.TrimPrefix(path[len(vol):], string(filepath.Separator)), string(filepath.Separator))
		cur := vol + string(filepath.Separator)
		next := ""
		for i, p := range parts {
			if p == "" {
				continue
			}
			cur = filepath.Join(cur, p)
			st, ok := c[cur]
			if !ok {
				st.target, st.err = readLink(cur)
				c[cur] = st
			}
			if st.err {
				return links, path
			}
			if st.target == "" {
				continue
			}
			links = append(links, cur)
			target := st.target
			if !filepath.IsAbs(target) {
				target = filepath.Join(filepath.Dir(cur), target)
			}
			next = filepath.Join(append([]string{target}, parts[i+1:]...)...)
			break
		}
		if next == "" {
			return links, path
		}
		path = next
	}
	return links, path
}

// readLink returns p's target when p is a symbolic link, "" when it is another file; failed
// when p cannot be lstat'ed or its link read.
func readLink(p string) (target string, failed bool) {
	fi, err := os.Lstat(p)
	if err != nil {
		return "", true
	}
	if fi.Mode()&fs.ModeSymlink == 0 {
		return "", false
	}
	target, err = os.Readlink(p)
	return target, err != nil
}

// rewatchThrough forgets the watches of the directories whose path goes through link, a link
// just replaced: each watches the directory that link led to (a release kept beside the one
// current leads to now), and the next pass (watchReads) watches it where the link leads now.
//
// A directory of the sources (a.tmpl in current/, current -> releases/v1) is watched again
// at once, where it leads now: the sources read through link are read again once the files
// settle, after that watch, and an edit of one in the new release is seen from then on.
func (l *loop) rewatchThrough(link string) {
	links := linkCache{}
	for d := range l.readDirs {
		if slices.Contains(links.of(d), link) {
			delete(l.readDirs, d)
			if l.watcher != nil {
				_ = l.watcher.Remove(d)
			}
		}
	}
	for d := range l.sourceDirs {
		if l.watcher == nil || !slices.Contains(links.of(d), link) {
			continue
		}
		_ = l.watcher.Remove(d)
		if err := l.watcher.Add(d); err != nil {
			l.a.log.Warn("directory not watched", "dir", d, "error", err.Error())
			continue
		}
		l.a.log.Debug("directory watched again where a link on its path leads now", "dir", d, "link", link)
	}
}

// lostReadDir forgets the watch of dir, a directory of files read (or of links their paths go
// through) that was removed or moved, and marks those files changed.
func (l *loop) lostReadDir(dir string) {
	delete(l.readDirs, dir)
	if l.watcher != nil {
		_ = l.watcher.Remove(dir) // gone with a removal; a moved one's may linger
	}
	for f := range l.a.reads() {
		if filepath.Dir(f) == dir {
			l.changedReads[f] = true
		}
	}
	for _, m := range []map[string][]string{l.readLinks, l.readEnds} {
		for p, files := range m {
			if filepath.Dir(p) == dir {
				for _, f := range files {
					l.changedReads[f] = true
				}
			}
		}
	}
}

// startPoller follows the view from the current one (a cached one too: the server answers at
// once when the store differs, and a delta that does not match it is read whole).
func (l *loop) startPoller() {
	a := l.a
	var idx int64
	var store string
	var base *api.View
	if l.cur != nil {
		idx, store = l.cur.Revision, l.cur.Store
		base = &api.View{Appliance: a.cfg.Appliance, Revision: l.cur.Revision, Keys: l.cur.Keys, Rollout: l.cur.Rollout}
	}
	ctx, cancel := context.WithCancel(l.ctx)
	p := &poller{updates: make(chan fetched, 1), acks: make(chan ack, 1), refetch: l.refetch, cancel: cancel}
	from := ack{applied: a.applied.Load(), rollout: a.appliedRollout}
	p.wg.Add(1)
	go func(c *client.Client, appliance, instance string) {
		defer p.wg.Done()
		a.poll(ctx, p, c, appliance, instance, idx, store, base, from)
	}(a.client, a.cfg.Appliance, a.instance)
	l.poller = p
}

// stopPoller stops the poller and drops a view it fetched that was not taken.
func (l *loop) stopPoller() {
	if l.poller == nil {
		return
	}
	l.poller.cancel()
	l.poller.wg.Wait()
	l.poller = nil
}

// failing counts the templates whose last pass failed (a kept file after a failed reload too).
func (a *Agent) failing() int {
	n := 0
	for _, t := range a.tmpls {
		if t.err != nil || !t.inPlace {
			n++
		}
	}
	return n
}

func (a *Agent) saveCache(v *view) {
	if v == nil || v.FromCache {
		return
	}
	job := &cacheJob{dir: a.cfg.cacheDir(), c: Cached{Appliance: a.cfg.Appliance, Store: v.Store, Revision: v.Revision, Keys: v.Keys,
		Rollout: v.Rollout, Saved: time.Now().UTC()}}
	if a.persist != nil {
		a.persist.put(job, nil)
		return
	}
	if err := SaveCache(job.dir, job.c); err != nil {
		a.log.Error("cache not saved", "error", err.Error())
	}
}

func (a *Agent) writeStatus(v *view, res passResult) {
	a.putStatus(a.status(v, res, a.applied.Load()))
}

// syncDirs fsyncs the directories whose fsync installs deferred (a.dirSyncs).
func (a *Agent) syncDirs() { a.syncDirsOf(a.dirSyncs) }

// syncDirsOf fsyncs the directories ds holds.
func (a *Agent) syncDirsOf(ds *atomicfile.DirSyncs) {
	if !ds.Pending() {
		return
	}
	if err := syncDirectories(ds); err != nil {
		// The files are in place: they count as installed. Only a crash could bring the old
		// ones back, and the next start renders them again.
		a.log.Warn("installed, but its directory was not fsynced", "error", err.Error())
	}
}

// syncDirectories fsyncs the directories held (a test hook).
var syncDirectories = (*atomicfile.DirSyncs).Sync

// status is the status after a pass at v that leaves applied applied.
func (a *Agent) status(v *view, res passResult, applied int64) *Status {
	s := &Status{Appliance: a.cfg.Appliance, Instance: a.instance, Updated: time.Now().UTC(), Store: v.Store,
		Revision: v.Revision, Applied: applied, Rollout: v.Rollout, FromCache: v.FromCache, NotEnrolled: a.enroller.notEnrolled()}
	if !v.FromCache {
		s.LastSync = s.Updated
	}
	for _, t := range a.tmpls {
		ts := TemplateStatus{Destination: t.name(), InPlace: t.inPlace, Revision: t.revision}
		if t.err != nil {
			ts.Error = t.err.Error()
		}
		s.Templates = append(s.Templates, ts)
	}
	if len(res.failures) > 0 {
		s.LastError = res.failures[0].String()
	}
	return s
}

// putStatus writes s (by the persister while Run runs).
func (a *Agent) putStatus(s *Status) {
	if a.persist != nil {
		a.persist.put(nil, &statusJob{dir: a.cfg.cacheDir(), s: s})
		return
	}
	if err := saveStatus(a.cfg.cacheDir(), s); err != nil {
		a.log.Warn("status not saved", "error", err.Error())
	}
}

func (a *Agent) notify(f func() error) {
	if f != nil {
		if err := f(); err != nil {
			a.log.Warn("service notification failed", "error", err.Error())
		}
	}
}

func stopTimer(t *time.Timer) {
	if t != nil {
		t.Stop()
	}
}

// timerC is t's channel; nil (never ready) for no timer.
func timerC(t *time.Timer) <-chan time.Time {
	if t == nil {
		return nil
	}
	return t.C
}

// watchFiles watches the directories of the template sources, templates_dir, and conf.d of
// confd_dir with the directories below it, and those of the symbolic links that the paths of
// the sources, of templates_dir's files and of the confd resources go through, which it
// returns, each with the sources read through it ("" for a file of the config).
func (a *Agent) watchFiles() (*fsnotify.Watcher, map[string][]string, map[string]bool, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, nil, nil, err
	}
	dirs := map[string]bool{}
	links, cache := map[string][]string{}, linkCache{}
	through := func(name, src string) {
		name = filepath.Clean(name)
		ls, end := cache.walk(name)
		if len(ls) > 0 && end != name {
			// The file the links lead to, edited where it lies (a.tmpl -> /srv/tmpl/a.tmpl).
			ls = append(ls, end)
		}
		for _, l := range ls {
			if !slices.Contains(links[l], src) {
				links[l] = append(links[l], src)
			}
			dirs[filepath.Dir(l)] = true
		}
	}
	for _, t := range a.tmpls {
		if src := t.cfg.Source; src != "" {
			dirs[filepath.Dir(src)] = true
			if filepath.IsAbs(src) {
				through(src, src)
			}
		}
	}
	if a.cfg.TemplatesDir != "" && a.opts.ConfigPath != "" {
		dirs[a.cfg.TemplatesDir] = true
		if es, err := os.ReadDir(a.cfg.TemplatesDir); err == nil && filepath.IsAbs(a.cfg.TemplatesDir) {
			for _, e := range es {
				if yamlName(e.Name()) && !hiddenFile(e.Name()) {
					through(filepath.Join(a.cfg.TemplatesDir, e.Name()), "")
				}
			}
		}
		if _, err := os.Stat(a.cfg.TemplatesDir); errors.Is(err, fs.ErrNotExist) {
			// Not made yet: its directory tells when it is (isConfigEvent), and the reload
			// that follows watches it.
			dirs[filepath.Dir(a.cfg.TemplatesDir)] = true
		}
	}
	if a.cfg.ConfdDir != "" && a.opts.ConfigPath != "" {
		// conf.d and the directories below it, where confd finds resources too; confd_dir
		// while it has no conf.d, to learn when one is made.
		confD := filepath.Join(a.cfg.ConfdDir, "conf.d")
		dirs[confD] = true
		_ = filepath.WalkDir(confD, func(p string, d fs.DirEntry, err error) error {
			switch {
			case err != nil && p == confD:
				delete(dirs, confD)
				dirs[a.cfg.ConfdDir] = true
			case err == nil && d.IsDir() && kubeHidden(d.Name()) && p != confD:
				return fs.SkipDir // read through links, watched as such below (confdResourceFiles)
			case err == nil && d.IsDir():
				dirs[p] = true
			}
			return nil
		})
		// A resource that is a link (a configmap's a.toml -> ..data/a.toml) changes when an
		// update replaces ..data, and no event names it.
		if files, err := confdResourceFiles(confD); err == nil && filepath.IsAbs(confD) {
			for _, f := range files {
				through(f, "")
			}
		}
	}
	for d := range dirs {
		if err := w.Add(d); err != nil {
			a.log.Warn("directory not watched", "dir", d, "error", err.Error())
		}
	}
	return w, links, dirs, nil
}

func (a *Agent) isConfigEvent(name string) bool {
	if a.opts.ConfigPath == "" {
		return false
	}
	if a.cfg.ConfdDir != "" {
		if name == filepath.Join(a.cfg.ConfdDir, "conf.d") {
			return true // made since the watch began (or gone)
		}
		if rel, err := filepath.Rel(filepath.Join(a.cfg.ConfdDir, "conf.d"), name); err == nil && rel != "." && filepath.IsLocal(rel) {
			if strings.HasSuffix(name, "toml") {
				return true // a confd resource, as confd finds them (in conf.d and below)
			}
			if fi, err := os.Lstat(name); err == nil && fi.IsDir() && !kubeHidden(fi.Name()) {
				return true // a directory made below conf.d: watched once the config is read again
			}
		}
	}
	if a.cfg.TemplatesDir == "" {
		return false
	}
	if name == filepath.Clean(a.cfg.TemplatesDir) {
		return true // made since the watch began (or gone)
	}
	// A web.yml or WEB.YAML is not read, but a reload logs that it is not (TemplatesDirWarnings).
	return filepath.Dir(name) == filepath.Clean(a.cfg.TemplatesDir) && yamlName(name) && !hiddenFile(name)
}

// reads are the files for which isRead holds, cleaned: each looked up in it, not in every
// template's reads.
func (a *Agent) reads() map[string]bool {
	out := map[string]bool{}
	for _, t := range a.tmpls {
		for _, f := range t.readFiles() {
			out[filepath.Clean(f)] = true
		}
	}
	for _, t := range a.tmpls {
		delete(out, filepath.Clean(t.cfg.Destination))
	}
	return out
}

// isRead reports whether name is a local file that a template's last render read (or its last
// failed one: readFiles), and no template's destination.
func (a *Agent) isRead(name string) bool {
	read := false
	for _, t := range a.tmpls {
		if filepath.Clean(t.cfg.Destination) == name {
			return false
		}
		if !read {
			read = slices.ContainsFunc(t.readFiles(), func(f string) bool { return filepath.Clean(f) == name })
		}
	}
	return read
}

// readFiles are the local files that t's last render read (file, fileExists), and those that its
// last failed render read before it failed (a certificate not written yet): a change to one
// renders t again.
func (t *tmpl) readFiles() []string {
	switch {
	case t.last == nil:
		return t.failedReads
	case len(t.failedReads) == 0:
		return t.last.Files
	}
	return append(slices.Clone(t.last.Files), t.failedReads...)
}

func (a *Agent) isSource(name string) bool {
	for _, t := range a.tmpls {
		if t.cfg.Source == name {
			return true
		}
	}
	return false
}
