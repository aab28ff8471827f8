// Package store is Shoelace's etcd-backed store: an embedded single-node etcd or a client of an
// external cluster. It is the only package that imports go.etcd.io/etcd. User keys live under
// <root>kv/, the server's own records under <root>sys/; keys passed in and out are relative to those.
package store

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// Defaults of Config.
const (
	DefaultRoot      = "/shoelace/"
	DefaultDataDir   = "./shoelace-data"
	DefaultMaxTxnOps = 10000
)

// Config says which etcd to use and how.
type Config struct {
	// Endpoints of an external cluster; empty means an embedded single-node etcd in DataDir.
	Endpoints []string
	// DataDir holds the embedded etcd's data.
	DataDir string
	// Root is the prefix of all of Shoelace's keys in etcd (default "/shoelace/").
	Root string
	// CACert, Cert and Key configure TLS to an external cluster.
	CACert, Cert, Key string
	// MaxValueBytes is the largest value the API accepts; the embedded etcd is sized above it.
	MaxValueBytes int
	// MaxTxnOps is the most operations one transaction may hold (default 10,000).
	MaxTxnOps int
	// DialTimeout bounds connecting to an external cluster.
	DialTimeout time.Duration
	// Logger receives the store's and the embedded etcd's logs (as JSON).
	Logger *slog.Logger
}

// Event is one batch of changes seen by Watch, at Revision.
type Event struct {
	Revision int64
	// Keys are the user keys (relative to <root>kv/) put or deleted at Revision.
	Keys []string
	// SysKeys are the system keys (relative to <root>sys/) put or deleted at Revision.
	SysKeys []string
	// Progress marks a progress notification: nothing changed up to Revision.
	Progress bool
}

// ErrCompacted is returned by Watch when the start revision was compacted.
var ErrCompacted = errors.New("revision compacted")

var errUnimplemented = errors.New("unimplemented")

// Store is a handle on the store. It is safe for concurrent use.
type Store struct{}

// Open opens the store described by cfg, starting the embedded etcd when cfg.Endpoints is empty,
// and makes sure the store has an id.
func Open(ctx context.Context, cfg Config) (*Store, error) { return nil, errUnimplemented }

// Close stops the embedded etcd (if any) and closes the client.
func (s *Store) Close() error { return nil }

// ID is the store's id, sent as X-Shoelace-Store. It is created once per store (by compare-and-swap
// under sys/) and changes only when the store is replaced or restored from a snapshot.
func (s *Store) ID() string { return "" }

// Embedded reports whether the store runs an embedded etcd.
func (s *Store) Embedded() bool { return false }

// Revision returns the store's current revision.
func (s *Store) Revision(ctx context.Context) (int64, error) { return 0, errUnimplemented }

// Get reads one user key; api.ErrNotFound (with the revision read at) when absent.
func (s *Store) Get(ctx context.Context, key string) (api.KV, int64, error) {
	return api.KV{}, 0, errUnimplemented
}

// List reads the keys under prefix by whole segments (prefix itself included; "" = every key),
// sorted, at one revision. With keysOnly, values are left empty.
func (s *Store) List(ctx context.Context, prefix string, keysOnly bool) ([]api.KV, int64, error) {
	return nil, 0, errUnimplemented
}

// Put writes key. cas < 0 writes unconditionally; cas >= 0 writes only if the key's mod_revision
// is cas (0: the key must not exist), else an api.ErrConflict error naming the key.
func (s *Store) Put(ctx context.Context, key, value string, cas int64) (int64, error) {
	return 0, errUnimplemented
}

// Delete deletes key, or with recurse every key under it by whole segments (key included).
// Nothing deleted is api.ErrNotFound. It returns the revision and how many keys went.
func (s *Store) Delete(ctx context.Context, key string, recurse bool) (rev, deleted int64, err error) {
	return 0, 0, errUnimplemented
}

// Txn applies t's ops all or nothing, in one etcd transaction. A failed guard is an
// api.ErrConflict error naming the key; more ops than MaxTxnOps is an api.CodeTooLarge error.
func (s *Store) Txn(ctx context.Context, t api.Txn) (int64, error) { return 0, errUnimplemented }

// View reads appliance name's view at one revision. An appliance with no key of its own is
// api.ErrNotFound, with a message that says so.
func (s *Store) View(ctx context.Context, name string) (api.View, error) {
	return api.View{}, errUnimplemented
}

// Apply replaces every key under appliances/<name>/ with keys (relative to that root) in one
// transaction. cas >= 0 guards it: no key of the appliance may have changed after cas.
func (s *Store) Apply(ctx context.Context, name string, keys map[string]string, cas int64) (int64, error) {
	return 0, errUnimplemented
}

// Appliances lists the names of appliances that have at least one key, sorted.
func (s *Store) Appliances(ctx context.Context) ([]string, int64, error) {
	return nil, 0, errUnimplemented
}

// Watch watches the whole root from revision from (inclusive) and sends one Event per revision
// (and progress notifications). The channel closes when ctx ends or the watch breaks; the final
// error, if any (ErrCompacted, a lost leader, ...), is reported by the returned func after close.
func (s *Store) Watch(ctx context.Context, from int64) (<-chan Event, func() error) {
	return nil, func() error { return errUnimplemented }
}

// SysGet reads a system key; api.ErrNotFound when absent.
func (s *Store) SysGet(ctx context.Context, key string) ([]byte, int64, error) {
	return nil, 0, errUnimplemented
}

// SysList reads every system key under prefix (relative key → value) at one revision.
func (s *Store) SysList(ctx context.Context, prefix string) (map[string][]byte, int64, error) {
	return nil, 0, errUnimplemented
}

// SysPut writes a system key. cas as in Put.
func (s *Store) SysPut(ctx context.Context, key string, value []byte, cas int64) (int64, error) {
	return 0, errUnimplemented
}

// SysDelete deletes a system key; api.ErrNotFound when absent.
func (s *Store) SysDelete(ctx context.Context, key string) (int64, error) {
	return 0, errUnimplemented
}

// Health checks etcd: reachable, has a leader, and how long a linearizable read took.
func (s *Store) Health(ctx context.Context) (Health, error) { return Health{}, errUnimplemented }

// Health is what Store.Health found.
type Health struct {
	Reachable bool          `json:"reachable"`
	Leader    bool          `json:"leader"`
	Latency   time.Duration `json:"-"`
	Endpoints []string      `json:"endpoints"`
	Error     string        `json:"error,omitempty"`
}

// Snapshot streams an etcd snapshot of the whole store to w.
func (s *Store) Snapshot(ctx context.Context, w io.Writer) (int64, error) {
	return 0, errUnimplemented
}
