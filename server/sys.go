package server

import (
	"context"
	"encoding/json"
	"fmt"
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
		m, rev, err := s.st.SysList(ctx, tokenPrefix, maintenanceKey, rollout.Prefix)
		if err != nil {
			return fmt.Errorf("load tokens and settings: %w", err)
		}
		s.sys.mu.Lock()
		if rev < s.sys.rev {
			// Watch events newer than this read were applied meanwhile: read again.
			s.sys.mu.Unlock()
			continue
		}
		s.sys.rev = rev
		s.loadTokens(m, rev)
		s.setMaintenance(string(m[maintenanceKey]) == "on")
		s.loadRollouts(m)
		s.sys.mu.Unlock()
		return nil
	}
}

// reloadSys reloads tokens, maintenance mode and the store id (creating one if the store has none).
func (s *Server) reloadSys(ctx context.Context) error {
	if err := s.loadSysOnce(ctx); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	id, err := s.st.ReloadID(ctx)
	if err != nil {
		return fmt.Errorf("reload the store id: %w", err)
	}
	s.sys.mu.Lock()
	s.sawStoreID(id)
	s.sys.mu.Unlock()
	return nil
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

// sawStoreID makes id the store id this replica knows; when it changed (the store was replaced
// or restored), every agent must re-read its view. s.sys.mu must be held.
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
		case c.Key == maintenanceKey:
			s.setMaintenance(!c.Deleted && string(c.Value) == "on")
		case c.Key == storeIDKey && (c.Deleted || len(c.Value) == 0):
			s.reloadSysLater("the store id was deleted", nil)
		case c.Key == storeIDKey:
			s.sawStoreID(string(c.Value))
		}
	}
}

// onHubReset reloads what the watch may have missed while its history was compacted.
func (s *Server) onHubReset(ctx context.Context) {
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
	s.sys.mu.Lock()
	s.sys.rev = 0
	s.auth.forgetRevocationsAbove(rev)
	s.sys.mu.Unlock()
	if err := s.reloadSys(ctx); err != nil {
		s.reloadSysLater("reload tokens and settings after the store's revision went back", err)
	}
}

// writable refuses writes while maintenance is on.
func (s *Server) writable() error {
	if s.maintenance.Load() {
		e := api.Errorf(api.CodeMaintenance, "maintenance is on: the store is read-only and writes are refused until maintenance is turned off")
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
	var m Maintenance
	if err := strictJSON(data, &m); err != nil {
		return err
	}
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

// strictJSON decodes one JSON value into v, refusing unknown fields and trailing data.
func strictJSON(data []byte, v any) error {
	if err := checkJSONBody("body", data); err != nil {
		return err
	}
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return bodyError("body is not valid: %v", err)
	}
	if _, err := dec.Token(); err == nil {
		return bodyError("body has data after the JSON object")
	}
	return nil
}
