package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/server/rollout"
)

// Rollouts.
//
// While an appliance's rollout runs, the system key rollout.ActivePrefix+<name> exists, and
// every write that touches the appliance's own keys carries the guard "that key does not
// exist" in its transaction: a plain write during a rollout is refused with
// api.CodeRolloutInProgress, and a rollout that starts while a write is on its way makes that
// write fail its guard instead of slipping under the rollout. The rollout's own last step (its
// promotion) writes the candidate to the live tree with WithPromotion: it passes the guard, and
// in the same transaction it writes the rollout's final record and removes the active key.

type promotionKey struct{}

type promotion struct {
	name   string
	record []byte
	cas    int64 // the rollout record's mod_revision it was read at
}

// WithPromotion marks the write made with ctx as the promotion of appliance name's rollout: it
// is not refused for that rollout, and it puts record (the rollout's final record) in the same
// transaction, guarded on the record's mod_revision still being cas, and ends the rollout.
func WithPromotion(ctx context.Context, name string, record []byte, cas int64) context.Context {
	return context.WithValue(ctx, promotionKey{}, &promotion{name: name, record: record, cas: cas})
}

type groupPromotionKey struct{}

type groupPromotion struct {
	group   string
	records map[string]GroupRecord
	locked  []string // the shared/ keys the group changes (KV names)
}

// GroupRecord is one rollout record of a group as a group write puts it: the record and the
// mod_revision it was read at.
type GroupRecord struct {
	Record []byte
	Cas    int64
}

// WithGroupPromotion marks the write made with ctx as the promotion of shared rollout group
// group: its writes of the shared/ keys locked are not refused, and the same transaction puts
// the group's final records (each guarded on its mod_revision), ends the rollouts of their
// appliances, frees the keys and ends the group.
func WithGroupPromotion(ctx context.Context, group string, records map[string]GroupRecord, locked []string) context.Context {
	return context.WithValue(ctx, groupPromotionKey{}, &groupPromotion{group: group, records: records, locked: locked})
}

// rolloutGuard is what a write to the appliances of e adds to its transaction for rollouts.
type rolloutGuard struct {
	cmps []clientv3.Cmp
	ops  []clientv3.Op
	all  bool     // the write covers every appliance
	apps []string // the appliances guarded
	// shared are the shared/ keys (and prefixes, ending in '/') the write touches, guarded on
	// no shared rollout group changing them.
	shared []string
}

// sharedOf returns the shared/ keys e touches, and for a recursive delete the prefix (ending
// in '/') below the key.
func sharedOf(e edits) []string {
	var out []string
	for _, p := range e.puts {
		if api.Under(p.key, api.SharedPrefix) {
			out = append(out, p.key)
		}
	}
	for _, d := range e.dels {
		if api.Under(d.Key, api.SharedPrefix) {
			out = append(out, d.Key)
		}
		if d.Recurse && api.HasPrefix(d.Key, api.SharedPrefix) {
			out = append(out, d.Key+"/")
		}
	}
	slices.Sort(out)
	return out
}

func (s *Store) rolloutGuard(ctx context.Context, e edits) rolloutGuard {
	var g rolloutGuard
	names, all := appliancesOf(e)
	p, _ := ctx.Value(promotionKey{}).(*promotion)
	if gp, _ := ctx.Value(groupPromotionKey{}).(*groupPromotion); gp != nil {
		// The group's own promotion: its records are guarded on their mod_revisions, and
		// the transaction ends everything the group held.
		g.cmps, g.ops = s.groupEnd(gp.records, gp.locked)
		g.cmps = append(g.cmps, compare(clientv3.Value(s.sysRoot+rollout.GroupKey), "=", gp.group))
		g.ops = append(g.ops, clientv3.OpDelete(s.sysRoot+rollout.GroupKey))
		return g
	}
	for _, k := range sharedOf(e) {
		g.shared = append(g.shared, k)
		if strings.HasSuffix(k, "/") {
			g.cmps = append(g.cmps, compare(clientv3.CreateRevision(s.sysRoot+rollout.LockedPrefix+k), "=", 0).WithPrefix())
		} else {
			g.cmps = append(g.cmps, compare(clientv3.CreateRevision(s.sysRoot+rollout.LockedPrefix+k), "=", 0))
		}
	}
	if all {
		g.all = true
		g.cmps = append(g.cmps, compare(clientv3.CreateRevision(s.sysRoot+rollout.ActivePrefix), "=", 0).WithPrefix())
	}
	for _, n := range names {
		if p != nil && p.name == n {
			rk := s.sysRoot + rollout.Prefix + n
			g.cmps = append(g.cmps, compare(clientv3.ModRevision(rk), "=", p.cas))
			g.ops = append(g.ops, clientv3.OpPut(rk, string(p.record)), clientv3.OpDelete(s.sysRoot+rollout.ActivePrefix+n))
			continue
		}
		g.apps = append(g.apps, n)
		if !all {
			g.cmps = append(g.cmps, compare(clientv3.CreateRevision(s.sysRoot+rollout.ActivePrefix+n), "=", 0))
		}
	}
	return g
}

func (g rolloutGuard) wrap(parts txnParts) txnParts {
	if len(g.cmps) == 0 {
		return parts
	}
	return func(m marker) ([]clientv3.Cmp, []clientv3.Op, []clientv3.Op) {
		m.cmps = joined(m.cmps, g.cmps)
		m.ops = joined(m.ops, g.ops)
		return parts(m)
	}
}

// rolloutRefusal returns the refusal of a write that g's guard stopped (or the error met while
// finding out), and nil when g held: the write failed for another reason.
func (s *Store) rolloutRefusal(ctx context.Context, g rolloutGuard) error {
	if len(g.cmps) == 0 {
		return nil
	}
	held, err := s.holds(ctx, g.cmps)
	if err != nil {
		return s.etcdErr(ctx, "check the rollouts in progress", err)
	}
	if held {
		return nil
	}
	rctx, cancel := s.opCtx(ctx)
	defer cancel()
	if len(g.shared) > 0 {
		resp, err := s.cli.Get(rctx, s.sysRoot+rollout.LockedPrefix, clientv3.WithPrefix())
		if err != nil {
			return s.etcdErr(rctx, "read the shared keys of the rollout in progress", err)
		}
		for _, kv := range resp.Kvs {
			k := strings.TrimPrefix(string(kv.Key), s.sysRoot+rollout.LockedPrefix)
			for _, w := range g.shared {
				if k == w || strings.HasSuffix(w, "/") && strings.HasPrefix(k, w) {
					return SharedInProgress(k, string(kv.Value))
				}
			}
		}
	}
	resp, err := s.cli.Get(rctx, s.sysRoot+rollout.ActivePrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return s.etcdErr(rctx, "read the rollouts in progress", err)
	}
	for _, kv := range resp.Kvs {
		n := strings.TrimPrefix(string(kv.Key), s.sysRoot+rollout.ActivePrefix)
		if g.all || slices.Contains(g.apps, n) {
			return RolloutInProgress(n)
		}
	}
	return api.Errorf(api.CodeConflict, "the rollout being promoted changed meanwhile (aborted or halted): not promoted")
}

// RolloutInProgress is the refusal of a plain write to appliance name during its rollout.
func RolloutInProgress(name string) error {
	return api.Errorf(api.CodeRolloutInProgress, "appliance %q has a rollout in progress: writes to its keys are refused until it is promoted, halted or aborted "+
		"(see `shoelace appliance rollout status %s`; write with --canary after it ends, or with --force to abort it and write)", name, name)
}

// SharedInProgress is the refusal of a plain write to shared key key while shared rollout
// group group changes it.
func SharedInProgress(key, group string) error {
	return api.Errorf(api.CodeRolloutInProgress, "key %s is changed by the shared rollout group %s in progress: writes to it are refused until the group is promoted, halted or aborted "+
		"(see `shoelace appliance rollout status NAME` for any appliance of the group; write with --force to abort the group and write)", api.KeyText(key), group)
}

// GroupInProgress is the refusal of a canary of shared/ while shared rollout group group runs.
// A write with canary cannot take force: the group is aborted by a plain write of one of its
// keys with force, or by an abort of any of its rollouts.
func GroupInProgress(group string) error {
	return api.Errorf(api.CodeRolloutInProgress, "the shared rollout group %s runs: one change to shared/ is rolled out at a time; write again when it ends "+
		"(see `shoelace appliance rollout status NAME`; to abort it, write one of its keys without --canary and with --force, or `shoelace appliance rollout abort NAME` for an appliance of the group)", group)
}

// StartSharedRollout stores the records of a shared rollout group (by appliance), marks each
// appliance's rollout running, locks the shared/ keys the group changes (KV names) and
// records the group as the one running, with rel (its release record, kind rollout) in the
// same transaction: unless a group already runs, or a rollout of one of the appliances does
// (api.CodeRolloutInProgress). It answers the revision.
func (s *Store) StartSharedRollout(ctx context.Context, group string, records map[string][]byte, locked []string, rel api.Release) (int64, error) {
	// Its promotion writes the change and ends every rollout in one transaction.
	if n := 4 + 2*len(records) + 2*len(locked); n > s.MaxTxnOps() {
		return 0, api.Errorf(api.CodeTooLarge, "a shared rollout group of %d appliances and %d keys needs %d operations in one transaction, over the limit of %d: change fewer keys at a time",
			len(records), len(locked), n, s.MaxTxnOps())
	}
	relData, err := json.Marshal(rel)
	if err != nil {
		return 0, fmt.Errorf("encode release: %w", err)
	}
	gk := s.sysRoot + rollout.GroupKey
	cmps := []clientv3.Cmp{compare(clientv3.CreateRevision(gk), "=", 0)}
	ops := []clientv3.Op{clientv3.OpPut(gk, group), clientv3.OpPut(s.sysRoot+releasePrefix+rel.ID, string(relData))}
	names := slices.Sorted(maps.Keys(records))
	for _, n := range names {
		if err := api.ValidateSegment("appliance name", n); err != nil {
			return 0, err
		}
		ak := s.sysRoot + rollout.ActivePrefix + n
		cmps = append(cmps, compare(clientv3.CreateRevision(ak), "=", 0))
		ops = append(ops, clientv3.OpPut(s.sysRoot+rollout.Prefix+n, string(records[n])), clientv3.OpPut(ak, group))
	}
	for _, k := range locked {
		lk := s.sysRoot + rollout.LockedPrefix + k
		cmps = append(cmps, compare(clientv3.CreateRevision(lk), "=", 0))
		ops = append(ops, clientv3.OpPut(lk, group))
	}
	w, err := s.commit(ctx, "start the shared rollout group "+group, nil, plainTxn(cmps, ops, nil))
	if err != nil {
		return 0, err
	}
	if w.succeeded {
		return w.rev, nil
	}
	rctx, cancel := s.opCtx(ctx)
	defer cancel()
	if resp, err := s.cli.Get(rctx, gk); err == nil && len(resp.Kvs) > 0 {
		return w.rev, GroupInProgress(string(resp.Kvs[0].Value))
	}
	// Not naming the appliance: the writer of shared/ may not be one who may read it.
	return w.rev, api.Errorf(api.CodeRolloutInProgress, "a rollout started meanwhile on an appliance this change would go to (one at a time per appliance): write again when it ends")
}

// EndGroup writes the final records of shared rollout group group (each guarded on the
// mod_revision it was read at; api.ErrConflict otherwise), ends the rollouts of their
// appliances, frees the shared/ keys it locked and ends the group, in one transaction.
func (s *Store) EndGroup(ctx context.Context, group string, records map[string]GroupRecord, locked []string) (int64, error) {
	gk := s.sysRoot + rollout.GroupKey
	cmps, ops := s.groupEnd(records, locked)
	// The group key goes only with this group's own id in it.
	ops = append(ops, clientv3.OpTxn([]clientv3.Cmp{compare(clientv3.Value(gk), "=", group)}, []clientv3.Op{clientv3.OpDelete(gk)}, nil))
	w, err := s.commit(ctx, "end the shared rollout group "+group, nil, plainTxn(cmps, ops, nil))
	if err != nil {
		return 0, err
	}
	if !w.succeeded {
		return w.rev, api.Errorf(api.CodeConflict, "a rollout of the shared rollout group %s changed meanwhile; read them again", group)
	}
	return w.rev, nil
}

// groupEnd is what ends the rollouts of a shared rollout group in one transaction: each final
// record guarded on the mod_revision it was read at, its appliance's rollout ended, and the
// shared/ keys it locked freed (the group key is the caller's).
func (s *Store) groupEnd(records map[string]GroupRecord, locked []string) ([]clientv3.Cmp, []clientv3.Op) {
	var cmps []clientv3.Cmp
	var ops []clientv3.Op
	for _, n := range slices.Sorted(maps.Keys(records)) {
		r := records[n]
		rk := s.sysRoot + rollout.Prefix + n
		cmps = append(cmps, compare(clientv3.ModRevision(rk), "=", r.Cas))
		ops = append(ops, clientv3.OpPut(rk, string(r.Record)), clientv3.OpDelete(s.sysRoot+rollout.ActivePrefix+n))
	}
	for _, k := range locked {
		ops = append(ops, clientv3.OpDelete(s.sysRoot+rollout.LockedPrefix+k))
	}
	return cmps, ops
}

// StartRollout stores appliance name's new rollout record and marks it running, with rel (its
// release record, kind rollout, under rel.ID) in the same transaction, unless a rollout of the
// appliance already runs (api.CodeRolloutInProgress). It answers the revision.
func (s *Store) StartRollout(ctx context.Context, name string, record []byte, rel api.Release) (int64, error) {
	if err := api.ValidateSegment("appliance name", name); err != nil {
		return 0, err
	}
	relData, err := json.Marshal(rel)
	if err != nil {
		return 0, fmt.Errorf("encode release: %w", err)
	}
	ak := s.sysRoot + rollout.ActivePrefix + name
	cmps := []clientv3.Cmp{compare(clientv3.CreateRevision(ak), "=", 0)}
	ops := []clientv3.Op{clientv3.OpPut(s.sysRoot+rollout.Prefix+name, string(record)), clientv3.OpPut(ak, ""),
		clientv3.OpPut(s.sysRoot+releasePrefix+rel.ID, string(relData))}
	w, err := s.commit(ctx, "start the rollout of "+name, nil, plainTxn(cmps, ops, nil))
	if err != nil {
		return 0, err
	}
	if !w.succeeded {
		return w.rev, RolloutInProgress(name)
	}
	return w.rev, nil
}

// UpdateRollout writes appliance name's rollout record, guarded on its mod_revision being cas
// (api.ErrConflict otherwise); unless running, the rollout ends (plain writes are allowed again).
func (s *Store) UpdateRollout(ctx context.Context, name string, record []byte, cas int64, running bool) (int64, error) {
	rk := s.sysRoot + rollout.Prefix + name
	cmps := []clientv3.Cmp{compare(clientv3.ModRevision(rk), "=", cas)}
	ops := []clientv3.Op{clientv3.OpPut(rk, string(record))}
	if !running {
		ops = append(ops, clientv3.OpDelete(s.sysRoot+rollout.ActivePrefix+name))
	}
	w, err := s.commit(ctx, "update the rollout of "+name, nil, plainTxn(cmps, ops, nil))
	if err != nil {
		return 0, err
	}
	if !w.succeeded {
		return w.rev, api.Errorf(api.CodeConflict, "the rollout of %q changed meanwhile; read it again", name)
	}
	return w.rev, nil
}

// CheckTree checks appliance name's own tree (relative keys) against its schema, as a write
// that left it so would be checked; nil when it has none. A rollout's start carries no schema
// guard, as a write does, to catch a stale cache: it checks against the schemas read now.
func (s *Store) CheckTree(ctx context.Context, name string, tree map[string]string) error {
	for try := 0; ; try++ {
		s.dropSchemas()
		_, err := s.guardFor(ctx, edits{applyName: name, apply: tree})
		if !errors.Is(err, errStaleSchema) {
			return err
		}
		if try == 4 {
			return api.Errorf(api.CodeConflict, "the schema of appliance %q kept changing during %d attempts; try again", name, try+1)
		}
	}
}
