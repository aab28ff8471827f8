package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// maintenanceKey is the system key that holds "on" while the store is read-only.
const maintenanceKey = "settings/maintenance"

// storeIDKey is the system key of the store id (see store.Store.ID).
const storeIDKey = "store-id"

// loadSys reads the server's records (tokens, maintenance) into memory. When the store is away
// it keeps trying in the background: until then only /health answers.
func (s *Server) loadSys(ctx context.Context) {
	if err := s.loadSysOnce(ctx); err == nil {
		return
	} else {
		s.log.Warn("load tokens and settings; retrying in the background", "err", err)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		backoff := 200 * time.Millisecond
		for {
			sleep(s.ctx, jitter(backoff))
			if s.ctx.Err() != nil {
				return
			}
			if err := s.loadSysOnce(s.ctx); err == nil {
				return
			}
			backoff = min(2*backoff, 5*time.Second)
		}
	}()
}

func (s *Server) loadSysOnce(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := s.loadTokens(ctx); err != nil {
		return err
	}
	return s.loadMaintenance(ctx)
}

func (s *Server) loadMaintenance(ctx context.Context) error {
	v, _, err := s.st.SysGet(ctx, maintenanceKey)
	switch {
	case errors.Is(err, api.ErrNotFound):
		s.setMaintenance(false)
	case err != nil:
		return err
	default:
		s.setMaintenance(string(v) == "on")
	}
	return nil
}

func (s *Server) setMaintenance(on bool) {
	if s.maintenance.Swap(on) != on {
		s.log.Info("maintenance mode", "on", on)
	}
}

// onSysChange is called by the hub, in watch order, for every revision that touched system keys.
func (s *Server) onSysChange(ctx context.Context, keys []string) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for _, k := range keys {
		switch {
		case strings.HasPrefix(k, tokenPrefix):
			s.reloadToken(ctx, strings.TrimPrefix(k, tokenPrefix))
		case k == maintenanceKey:
			if err := s.loadMaintenance(ctx); err != nil {
				s.log.Warn("reload maintenance mode", "err", err)
			}
		case k == storeIDKey:
			id, err := s.st.ReloadID(ctx)
			if err != nil {
				s.log.Warn("reload store id", "err", err)
				continue
			}
			if old := s.storeID.Swap(id); old != id {
				// The store was replaced or restored: every agent must re-read its view.
				s.log.Warn("store id changed", "old", old, "new", id)
				s.hub.reset(s.hub.current())
			}
		}
	}
}

// onHubReset reloads what the watch may have missed while its history was compacted.
func (s *Server) onHubReset(ctx context.Context) {
	if err := s.loadSysOnce(ctx); err != nil {
		s.log.Warn("reload tokens and settings after a watch reset", "err", err)
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
