package server

import (
	"maps"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/server/rollout"
)

// A delta answer (`&delta`) is the difference between the view an instance had at the index R
// it sends and its view now. The mirror makes it from its change history: the keys changed in
// (R, now] under shared/ and the appliance, with the values they replaced, give both views on
// every key that may differ without reading the view at R from the store. The two views may
// be of different trees (the live one, or a rollout's candidate, which the rollout record
// holds): then every key of either tree may differ too. One delta is made per (appliance, R,
// base tree, tree now) and shared by every long-poll that needs it, as views are.

// side is one of the two views of a delta: the live view (id "") or the candidate tree of
// rollout id.
type side struct {
	id   string
	tree map[string]string
	// shared is the change to shared/ of a shared rollout group's candidate (nil: none).
	shared *rollout.SharedChange
}

func (s side) live() bool { return s.id == "" }

// sideOf is the side of the view that rec gives (nil: the live view).
func sideOf(rec *rollout.Record) side {
	if rec == nil {
		return side{}
	}
	return side{id: rec.ID, tree: rec.Candidate, shared: rec.Shared}
}

// diff returns the delta of appliance app from its view at base (of tree from) to its view
// now (of tree to), at the mirror's revision, which must be rev or later; and the size of the
// full view's JSON. ok is false when the mirror cannot tell (not loaded, behind,
// base older than its history or ahead of it) or the appliance has no keys (answered 404 by
// the full view's path).
func (m *mirror) diff(app string, base int64, from, to side, rev int64) (d api.Delta, viewBytes int, ok bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if !m.loaded || m.rev < rev || base <= 0 || base < m.changesFrom || base > m.rev {
		return api.Delta{}, 0, false
	}
	own := m.apps[app]
	if len(own) == 0 {
		return api.Delta{}, 0, false
	}
	// The first change after base of each key holds the key's value at base.
	sharedAt, ownAt := map[string]change{}, map[string]change{}
	for i := len(m.changes) - 1; i >= 0 && m.changes[i].rev > base; i-- {
		switch c := m.changes[i]; c.app {
		case "":
			sharedAt[c.rel] = c
		case app:
			ownAt[c.rel] = c
		}
	}
	at := func(old map[string]change, now map[string]string, k string) (string, bool) {
		if c, ok := old[k]; ok {
			return c.old, c.had
		}
		v, ok := now[k]
		return v, ok
	}
	before := func(k string) (string, bool) {
		if from.live() {
			if v, ok := at(ownAt, own, k); ok {
				return v, true
			}
		} else if v, ok := from.tree[k]; ok {
			return v, true
		}
		v, ok := at(sharedAt, m.shared, k)
		return from.shared.Value(k, v, ok)
	}
	toTree := to.tree
	if to.live() {
		toTree = own
	}
	after := func(k string) (string, bool) {
		if v, ok := toTree[k]; ok {
			return v, true
		}
		v, ok := m.shared[k]
		return to.shared.Value(k, v, ok)
	}
	// The keys that may differ.
	maybe := make(map[string]struct{}, len(sharedAt)+len(ownAt))
	for k := range sharedAt {
		maybe[k] = struct{}{}
	}
	if from.live() || to.live() {
		for k := range ownAt {
			maybe[k] = struct{}{}
		}
	}
	if from.id != to.id {
		for k := range own { // the live tree's keys now, and ownAt its keys at base
			maybe[k] = struct{}{}
		}
		for k := range from.tree {
			maybe[k] = struct{}{}
		}
		for k := range to.tree {
			maybe[k] = struct{}{}
		}
		for _, k := range from.shared.Keys() {
			maybe[k] = struct{}{}
		}
		for _, k := range to.shared.Keys() {
			maybe[k] = struct{}{}
		}
	}
	d = api.Delta{Appliance: app, Revision: m.rev, Rollout: to.id, Base: base}
	for k := range maybe {
		was, had := before(k)
		v, has := after(k)
		switch {
		case has && (!had || was != v):
			if d.Set == nil {
				d.Set = make(map[string]string)
			}
			d.Set[k] = v
		case !has && had:
			d.Unset = append(d.Unset, k)
		}
	}
	slices.Sort(d.Unset)
	d.Sum, viewBytes = m.sumLocked(app, to.id, toTree, to.shared)
	return d, viewBytes, true
}

// sumKey names the view whose sum the mirror keeps: an appliance's live view or candidate.
type sumKey struct{ app, tree string }

// viewSum is the sum of a view and the size of its JSON, at rev.
type viewSum struct {
	rev   int64
	sum   string
	bytes int
}

// sumLocked returns the sum of app's view of tree (the live one when tree is "") at the
// mirror's revision, and the size of its JSON as a full answer has it: made once per revision (it reads
// the whole view) for every delta to it, whatever their bases. m.mu must be held (read).
func (m *mirror) sumLocked(app, tree string, toTree map[string]string, change *rollout.SharedChange) (string, int) {
	k := sumKey{app, tree}
	m.smu.Lock()
	s, ok := m.sums[k]
	m.smu.Unlock()
	if ok && s.rev == m.rev {
		return s.sum, s.bytes
	}
	shared := m.shared
	if change != nil {
		shared = change.Apply(shared)
	}
	now := make(map[string]string, len(shared)+len(toTree))
	maps.Copy(now, shared)
	maps.Copy(now, toTree)
	s = viewSum{rev: m.rev, sum: api.ViewSum(now), bytes: viewJSONLen(app, m.rev, tree, now)}
	m.smu.Lock()
	if m.sums == nil {
		m.sums = make(map[sumKey]viewSum)
	}
	m.sums[k] = s
	m.smu.Unlock()
	return s.sum, s.bytes
}

// deltaKey names one shared delta: appliance, base revision and the trees of both views.
type deltaKey struct {
	app      string
	base     int64
	from, to string
}

// deltaFlight is one delta made for every long-poll that needs it at rev or later.
type deltaFlight struct {
	rev     int64 // asked for
	started time.Time
	done    chan struct{}
	at      int64  // the delta's revision
	body    []byte // the delta as JSON; nil: answer the full view instead
	gz      gzipped
	kept    int // the bytes counted in hub.deltaBytes (under hub.fmu)
}

// delta returns the delta of app's view from base (tree from) to now (tree to) at rev or
// later, made once for every caller that asks for the same; its body is nil when the full view
// must be answered instead (the mirror cannot tell, or the delta is not smaller).
func (h *hub) delta(app string, base int64, from, to side, rev int64) *deltaFlight {
	k := deltaKey{app: app, base: base, from: from.id, to: to.id}
	h.fmu.RLock()
	f := h.deltas[k]
	h.fmu.RUnlock()
	if f != nil && f.rev >= rev {
		<-f.done
		return f
	}
	h.fmu.Lock()
	if f = h.deltas[k]; f != nil && f.rev >= rev {
		h.fmu.Unlock()
		<-f.done
		return f
	}
	if old := h.deltas[k]; old != nil {
		h.dropDeltaLocked(k, old)
	}
	f = &deltaFlight{rev: rev, started: time.Now(), done: make(chan struct{})}
	full := h.deltaBytes >= h.deltaKeep
	if !full {
		h.deltas[k] = f
	}
	h.fmu.Unlock()
	defer close(f.done)
	if full {
		return f // the full view, which its flight shares
	}
	d, viewBytes, ok := h.mir.diff(app, base, from, to, rev)
	if !ok {
		return f
	}
	body, err := api.Marshal(d)
	if err != nil || len(body) >= viewBytes {
		return f
	}
	// Kept within deltaKeep: else the full view is answered, as when the delta is not smaller.
	h.fmu.Lock()
	keep := h.deltas[k] == f && h.deltaBytes+len(body)+1 <= h.deltaKeep
	if keep {
		h.deltaBytes += len(body) + 1
		f.kept = len(body) + 1
	}
	h.fmu.Unlock()
	if !keep {
		return f
	}
	h.deltaAnswers.Add(1)
	f.at, f.body = d.Revision, append(body, '\n')
	return f
}

// deltaKeepBytes bounds the bytes of the deltas a replica keeps for the long-polls that share
// them: one is kept for a minute (flightIdle) per appliance and index asked, and a client
// asking with each index of a history of writes of an appliance's keys (an agent token's, 2,000
// puts of 500 bytes) had the replica keep a delta of each, 1.2 GB. (A delta's gzip, made when a
// client asks for it, is smaller than the delta and not counted.)
const deltaKeepBytes = 64 << 20

// dropDeltaLocked forgets d, the delta flight of k, and the bytes it kept; h.fmu must be held.
func (h *hub) dropDeltaLocked(k deltaKey, d *deltaFlight) {
	if h.deltas[k] == d {
		delete(h.deltas, k)
	}
	h.deltaBytes -= d.kept
	d.kept = 0
}

// viewJSONLen is the length of the JSON of api.View{app, rev, keys, rollout} as api.Marshal
// writes it (without the answer's newline), counted without encoding it. The delta is
// answered only when it is smaller than that: an estimate (the keys' and values' bytes plus a
// constant) was tens of bytes over the view for small views, so that deltas larger than the
// view were answered, and under it for values that JSON escapes (", \, controls).
func viewJSONLen(app string, rev int64, rollout string, keys map[string]string) int {
	n := len(`{"appliance":,"revision":,"keys":{}}`) + jsonStringLen(app) + len(strconv.FormatInt(rev, 10))
	if rollout != "" {
		n += len(`,"rollout":`) + jsonStringLen(rollout)
	}
	for k, v := range keys {
		n += jsonStringLen(k) + 1 + jsonStringLen(v) + 1 // "k":"v",
	}
	if len(keys) > 0 {
		n-- // no comma after the last
	}
	return n
}

// jsonStringLen is the length of s as api.Marshal writes it, quotes included: U+2028, U+2029
// and invalid bytes as \uXXXX, controls as \n, \r, \t, \b, \f or \u00XX; <, > and & as they
// are.
func jsonStringLen(s string) int {
	n := 2
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			switch {
			case b == '"' || b == '\\' || b == '\n' || b == '\r' || b == '\t' || b == '\b' || b == '\f':
				n += 2
			case b < 0x20:
				n += 6
			default:
				n++
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 || r == '\u2028' || r == '\u2029' {
			n += 6
		} else {
			n += size
		}
		i += size
	}
	return n
}
