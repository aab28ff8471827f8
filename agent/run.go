package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"

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
	// fsDebounce coalesces the burst of events of one editor save.
	fsDebounce = 100 * time.Millisecond
)

// fetched is a view the poller got from the server.
type fetched struct {
	view  *view
	reset bool // the store changed: render everything
	// taken is closed once the loop has rendered the view (or deferred it, with wait on), so
	// that the next long-poll reports the revision it applied.
	taken chan struct{}
}

// Run renders every template, then long-polls the server and re-renders the templates whose
// inputs changed until ctx ends. When the server cannot be reached at start it renders the
// last-known-good view from cache_dir. It returns nil when ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	if len(a.tmpls) == 0 {
		return fmt.Errorf("%s: no templates configured (in templates: or in *.yaml files of templates_dir %q)", a.cfg.Path, a.cfg.TemplatesDir)
	}
	if a.cfg.MetricsListen != "" {
		stopMetrics, err := a.serveMetrics(ctx, a.cfg.MetricsListen)
		if err != nil {
			return err
		}
		defer stopMetrics()
	}
	a.reportNow = make(chan struct{}, 1)
	// Commands a killed run owed join the first pass; from now on what is owed is recorded.
	a.loadOwedAtStart()
	defer a.startEnrollment(ctx)() // enroll.go: the instance token, from cache_dir or obtained now
	a.recordOwed = true
	defer func() { a.recordOwed = false }()
	// The cache and status files are written off the render path.
	a.persist = startPersister(a.log)
	defer func() {
		a.persist.close()
		a.persist = nil
	}()
	// Watch before the first render, so that an edit right after it is not missed.
	watcher, watchErr := a.watchFiles()
	var fsEvents <-chan fsnotify.Event
	var fsErrors <-chan error
	if watchErr != nil {
		a.log.Warn("template files are not watched", "error", watchErr.Error())
	} else {
		fsEvents, fsErrors = watcher.Events, watcher.Errors
	}
	defer func() {
		if watcher != nil {
			watcher.Close()
		}
	}()

	var cur *view
	if v, err := a.fetch(ctx); err == nil {
		cur = v
		a.sync(ctx, cur, true)
		a.saveCache(cur)
	} else {
		msg, _ := describeFetchError(err)
		a.log.Warn("first sync failed", "reason", msg, "error", err.Error())
		c, cerr := LoadCache(a.cfg.CacheDir, a.cfg.Appliance)
		switch {
		case cerr == nil:
			cur = &view{Store: c.Store, Revision: c.Revision, Keys: c.Keys, FromCache: true}
			a.log.Warn("rendering from cache: server unreachable at start", "cache", CachePath(a.cfg.CacheDir, a.cfg.Appliance),
				"revision", c.Revision, "store", c.Store, "saved", c.Saved)
			a.sync(ctx, cur, true)
		case errors.Is(cerr, os.ErrNotExist):
			a.log.Error("no cached view to render from; files left as they are until the server answers", "cache_dir", a.cfg.CacheDir)
		default:
			a.log.Error("cached view unusable; files left as they are until the server answers", "error", cerr.Error())
		}
	}
	a.notify(a.opts.Notify.Ready)

	updates := make(chan fetched, 1)
	stopPoll := func() {}
	var wg sync.WaitGroup
	startPoller := func(from *view) {
		var pollCtx context.Context
		pollCtx, stopPoll = context.WithCancel(ctx)
		var idx int64
		var store string
		if from != nil {
			// From a cached view too: the server answers at once when the store differs.
			idx, store = from.Revision, from.Store
		}
		wg.Add(1)
		go func(ctx context.Context, c *client.Client, appliance, instance string) {
			defer wg.Done()
			a.poll(ctx, c, appliance, instance, idx, store, updates)
		}(pollCtx, a.client, a.cfg.Appliance, a.instance)
	}
	stopPoller := func() {
		stopPoll()
		wg.Wait()
		select {
		case <-updates:
		default:
		}
	}
	startPoller(cur)
	defer stopPoller()

	var (
		pending           *fetched
		quiet, deadline   *time.Timer
		quietC, deadlineC <-chan time.Time
		fsTimer           *time.Timer
		fsC               <-chan time.Time
		changedSources    = map[string]bool{}
		configChanged     bool
		stopTimer         = func(t *time.Timer) {
			if t != nil {
				t.Stop()
			}
		}
	)
	apply := func() {
		if pending == nil {
			return
		}
		f := pending
		pending = nil
		stopTimer(quiet)
		stopTimer(deadline)
		quietC, deadlineC = nil, nil
		full := f.reset || cur == nil || cur.FromCache || cur.Store != f.view.Store || f.view.Revision < cur.Revision
		if full && cur != nil && cur.Store != f.view.Store {
			a.log.Info("store changed: full re-render", "old_store", cur.Store, "new_store", f.view.Store, "revision", f.view.Revision)
		}
		cur = f.view
		a.sync(ctx, cur, full)
		a.saveCache(cur)
	}
	for {
		select {
		case <-ctx.Done():
			a.notify(a.opts.Notify.Stopping)
			a.log.Info("stopping")
			return nil
		case f := <-updates:
			pending = &f
			taken := f.taken
			minWait, maxWait := time.Duration(a.cfg.Wait.Min), time.Duration(a.cfg.Wait.Max)
			if maxWait <= 0 && minWait > 0 {
				maxWait = 4 * minWait // a steady stream of changes must not postpone the render for ever
			}
			if minWait <= 0 && maxWait <= 0 {
				apply()
				close(taken)
				continue
			}
			close(taken) // deferred: the poller goes on collecting changes
			// Coalesce: render after min of quiet, at the latest max after the first change.
			if minWait > 0 {
				stopTimer(quiet)
				quiet = time.NewTimer(minWait)
				quietC = quiet.C
			}
			if deadlineC == nil && maxWait > 0 {
				deadline = time.NewTimer(maxWait)
				deadlineC = deadline.C
			}
		case <-quietC:
			apply()
		case <-deadlineC:
			apply()
		case ev := <-fsEvents:
			switch {
			case a.isConfigEvent(ev.Name):
				configChanged = true
			case a.isSource(ev.Name):
				changedSources[ev.Name] = true
			default:
				continue // another file in a watched directory, such as a rendered one
			}
			a.log.Debug("file event", "path", ev.Name, "op", ev.Op.String())
			stopTimer(fsTimer)
			fsTimer = time.NewTimer(fsDebounce)
			fsC = fsTimer.C
		case err := <-fsErrors:
			a.log.Warn("file watch error", "error", err.Error())
		case <-fsC:
			fsC = nil
			if configChanged {
				configChanged = false
				clear(changedSources)
				a.log.Info("templates_dir changed: reloading config")
				if a.reload(ctx, cur, stopPoller, startPoller, &cur) {
					watcher = a.rewatch(watcher, &fsEvents, &fsErrors)
				}
				continue
			}
			a.reloadSources(ctx, cur, changedSources)
			clear(changedSources)
		case <-a.opts.Reload:
			a.log.Info("reloading config (SIGHUP)")
			if a.reload(ctx, cur, stopPoller, startPoller, &cur) {
				watcher = a.rewatch(watcher, &fsEvents, &fsErrors)
			}
			pending = nil
		}
	}
}

// sync renders every template from v (only those whose inputs changed unless full), then
// records the applied revision and the status.
func (a *Agent) sync(ctx context.Context, v *view, full bool) passResult {
	a.metrics.viewRevision.Store(v.Revision)
	a.metrics.fromCache.Store(v.FromCache)
	if !v.FromCache {
		a.metrics.lastSync.Store(time.Now().Unix())
	}
	start := time.Now()
	res := a.renderPass(ctx, v, a.tmpls, full, false)
	a.logPass(v, res, time.Since(start))
	if res.ok() {
		a.setApplied(v.Revision)
	}
	a.writeStatus(v, res)
	if f := a.opts.Notify.Status; f != nil {
		src := "server"
		if v.FromCache {
			src = "cache (server unreachable)"
		}
		_ = f(fmt.Sprintf("revision %d from %s; applied %d; %d failed", v.Revision, src, a.applied.Load(), len(res.failed)))
	}
	return res
}

// setApplied records the revision at which every template is in place and, when it advanced,
// has the poller report it.
func (a *Agent) setApplied(rev int64) {
	if a.applied.Swap(rev) == rev {
		return
	}
	select {
	case a.reportNow <- struct{}{}:
	default:
	}
}

func (a *Agent) saveCache(v *view) {
	if v == nil || v.FromCache {
		return
	}
	job := &cacheJob{dir: a.cfg.CacheDir, c: Cached{Appliance: a.cfg.Appliance, Store: v.Store, Revision: v.Revision, Keys: v.Keys, Saved: time.Now().UTC()}}
	if a.persist != nil {
		a.persist.put(job, nil)
		return
	}
	if err := SaveCache(job.dir, job.c); err != nil {
		a.log.Error("cache not saved", "error", err.Error())
	}
}

func (a *Agent) writeStatus(v *view, res passResult) {
	s := &Status{Appliance: a.cfg.Appliance, Instance: a.instance, Updated: time.Now().UTC(), Store: v.Store,
		Revision: v.Revision, Applied: a.applied.Load(), FromCache: v.FromCache}
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
	if len(res.failed) > 0 {
		s.LastError = res.failed[0]
	}
	if a.persist != nil {
		a.persist.put(nil, &statusJob{dir: a.cfg.CacheDir, s: s})
		return
	}
	if err := saveStatus(a.cfg.CacheDir, s); err != nil {
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

// poll long-polls the view from idx and sends every new view to out, replacing one that was
// not taken yet. It retries failures with capped exponential backoff and jitter, honouring
// Retry-After, until ctx ends.
func (a *Agent) poll(ctx context.Context, c *client.Client, appliance, instance string, idx int64, store string, out chan fetched) {
	failures, quick304 := 0, 0
	reset := false
	var (
		lastMsg    string // the failure last logged at warn
		lastWarned time.Time
	)
	for ctx.Err() == nil {
		// The request carries the applied revision as it is now; if it advances while the
		// request waits (a render deferred by wait, a slow command), re-ask at once so that
		// the server learns it.
		select {
		case <-a.reportNow:
		default:
		}
		rctx, cancel := context.WithTimeout(ctx, DefaultPollWait+20*time.Second)
		asked := time.Now()
		var reported atomic.Bool
		go func() {
			select {
			case <-a.reportNow:
				reported.Store(true)
				cancel()
			case <-rctx.Done():
			}
		}()
		v, meta, err := c.WatchView(rctx, appliance, client.Poll{Index: idx, Wait: DefaultPollWait, Store: store, Instance: instance, Applied: a.applied.Load()})
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil && reported.Load() {
			continue
		}
		if err != nil {
			failures++
			a.metrics.pollErrors.Add(1)
			msg, ra := describeFetchError(err)
			if ra == 0 {
				ra = meta.RetryAfter
			}
			d := backoff(failures, ra)
			// One line per kind of failure, then one a minute while it lasts (each retry at debug).
			level := slog.LevelDebug
			if msg != lastMsg || time.Since(lastWarned) >= failureLogEvery {
				level, lastMsg, lastWarned = slog.LevelWarn, msg, time.Now()
			}
			a.log.Log(ctx, level, msg, "error", err.Error(), "retry_in_ms", d.Milliseconds(), "failures", failures)
			if !sleep(ctx, d) {
				return
			}
			continue
		}
		if failures > 0 {
			a.log.Info("server reachable again", "after_failures", failures)
			failures, lastMsg = 0, ""
		}
		if v == nil { // 304: nothing changed while we waited
			if store != "" && meta.Store != "" && meta.Store != store {
				// A new store: re-read everything.
				idx, store, reset = 0, meta.Store, true
				continue
			}
			// A 304 long before the wait (a draining server, a proxy with a short timeout)
			// must not turn into a busy loop.
			if time.Since(asked) < time.Second {
				quick304++
				if !sleep(ctx, backoff(quick304, 0)) {
					return
				}
			} else {
				quick304 = 0
			}
			continue
		}
		quick304 = 0
		if len(v.Keys) == 0 || (v.Appliance != "" && v.Appliance != appliance) {
			failures++
			a.log.Error("server sent an empty view or another appliance's; keeping files", "revision", v.Revision, "appliance", v.Appliance)
			if !sleep(ctx, backoff(failures, 0)) {
				return
			}
			continue
		}
		rev := v.Revision
		if rev == 0 {
			rev = meta.Index
		}
		if store != "" && meta.Store != "" && meta.Store != store {
			reset = true
		}
		idx, store = rev, meta.Store
		f := fetched{view: &view{Store: meta.Store, Revision: rev, Keys: v.Keys}, reset: reset, taken: make(chan struct{})}
		reset = false
		select {
		case out <- f:
		default:
			// The loop has not taken the previous view: replace it, keeping a reset.
			select {
			case old := <-out:
				f.reset = f.reset || old.reset
			default:
			}
			out <- f
		}
		// Wait for the render (bounded: the loop may be running a slow command), so that the
		// next request reports it without a second request.
		t := time.NewTimer(ackWait)
		select {
		case <-f.taken:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
}

// backoff is the delay after n consecutive failures: exponential from backoffMin, capped at
// backoffMax, with jitter in [d/2, d]; a server's Retry-After (capped) wins when longer.
func backoff(n int, retryAfter time.Duration) time.Duration {
	d := backoffMin
	for i := 1; i < n && d < backoffMax; i++ {
		d *= 2
	}
	d = min(d, backoffMax)
	d = d/2 + rand.N(d/2+1)
	if retryAfter > d {
		d = min(retryAfter, retryAfterMax)
	}
	return d
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// watchFiles watches the directories of the template sources and templates_dir.
func (a *Agent) watchFiles() (*fsnotify.Watcher, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	dirs := map[string]bool{}
	for _, t := range a.tmpls {
		if t.cfg.Source != "" {
			dirs[filepath.Dir(t.cfg.Source)] = true
		}
	}
	if a.cfg.TemplatesDir != "" && a.opts.ConfigPath != "" {
		dirs[a.cfg.TemplatesDir] = true
	}
	for d := range dirs {
		if err := w.Add(d); err != nil {
			a.log.Warn("directory not watched", "dir", d, "error", err.Error())
		}
	}
	return w, nil
}

func (a *Agent) rewatch(old *fsnotify.Watcher, ev *<-chan fsnotify.Event, er *<-chan error) *fsnotify.Watcher {
	if old != nil {
		old.Close()
	}
	w, err := a.watchFiles()
	if err != nil {
		a.log.Warn("template files are not watched", "error", err.Error())
		*ev, *er = nil, nil
		return nil
	}
	*ev, *er = w.Events, w.Errors
	return w
}

func (a *Agent) isConfigEvent(name string) bool {
	if a.cfg.TemplatesDir == "" || a.opts.ConfigPath == "" {
		return false
	}
	return filepath.Dir(name) == filepath.Clean(a.cfg.TemplatesDir) && filepath.Ext(name) == ".yaml"
}

func (a *Agent) isSource(name string) bool {
	for _, t := range a.tmpls {
		if t.cfg.Source == name {
			return true
		}
	}
	return false
}

// reloadSources re-parses the templates whose source changed and renders them.
func (a *Agent) reloadSources(ctx context.Context, cur *view, changed map[string]bool) {
	var sel []*tmpl
	for _, t := range a.tmpls {
		if t.cfg.Source == "" || !changed[t.cfg.Source] {
			continue
		}
		nt, err := parseTemplate(t.cfg)
		if err != nil {
			a.log.Error("template source edited but not usable; keeping the previous version", "template", t.name(), "error", err.Error())
			continue
		}
		a.log.Info("template source edited", "template", t.name(), "source", t.cfg.Source)
		t.t, t.last, t.inPlace = nt, nil, false
		sel = append(sel, t)
	}
	if len(sel) == 0 || cur == nil {
		return
	}
	start := time.Now()
	res := a.renderPass(ctx, cur, sel, true, false)
	a.logPass(cur, res, time.Since(start))
	allIn := true
	for _, t := range a.tmpls {
		allIn = allIn && t.inPlace
	}
	if allIn {
		a.setApplied(cur.Revision)
	}
	a.writeStatus(cur, res)
}

// reload loads the config again; on success it swaps it in, restarts the poller and renders
// everything. A bad config is logged and the running one kept. It reports whether it swapped.
func (a *Agent) reload(ctx context.Context, cur *view, stopPoller func(), startPoller func(*view), curp **view) bool {
	if a.opts.ConfigPath == "" {
		a.log.Warn("reload asked but the agent has no config file")
		return false
	}
	a.notify(a.opts.Notify.Reloading)
	defer a.notify(a.opts.Notify.Ready)
	cfg, err := LoadConfig(a.opts.ConfigPath)
	if err != nil {
		a.log.Error("config not reloaded; keeping the running one", "error", err.Error())
		return false
	}
	old := a.cfg
	stopPoller()
	oldClient, oldTmpls, oldInstance := a.client, a.tmpls, a.instance
	if err := a.configure(cfg); err != nil {
		a.client, a.tmpls, a.instance, a.cfg = oldClient, oldTmpls, oldInstance, old
		a.log.Error("config not reloaded; keeping the running one", "error", err.Error())
		startPoller(cur)
		return false
	}
	if cfg.Appliance != old.Appliance || cfg.Server != old.Server {
		a.applied.Store(0)
		cur = nil
		if v, err := a.fetch(ctx); err == nil {
			cur = v
		} else if c, cerr := LoadCache(a.cfg.CacheDir, a.cfg.Appliance); cerr == nil {
			a.log.Warn("rendering from cache: server unreachable after reload", "error", err.Error(), "revision", c.Revision)
			cur = &view{Store: c.Store, Revision: c.Revision, Keys: c.Keys, FromCache: true}
		}
	}
	if cfg.MetricsListen != old.MetricsListen {
		a.log.Warn("metrics_listen changed: it takes effect at the next start", "serving", old.MetricsListen, "configured", cfg.MetricsListen)
	}
	a.log.Info("config reloaded", "templates", len(a.tmpls), "appliance", a.cfg.Appliance)
	*curp = cur
	if cur != nil {
		a.sync(ctx, cur, true)
		a.saveCache(cur)
	}
	startPoller(cur)
	return true
}
