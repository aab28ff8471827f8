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
}

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
		setKey(m.shared, m.apps, c.Key, c.Value, c.Deleted)
	}
	m.rev = ev.Revision
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
