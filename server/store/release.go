package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// Release records.
//
// A write made with a context from WithRelease records a release: a key of its own under
// <root>sys/releases/, put by the write's own transaction, next to its marker (see commit), so
// that a write that applies has exactly one record and a write that does not has none. The
// record's key is known before the commit (a time-ordered id), and its mod_revision is the
// write's revision, so the record does not need to hold the revision.
//
// The record names the keys created, changed and deleted. Telling those apart needs the state
// of the touched keys before the write: commit reads them first and guards the write on their
// mod_revisions (an outer transaction whose only op is the write's own, nested). When another
// writer got in between, the outer guard fails, nothing is applied, and commit reads again and
// retries. This was chosen over classifying later from etcd's history (gone once compacted,
// which is when the record is needed) and over a second write after the commit with the
// prev_kv answers (a record that a crash between the two writes would leave wrong).
const (
	releasePrefix = "releases/"
	copyPrefix    = "release-copies/"
	// staleTries bounds the retries of a write whose pre-read went stale.
	staleTries = 20
)

// ReleaseInfo is what the server tells a write about itself, for its release.
type ReleaseInfo struct {
	Token, Remote, Message, Source, Kind string
	// Appliance is, for an apply or rollback, the appliance whose whole tree the release copies.
	Appliance string
	// RollbackTo is the revision a rollback restored.
	RollbackTo int64
	// Seal encrypts a secret value for a copy; nil leaves secret values out (named in Omitted).
	Seal func(plain []byte) (keyID, sealed string, err error)
}

type releaseKey struct{}

// WithRelease returns ctx marked so that a user-key write made with it records a release.
func WithRelease(ctx context.Context, ri ReleaseInfo) context.Context {
	return context.WithValue(ctx, releaseKey{}, ri)
}

// effect is what a write will do to user keys (absolute names): keys put with their values,
// keys deleted, and prefixes (ending in '/') whose subtree is deleted. tree, for an apply, is
// the appliance's whole tree as applied (relative names).
type effect struct {
	puts     map[string]string
	dels     []string
	prefixes []string
	tree     map[string]string
}

// pendingRelease is what a write's transaction gains for its release: guards for an outer
// transaction and ops next to the marker's.
type pendingRelease struct {
	guards []clientv3.Cmp
	ops    []clientv3.Op
}

// prepareRelease reads the keys eff touches and builds the record, its guards and its ops;
// nil when ctx asks for no release.
func (s *Store) prepareRelease(ctx context.Context, eff *effect) (*pendingRelease, error) {
	ri, ok := ctx.Value(releaseKey{}).(ReleaseInfo)
	if !ok || eff == nil {
		return nil, nil
	}
	exact := make([]string, 0, len(eff.puts)+len(eff.dels))
	for k := range eff.puts {
		exact = append(exact, k)
	}
	exact = append(exact, eff.dels...)
	slices.Sort(exact)
	exact = slices.Compact(exact)
	// Plain ranges (not a transaction, which a write may be): the exact keys grouped by their
	// parent, each group read as one range [first, last] (the keys between are read too, and
	// ignored), then each deleted prefix. The first read fixes the revision of the others.
	var ops []clientv3.Op
	for i := 0; i < len(exact); {
		j := i
		for j+1 < len(exact) && parent(exact[j+1]) == parent(exact[i]) {
			j++
		}
		if i == j {
			ops = append(ops, clientv3.OpGet(exact[i]))
		} else {
			ops = append(ops, clientv3.OpGet(exact[i], clientv3.WithRange(exact[j]+"\x00")))
		}
		i = j + 1
	}
	nExact := len(ops)
	for _, p := range eff.prefixes {
		ops = append(ops, clientv3.OpGet(p, clientv3.WithPrefix()))
	}
	type prior struct {
		value       string
		mod, create int64
	}
	before := map[string]prior{}
	var under [][]string // per prefix, the keys under it
	var rev int64
	rctx, cancel := s.opCtx(ctx)
	defer cancel()
	for i, op := range ops {
		if rev != 0 {
			op = clientv3.OpGet(string(op.KeyBytes()), rangeOpts(op, rev)...)
		}
		resp, err := s.cli.Do(rctx, op)
		if err != nil {
			return nil, s.etcdErr(rctx, "read the keys a write touches", err)
		}
		get := resp.Get()
		if rev == 0 {
			rev = get.Header.Revision
		}
		var keys []string
		for _, kv := range get.Kvs {
			before[string(kv.Key)] = prior{string(kv.Value), kv.ModRevision, kv.CreateRevision}
			keys = append(keys, string(kv.Key))
		}
		if i >= nExact {
			under = append(under, keys)
		}
	}

	p := &pendingRelease{}
	changes := map[string]*api.ReleaseChange{}
	note := func(abs string, list func(c *api.ReleaseChange) *[]string) {
		key := strings.TrimPrefix(abs, s.kvRoot)
		c := scopeOf(changes, key)
		*list(c) = append(*list(c), key)
	}
	for _, k := range exact {
		p.guards = append(p.guards, clientv3.Compare(clientv3.ModRevision(k), "=", before[k].mod))
	}
	for k, v := range eff.puts {
		switch b, ok := before[k]; {
		case !ok:
			note(k, func(c *api.ReleaseChange) *[]string { return &c.Created })
		case b.value != v:
			note(k, func(c *api.ReleaseChange) *[]string { return &c.Changed })
		}
	}
	gone := map[string]bool{}
	for _, k := range eff.dels {
		if _, ok := before[k]; ok && !gone[k] {
			gone[k] = true
			note(k, func(c *api.ReleaseChange) *[]string { return &c.Deleted })
		}
	}
	perKey := 0
	for i := range eff.prefixes {
		perKey += len(under[i])
	}
	for i, pre := range eff.prefixes {
		// Nothing created or changed under it since the read, and nothing deleted (each key
		// read is still the same key).
		p.guards = append(p.guards, clientv3.Compare(clientv3.ModRevision(pre), "<", rev+1).WithPrefix())
		for _, k := range under[i] {
			if perKey <= maxCreateGuards {
				p.guards = append(p.guards, clientv3.Compare(clientv3.CreateRevision(k), "=", before[k].create))
			}
			if !gone[k] {
				gone[k] = true
				note(k, func(c *api.ReleaseChange) *[]string { return &c.Deleted })
			}
		}
	}

	now := time.Now().UTC()
	id := releaseID(now)
	rec := api.Release{ID: id, Time: now, Token: ri.Token, Remote: ri.Remote, Message: ri.Message,
		Source: ri.Source, Kind: ri.Kind, RollbackTo: ri.RollbackTo, Changes: []api.ReleaseChange{}}
	for _, c := range changes {
		c.CreatedCount, c.ChangedCount, c.DeletedCount = len(c.Created), len(c.Changed), len(c.Deleted)
		c.Created, c.Changed, c.Deleted = firstNames(c.Created), firstNames(c.Changed), firstNames(c.Deleted)
		rec.Changes = append(rec.Changes, *c)
	}
	sort.Slice(rec.Changes, func(i, j int) bool {
		a, b := rec.Changes[i], rec.Changes[j]
		return a.Scope+"/"+a.Appliance < b.Scope+"/"+b.Appliance
	})
	if ri.Appliance != "" && eff.tree != nil {
		cp, err := copyOf(ri, eff.tree)
		if err != nil {
			return nil, err
		}
		data, err := json.Marshal(cp)
		if err != nil {
			return nil, fmt.Errorf("encode release copy: %w", err)
		}
		if limit := s.copyLimit(); len(data) > limit {
			// The copy shares the write's etcd request: past a third of its size limit, the
			// write goes without one rather than fail.
			rec.CopySkipped = fmt.Sprintf("the tree is %d bytes, over the copy limit of %d", len(data), limit)
		} else {
			rec.Copy, rec.CopyBytes = ri.Appliance, int64(len(data))
			p.ops = append(p.ops, clientv3.OpPut(s.sysRoot+copyPrefix+id, string(data)))
		}
	}
	data, err := json.Marshal(rec)
	if err != nil {
		return nil, fmt.Errorf("encode release: %w", err)
	}
	p.ops = append(p.ops, clientv3.OpPut(s.sysRoot+releasePrefix+id, string(data)))
	return p, nil
}

// copyLimit bounds a release copy in bytes: a third of the embedded etcd's request size limit,
// or of an external cluster's default (1.5 MiB), whose own limit the store does not know.
func (s *Store) copyLimit() int {
	if s.copyLimitBytes > 0 {
		return s.copyLimitBytes
	}
	if s.etcdMaxRequestBytes > 0 {
		return s.etcdMaxRequestBytes / 3
	}
	return (3 << 20) / 2 / 3
}

// rangeOpts are the options of a range op made by prepareRelease, read at rev.
func rangeOpts(op clientv3.Op, rev int64) []clientv3.OpOption {
	opts := []clientv3.OpOption{clientv3.WithRev(rev)}
	if len(op.RangeBytes()) > 0 {
		opts = append(opts, clientv3.WithRange(string(op.RangeBytes())))
	}
	return opts
}

// firstNames sorts names and keeps the first api.MaxReleaseNames.
func firstNames(names []string) []string {
	slices.Sort(names)
	return slices.Clip(names[:min(len(names), api.MaxReleaseNames)])
}

// maxCreateGuards bounds the per-key guards of recursive deletes: past it, only "nothing created
// or changed under the prefix since the read" guards them (a key another writer deleted in
// between is then listed as deleted by both), so that a delete of a large subtree stays within
// etcd's limit on a transaction's compares.
const maxCreateGuards = 1000

// parent is key up to its last '/'.
func parent(key string) string {
	return key[:strings.LastIndexByte(key, '/')+1]
}

// scopeOf returns the change entry of key's scope, adding it to changes.
func scopeOf(changes map[string]*api.ReleaseChange, key string) *api.ReleaseChange {
	scope, name := api.ScopeOther, ""
	if rest, ok := strings.CutPrefix(key, api.AppliancesPrefix+"/"); ok {
		if n, _, under := strings.Cut(rest, "/"); under {
			scope, name = api.ScopeAppliance, n
		}
	} else if strings.HasPrefix(key, api.SharedPrefix+"/") {
		scope = api.ScopeShared
	}
	id := scope + "/" + name
	c := changes[id]
	if c == nil {
		c = &api.ReleaseChange{Scope: scope, Appliance: name}
		changes[id] = c
	}
	return c
}

// copyOf is the copy of an appliance's tree kept with its release: secret values sealed, or
// left out without a sealer. Whether a key is secret is told by its whole name: every key of an
// appliance named "secrets" is.
func copyOf(ri ReleaseInfo, tree map[string]string) (api.ReleaseCopy, error) {
	cp := api.ReleaseCopy{Appliance: ri.Appliance, Keys: map[string]string{}}
	root := api.ApplianceRoot(ri.Appliance) + "/"
	for k, v := range tree {
		if !api.IsSecret(root + k) {
			cp.Keys[k] = v
			continue
		}
		if ri.Seal == nil {
			cp.Omitted = append(cp.Omitted, k)
			continue
		}
		id, sealed, err := ri.Seal([]byte(v))
		if err != nil {
			return cp, fmt.Errorf("seal a secret for the release copy: %w", err)
		}
		if cp.Sealed == nil {
			cp.Sealed = map[string]string{}
		}
		cp.Sealed[k], cp.KeyID = sealed, id
	}
	slices.Sort(cp.Omitted)
	return cp, nil
}

// releaseID is a new release's id: the time in unix nanoseconds, zero-padded so that ids sort
// by time, and a random suffix.
// NewReleaseID returns a new id of the kind releases have (sortable by t, unique).
func NewReleaseID(t time.Time) string { return releaseID(t) }

func releaseID(t time.Time) string {
	return fmt.Sprintf("%020d-%08x", t.UnixNano(), rand.Uint32())
}

// releaseTime reads the time back from a release id.
func releaseTime(id string) (time.Time, bool) {
	ns, _, _ := strings.Cut(id, "-")
	n, err := strconv.ParseInt(ns, 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(0, n), true
}

// Releases reads every release record, newest (highest revision) first, with the store's
// revision.
func (s *Store) Releases(ctx context.Context) ([]api.Release, int64, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.sysRoot+releasePrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, 0, s.etcdErr(ctx, "read releases", err)
	}
	out := make([]api.Release, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var r api.Release
		if err := json.Unmarshal(kv.Value, &r); err != nil {
			s.log.Warn("skip an unreadable release record", "key", string(kv.Key), "err", err.Error())
			continue
		}
		r.Revision = kv.ModRevision
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Revision > out[j].Revision })
	return out, resp.Header.Revision, nil
}

// ReleaseCopy reads the copy of release id; api.ErrNotFound when it has none.
func (s *Store) ReleaseCopy(ctx context.Context, id string) (api.ReleaseCopy, error) {
	var cp api.ReleaseCopy
	data, _, err := s.SysGet(ctx, copyPrefix+id)
	if err != nil {
		return cp, err
	}
	if err := json.Unmarshal(data, &cp); err != nil {
		return cp, fmt.Errorf("decode release copy %s: %w", id, err)
	}
	return cp, nil
}

// Retention is what PruneReleases keeps: the newest Count releases of each scope (each
// appliance, shared/, other keys: a stream of writes to one appliance does not push another's
// history out), none older than MaxAge (0: no age limit), and, newest first, as many as fit in
// MaxBytes of records and copies (0: no byte limit). The newest release is always kept.
type Retention struct {
	Count    int
	MaxAge   time.Duration
	MaxBytes int64
}

// PruneReleases deletes the releases (and their copies) that ret does not keep, and returns how
// many went. It is not a write with a marker: deleting what is already gone is harmless, so a
// lost answer is simply tried again at the next pass.
func (s *Store) PruneReleases(ctx context.Context, ret Retention, now time.Time) (int, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.sysRoot+releasePrefix, clientv3.WithPrefix())
	if err != nil {
		return 0, s.etcdErr(ctx, "read releases", err)
	}
	kvs := resp.Kvs
	sort.Slice(kvs, func(i, j int) bool { return kvs[i].ModRevision > kvs[j].ModRevision })
	var ops []clientv3.Op
	pruned := 0
	var bytes int64
	perScope := map[string]int{} // releases kept so far, newest first, by scope
	for i, kv := range kvs {
		id := strings.TrimPrefix(string(kv.Key), s.sysRoot+releasePrefix)
		var rec api.Release
		_ = json.Unmarshal(kv.Value, &rec) // an unreadable record counts its own bytes
		bytes += int64(len(kv.Value)) + rec.CopyBytes
		t, ok := releaseTime(id)
		old := ret.MaxAge > 0 && ok && now.Sub(t) > ret.MaxAge
		big := ret.MaxBytes > 0 && bytes > ret.MaxBytes
		scopes := []string{""} // a record without changes is a scope of its own
		if len(rec.Changes) > 0 {
			scopes = scopes[:0]
			for _, c := range rec.Changes {
				scopes = append(scopes, c.Scope+"/"+c.Appliance)
			}
		}
		within := false
		for _, sc := range scopes {
			if perScope[sc] < ret.Count {
				within = true
			}
			perScope[sc]++
		}
		if i == 0 || within && !old && !big {
			continue
		}
		ops = append(ops, clientv3.OpDelete(string(kv.Key)), clientv3.OpDelete(s.sysRoot+copyPrefix+id))
		pruned++
		if len(ops) >= 100 {
			if _, err := s.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
				return pruned, s.etcdErr(ctx, "prune releases", err)
			}
			ops = ops[:0]
		}
	}
	if len(ops) > 0 {
		if _, err := s.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			return pruned, s.etcdErr(ctx, "prune releases", err)
		}
	}
	return pruned, nil
}

// KeyVersions reads key's values back from its current one, newest first, while etcd's history
// has them: at most max, and only since the key was last created (an earlier life of a deleted
// key is not reachable by walking back). compacted says the walk met etcd's compaction.
func (s *Store) KeyVersions(ctx context.Context, key string, max int) (versions []api.KV, rev int64, compacted bool, err error) {
	if err := api.ValidateKey(key); err != nil {
		return nil, 0, false, err
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	k := s.kvRoot + key
	var at int64 // 0: now
	for len(versions) < max {
		opts := []clientv3.OpOption{}
		if at > 0 {
			opts = append(opts, clientv3.WithRev(at))
		}
		resp, err := s.cli.Get(ctx, k, opts...)
		if errors.Is(err, rpctypes.ErrCompacted) {
			return versions, rev, true, nil
		}
		if err != nil {
			return nil, 0, false, s.etcdErr(ctx, "read the history of "+key, err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		if len(resp.Kvs) == 0 {
			break
		}
		kv := resp.Kvs[0]
		versions = append(versions, s.toKV(kv, false))
		if kv.Version == 1 {
			break
		}
		at = kv.ModRevision - 1
	}
	return versions, rev, false, nil
}
