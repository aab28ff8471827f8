package store

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// Write-time validation.
//
// An appliance may have a schema: the system key SchemaPrefix+<name>. Every write to the KV
// space that touches an appliance's own keys (appliances/<name>/...) is then checked before it
// is committed: the store computes the appliance's tree as the write would leave it and hands
// it to the TreeCheck the server installed; an error from the check refuses the write.
//
// The check holds at commit because the write's transaction carries guards:
//   - for an appliance with no schema, "the schema key does not exist" (a schema set
//     concurrently makes the write fail its guard, reload the schemas and check again);
//   - for an appliance with one, "the schema key's mod_revision is the one checked against";
//   - for a write whose result depends on the appliance's current tree (kv put, delete, txn),
//     "the appliance's tree version key is unchanged since the tree was read". Every write to an
//     appliance with a schema puts that key (treePrefix+<name>) in the same transaction, so any
//     change to the tree after the read, deletions included, fails the guard and the write
//     checks again. A write by a replica that saw no schema cannot slip in either: its own
//     guard (no schema key) fails once the schema exists.
//
// The schemas are cached (names and mod_revisions, read once); a stale cache only costs a
// failed guard and a reload. Appliances without a schema pay one compare per write, no read.
const (
	// SchemaPrefix is the system key prefix of the appliances' schemas: SchemaPrefix+<name>.
	SchemaPrefix = "schemas/"
	// treePrefix is the system key prefix of the tree versions of appliances with a schema.
	treePrefix = "schema-trees/"
)

// TreeCheck checks appliance name's own tree (keys relative to appliances/<name>/ → values),
// as a write would leave it, against the appliance's schema (its bytes and mod_revision). A
// non-nil error refuses the write and is returned to the writer as it is.
type TreeCheck func(name string, schema []byte, schemaRev int64, tree map[string]string) error

// SetTreeCheck installs the check run on writes to appliances that have a schema. Without
// one, writes are not checked (and carry no guard).
func (s *Store) SetTreeCheck(check TreeCheck) {
	s.schemas.mu.Lock()
	s.schemas.check = check
	s.schemas.mu.Unlock()
}

// schemaCache is what the store knows of the appliances' schemas.
type schemaCache struct {
	mu     sync.Mutex
	check  TreeCheck
	loaded bool
	rev    int64 // the revision they were read at
	m      map[string]schemaEntry
	// reading is the read in flight, which the writes that need the schemas meanwhile wait
	// for and share, its failure too: read one after the other while etcd did not answer,
	// each waited out the request timeout in turn, and the writes queued behind them
	// answered many timeouts late. dropSchemas forgets it: a read begun before is not kept.
	reading *schemaRead
}

type schemaEntry struct {
	data []byte
	rev  int64 // mod_revision
}

// schemaRead is one read of the schemas; done is closed once m, rev and err are set.
type schemaRead struct {
	done chan struct{}
	m    map[string]schemaEntry
	rev  int64
	err  error
}

// loadSchemas returns the cached schemas, reading them when the cache was dropped. A read
// already in flight is waited for (until ctx ends) rather than made again.
func (s *Store) loadSchemas(ctx context.Context) (map[string]schemaEntry, int64, TreeCheck, error) {
	c := &s.schemas
	c.mu.Lock()
	check := c.check
	if check == nil {
		c.mu.Unlock()
		return nil, 0, nil, nil
	}
	if c.loaded {
		defer c.mu.Unlock()
		return c.m, c.rev, check, nil
	}
	rd := c.reading
	if rd == nil {
		rd = &schemaRead{done: make(chan struct{})}
		c.reading = rd
		// Not a caller's context: the read is everyone's who joined it.
		go s.readSchemas(rd)
	}
	c.mu.Unlock()
	select {
	case <-rd.done:
	case <-ctx.Done():
		return nil, 0, nil, s.etcdErr(ctx, "read appliance schemas", ctx.Err())
	}
	if rd.err != nil {
		return nil, 0, nil, rd.err
	}
	return rd.m, rd.rev, check, nil
}

// readSchemas makes read rd, and keeps what it read unless the cache was dropped meanwhile.
func (s *Store) readSchemas(rd *schemaRead) {
	c := &s.schemas
	defer close(rd.done)
	rctx, cancel := s.opCtx(s.ctx)
	defer cancel()
	resp, err := s.cli.Get(rctx, s.sysRoot+SchemaPrefix, clientv3.WithPrefix())
	c.mu.Lock()
	defer c.mu.Unlock()
	kept := c.reading == rd
	if kept {
		c.reading = nil
	}
	if err != nil {
		rd.err = s.etcdErr(rctx, "read appliance schemas", err)
		return
	}
	rd.m = make(map[string]schemaEntry, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		rd.m[strings.TrimPrefix(string(kv.Key), s.sysRoot+SchemaPrefix)] = schemaEntry{data: kv.Value, rev: kv.ModRevision}
	}
	rd.rev = resp.Header.Revision
	if kept {
		c.m, c.rev, c.loaded = rd.m, rd.rev, true
	}
}

// dropSchemas makes the next write read the schemas again.
func (s *Store) dropSchemas() {
	s.schemas.mu.Lock()
	s.schemas.loaded = false
	s.schemas.reading = nil
	s.schemas.mu.Unlock()
}

// edits is what a write does to the KV space, for the schema check: keys relative to the KV
// root. apply, when set, replaces appliance applyName's whole tree.
type edits struct {
	puts      []keyValue
	dels      []api.Op
	applyName string
	apply     map[string]string
}

// keyValue is a key and the value a write puts there. A write's puts are a slice of them, not a
// map: most writes put one key, and a map of one entry (its group of eight slots) was ~370
// bytes, made twice per put (its edits and its effect).
type keyValue struct{ key, value string }

// putMap is e's puts as a map (keys are unique in a write's puts).
func (e edits) putMap() map[string]string {
	m := make(map[string]string, len(e.puts))
	for _, p := range e.puts {
		m[p.key] = p.value
	}
	return m
}

// kvEdits returns e when root is the KV root, else nothing (system keys are not checked).
func (s *Store) kvEdits(root string, e edits) edits {
	if root != s.kvRoot {
		return edits{}
	}
	return e
}

// schemaGuard is what a checked write adds to its transaction.
type schemaGuard struct {
	cmps []clientv3.Cmp // on the schemas, then (the last trees of them) on tree versions
	ops  []clientv3.Op
	// trees is how many of cmps, at the end, are on tree versions.
	trees int
}

// wrap adds g to every branch of parts that writes, the way a marker is added.
func (g schemaGuard) wrap(parts txnParts) txnParts {
	if len(g.cmps) == 0 && len(g.ops) == 0 {
		return parts
	}
	return func(m marker) ([]clientv3.Cmp, []clientv3.Op, []clientv3.Op) {
		m.cmps = joined(m.cmps, g.cmps)
		m.ops = joined(m.ops, g.ops)
		return parts(m)
	}
}

// appliancesOf returns the appliances whose own trees e touches; all is true when a delete
// covers every appliance (a recursive delete of appliances/).
//
// It runs two or three times for every write, most of which touch one appliance: the names
// found are looked up in a map only once they are many.
func appliancesOf(e edits) (names []string, all bool) {
	var seen map[string]bool
	have := func(name string) bool {
		if seen != nil {
			return seen[name]
		}
		return slices.Contains(names, name)
	}
	found := func(name string) {
		names = append(names, name)
		switch {
		case seen != nil:
			seen[name] = true
		case len(names) > 16:
			seen = make(map[string]bool, 2*len(names))
			for _, n := range names {
				seen[n] = true
			}
		}
	}
	add := func(key string, recurse bool) {
		if recurse && key == api.AppliancesPrefix {
			all = true
			return
		}
		rest, ok := strings.CutPrefix(key, api.AppliancesPrefix+"/")
		if !ok {
			return
		}
		name, _, under := strings.Cut(rest, "/")
		if (under || recurse) && !have(name) {
			found(name)
		}
	}
	for _, p := range e.puts {
		add(p.key, false)
	}
	for _, d := range e.dels {
		add(d.Key, d.Recurse)
	}
	if e.applyName != "" && !have(e.applyName) {
		names = append(names, e.applyName)
	}
	slices.Sort(names)
	return names, all
}

// guardFor checks e against the schemas of the appliances it touches and returns the guard
// its transaction must carry (see above).
func (s *Store) guardFor(ctx context.Context, e edits) (schemaGuard, error) {
	var g schemaGuard
	names, all := appliancesOf(e)
	if len(names) == 0 && !all {
		return g, nil
	}
	schemas, cacheRev, check, err := s.loadSchemas(ctx)
	if err != nil || check == nil {
		return g, err
	}
	if all {
		// Every appliance: those with a schema are checked, and no schema may appear.
		g.cmps = append(g.cmps, compare(clientv3.ModRevision(s.sysRoot+SchemaPrefix), "<", cacheRev+1).WithPrefix())
		names = names[:0]
		for n := range schemas {
			names = append(names, n)
		}
		slices.Sort(names)
	}
	var reads []string // appliances whose current tree the result depends on
	for _, n := range names {
		sk := s.sysRoot + SchemaPrefix + n
		ent, ok := schemas[n]
		if !ok {
			g.cmps = append(g.cmps, compare(clientv3.CreateRevision(sk), "=", 0))
			continue
		}
		g.cmps = append(g.cmps, compare(clientv3.ModRevision(sk), "=", ent.rev))
		g.ops = append(g.ops, clientv3.OpPut(s.sysRoot+treePrefix+n, ""))
		if n == e.applyName {
			if err := check(n, ent.data, ent.rev, e.apply); err != nil {
				return g, s.refusal(ctx, n, ent.rev, err)
			}
			continue
		}
		reads = append(reads, n)
	}
	if len(reads) == 0 {
		return g, nil
	}
	var ops []clientv3.Op
	for _, n := range reads {
		ops = append(ops, clientv3.OpGet(s.kvRoot+api.ApplianceRoot(n)+"/", clientv3.WithPrefix()), clientv3.OpGet(s.sysRoot+treePrefix+n))
	}
	rctx, cancel := s.opCtx(ctx)
	defer cancel()
	resp, err := s.cli.Txn(rctx).Then(ops...).Commit()
	if err != nil {
		return g, s.etcdErr(rctx, "read the trees to check", err)
	}
	for i, n := range reads {
		root := api.ApplianceRoot(n) + "/"
		tree := map[string]string{}
		for _, kv := range resp.Responses[2*i].GetResponseRange().GetKvs() {
			tree[strings.TrimPrefix(string(kv.Key), s.kvRoot+root)] = string(kv.Value)
		}
		g.cmps = append(g.cmps, compare(clientv3.ModRevision(s.sysRoot+treePrefix+n), "=", modRevision(resp.Responses[2*i+1])))
		g.trees++
		if !EditTree(tree, n, e.putMap(), e.dels) {
			// Deletes that remove none of its keys (a key it lacks, a recursive delete of
			// appliances when it has none) are no write to it: its schema does not judge
			// them, even where its tree breaks it, so a delete of nothing is still 404. The
			// tree version's guard above checks again should keys come meanwhile.
			continue
		}
		if err := check(n, schemas[n].data, schemas[n].rev, tree); err != nil {
			return g, s.refusal(ctx, n, schemas[n].rev, err)
		}
	}
	return g, nil
}

// errStaleSchema is a check's refusal made with a schema that has changed since it was cached.
var errStaleSchema = errors.New("stale schema")

// refusal returns err, a check's refusal of a write to appliance name made with the schema at
// mod_revision rev, when that schema is still current; else errStaleSchema, for the write to
// check again with the current one. A write refused by a schema removed or relaxed meanwhile
// would be refused wrongly.
func (s *Store) refusal(ctx context.Context, name string, rev int64, err error) error {
	rctx, cancel := s.opCtx(ctx)
	defer cancel()
	resp, gerr := s.cli.Get(rctx, s.sysRoot+SchemaPrefix+name, clientv3.WithKeysOnly())
	if gerr != nil {
		return s.etcdErr(rctx, "read the schema of appliance "+name, gerr)
	}
	if len(resp.Kvs) == 0 || resp.Kvs[0].ModRevision != rev {
		return errStaleSchema
	}
	return err
}

// commitChecked is commit for a write to the KV space that does e: checked against the
// schemas of the appliances it touches and guarded so that the check still holds when it is
// applied (see above). A write refused by its own guards is returned as commit returns it.
func (s *Store) commitChecked(ctx context.Context, op string, e edits, eff *effect, parts txnParts) (written, error) {
	// Writers to one appliance with a schema go one at a time (each bumps its tree version):
	// under contention, retry with a growing random pause for as long as one call may take.
	// One deadline bounds the wait for the lock and the retries, as one call may take; its
	// timer is made only when a write first waits or retries (most pass at once).
	deadline := time.Now().Add(s.cfg.RequestTimeout)
	var lctx context.Context
	unlock, err := s.lockTrees(ctx, e, deadline)
	if errors.Is(err, errTreeLockWait) {
		// The writes ahead of it are slow (etcd stalls, or answers slowly): the store's state,
		// not a guard that failed, so 503 to retry, as a write etcd did not answer is. A 409 said
		// "conflict", which pipelines (and the CLI's exit 4) take for a failed --cas guard.
		e := api.Errorf(api.CodeUnavailable, "%s: waited for the other writes to the appliance on this replica until the request timed out; nothing was written: retry", op)
		e.RetryAfter = 1
		return written{}, e
	}
	if err != nil {
		return written{}, err
	}
	defer unlock()
	rg := s.rolloutGuard(ctx, e)
	parts = rg.wrap(parts)
	if len(rg.ops) > 0 && eff != nil {
		promotion := *eff
		promotion.promotes = true
		eff = &promotion
	}
	for try := 0; ; try++ {
		g, err := s.guardFor(ctx, e)
		if err == nil {
			var w written
			w, err = s.commit(ctx, op, eff, g.wrap(parts))
			if err != nil || applied(w) {
				return w, err
			}
			// Not applied: stopped by a rollout in progress?
			if err := s.rolloutRefusal(ctx, rg); err != nil {
				return written{}, err
			}
			if len(g.cmps) == 0 {
				return w, nil
			}
			// Not applied: by the write's own guards, or by the schema guard? And if by the
			// latter, did a schema change, or only the tree?
			held, err := s.holds(ctx, g.cmps)
			if err != nil {
				return written{}, s.etcdErr(ctx, op, err)
			}
			if held {
				return w, nil
			}
			if g.trees == 0 {
				s.dropSchemas()
			} else if held, err := s.holds(ctx, g.cmps[:len(g.cmps)-g.trees]); err != nil || !held {
				s.dropSchemas()
			}
		} else if errors.Is(err, errStaleSchema) {
			s.dropSchemas()
		} else {
			return written{}, err
		}
		if lctx == nil {
			// A try failed on the schema guard: try again until the deadline.
			var cancel context.CancelFunc
			lctx, cancel = context.WithDeadline(ctx, deadline)
			defer cancel()
		}
		if lctx.Err() != nil {
			return written{}, api.Errorf(api.CodeConflict, "%s: the appliance's schema or tree kept changing during %d attempts", op, try+1)
		}
		schemaPause(lctx, try)
	}
}

// errTreeLockWait is lockTrees' wait for another write's lock that outlasted the deadline.
var errTreeLockWait = errors.New("waited for another write to the appliance until the deadline")

// treeLocks holds, per appliance with a schema, a lock (a channel of one) that this store's
// writes to that appliance take in turn: each such write bumps the appliance's tree version, so
// concurrent writes to it through one replica would mostly fail each other's guard and retry,
// and under load one of them could keep losing until its request timed out. Writes through
// other replicas still meet at the guard.
type treeLocks struct {
	mu    sync.Mutex
	locks map[string]chan struct{}
}

// lockTrees takes the locks of the appliances with a schema that e touches, in name order,
// waiting at most until deadline (or until ctx ends: errTreeLockWait either way), and returns
// what releases them. A failed read of the schemas is returned as it is.
func (s *Store) lockTrees(ctx context.Context, e edits, deadline time.Time) (func(), error) {
	names, all := appliancesOf(e)
	if len(names) == 0 || all {
		return func() {}, nil
	}
	schemas, _, check, err := s.loadSchemas(ctx)
	if err != nil {
		return nil, err // not read again by the write's check: a second wait for etcd
	}
	if check == nil {
		return func() {}, nil
	}
	var held []chan struct{}
	var wctx context.Context
	unlock := func() {
		for _, l := range held {
			<-l
		}
	}
	slices.Sort(names)
	for _, n := range names {
		if _, ok := schemas[n]; !ok {
			continue
		}
		l := s.trees.lock(n)
		select {
		case l <- struct{}{}:
			held = append(held, l)
			continue
		default:
		}
		if wctx == nil {
			// Held by another write: wait (the timer made only now, since most writes find
			// the appliance free).
			var cancel context.CancelFunc
			wctx, cancel = context.WithDeadline(ctx, deadline)
			defer cancel()
		}
		select {
		case l <- struct{}{}:
			held = append(held, l)
		case <-wctx.Done():
			unlock()
			return nil, errTreeLockWait
		}
	}
	return unlock, nil
}

func (t *treeLocks) lock(name string) chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.locks == nil {
		t.locks = map[string]chan struct{}{}
	}
	l := t.locks[name]
	if l == nil {
		l = make(chan struct{}, 1)
		t.locks[name] = l
	}
	return l
}

// holds reports whether every one of cmps holds now.
func (s *Store) holds(ctx context.Context, cmps []clientv3.Cmp) (bool, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	resp, err := s.cli.Txn(ctx).If(cmps...).Commit()
	if err != nil {
		return false, err
	}
	return resp.Succeeded, nil
}

// schemaPause waits a random pause of up to 1 ms << try, at most 50 ms, or until ctx ends.
func schemaPause(ctx context.Context, try int) {
	t := time.NewTimer(time.Duration(rand.Int64N(int64(min(time.Millisecond<<min(try, 6), 50*time.Millisecond)) + 1)))
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// applied reports whether a write was applied: its guards held, or a nested transaction of
// its Else branch (a recursive delete's) did.
func applied(w written) bool {
	if w.succeeded || w.resp == nil {
		return w.succeeded
	}
	for _, r := range w.resp.Responses {
		if r.GetResponseTxn().GetSucceeded() {
			return true
		}
	}
	return false
}

// EditTree makes tree, appliance name's own tree (keys relative to appliances/<name>/), what a
// write of puts and dels (KV keys; the deletes first, as one etcd transaction cannot put and
// delete one key) leaves it. Keys of other appliances are ignored. touched says whether the
// write is one to the appliance: it removed one of its keys, or puts one under it.
func EditTree(tree map[string]string, name string, puts map[string]string, dels []api.Op) (touched bool) {
	root := api.ApplianceRoot(name) + "/"
	had := len(tree)
	for _, d := range dels {
		switch {
		case d.Recurse && (d.Key == api.AppliancesPrefix || d.Key+"/" == root):
			clear(tree)
		case strings.HasPrefix(d.Key, root):
			rel := strings.TrimPrefix(d.Key, root)
			delete(tree, rel)
			if d.Recurse {
				for k := range tree {
					if strings.HasPrefix(k, rel+"/") {
						delete(tree, k)
					}
				}
			}
		}
	}
	touched = len(tree) < had
	for k, v := range puts {
		if rel, ok := strings.CutPrefix(k, root); ok {
			tree[rel] = v
			touched = true
		}
	}
	return touched
}
