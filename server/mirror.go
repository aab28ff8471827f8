package server

import (
	"maps"
	"strings"
	"sync"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/server/store"
)

// mirror is an in-memory copy of the view keys (shared/ and appliances/), kept by the hub's
// single watch, so that a woken long-poll gets its view without a store read. It holds the keys
// as they were at rev: loaded whole at one revision, then advanced event by event in revision
// order; an event at or below rev is already in it and is skipped. While it is not loaded, the
// watch's events are kept and replayed by load, so the watch never waits for a load.
type mirror struct {
	mu      sync.RWMutex
	loaded  bool
	gen     int64 // counts invalidations: a load read before one is stale
	rev     int64
	shared  map[string]string            // relative to shared/
	apps    map[string]map[string]string // by appliance, relative to appliances/<name>/
	pending []store.ChangeEvent          // events seen while not loaded
	// changes are the latest changes to view keys, oldest first, with the values they
	// replaced, so that a delta finds a view as it was at an older revision; every change
	// after changesFrom is in it (while loaded). changeBytes counts their keys and values.
	changes     []change
	changesFrom int64
	changeBytes int

	smu  sync.Mutex
	sums map[sumKey]viewSum // the latest sum of each view deltas were made to
}

// change is one put or delete of a view key, with the value it replaced.
type change struct {
	rev int64
	app string // "" for shared/
	rel string // relative to shared/ or appliances/<app>/
	old string
	had bool // the key held old before the change
}

// Bounds of the mirror's change history: older changes are forgotten (a delta from before
// them is answered with the full view).
const (
	maxChanges     = 32768
	maxChangeBytes = 8 << 20
)

// restart drops the copy and the events kept so far, and returns the generation to pass to
// the load that follows: the events it will replay are those seen from now on, so that they
// stay as few as one load lasts, whatever happened to earlier loads.
func (m *mirror) restart() int64 {
	m.invalidate()
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.gen
}

// load replaces the copy with keys (relative to kv/) read at rev, then replays the events seen
// since the copy was dropped that are later than rev. It does nothing and reports false when
// the copy was dropped again after gen was taken (keys may predate that).
func (m *mirror) load(keys map[string]string, rev, gen int64) bool {
	shared := make(map[string]string)
	apps := make(map[string]map[string]string)
	for k, v := range keys {
		setKey(shared, apps, k, v, false)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if gen != m.gen {
		return false
	}
	m.loaded, m.rev, m.shared, m.apps = true, rev, shared, apps
	m.changes, m.changesFrom, m.changeBytes = nil, rev, 0
	for _, ev := range m.pending {
		m.applyLocked(ev)
	}
	m.pending = nil
	return true
}

// invalidate drops the copy (the store was replaced, or the watch lost track of changes);
// views come from the store until load.
func (m *mirror) invalidate() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.gen++
	m.loaded, m.rev, m.shared, m.apps, m.pending = false, 0, nil, nil, nil
	m.changes, m.changesFrom, m.changeBytes = nil, 0, 0
	m.smu.Lock()
	m.sums = nil
	m.smu.Unlock()
}

// at returns the revision the copy is at, and whether it is loaded.
func (m *mirror) at() (int64, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.rev, m.loaded
}

// apply advances the copy by one watch event (keeps it for load when not loaded).
func (m *mirror) apply(ev store.ChangeEvent) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.loaded {
		m.pending = append(m.pending, ev)
		return
	}
	m.applyLocked(ev)
}

func (m *mirror) applyLocked(ev store.ChangeEvent) {
	if ev.Revision <= m.rev {
		return
	}
	for _, c := range ev.Changes {
		m.recordLocked(ev.Revision, c.Key)
		setKey(m.shared, m.apps, c.Key, c.Value, c.Deleted)
	}
	m.rev = ev.Revision
	m.trimLocked()
}

// recordLocked adds the change of kv/-relative key k at rev to the history, with the value it
// replaces; keys outside the views are ignored.
func (m *mirror) recordLocked(rev int64, k string) {
	app, rel, ok := viewKey(k)
	if !ok {
		return
	}
	own := m.shared
	if app != "" {
		own = m.apps[app]
	}
	old, had := own[rel]
	m.changes = append(m.changes, change{rev: rev, app: app, rel: rel, old: old, had: had})
	m.changeBytes += len(app) + len(rel) + len(old)
}

// trimLocked forgets the oldest revisions' changes while the history is over its bounds.
func (m *mirror) trimLocked() {
	if len(m.changes) <= maxChanges && m.changeBytes <= maxChangeBytes {
		return
	}
	// Down to three quarters of the bounds, so that the copy below is rare.
	i := 0
	for i < len(m.changes) && (len(m.changes)-i > maxChanges*3/4 || m.changeBytes > maxChangeBytes*3/4) {
		rev := m.changes[i].rev
		for i < len(m.changes) && m.changes[i].rev == rev {
			c := m.changes[i]
			m.changeBytes -= len(c.app) + len(c.rel) + len(c.old)
			i++
		}
		m.changesFrom = rev
	}
	if i > 0 {
		// In place: the array keeps its room for the changes to come (a copy of the exact
		// length grew again at once, reallocating and copying megabytes under a stream of
		// writes), and the moved-out tail lets go of its strings.
		n := copy(m.changes, m.changes[i:])
		clear(m.changes[n:])
		m.changes = m.changes[:n]
	}
}

// viewKey splits a kv/-relative key of a view into its appliance ("" for shared/) and its
// relative path; ok is false for keys of no view.
func viewKey(k string) (app, rel string, ok bool) {
	if rel, ok := strings.CutPrefix(k, api.SharedPrefix+"/"); ok {
		return "", rel, true
	}
	rest, ok := strings.CutPrefix(k, api.AppliancesPrefix+"/")
	if !ok {
		return "", "", false
	}
	app, rel, ok = strings.Cut(rest, "/")
	if !ok || app == "" || rel == "" {
		return "", "", false
	}
	return app, rel, true
}

// setKey puts (or deletes) one kv/-relative key into the maps; other keys are ignored.
func setKey(shared map[string]string, apps map[string]map[string]string, k, v string, deleted bool) {
	if rel, ok := strings.CutPrefix(k, api.SharedPrefix+"/"); ok {
		if deleted {
			delete(shared, rel)
		} else {
			shared[rel] = v
		}
		return
	}
	rest, ok := strings.CutPrefix(k, api.AppliancesPrefix+"/")
	if !ok {
		return
	}
	name, rel, ok := strings.Cut(rest, "/")
	if !ok || name == "" || rel == "" {
		return // appliances/<name> itself is not in any view
	}
	own := apps[name]
	if deleted {
		delete(own, rel)
		if len(own) == 0 {
			delete(apps, name)
		}
		return
	}
	if own == nil {
		own = make(map[string]string)
		apps[name] = own
	}
	own[rel] = v
}

// view returns app's view at the copy's revision when the copy is loaded and at rev or later
// (ok false otherwise: read the store). An appliance without keys of its own is
// api.ErrNotFound, as from the store.
func (m *mirror) view(app string, rev int64) (v api.View, ok bool, err error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if !m.loaded || m.rev < rev || rev <= 0 {
		return api.View{}, false, nil
	}
	v = api.View{Appliance: app, Revision: m.rev}
	own := m.apps[app]
	if len(own) == 0 {
		return v, true, api.Errorf(api.CodeNotFound, "appliance %q has no keys (an appliance exists while it has at least one key of its own)", app)
	}
	v.Keys = make(map[string]string, len(m.shared)+len(own))
	for k, val := range m.shared {
		v.Keys[k] = val
	}
	for k, val := range own {
		v.Keys[k] = val
	}
	return v, true, nil
}

// sharedAt returns a copy of shared/ (relative keys) and the copy's revision, when the copy is
// loaded and at rev or later.
func (m *mirror) sharedAt(rev int64) (map[string]string, int64, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if !m.loaded || m.rev < rev || rev <= 0 {
		return nil, 0, false
	}
	return maps.Clone(m.shared), m.rev, true
}
