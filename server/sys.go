package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/server/rollout"
	"github.com/shoelace-dev/shoelace/server/store"
)

// maintenanceKey is the system key that holds "on" while the store is read-only.
const maintenanceKey = "settings/maintenance"

// storeIDKey is the system key of the store id (see store.Store.ID).
const storeIDKey = "store-id"

// sysState orders what this replica knows of the system keys (tokens, maintenance mode, store
// id). Watch events and full reloads apply under mu, each only when it is newer than rev, the
// revision that state was last brought to: a reload read before an event already applied is read
// again, and an event that a reload read after it already holds is skipped.
type sysState struct {
	mu  sync.Mutex
	rev int64
	// oldTokens are the tokens cached of the store this replica was on before another (see
	// adoptStoreID), until tokens are loaded from the new one (see afterStoreChange).
	oldTokens map[string]*tokenRecord

	retryMu sync.Mutex
	running bool // reloadSysLater's loop is running
	again   bool // and was asked for another reload meanwhile
}

// loadSys reads the server's records (tokens, maintenance) into memory. When the store is away
// it keeps trying in the background: until then only /health answers.
func (s *Server) loadSys(ctx context.Context) {
	if err := s.loadSysOnce(ctx); err != nil {
		s.reloadSysLater("load tokens and settings", err)
	}
}

// loadSysOnce reads every token and the maintenance mode at one revision and makes them what this
// replica knows (see sysState).
func (s *Server) loadSysOnce(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		// With each key's mod_revision: a token record's is when an instance was enrolled,
		// which a rollout's cohort is judged by (see tokenRecord.enrolledRevision).
		revs, rev, err := s.st.SysListRevs(ctx, 0, []string{tokenPrefix, maintenanceKey, rollout.Prefix, reportErrorPrefix})
		if err != nil {
			return fmt.Errorf("load tokens and settings: %w", err)
		}
		m := make(map[string][]byte, len(revs))
		for k, v := range revs {
			m[k] = v.Data
		}
		s.sys.mu.Lock()
		if rev < s.sys.rev {
			// Watch events newer than this read were applied meanwhile: read again.
			s.sys.mu.Unlock()
			continue
		}
		s.sys.rev = rev
		s.loadTokens(revs, rev)
		s.fresh.reach.raise(rev)
		s.setMaintenance(string(m[maintenanceKey]) == "on")
		s.loadRollouts(m, rev)
		s.reports.loadFailures(m)
		s.sys.mu.Unlock()
		return nil
	}
}

// reloadSys reloads the store id (creating one if the store has none), then tokens and
// maintenance mode. When the id is not the one this replica knew, what it cached of the old
// store is forgotten first (see adoptStoreID).
func (s *Server) reloadSys(ctx context.Context) error {
	if _, err := s.checkStoreID(ctx); err != nil {
		return err
	}
	if err := s.loadSysOnce(ctx); err != nil {
		return err
	}
	s.afterStoreChange()
	return nil
}

// checkStoreID reads the store id (creating one if the store has none) and makes it the one
// this replica knows; changed says that it had known another (see adoptStoreID).
func (s *Server) checkStoreID(ctx context.Context) (changed bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	id, err := s.st.ReloadID(ctx)
	if err != nil {
		return false, fmt.Errorf("reload the store id: %w", err)
	}
	s.sys.mu.Lock()
	defer s.sys.mu.Unlock()
	return s.adoptStoreID(id), nil
}

// adoptStoreID makes id, read from the store, the store id this replica knows. When it knew
// another, its endpoints lead to another store now (another cluster, or this one restored
// from a snapshot, which gets a new id), whose revisions have nothing to do with the old
// one's: it forgets what it cached of the old store (tokens, the revisions of revocations,
// revoked secrets, the revision tokens and settings were read at), keeps the tokens it had
// cached in s.sys.oldTokens for afterStoreChange, and reports true; the caller then reloads
// tokens and settings. Only a store id read from the store does this: one that a watch event
// brings is a write to the store this replica follows (sawStoreID), whose revocations stand.
// s.sys.mu must be held.
func (s *Server) adoptStoreID(id string) bool {
	s.st.SawID(id)
	old, _ := s.storeID.Swap(id).(string)
	switch {
	case old == id:
		return false
	case old == "": // not known since the start, as when the store was away then
		s.hub.reset(s.hub.current())
		return false
	}
	s.log.Warn("store id changed: on another store (another cluster, or a restore); reloading tokens and settings from it", "old", old, "new", id)
	s.sys.rev = 0
	s.fresh.reach.reset() // first: a revision read after storeChanged never meets the old reach
	s.fresh.storeChanged()
	forgotten := s.auth.forgetStore()
	if s.sys.oldTokens == nil {
		s.sys.oldTokens = forgotten
	} else {
		maps.Copy(s.sys.oldTokens, forgotten)
	}
	return true
}

// afterStoreChange, once tokens are loaded from the store the replica is on now, ends the
// long-polls of the tokens it had cached of the store before (s.sys.oldTokens) that this one
// does not hold (401, as a request with them gets now, also while the store is away), and
// answers every other long-poll with the new store's view, and makes the admin token on a store
// with no token (see bootstrapAgain). It does nothing when the store did not change.
func (s *Server) afterStoreChange() {
	s.sys.mu.Lock()
	old := s.sys.oldTokens
	s.sys.oldTokens = nil
	s.sys.mu.Unlock()
	if old == nil {
		return
	}
	for name, rec := range old {
		if !s.auth.goneUnlessHeld(rec) {
			s.hub.revoke(name)
		}
	}
	s.hub.reset(s.hub.current())
	s.bootstrapAgain()
}

// onStoreCheck is called by the hub after each broken watch, before it watches again: it reads
// the store id and, when the replica is on another store now, reloads tokens and settings from
// it and reports true (the hub then starts over from that store's revision). A store whose id
// cannot be read is an error: the hub asks again before it watches.
func (s *Server) onStoreCheck(ctx context.Context) (bool, error) {
	if hook := s.storeCheckHook.Load(); hook != nil {
		if err := (*hook)(); err != nil {
			return false, err
		}
	}
	changed, err := s.checkStoreID(ctx)
	if err != nil || !changed {
		return false, err
	}
	if err := s.loadSysOnce(ctx); err != nil {
		s.reloadSysLater("reload tokens and settings from another store", err)
		return true, nil
	}
	s.afterStoreChange()
	return true, nil
}

// reloadSysLater reloads tokens, settings and the store id in the background, trying again with
// backoff until a reload succeeds, after why (with err) left them possibly stale. At most one
// such loop runs; asking while it runs makes it reload once more.
func (s *Server) reloadSysLater(why string, err error) {
	if err != nil {
		s.log.Warn(why+"; reloading tokens and settings in the background", "err", err)
	} else {
		s.log.Warn(why + "; reloading tokens and settings in the background")
	}
	r := &s.sys
	r.retryMu.Lock()
	defer r.retryMu.Unlock()
	if r.running {
		r.again = true
		return
	}
	r.running, r.again = true, false
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		const first = 200 * time.Millisecond
		backoff := first
		for {
			sleep(s.ctx, jitter(backoff))
			if s.ctx.Err() != nil {
				return
			}
			r.retryMu.Lock()
			r.again = false
			r.retryMu.Unlock()
			err := s.reloadSys(s.ctx)
			r.retryMu.Lock()
			if err == nil && !r.again {
				r.running = false
				r.retryMu.Unlock()
				s.log.Info("reloaded tokens and settings")
				return
			}
			r.retryMu.Unlock()
			if err == nil {
				backoff = first
			} else {
				backoff = min(2*backoff, 5*time.Second)
			}
		}
	}()
}

func (s *Server) setMaintenance(on bool) {
	if s.maintenance.Swap(on) != on {
		s.log.Info("maintenance mode", "on", on)
	}
}

// sawStoreID makes id, which a watch event of the store this replica follows brought, the
// store id it knows; when it changed (the store was replaced or restored), every agent must
// re-read its view. s.sys.mu must be held.
func (s *Server) sawStoreID(id string) {
	s.st.SawID(id)
	if old, _ := s.storeID.Swap(id).(string); old != id {
		if old != "" { // "": not known since the start, as when the store was away then
			s.log.Warn("store id changed", "old", old, "new", id)
		}
		s.hub.reset(s.hub.current())
	}
}

// onSysChange is called by the hub, in watch order, for every revision that touched system keys.
// It acts on the event's own data: a token's put is its record and a delete its revocation,
// maintenance mode and the store id are their values. Nothing is read back from the store, so
// a store that fails reads cannot leave a revoked token valid, or a setting stale, on this
// replica. Only a deleted store id needs the store (which makes a new one): that is reloaded in
// the background until it succeeds.
func (s *Server) onSysChange(_ context.Context, ev store.Event) {
	s.sys.mu.Lock()
	defer s.sys.mu.Unlock()
	if ev.Revision <= s.sys.rev {
		return // a reload read after it holds it already
	}
	s.sys.rev = ev.Revision
	for _, c := range ev.Sys {
		switch {
		case strings.HasPrefix(c.Key, tokenPrefix):
			s.tokenChanged(strings.TrimPrefix(c.Key, tokenPrefix), c, ev.Revision)
		case strings.HasPrefix(c.Key, rollout.Prefix):
			s.rolloutChanged(strings.TrimPrefix(c.Key, rollout.Prefix), c, ev.Revision)
		case strings.HasPrefix(c.Key, reportErrorPrefix):
			key := strings.TrimPrefix(c.Key, reportErrorPrefix)
			s.reports.failureSeen(key, !c.Deleted)
			if !c.Deleted && s.reports.staleFailure(key, c.Value) {
				s.clearStaleFailure(c.Key, bytes.Clone(c.Value))
			}
		case c.Key == maintenanceKey:
			s.setMaintenance(!c.Deleted && string(c.Value) == "on")
		case c.Key == storeIDKey && (c.Deleted || len(c.Value) == 0):
			s.reloadSysLater("the store id was deleted", nil)
		case c.Key == storeIDKey:
			s.sawStoreID(string(c.Value))
		}
	}
}

// clearStaleFailure deletes the failure record key while it holds data, a failure reported
// before a report without failure that this replica took (see reporter.staleFailure): the
// instance's later report cleared it, and it would otherwise stay until the instance's next
// failure or change. In the background: it runs in the watch's order.
func (s *Server) clearStaleFailure(key string, data []byte) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithTimeout(s.ctx, opTimeout)
		defer cancel()
		if _, err := s.st.SysApply(ctx, []store.SysGuard{{Key: key, Value: data}}, nil, []string{key}); err != nil && !errors.Is(err, api.ErrConflict) && s.ctx.Err() == nil {
			s.log.Warn("clear a failure reported before the instance's later report without one", "key", key, "err", err.Error())
		}
	}()
}

// onHubReset reloads what the watch may have missed while its history was compacted.
func (s *Server) onHubReset(ctx context.Context) {
	// The watch lost track of changes (a compaction): a token revoked among them is still in
	// the cache, which is not trusted until a load reaches the store's revision of the reset.
	s.fresh.reach.miss(s.hub.current())
	if err := s.loadSysOnce(ctx); err != nil {
		s.reloadSysLater("reload tokens and settings after a watch reset", err)
	}
}

// onStoreRewound forgets the revision tokens and settings were read at, since the store's
// revisions went back below it, to rev (see hub.wentBack): the watch's events from now on, and
// a reload, are at lower revisions and would otherwise be skipped as already applied (a token
// revoked after the rewind would stay valid on this replica). So are the revisions of the
// revocations made in the history that is gone: a token created again under such a name, at a
// revision below its old revocation, would be kept out of the cache (see authState.set). It
// reloads them with the store id (a store of another cluster may have none yet).
func (s *Server) onStoreRewound(ctx context.Context, rev int64) {
	s.renewStoreID(ctx)
	s.sys.mu.Lock()
	s.sys.rev = 0
	s.fresh.reach.reset()
	s.auth.forgetRevocationsAbove(rev)
	s.sys.mu.Unlock()
	if err := s.reloadSys(ctx); err != nil {
		s.reloadSysLater("reload tokens and settings after the store's revision went back", err)
	}
}

// renewStoreID gives the store, whose revisions went back under the id this replica knows, a
// new id (see store.RenewID): an agent that was not waiting when the store went back (between
// long-polls, in its backoff while etcd was away) comes back with the index of a view of the
// lost history, which the store's new writes soon pass; its long-poll then waited for a change
// of its view, with the files of a history that is gone. With another id it is answered at once
// with the view as it is, as after a restore. When another replica renewed it first (or the
// store's id is another), the reload that follows reads it.
func (s *Server) renewStoreID(ctx context.Context) {
	old, _ := s.storeID.Load().(string)
	id, renewed, err := s.st.RenewID(ctx, old)
	if err != nil {
		s.log.Warn("the store's revision went back: could not give it a new store id; agents that come back with an index of the lost history wait for their view's next change", "err", err)
		return
	}
	if !renewed {
		return
	}
	s.sys.mu.Lock()
	s.storeID.Store(id)
	s.sys.mu.Unlock()
	s.log.Warn("the store's revision went back under the same store id (etcd brought back from older data without a revision bump): gave it a new store id, so that every agent reads its view again", "old", old, "new", id)
}

// writable refuses writes while maintenance is on.
func (s *Server) writable() error {
	if s.maintenance.Load() {
		e := api.Errorf(api.CodeMaintenance, "maintenance is on: the store is read-only and writes are refused until maintenance is turned off")
		e.RetryAfter = 30
		return e
	}
	if s.fresh.reach.stale() {
		// The watch lost changes of the settings to a compaction and the reload that follows
		// is not done: maintenance may have been turned on among them.
		e := api.Errorf(api.CodeUnavailable, "this replica has not read the store's settings again since its watch lost changes (history compacted while it could not watch), and maintenance may be on: writes are refused (not applied) until it has; retry")
		e.RetryAfter = 2
		return e
	}
	if free, low := s.st.LowDisk(); low {
		// etcd stops the process when a write of its data fails (a full disk ended the
		// server): refused here, the write is not applied, and reads go on.
		need, dir := s.st.MinFreeDisk()
		e := api.Errorf(api.CodeUnavailable, "the file system of the embedded etcd's data (%s) has %d MiB free, under the %d MiB it must keep: writes are refused (not applied) until space is freed there; reads go on", dir, free>>20, need>>20)
		e.RetryAfter = 30
		return e
	}
	return nil
}

// Maintenance is the body of GET and PUT /v1/maintenance.
type Maintenance struct {
	On bool `json:"on"`
}

func (s *Server) handleGetMaintenance(w http.ResponseWriter, r *http.Request) error {
	if _, err := query(r); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, 0, Maintenance{On: s.maintenance.Load()})
}

func (s *Server) handlePutMaintenance(w http.ResponseWriter, r *http.Request) error {
	if _, err := query(r); err != nil {
		return err
	}
	if err := principalOf(r).mayAdmin(); err != nil {
		return err
	}
	data, err := readBody(w, r, 4096, func() error {
		return api.Errorf(api.CodeBodyTooLarge, "maintenance body is over the limit of 4096 bytes")
	})
	if err != nil {
		return err
	}
	// On is a pointer so that a body without it ({} or "on":null) is refused: read as false,
	// it turned maintenance off in the middle of a restore.
	var req struct {
		On *bool `json:"on"`
	}
	if err := strictJSON(data, &req); err != nil {
		return err
	}
	if req.On == nil {
		return bodyError(`maintenance body must say "on": send {"on":true} or {"on":false} (a missing or null "on" is refused)`)
	}
	m := Maintenance{On: *req.On}
	value := "off"
	if m.On {
		value = "on"
	}
	ctx, cancel := s.opCtx(r)
	defer cancel()
	rev, err := s.st.SysPut(ctx, maintenanceKey, []byte(value), -1)
	if err != nil {
		return err
	}
	s.setMaintenance(m.On)
	s.audit(r, "maintenance-"+value, nil, rev)
	return writeJSON(w, http.StatusOK, rev, Maintenance{On: m.On})
}

// strictJSON decodes one JSON object into v, refusing null, unknown fields and trailing data.
func strictJSON(data []byte, v any) error {
	data = api.WithoutBOM(data)
	switch strings.TrimSpace(string(data)) {
	case "":
		return bodyError("body is empty: send a JSON object")
	case "null":
		// Decoded into v, null leaves it as it is: each field missing, refused as a bad field
		// (an enrollment's null was an empty instance name, invalid_name).
		return bodyError("body is null: send a JSON object")
	}
	if err := checkJSONBody("body", data, v); err != nil {
		return err
	}
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return bodyError("body is not valid: %s", jsonErrText(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return bodyError("body has data after the JSON object")
	}
	return nil
}
