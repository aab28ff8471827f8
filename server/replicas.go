package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/shoelace-dev/shoelace/server/store"
)

// Replicas announce themselves under sys/replicas/<id> so that `shoelace status` (through
// /v1/status) can say which replicas share the store. A record is refreshed every replicaBeat; one
// not refreshed for replicaTTL is not listed, and one silent for replicaForget is deleted.
const (
	replicaPrefix = store.ReplicaPrefix
	replicaBeat   = 15 * time.Second
	replicaTTL    = 3 * replicaBeat
	replicaForget = time.Hour
)

// Replica is one server replica as it announced itself.
type Replica struct {
	ID       string    `json:"id"`
	Host     string    `json:"host"`
	Listen   string    `json:"listen"`
	Version  string    `json:"version"`
	Started  time.Time `json:"started"`
	LastSeen time.Time `json:"last_seen"`
}

// newReplica is this replica's record. Its id is stable across restarts — the host name and a
// hash of the listen address, which two live processes on one host cannot share — so that a
// replica restarted after a crash (which could not withdraw its record) replaces its old record
// instead of being listed twice until that one ages out.
func newReplica(cfg Config) Replica {
	host, _ := os.Hostname()
	id := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == '_' {
			return r
		}
		return '-'
	}, host)
	if id == "" || id[0] == '-' || id[0] == '.' || id[0] == '_' {
		id = "replica" + id
	}
	sum := sha256.Sum256([]byte(cfg.Listen))
	return Replica{ID: id + "-" + hex.EncodeToString(sum[:4]), Host: host, Listen: cfg.Listen, Version: cfg.Version,
		Started: time.Now().UTC().Truncate(time.Second)}
}

// runReplicaBeat announces this replica until ctx ends, then withdraws the record.
func (s *Server) runReplicaBeat(ctx context.Context) {
	every := s.cfg.beatEvery
	if every <= 0 {
		every = replicaBeat
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		s.replicaBeat(ctx)
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, _ = s.st.SysDelete(dctx, replicaPrefix+s.self.ID)
			cancel()
			return
		case <-t.C:
		}
	}
}

// replicaBeat writes this replica's record and refreshes the list of live replicas.
func (s *Server) replicaBeat(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	me := s.self
	me.LastSeen = time.Now().UTC().Truncate(time.Second)
	data, _ := json.Marshal(me)
	if _, err := s.st.SysPut(ctx, replicaPrefix+me.ID, data, -1); err != nil {
		if ctx.Err() == nil {
			s.log.Debug("announce replica", "err", err)
		}
		return
	}
	recs, _, err := s.st.SysList(ctx, replicaPrefix)
	if err != nil {
		return
	}
	now := time.Now()
	live := []Replica{}
	for key, data := range recs {
		var r Replica
		if json.Unmarshal(data, &r) != nil {
			continue
		}
		switch age := now.Sub(r.LastSeen); {
		case age > replicaForget:
			_, _ = s.st.SysDelete(ctx, key)
		case age <= replicaTTL:
			live = append(live, r)
		}
	}
	slices.SortFunc(live, func(a, b Replica) int { return strings.Compare(a.ID, b.ID) })
	s.replicas.Store(&live)
}

// liveReplicas is the list of replicas seen at the last beat (nil before the first one).
func (s *Server) liveReplicas() []Replica {
	if p := s.replicas.Load(); p != nil {
		return *p
	}
	return nil
}
