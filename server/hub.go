package server

import (
	"cmp"
	"container/heap"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"math/bits"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/server/rollout"
	"github.com/shoelace-dev/shoelace/server/store"
)

// wakeKind says why a long-poll ends.
type wakeKind uint8

const (
	wakeChanged  wakeKind = iota // a key of the view changed (or the hub cannot tell): answer the view
	wakeTimeout                  // wait expired: 304
	wakeDrain                    // the server is shutting down: 304 after a little jitter
	wakeRevoked                  // the waiter's token was revoked: 401
	wakeReplaced                 // a newer long-poll took its place: 304
)

// wake is what a long-poll ends with; rev is the revision the hub knew at that moment.
// known says that the hub saw the change it answers for (a watch event at or below rev), so
// that the view at rev has it; otherwise (the hub cannot tell) the view is read fresh.
type wake struct {
	rev   int64
	kind  wakeKind
	known bool
}

// waiter is one open long-poll. There are as many as agents: every byte here counts (see
// BENCHMARKS.md, "Fan-out memory").
//
// A waiter is woken once, under hub.mu, by whoever removes it: alone (wakeLocked: why set in
// the waiter, and its ch closed), or with the rest of its generation (the generation's wk set
// and its done closed), all at once.
type waiter struct {
	// gen is the generation it waits in: one of its appliance's (the one filling when it
	// registered), or, when its index is ahead of the hub's, the appliance's ahead, never
	// closed (it is woken alone). gen.aw is its appliance's long-polls.
	gen      *generation
	after    int64
	token    string
	instance string        // the agent's X-Shoelace-Instance ("" when not sent)
	ch       chan struct{} // closed when woken alone, after rev, kind and known are set
	rev      int64
	kind     wakeKind
	known    bool
	// idx is the waiter's place in hub.due, and due when the wait expires (since hub.epoch):
	// one timer for the hub rather than one per open long-poll.
	idx int32
	due time.Duration
}

// appWaiters are the open long-polls of one appliance.
type appWaiters struct {
	app string
	set map[*waiter]struct{}
	// gens are the generations of the waiters for the appliance's next change, the last one
	// filling (genSize each); none until one registers. A generation whose waiters have all
	// been woken alone leaves it (an appliance with long-polls always open, and no change,
	// would keep one more for every genSize long-polls come and gone).
	gens []*generation
	// ahead is the generation of the waiters whose index is ahead of the hub's: never closed.
	ahead generation
}

// inGen says that w waits for its appliance's next change with one of its generations (else
// its index is ahead of the hub's, and it is woken alone).
func (w *waiter) inGen() bool { return w.gen != &w.gen.aw.ahead }

// leave takes one waiter of g, woken alone or in bulk, out of its count; h.mu must be held.
// The last one takes g out of its appliance's generations (if it is there still: not closed).
func (g *generation) leave() {
	if g.live--; g.live > 0 || g == &g.aw.ahead {
		return
	}
	if i := slices.Index(g.aw.gens, g); i >= 0 {
		g.aw.gens = slices.Delete(g.aw.gens, i, i+1)
	}
}

// generation is the long-polls of one appliance that wait for its next change (their index is
// the hub's revision or below it): the change wakes them all by closing one channel, in the
// runtime, whatever their number. Woken one by one (a send each), 10,000 long-polls took the
// hub 20 ms, longer than the 10 ms the Go scheduler lets a goroutine run while others wait: it
// was preempted halfway and sent to the back of a run queue that held the long-polls it had
// already woken, and the rest waited there, behind them and behind the connections their
// clients closed meanwhile, hundreds of milliseconds (an execution trace of 10,000 showed
// three bursts of wakes: at 0, 115 and 785 ms).
type generation struct {
	aw   *appWaiters
	done chan struct{}
	seq  uint64 // the hub's count of generations made when it was (see wakeAppsLocked)
	n    int    // waiters that joined it
	live int    // those of them registered still
	wk   wake   // why, set before done is closed
	// batch is the generations woken with it (a shared/ change wakes every appliance's),
	// set before done is closed: nil when alone.
	batch *wakeBatch
}

// genSize is the most waiters of one generation. Its channel's close readies them one by one
// in the runtime, a loop that the scheduler may also preempt, and those left wait for the hub:
// small generations, closed by whoever runs first, leave few behind. And the long-polls of a
// change are answered in the order of their generations (see wakeAppsLocked): with several
// appliances' long-polls arriving in turn, a generation of 64 spans 640 arrivals of 10
// appliances, whose connections the answers then visit ten times over, in strides. Of 8, the
// server answered 10,000 such long-polls with three quarters of the CPU, and the clients read
// them with five sixths (BENCHMARKS.md, "Nineteenth round"); a generation costs about 170
// bytes, 21 per waiter.
const genSize = 8

// wakeBatch is generations woken by one change. The hub closes them one after the other, and
// each long-poll woken by one helps close the rest: the hub's goroutine may be preempted
// halfway (a goroutine that runs 10 ms while others wait is), and it would then wait behind the
// long-polls it woke, and the others with it.
type wakeBatch struct {
	gens []*generation
	next atomic.Int32
}

// run closes the batch's generations that nobody has closed yet.
func (b *wakeBatch) run() {
	for int(b.next.Load()) < len(b.gens) {
		i := int(b.next.Add(1)) - 1
		if i >= len(b.gens) {
			return
		}
		close(b.gens[i].done)
	}
}

// woken is why w's wait ended, once its ch or its generation gen's done is closed. A waiter
// woken alone before its generation has its ch closed first (both under hub.mu).
func (w *waiter) woken(gen *generation) wake {
	select {
	case <-w.ch:
		return wake{rev: w.rev, kind: w.kind, known: w.known}
	default:
		return gen.wk
	}
}

// dueHeap orders open long-polls by when they expire (container/heap).
type dueHeap []*waiter

func (d dueHeap) Len() int           { return len(d) }
func (d dueHeap) Less(i, j int) bool { return d[i].due < d[j].due }
func (d dueHeap) Swap(i, j int) {
	d[i], d[j] = d[j], d[i]
	d[i].idx, d[j].idx = int32(i), int32(j)
}
func (d *dueHeap) Push(x any) {
	w := x.(*waiter)
	w.idx = int32(len(*d))
	*d = append(*d, w)
}
func (d *dueHeap) Pop() any {
	old := *d
	w := old[len(old)-1]
	old[len(old)-1] = nil
	*d = old[:len(old)-1]
	w.idx = -1
	return w
}

// instanceKey names one agent's long-poll: a newer one of the same key replaces the older.
type instanceKey struct{ token, app, instance string }

// hub fans out the replica's single store watch to in-memory long-polls. For each scope
// (shared/ and each appliances/<name>/) it keeps the revision of the last change, so that a
// request arriving just after its change is answered at once. It knows every change made after
// base; a request for an older index is answered at once (spuriously, which is safe).
type hub struct {
	st         *store.Store
	log        *slog.Logger
	m          *metrics
	maxWaiters int
	// maxPerToken caps one token's long-polls (0: only its fair share when the hub is full).
	maxPerToken int
	onSys       func(ctx context.Context, ev store.Event)
	onReset     func(ctx context.Context)            // after the hub lost track of changes (compaction)
	onRewind    func(ctx context.Context, rev int64) // the store's revision went back to rev (see wentBack)
	// onStoreCheck, after each broken watch, reports whether the endpoints lead to another
	// store now (see otherStore), having reloaded what the server knows of it; an error when
	// the store could not be asked.
	onStoreCheck func(ctx context.Context) (bool, error)
	// onWatched is called after each event of a watch that started at revision from (its
	// progress notifications too) has been applied, with the event's revision: every change
	// from from to rev has been applied then.
	onWatched func(from, rev int64)

	// aheadFailed is when the store last failed to say, within aheadCheckWait, whether an
	// index ahead of the hub is ahead of the store too (see storeAhead).
	aheadMu     sync.Mutex
	aheadFailed time.Time

	mu     sync.Mutex
	ready  bool
	base   int64 // every change after base is known
	rev    int64 // highest revision seen (events and progress notifications)
	shared int64 // last change under shared/
	// apps holds the last change per appliance; sweep drops those older than the previous
	// sweep, and an appliance without an entry counts as changed at forgotten (a long-poll
	// from before that is answered at once, which is safe).
	apps map[string]int64
	// touched holds the appliances whose views moved without a key of theirs changing (their
	// rollout, see touch) in the event being applied, for apply to wake with its keys'.
	touched    []string
	forgotten  int64
	sweptRev   int64                  // h.rev at the last sweep
	waiters    map[string]*appWaiters // by appliance
	byToken    map[string]map[*waiter]struct{}
	byInstance map[instanceKey]*waiter
	due        dueHeap     // open long-polls by expiry
	epoch      time.Time   // origin of waiter.due
	gens       uint64      // generations made so far (generation.seq)
	expiry     *time.Timer // fires at due[0]'s expiry (nil until the first long-poll)
	n          int
	draining   bool
	// revocations counts the revocations this hub ended long-polls for; revokedAt holds, per
	// token, the count at its last one (under mu). A request authenticated before that (see
	// revocation) never registers: the revocation could not have found it.
	revocations atomic.Uint64
	revokedAt   map[string]uint64
	// beforeRegister, when set (by tests only), is called between a long-poll's check for a
	// change and its registration, with mu held.
	beforeRegister func()
	// beforeSys, when set (by tests only, while the hub runs: hence atomic), is called with a
	// watch event that carries system keys just before they are handled.
	beforeSys atomic.Pointer[func(ev store.Event)]
	// beforeRewatch, when set (by tests only, under mu), is called after a watch broke, before
	// the hub looks at the store and watches again.
	beforeRewatch func()
	// beforeWatch, when set (by tests only, under mu), is called once the hub looked at the
	// store, just before it opens a watch.
	beforeWatch func()

	// fmu guards flights and deltas. Every woken long-poll looks its flight up at once
	// (10,000 of them after one change): they read under RLock, and only the first of a
	// revision takes the lock to start the read. Under a Mutex they queued on it, parking and
	// woken one by one.
	fmu     sync.RWMutex
	flights map[string]*flight // latest view read per appliance
	fresh   map[string]*freshReads
	deltas  map[deltaKey]*deltaFlight
	// deltaBytes is the bytes of the deltas kept in deltas, at most deltaKeep (see delta).
	deltaBytes int
	deltaKeep  int
	swept      time.Time
	ctx        context.Context // bounds view reads, which outlive the request that started them

	// mir is a copy of the view keys kept by the watch; woken long-polls read their view from
	// it. reload asks loadMirror to load it (again).
	mir    mirror
	reload chan struct{}

	viewReads    atomic.Int64 // views read from the store
	mirrorViews  atomic.Int64 // views made from the mirror
	deltaAnswers atomic.Int64 // deltas made (each shared by the long-polls that asked for it)
}

// flight is one view read shared by every long-poll that needs the view at rev or later.
type flight struct {
	rev     int64
	fresh   bool // read from the store, linearizable
	started time.Time
	begun   atomic.Bool // its read started: by the first long-poll that needs it
	done    chan struct{}
	view    api.View
	body    []byte // view as JSON, encoded once for every long-poll that answers with it
	gz      gzipped
	err     error
}

func newHub(ctx context.Context, st *store.Store, log *slog.Logger, m *metrics, maxWaiters int) *hub {
	return &hub{
		st:         st,
		log:        log,
		m:          m,
		maxWaiters: maxWaiters,
		apps:       make(map[string]int64),
		waiters:    make(map[string]*appWaiters),
		byToken:    make(map[string]map[*waiter]struct{}),
		byInstance: make(map[instanceKey]*waiter),
		epoch:      time.Now(),
		flights:    make(map[string]*flight),
		fresh:      make(map[string]*freshReads),
		deltas:     make(map[deltaKey]*deltaFlight),
		deltaKeep:  deltaKeepBytes,
		ctx:        ctx,
		reload:     make(chan struct{}, 1),
	}
}

// reset makes the hub forget what it knew: it knows only changes after rev from now on, and
// every open long-poll is answered with a fresh view. The mirror is dropped and loaded again
// in the background (views come from the store meanwhile).
func (h *hub) reset(rev int64) {
	h.mir.invalidate()
	select {
	case h.reload <- struct{}{}:
	default:
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ready = true
	h.base = rev
	if rev > h.rev {
		h.rev = rev
	}
	h.m.revision.Set(float64(h.rev))
	h.wakeAppsLocked(h.allApps(), math.MaxInt64, true, wakeChanged, false)
	h.fmu.Lock()
	clear(h.flights)
	clear(h.deltas)
	h.deltaBytes = 0
	h.fmu.Unlock()
}

// wakeLocked removes w and tells it why, alone; h.mu must be held. It does nothing when w is
// no longer registered (woken already).
func (h *hub) wakeLocked(w *waiter, kind wakeKind, known bool) {
	if _, ok := w.gen.aw.set[w]; !ok {
		return
	}
	h.removeLocked(w, false)
	h.n--
	h.m.longPolls.Set(float64(h.n))
	w.rev, w.kind, w.known = h.rev, kind, known
	close(w.ch)
}

// allApps are the appliances with open long-polls; h.mu must be held.
func (h *hub) allApps() []*appWaiters {
	return slices.AppendSeq(make([]*appWaiters, 0, len(h.waiters)), maps.Values(h.waiters))
}

// wakeAppsLocked wakes the long-polls of apps whose index is below before, and tells them
// kind; h.mu must be held. With whole (before is above every index of the appliances'
// generations), each generation is woken at once, then the waiters ahead of the hub one by
// one; else each waiter alone. The hub forgets them after, in bulk.
func (h *hub) wakeAppsLocked(apps []*appWaiters, before int64, whole bool, kind wakeKind, known bool) {
	wk := wake{kind: kind, rev: h.rev, known: known}
	if whole {
		if kind == wakeChanged {
			h.expectViews(apps, wk)
		}
		var gens []*generation
		for _, aw := range apps {
			for _, g := range aw.gens {
				g.wk = wk
				gens = append(gens, g)
			}
			aw.gens = nil
		}
		if len(apps) > 1 {
			// In the order they were made, which is the order their long-polls came, whatever
			// their appliance: first come, first answered, and each connection's memory visited
			// near its neighbours'. Appliance by appliance (the appliances in the map's order),
			// agents of several appliances asking in turn had their answers sweep every
			// connection's memory once per appliance, each time over cold pages (BENCHMARKS.md,
			// "Nineteenth round").
			slices.SortFunc(gens, func(a, b *generation) int { return cmp.Compare(a.seq, b.seq) })
		}
		switch len(gens) {
		case 0:
		case 1:
			close(gens[0].done)
		default:
			b := &wakeBatch{gens: gens}
			for _, g := range gens {
				g.batch = b
			}
			b.run()
		}
	}
	var woken []*waiter
	for _, aw := range apps {
		for w := range aw.set {
			switch {
			case whole && w.inGen(): // its generation's, closed above
			case before > w.after:
				w.rev, w.kind, w.known = wk.rev, wk.kind, wk.known
				close(w.ch)
			default:
				continue
			}
			woken = append(woken, w)
		}
	}
	h.forgetLocked(woken)
}

// expectViews readies the view flights that the generations of apps, about to be woken by wk,
// will ask for: the long-polls then find them under fmu's read lock, the first to come starts
// the read, and the others wait for it on its channel. Left to them, the 10,000 long-polls of
// a change missed it at once, and queued on fmu's write lock to make it, one by one.
func (h *hub) expectViews(apps []*appWaiters, wk wake) {
	now := time.Now()
	h.fmu.Lock()
	defer h.fmu.Unlock()
	for _, aw := range apps {
		if len(aw.gens) == 0 {
			continue
		}
		if f := h.flights[aw.app]; f == nil || f.rev < wk.rev {
			h.flights[aw.app] = &flight{rev: wk.rev, fresh: !wk.known, started: now, done: make(chan struct{})}
		}
	}
}

// forgetLocked removes the waiters ws, which were registered and have been woken; h.mu must
// be held.
func (h *hub) forgetLocked(ws []*waiter) {
	if len(ws) == 0 {
		return
	}
	if len(ws) == h.n {
		// All of them: start afresh.
		for _, aw := range h.waiters {
			aw.set = nil
		}
		clear(h.waiters)
		clear(h.byToken)
		clear(h.byInstance)
		clear(h.due)
		h.due = h.due[:0]
		h.n = 0
		h.m.longPolls.Set(0)
		return
	}
	// Out of the heap of deadlines one by one (log n each), or, when that costs more, by
	// rebuilding it from those that stay.
	rebuild := len(ws)*bits.Len(uint(len(h.due))) > len(h.due)
	for _, w := range ws {
		h.removeLocked(w, rebuild)
	}
	if rebuild {
		kept := h.due[:0]
		for _, w := range h.due {
			if w.idx >= 0 {
				w.idx = int32(len(kept))
				kept = append(kept, w)
			}
		}
		clear(h.due[len(kept):])
		h.due = kept
		heap.Init(&h.due)
	}
	h.n -= len(ws)
	h.m.longPolls.Set(float64(h.n))
}

// removeLocked takes w out of the hub's indexes (not counted out of h.n); h.mu must be held.
// With lazy, w is only marked out of the heap of deadlines (idx -1), for the caller to
// rebuild it.
func (h *hub) removeLocked(w *waiter, lazy bool) {
	aw := w.gen.aw
	delete(aw.set, w)
	w.gen.leave()
	if len(aw.set) == 0 && h.waiters[aw.app] == aw {
		delete(h.waiters, aw.app)
	}
	if ts := h.byToken[w.token]; ts != nil {
		delete(ts, w)
		if len(ts) == 0 {
			delete(h.byToken, w.token)
		}
	}
	if w.instance != "" {
		if k := (instanceKey{w.token, aw.app, w.instance}); h.byInstance[k] == w {
			delete(h.byInstance, k)
		}
	}
	if w.idx >= 0 && int(w.idx) < len(h.due) && h.due[w.idx] == w {
		if lazy {
			w.idx = -1
		} else {
			heap.Remove(&h.due, int(w.idx))
		}
	}
}

// current returns the highest revision the hub has seen.
func (h *hub) current() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.rev
}

// reaches reports whether the hub sees revision rev within d; false too when ctx ends first.
// It looks every 10 ms: it is for reports ahead of this replica (see judgeReport), rare.
func (h *hub) reaches(ctx context.Context, rev int64, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for h.current() < rev {
		if !time.Now().Before(deadline) {
			return false
		}
		t := time.NewTimer(10 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
	}
	return true
}

// viewChanged is the revision of appliance app's view's last change (its own keys, shared/'s,
// its rollout's moves) as the hub knows it once it has seen revision rev, for at most d: 0
// when it does not reach rev, or knows no change of the view (it forgot the appliance's in a
// sweep, or started over since). Deletions are among the changes: no key is left to say when
// they were.
func (h *hub) viewChanged(ctx context.Context, app string, rev int64, d time.Duration) int64 {
	if !h.reaches(ctx, rev, d) {
		return 0
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.ready {
		return 0
	}
	return max(h.shared, h.apps[app])
}

// open returns the number of open long-polls.
func (h *hub) open() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}

// apply records one watch event and wakes the long-polls it concerns.
func (h *hub) apply(ctx context.Context, ev store.Event) {
	h.m.watchEvents.Inc()
	// The event's system keys first (a rollout's record, a token, maintenance): until they are
	// handled, nothing may be answered at the event's revision. A long-poll answered at it
	// before its appliance's rollout was known (a 304 at the end of its wait, or a view of
	// another appliance's change) got the live view's tree under that revision, and its next
	// ask, from it, was not below the rollout's wake: a canary stayed on the live view.
	if len(ev.Sys) > 0 && h.onSys != nil {
		if before := h.beforeSys.Load(); before != nil {
			(*before)(ev)
		}
		h.onSys(ctx, ev)
	}
	h.mu.Lock()
	prev := h.rev
	if ev.Revision > h.rev {
		h.rev = ev.Revision
		h.m.revision.Set(float64(h.rev))
	}
	if !ev.Progress && ev.Revision > h.base {
		shared := false
		var apps []string
		for _, k := range ev.Keys {
			switch {
			case api.Under(k, api.SharedPrefix):
				shared = true
				if ev.Revision > h.shared {
					h.shared = ev.Revision
				}
			default:
				// The keys named as a root itself ("shared", appliances/NAME) are in no view.
				name, ok := api.ApplianceOf(k)
				if !ok || !api.Under(k, api.ApplianceRoot(name)) {
					continue
				}
				if ev.Revision > h.apps[name] {
					h.apps[name] = ev.Revision
				}
				if !slices.Contains(apps, name) {
					apps = append(apps, name)
				}
			}
		}
		for _, name := range h.touched {
			if !slices.Contains(apps, name) {
				apps = append(apps, name)
			}
		}
		var sets []*appWaiters
		if shared {
			sets = h.allApps()
		} else {
			for _, name := range apps {
				if aw := h.waiters[name]; aw != nil {
					sets = append(sets, aw)
				}
			}
		}
		// A generation's indexes are at most the hub's revision before this event (prev):
		// it is woken whole when the event is above it, as the watch's events are.
		h.wakeAppsLocked(sets, ev.Revision, ev.Revision > prev, wakeChanged, true)
	}
	h.touched = h.touched[:0]
	h.mu.Unlock()
}

// run keeps one watch over the whole root until ctx ends, re-watching from the last seen
// revision + 1 with backoff when it breaks, and resetting when that revision was compacted.
func (h *hub) run(ctx context.Context) {
	go h.loadMirror(ctx)
	go h.sweepEvery(ctx, hubSweep)
	const minBackoff, maxBackoff = 50 * time.Millisecond, 5 * time.Second
	backoff := minBackoff
	// pause logs msg (with err and the wait) and waits the backoff, which it doubles; once ctx
	// ended it says nothing (the error is the end's), and the loop ends.
	pause := func(msg string, err error, attrs ...any) {
		if ctx.Err() != nil {
			return
		}
		h.log.Warn(msg, append([]any{"err", err}, append(attrs, "retry_in", backoff)...)...)
		sleep(ctx, jitter(backoff))
		backoff = min(2*backoff, maxBackoff)
	}
	needReset := false
	watched := false // a watch ran before: the next one follows on from what it saw
	for ctx.Err() == nil {
		// Before the store is looked at (its revision, its id): a connection to etcd that
		// ends after the look, before the watch opens, may be replaced by one to another
		// store, which the watch would follow from this one's revision (see WatchChangesSince).
		ended := h.st.ConnEnds()
		h.mu.Lock()
		ready, hold, opening := h.ready, h.beforeRewatch, h.beforeWatch
		h.mu.Unlock()
		if !ready || needReset {
			rev, err := h.st.Revision(ctx)
			if err != nil {
				pause("read store revision", err)
				continue
			}
			if needReset {
				h.log.Warn("watch history compacted; answering every long-poll with a fresh view", "revision", rev)
			}
			h.reset(rev)
			if needReset && h.onReset != nil {
				h.onReset(ctx)
			}
			needReset = false
		}
		if watched && hold != nil {
			hold()
		}
		h.mu.Lock()
		from := h.rev + 1
		h.mu.Unlock()
		if watched {
			// Not watched again before the store was looked at: a watch opened on another store
			// (or one that went back) without the look would follow it silently, the replica's
			// tokens those of the store before, until the watch broke again.
			moved, err := h.movedOn(ctx, from-1)
			if err != nil {
				pause("look at the store before watching it again", err)
				continue
			}
			if moved {
				continue
			}
		}
		watched = true
		if opening != nil {
			opening()
		}
		wctx, cancel := context.WithCancel(ctx)
		events, errf := h.st.WatchChangesSince(wctx, from, ended)
		got := false
		for ev := range events {
			// The mirror first: a woken long-poll reads it.
			h.mir.apply(ev)
			h.apply(ctx, ev.Event)
			if h.onWatched != nil {
				h.onWatched(from, ev.Revision)
			}
			got = true
		}
		cancel()
		err := errf()
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, store.ErrCompacted) {
			needReset = true
			continue
		}
		if got {
			backoff = minBackoff
		}
		pause("store watch broken; re-watching", err, "from", h.current()+1)
	}
}

// wentBack reports whether the store's revision is now below seen, the highest revision the
// watch saw, or below the highest that any answer of etcd to this replica carried
// (store.Reached: its writes, its reads, the store checks of long-polls), and if so makes the
// hub start over from the store's revision. That happens when etcd was brought back from a
// copy of its data without a revision bump (a restore without --bump-revision, a VM snapshot
// of the member) or the endpoints now lead to another cluster, under the same store id or
// none: a watch from seen + 1 would wait, silent, for revisions the store has not reached,
// while the writes made meanwhile (at revisions the hub had seen already) wake nobody and
// long-polls are answered from the copy of a history that is gone. The watch's own revision
// is not enough: after an etcd restart the watch may not have caught up with what the replica
// wrote, read and answered by the time the store went back (the hub watched again after a
// backoff, or etcd went away again first), and a store back at the revision the watch had
// reached looked like the same history.
// A store that cannot be read now is an error.
func (h *hub) wentBack(ctx context.Context, seen int64) (bool, error) {
	// Taken before the read: an answer that comes after it may carry a revision above it.
	seen = max(seen, h.st.Reached())
	rev, err := h.st.Revision(ctx)
	if err != nil || rev >= seen {
		return false, err
	}
	h.log.Warn("the store's revision went back (etcd restored without a revision bump, or another cluster); answering every long-poll with a fresh view",
		"seen", seen, "revision", rev)
	h.forgetBefore(rev)
	if h.onRewind != nil {
		h.onRewind(ctx, rev) // before the watch resumes: its events are above what the server knew
	}
	h.reset(rev)
	return true, nil
}

// movedOn reports whether the store the hub watches went back (wentBack) or is another store
// (otherStore) since the watch that broke; an error when it could not be looked at.
func (h *hub) movedOn(ctx context.Context, seen int64) (bool, error) {
	if back, err := h.wentBack(ctx, seen); back || err != nil {
		return back, err
	}
	return h.otherStore(ctx)
}

// startOver makes the hub know the store from revision rev on, as if it had just started there:
// what it knew of changes at other revisions (of a history the store no longer has, or of
// another store) is forgotten, and every long-poll is answered with a fresh view.
func (h *hub) startOver(rev int64) {
	h.forgetBefore(rev)
	h.reset(rev)
}

// forgetBefore is startOver's first half: the hub's revision is rev, and what it knew of
// changes is forgotten (the store's Reached too); long-polls are not woken yet.
func (h *hub) forgetBefore(rev int64) {
	h.st.Rewound(rev)
	h.mu.Lock()
	h.rev, h.shared, h.forgotten, h.sweptRev = rev, 0, 0, 0
	clear(h.apps)
	h.mu.Unlock()
}

// otherStore reports whether the endpoints now lead to another store than the one the watch
// followed (its store id is another: another cluster, or this one restored from a snapshot,
// even at a revision above what the watch saw), and if so makes the hub start over from that
// store's revision, once the server has reloaded tokens and settings from it (onStoreCheck).
// Re-watching from the revision after the last one seen would follow another history as if it
// were the one before, and deliver none of what that store held already.
func (h *hub) otherStore(ctx context.Context) (bool, error) {
	if h.onStoreCheck == nil {
		return false, nil
	}
	if other, err := h.onStoreCheck(ctx); !other || err != nil {
		return false, err
	}
	backoff := 50 * time.Millisecond
	for {
		rev, err := h.st.Revision(ctx)
		if err == nil {
			h.log.Warn("the store watched is another store now (its id changed); answering every long-poll with a fresh view", "revision", rev)
			h.startOver(rev)
			return true, nil
		}
		if ctx.Err() != nil {
			return true, nil
		}
		h.log.Warn("read store revision", "err", err, "retry_in", backoff)
		sleep(ctx, jitter(backoff))
		backoff = min(2*backoff, 5*time.Second)
	}
}

// loadMirror loads the mirror whenever reset dropped it, until ctx ends. The watch goes on
// meanwhile; the mirror keeps its events and replays them after the load.
func (h *hub) loadMirror(ctx context.Context) {
	const minBackoff, maxBackoff = 50 * time.Millisecond, 5 * time.Second
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.reload:
		}
		backoff := minBackoff
		for {
			gen := h.mir.restart()
			keys, rev, err := h.st.LoadViewKeys(ctx)
			if err == nil && h.mir.load(keys, rev, gen) {
				break
			}
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				h.log.Warn("load the view keys into memory; views are read from the store meanwhile", "err", err, "retry_in", backoff)
				sleep(ctx, jitter(backoff))
				backoff = min(2*backoff, maxBackoff)
			}
		}
	}
}

// hubSweep is how often the hub forgets the changes and views it no longer needs.
const hubSweep = time.Minute

// sweepEvery sweeps every d until ctx ends.
func (h *hub) sweepEvery(ctx context.Context, d time.Duration) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			h.sweep(now)
		}
	}
}

// sweep forgets the appliances' changes seen before the previous sweep, and the views no long-poll
// asked for within flightIdle, so that appliances that come and go do not grow the hub.
func (h *hub) sweep(now time.Time) {
	h.mu.Lock()
	for app, rev := range h.apps {
		if rev <= h.sweptRev {
			delete(h.apps, app)
			h.forgotten = max(h.forgotten, rev)
		}
	}
	h.sweptRev = h.rev
	h.mu.Unlock()
	h.fmu.Lock()
	h.sweepFlightsLocked(now)
	h.fmu.Unlock()
}

// changedLocked is the revision of app's last change that the hub knows; h.mu must be held.
func (h *hub) changedLocked(app string) int64 {
	c, ok := h.apps[app]
	if !ok {
		c = h.forgotten
	}
	return max(h.shared, c)
}

// errTooManyWaiters is answered when the cap on open long-polls is reached and token holds at
// least its fair share of them.
func errTooManyWaiters(max int, token string, held, fair int) *api.Error {
	e := api.Errorf(api.CodeTooManyWaiters, "too many open long-polls on this replica (limit %d, --max-long-polls), and token %s holds %d, at least its fair share of %d; retry later",
		max, shorten(token), held, fair)
	e.RetryAfter = 1 + rand.IntN(5)
	return e
}

// admitLocked makes room for w, a long-poll of app, or says why it cannot be registered; h.mu
// must be held. A
// long-poll replaces the same agent's older one (answered 304), so that a connection left
// half-open (behind a load balancer) never locks the agent out. When the hub is full, a token
// under its fair share (maxWaiters ÷ tokens with long-polls, this one included) takes the
// place of a long-poll of the token that holds the most; the others are refused.
func (h *hub) admitLocked(w *waiter, app string) error {
	if w.instance != "" {
		if old := h.byInstance[instanceKey{w.token, app, w.instance}]; old != nil {
			h.wakeLocked(old, wakeReplaced, false)
			return nil
		}
	}
	held := len(h.byToken[w.token])
	if h.maxPerToken > 0 && held >= h.maxPerToken {
		e := api.Errorf(api.CodeTooManyWaiters, "token %s holds %d open long-polls on this replica, its limit (--max-long-polls-per-token); retry later", shorten(w.token), held)
		e.RetryAfter = 1 + rand.IntN(5)
		return e
	}
	if h.n < h.maxWaiters {
		return nil
	}
	tokens := len(h.byToken)
	if held == 0 {
		tokens++
	}
	fair := h.maxWaiters / tokens
	if held >= max(fair, 1) {
		return errTooManyWaiters(h.maxWaiters, w.token, held, fair)
	}
	var most map[*waiter]struct{}
	for _, ws := range h.byToken {
		if len(ws) > len(most) {
			most = ws
		}
	}
	if fair == 0 && len(most) <= 1 {
		// More tokens wait than there are places (an instance token per VM), each holding
		// one: none gives way (the one refused would take another's place in turn).
		e := api.Errorf(api.CodeTooManyWaiters, "too many open long-polls on this replica (limit %d, --max-long-polls): every place is held by a token of its own (%d tokens wait); retry later (a long-poll whose view changed is answered at once all the same); add replicas or raise --max-long-polls",
			h.maxWaiters, len(h.byToken))
		e.RetryAfter = 1 + rand.IntN(5)
		return e
	}
	for v := range most {
		h.wakeLocked(v, wakeReplaced, false)
		break
	}
	return nil
}

// addLocked registers w, a long-poll of app, and returns the generation it waits in (nil:
// none, its index is ahead of the hub's); h.mu must be held.
func (h *hub) addLocked(w *waiter, app string) *generation {
	aw := h.waiters[app]
	if aw == nil {
		aw = &appWaiters{app: app, set: make(map[*waiter]struct{})}
		aw.ahead.aw = aw
		h.waiters[app] = aw
	}
	aw.set[w] = struct{}{}
	w.gen = &aw.ahead
	if w.after <= h.rev {
		// It waits for the appliance's next change, as the rest of its generation.
		if n := len(aw.gens); n == 0 || aw.gens[n-1].n >= genSize {
			h.gens++
			aw.gens = append(aw.gens, &generation{aw: aw, done: make(chan struct{}), seq: h.gens})
		}
		w.gen = aw.gens[len(aw.gens)-1]
		w.gen.n++
	}
	w.gen.live++
	ts := h.byToken[w.token]
	if ts == nil {
		ts = make(map[*waiter]struct{})
		h.byToken[w.token] = ts
	}
	ts[w] = struct{}{}
	if w.instance != "" {
		h.byInstance[instanceKey{w.token, app, w.instance}] = w
	}
	heap.Push(&h.due, w)
	if h.due[0] == w {
		h.armLocked(w.due)
	}
	h.n++
	h.m.longPolls.Set(float64(h.n))
	if w.inGen() {
		return w.gen
	}
	return nil
}

// wait ends when the view of app may have changed after index `after`, when d expires, when ctx
// ends (the client went away), when a newer long-poll takes its place, or when the server
// drains. It answers at once when the hub cannot tell: an index older than what it knows,
// ahead of the store, or a change already recorded. token and instance name the client.
//
// Every open long-poll waits here, on its connection's goroutine, whose stack holds the whole
// handler chain: wait's own frame is kept small (register and leave are not inlined) so that
// the chain stays within the goroutine stack's first size up.
//
// since is the revocation count (see revocation) read before the request's token was looked up.
func (h *hub) wait(ctx context.Context, app string, after int64, token, instance string, since uint64, d time.Duration) (wake, error) {
	w, g, wk, err := h.register(ctx, app, after, token, instance, since, d)
	if w == nil {
		return wk, err
	}
	var gen chan struct{} // nil (never ready) for a waiter ahead of the hub
	if g != nil {
		gen = g.done
	}
	select {
	case <-w.ch:
		wk = w.woken(g)
	case <-gen:
		if g.batch != nil {
			g.batch.run() // the rest of the change's, if the hub has not closed them yet
		}
		wk = w.woken(g)
	case <-ctx.Done():
		return h.leave(ctx, w, g)
	}
	if wk.kind == wakeTimeout {
		// Expired: the client may have gone meanwhile.
		return wk, ctx.Err()
	}
	return wk, nil
}

// register registers a waiter for wait, or says why wait ends at once (nil waiter).
//
//go:noinline
func (h *hub) register(ctx context.Context, app string, after int64, token, instance string, since uint64, d time.Duration) (*waiter, *generation, wake, error) {
	began := time.Now()
	checkedStore, checkedCompacted := false, false
	h.mu.Lock()
	for {
		switch {
		case h.revokedAt[token] > since:
			// Revoked after the request's token was looked up, before it could be found here.
			r := h.rev
			h.mu.Unlock()
			return nil, nil, wake{kind: wakeRevoked, rev: r}, nil
		case h.draining:
			r := h.rev
			h.mu.Unlock()
			return nil, nil, wake{kind: wakeDrain, rev: r}, nil
		case !h.ready || after < h.base || h.changedLocked(app) > after:
			r, known := h.rev, h.ready && after >= h.base
			h.mu.Unlock()
			return nil, nil, wake{kind: wakeChanged, rev: r, known: known}, nil
		}
		if after > h.rev && !checkedStore {
			// The index is ahead of what this replica has seen: another replica answered at a
			// newer revision, or the store went back (restored). Only the store can tell.
			// A store that cannot tell within aheadCheckWait says nothing, as for a compacted
			// index below: the long-poll waits (an index ahead of the store is answered when
			// a later long-poll finds it so).
			h.mu.Unlock()
			if ahead, err := h.storeAhead(ctx, after); err != nil && ctx.Err() != nil {
				return nil, nil, wake{}, err
			} else if err == nil && ahead {
				return nil, nil, wake{kind: wakeChanged, rev: h.current()}, nil
			}
			checkedStore = true
			h.mu.Lock()
			continue
		}
		if after < h.rev && !checkedCompacted {
			// An index etcd compacted is answered at once with the full view, as DESIGN.md
			// promises, though the hub may still know that the view did not change: a client
			// that kept such an index (an agent away for longer than the store keeps its
			// history) gets the view it would get after a restore. A quiet agent's index is
			// the revision of its last answer, within its wait, far above what etcd compacts.
			// A store that cannot tell now says nothing: the long-poll waits. It cannot tell
			// within compactedCheckWait (a frozen etcd, which takes the store's whole request
			// timeout to give up) is as good as not at all: the time asked is the wait's own.
			h.mu.Unlock()
			if compacted, err := h.st.CompactedWithin(ctx, after, compactedCheckWait); err == nil && compacted {
				return nil, nil, wake{kind: wakeChanged, rev: h.current()}, nil
			}
			checkedCompacted = true
			h.mu.Lock()
			continue
		}
		break
	}
	// The wait counts from the request, not from the end of the checks above, which asked
	// the store.
	if d -= time.Since(began); d <= 0 {
		r := h.rev
		h.mu.Unlock()
		return nil, nil, wake{kind: wakeTimeout, rev: r}, nil
	}
	// The check above and the registration below hold mu throughout: a change applied between
	// them would be lost to this long-poll (the hook lets a test try).
	if h.beforeRegister != nil {
		h.beforeRegister()
	}
	w := &waiter{after: after, token: token, instance: instance, ch: make(chan struct{}),
		due: time.Since(h.epoch) + d, idx: -1}
	if err := h.admitLocked(w, app); err != nil {
		h.mu.Unlock()
		return nil, nil, wake{}, err
	}
	gen := h.addLocked(w, app)
	h.mu.Unlock()
	return w, gen, wake{}, nil
}

// aheadCheckWait bounds how long a long-poll asks the store whether its index, ahead of the
// hub, is ahead of the store too (see register), as compactedCheckWait bounds the other
// question: a frozen etcd answers only at the store's request timeout (10 s), and each
// long-poll that arrived meanwhile waited that long before its 503.
const aheadCheckWait = time.Second

// storeAhead reports whether index is ahead of the store's revision, asking the store for at
// most aheadCheckWait. Its failure stands for aheadCheckWait: the long-polls that arrive
// meanwhile do not each wait for a frozen etcd again; they are told at once that the store
// cannot say.
func (h *hub) storeAhead(ctx context.Context, index int64) (bool, error) {
	h.aheadMu.Lock()
	failed := h.aheadFailed
	h.aheadMu.Unlock()
	if since := time.Since(failed); since < aheadCheckWait {
		return false, fmt.Errorf("read revision: the store did not answer within %v %v ago", aheadCheckWait, since.Round(time.Millisecond))
	}
	rctx, cancel := context.WithTimeout(ctx, aheadCheckWait)
	defer cancel()
	rev, err := h.st.Revision(rctx)
	if err != nil {
		if ctx.Err() == nil { // the store's failure, not this request's client gone
			h.aheadMu.Lock()
			h.aheadFailed = time.Now()
			h.aheadMu.Unlock()
		}
		return false, err
	}
	return index > rev, nil
}

// compactedCheckWait bounds how long a long-poll asks the store whether its index was
// compacted (see register): under the first line a stream's client waits for (5 s), and never
// the store's whole request timeout, which a frozen etcd takes.
const compactedCheckWait = 2 * time.Second

// armLocked sets the hub's expiry timer to fire at due; h.mu must be held.
func (h *hub) armLocked(due time.Duration) {
	d := max(0, due-time.Since(h.epoch))
	if h.expiry == nil {
		h.expiry = time.AfterFunc(d, h.expire)
		return
	}
	h.expiry.Reset(d)
}

// expire ends the waits that are due (304), and sets the timer for the next one.
func (h *hub) expire() {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := time.Since(h.epoch)
	for len(h.due) > 0 && h.due[0].due <= now {
		w := h.due[0]
		h.wakeLocked(w, wakeTimeout, false)
		if len(h.due) > 0 && h.due[0] == w { // not registered (cannot be): never loop on it
			heap.Pop(&h.due)
		}
	}
	if len(h.due) > 0 {
		h.armLocked(h.due[0].due)
	}
}

// leave removes w, whose client went away, and returns how its wait ended.
//
//go:noinline
func (h *hub) leave(ctx context.Context, w *waiter, gen *generation) (wake, error) {
	h.mu.Lock()
	h.wakeLocked(w, wakeTimeout, false) // unless woken already
	h.mu.Unlock()
	wk := w.woken(gen)
	if wk.kind == wakeChanged || wk.kind == wakeTimeout {
		return wk, ctx.Err()
	}
	return wk, nil
}

// drain answers every open long-poll (they reply 304) and refuses to register new ones.
func (h *hub) drain() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.draining = true
	h.wakeAppsLocked(h.allApps(), math.MaxInt64, true, wakeDrain, false)
}

// revocation returns the count of revocations so far: read before a request's token is looked
// up, it lets the long-poll that token opens tell whether a revocation came in between.
func (h *hub) revocation() uint64 { return h.revocations.Load() }

// revoke ends the open long-polls of token, and refuses those whose token was looked up before.
func (h *hub) revoke(token string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.revokedAt == nil {
		h.revokedAt = map[string]uint64{}
	}
	h.revokedAt[token] = h.revocations.Add(1)
	for w := range h.byToken[token] {
		h.wakeLocked(w, wakeRevoked, false)
	}
}

// wait returns what f read, once it has, or ctx's error.
func (f *flight) wait(ctx context.Context) (api.View, []byte, error) {
	select {
	case <-f.done: // read already, as for all but the first long-polls it answers
		return f.view, f.body, f.err
	default:
	}
	select {
	case <-f.done:
		return f.view, f.body, f.err
	case <-ctx.Done():
		return api.View{}, nil, ctx.Err()
	}
}

// viewFlight returns the flight that reads app's view at rev or later, sharing one read among
// every caller that asks for it at that revision (single flight, and the last read is kept for
// late callers). The read is made from the mirror (or the store at rev) when known, else fresh
// from the store (linearizable), as when the hub cannot tell what changed.
func (h *hub) viewFlight(app string, rev int64, known bool) *flight {
	h.fmu.RLock()
	f := h.flights[app]
	h.fmu.RUnlock()
	if f == nil || f.rev < rev {
		h.fmu.Lock()
		if f = h.flights[app]; f == nil || f.rev < rev {
			now := time.Now()
			if now.Sub(h.swept) > flightIdle {
				h.sweepFlightsLocked(now)
			}
			f = &flight{rev: rev, fresh: !known, started: now, done: make(chan struct{})}
			h.flights[app] = f
		}
		h.fmu.Unlock()
	}
	if f.begun.CompareAndSwap(false, true) {
		h.read(f, app)
	}
	return f
}

// read reads f: from the mirror at once, by its caller (the first long-poll that needs it; a
// goroutine of its own would wait in the run queue behind the long-polls woken with it, 10,000
// after one change, and so would every long-poll of the appliance, waiting for it); from the
// store in a goroutine of its own, so that the read outlives the request that started it.
func (h *hub) read(f *flight, app string) {
	if !f.fresh {
		if v, ok, err := h.mir.view(app, f.rev); ok {
			h.mirrorViews.Add(1)
			f.view, f.err = v, err
			h.readDone(f, app)
			return
		}
	}
	go func() {
		ctx, cancel := context.WithTimeout(h.ctx, 30*time.Second)
		defer cancel()
		if f.fresh {
			f.view, f.err = h.readView(ctx, app)
		} else {
			f.view, f.err = h.readViewAt(ctx, app, f.rev)
		}
		h.readDone(f, app)
	}()
}

// readDone encodes f's view, forgets f if it failed, and tells its callers.
func (h *hub) readDone(f *flight, app string) {
	f.encode()
	if f.err != nil && !errors.Is(f.err, api.ErrNotFound) {
		h.fmu.Lock()
		if h.flights[app] == f {
			delete(h.flights, app)
		}
		h.fmu.Unlock()
	}
	close(f.done)
}

// encode makes f's body of its view, once read.
func (f *flight) encode() {
	if f.err == nil {
		// 10,000 long-polls woken by one change share these bytes instead of encoding 10,000 copies.
		if f.body, f.err = api.Marshal(f.view); f.err == nil {
			f.body = append(f.body, '\n')
		}
	}
}

// freshReads are one appliance's reads of its view for requests that need it as it is now (a
// GET without index; see freshFlight): the read under way, and the one that follows it.
type freshReads struct{ cur, next *flight }

// freshFlight returns a read of app's view from the store (linearizable) that starts after the
// call, shared by every caller that arrives before it starts: the read under way when none
// started before the call, else the next one, which starts when the read under way ends. So
// requests that arrive together read the view once or twice, not once each: fifty agents of
// an appliance with a 9 MiB view, started together or asking again as etcd came back from a
// freeze, each held a read of it, its JSON and its gzip form, 2 GB between them. The read
// under way may miss a write acknowledged after it started, which a request that arrived after
// that must see; when it fails, though (etcd away), so does the next one's callers' request,
// at once: a failure after they arrived is their answer too, and they are not kept waiting for
// a second failure.
func (h *hub) freshFlight(app string) *flight {
	h.fmu.Lock()
	defer h.fmu.Unlock()
	fr := h.fresh[app]
	if fr == nil {
		fr = &freshReads{}
		h.fresh[app] = fr
	}
	switch {
	case fr.cur == nil:
		fr.cur = &flight{fresh: true, done: make(chan struct{})}
		h.readFreshLocked(fr.cur, app)
		return fr.cur
	case fr.next == nil:
		fr.next = &flight{fresh: true, done: make(chan struct{})}
	}
	return fr.next
}

// readFreshLocked reads f, app's fresh read under way, then starts the next one, if any (see
// freshFlight); h.fmu is held.
func (h *hub) readFreshLocked(f *flight, app string) {
	f.started = time.Now()
	go func() {
		f.view, f.err = h.readView(h.ctx, app) // bounded by the store's request timeout
		f.encode()
		h.fmu.Lock()
		fr := h.fresh[app]
		next := fr.next
		fr.cur, fr.next = next, nil
		switch {
		case next == nil:
			delete(h.fresh, app)
		case f.err != nil && !errors.Is(f.err, api.ErrNotFound):
			fr.cur = nil
			delete(h.fresh, app)
			next.view, next.err = f.view, f.err
			close(next.done)
		default:
			h.readFreshLocked(next, app)
		}
		h.fmu.Unlock()
		close(f.done)
	}()
}

// sweepFlightsLocked forgets the views of appliances nobody long-polled for a while; h.fmu must
// be held.
func (h *hub) sweepFlightsLocked(now time.Time) {
	for a, g := range h.flights {
		if now.Sub(g.started) > flightIdle {
			delete(h.flights, a)
		}
	}
	for k, d := range h.deltas {
		if now.Sub(d.started) > flightIdle {
			h.dropDeltaLocked(k, d)
		}
	}
	h.swept = now
}

// readView reads a view from the store, counting the reads.
func (h *hub) readView(ctx context.Context, app string) (api.View, error) {
	h.viewReads.Add(1)
	h.m.viewReads.Inc()
	return h.st.View(ctx, app)
}

// readViewAt reads a view as it was at rev, counting the reads. rev is a revision the hub has
// seen from the store, so a serializable read at it is exact and skips the consensus round of
// a linearizable read; the store falls back to one where its member lags or rev was compacted.
func (h *hub) readViewAt(ctx context.Context, app string, rev int64) (api.View, error) {
	h.viewReads.Add(1)
	h.m.viewReads.Inc()
	return h.st.ViewAt(ctx, app, rev)
}

// flightIdle is how long a view read is kept for late long-polls of the same revision.
const flightIdle = time.Minute

// jitter returns d shortened by up to 10% (at most 3 s), so that timeouts spread out.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return d
	}
	j := min(d/10, 3*time.Second)
	if j <= 0 {
		return d
	}
	return d - time.Duration(rand.Int64N(int64(j)))
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// touch records that appliance app's views changed at rev without a key of it changing (its
// rollout moved: the cohort's view is another tree now) and wakes its long-polls.
func (h *hub) touch(app string, rev int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if rev > h.apps[app] {
		h.apps[app] = rev
	}
	if rev > h.rev {
		// The watch event being applied (see apply): it wakes app with its own keys' once
		// the revision is the hub's.
		if !slices.Contains(h.touched, app) {
			h.touched = append(h.touched, app)
		}
		return
	}
	if aw := h.waiters[app]; aw != nil {
		// Its generation's indexes are at most h.rev.
		h.wakeAppsLocked([]*appWaiters{aw}, rev, rev > h.rev, wakeChanged, true)
	}
}

// candidateFlight returns the flight that reads the view of rec's cohort: shared/ as at rev or
// later (with a shared rollout group's change), overlaid by the rollout's candidate tree, read once for every waiter of the cohort (as
// viewFlight does).
func (h *hub) candidateFlight(app string, rec *rollout.Record, rev int64) *flight {
	key := app + "\x00" + rec.ID
	h.fmu.RLock()
	f := h.flights[key]
	h.fmu.RUnlock()
	if f != nil && f.rev >= rev {
		return f
	}
	h.fmu.Lock()
	f = h.flights[key]
	if f == nil || f.rev < rev {
		f = &flight{rev: rev, started: time.Now(), done: make(chan struct{})}
		h.flights[key] = f
		h.fmu.Unlock()
		// From the mirror at once, by the caller; from the store in a goroutine of its own
		// (as read).
		if shared, srev, ok := h.mir.sharedAt(f.rev); ok {
			h.candidate(f, app, rec, shared, srev)
		} else {
			go h.readCandidate(f, key, app, rec)
		}
		return f
	}
	h.fmu.Unlock()
	return f
}

// readCandidate reads shared/ from the store for candidate flight f.
func (h *hub) readCandidate(f *flight, key, app string, rec *rollout.Record) {
	ctx, cancel := context.WithTimeout(h.ctx, 30*time.Second)
	defer cancel()
	h.viewReads.Add(1)
	h.m.viewReads.Inc()
	kvs, rev, err := h.st.List(ctx, api.SharedPrefix, false)
	if err != nil {
		f.err = err
		h.fmu.Lock()
		if h.flights[key] == f {
			delete(h.flights, key)
		}
		h.fmu.Unlock()
		close(f.done)
		return
	}
	shared := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		// The listing holds the key "shared" itself too, which is in no view.
		if rel, ok := strings.CutPrefix(kv.Key, api.SharedPrefix+"/"); ok {
			shared[rel] = kv.Value
		}
	}
	h.candidate(f, app, rec, shared, rev)
}

// candidate makes candidate flight f's view from shared/ as at rev, and tells its callers.
func (h *hub) candidate(f *flight, app string, rec *rollout.Record, shared map[string]string, rev int64) {
	defer close(f.done)
	if rec.Shared != nil {
		// A shared rollout group's cohort sees shared/ as the change leaves it.
		shared = rec.Shared.Apply(shared)
	}
	keys := make(map[string]string, len(shared)+len(rec.Candidate))
	maps.Copy(keys, shared)
	maps.Copy(keys, rec.Candidate)
	f.view = api.View{Appliance: app, Revision: max(rev, f.rev), Keys: keys, Rollout: rec.ID}
	if f.body, f.err = api.Marshal(f.view); f.err == nil {
		f.body = append(f.body, '\n')
	}
}
