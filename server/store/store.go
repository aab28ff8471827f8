// Package store is Shoelace's etcd-backed store: an embedded single-node etcd or a client of an
// external cluster. It is the only package that imports go.etcd.io/etcd. User keys live under
// <root>kv/, the server's own records under <root>sys/; keys passed in and out are relative to those.
// <root>req/ holds short-lived write markers (see commit), which nothing else reads.
//
// Choices callers should know:
//   - The embedded etcd keeps its files in EtcdDir(DataDir) and serves on 127.0.0.1 ports the
//     kernel picks; nothing outside the process needs them (Endpoints tells them). It compacts
//     periodically, keeping an hour of history, and accepts requests of
//     max(10 MiB, 2*MaxValueBytes+1 MiB) and EmbeddedMaxTxnOps(MaxTxnOps) etcd ops per transaction.
//   - Every unary call is bounded by Config.RequestTimeout, and each try of it on one member by
//     Config.AttemptTimeout (doubling at each try). Errors are *api.Error where one fits
//     (not_found, conflict, too_large, unavailable, outcome_unknown, invalid_*); a canceled ctx
//     is returned wrapped as is. unavailable from a write means it was not applied;
//     outcome_unknown that etcd may have applied it and the store could not learn whether.
//   - Against an external cluster Open succeeds while the cluster is down, and the store id is
//     loaded in the background (ID is "" until then), after the root checks Open makes: until
//     they pass, the store's calls are refused (unavailable), and a refusal closes Refused.
//   - Prefixes are whole segments everywhere ("a/b" covers "a/b" and "a/b/...", never "a/b-c").
package store

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// Defaults of Config.
const (
	DefaultRoot      = "/shoelace/"
	DefaultDataDir   = "./shoelace-data"
	DefaultMaxTxnOps = 10000
	// DefaultDialTimeout bounds connecting to an external cluster.
	DefaultDialTimeout = 5 * time.Second
	// DefaultRequestTimeout bounds each unary etcd call.
	DefaultRequestTimeout = 10 * time.Second
	// DefaultAttemptTimeout bounds the first try of a call on one etcd member.
	DefaultAttemptTimeout = 3 * time.Second
	// DefaultWatchProgressInterval is how long a watch may hear nothing from etcd before the
	// store asks for a progress notification; twice as long and the watch ends, unless the
	// store is idle at the revision the watch reached (see Watch).
	DefaultWatchProgressInterval = 2 * time.Second
)

// The etcd client's gRPC keepalive: a connection on which nothing was read for keepAliveTime
// while a call or a watch is open is pinged, and closed when the ping gets no answer in
// keepAliveTimeout, so that a frozen member's connection fails over. gRPC refuses pings more
// often than every 10 s, and etcd answers too frequent ones with GOAWAY (its own minimum is 5 s).
const (
	keepAliveTime    = 10 * time.Second
	keepAliveTimeout = 5 * time.Second
)

// storeIDKey is the system key holding the store id.
const storeIDKey = "store-id"

// IDKey is the system key (see SysGets) of the store's id. A restore writes it anew, so a
// system key whose revision is below its own was last written before the store was restored.
const IDKey = storeIDKey

// Config says which etcd to use and how.
type Config struct {
	// Endpoints of an external cluster; empty means an embedded single-node etcd in DataDir.
	Endpoints []string
	// DataDir holds the embedded etcd's data (in EtcdDir(DataDir)).
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
	// Once is a command's store, opened for one run (snapshot restored): an external cluster
	// that does not answer within DialTimeout fails Open, saying why, where a server's store
	// serves meanwhile and checks its root in the background once etcd answers.
	Once bool
	// Logger receives the store's and the embedded etcd's logs (as JSON).
	Logger *slog.Logger

	// RequestTimeout bounds each unary etcd call whose ctx allows longer (default 10 s), so that
	// a request never hangs on an unreachable cluster.
	RequestTimeout time.Duration
	// AttemptTimeout bounds the first try of a call (default 3 s); each later try may take twice
	// as long as the one before, within RequestTimeout. A read that gets no answer in time is
	// tried again, on the next member when the cluster has several; a write is settled first (see
	// commit), then tried again. A frozen member costs one try, not the whole freeze.
	AttemptTimeout time.Duration
	// WatchProgressInterval: a watch that hears nothing from etcd for this long asks for a
	// progress notification, and one that hears nothing for twice as long ends with an error
	// so that its caller watches again (default DefaultWatchProgressInterval), unless the store
	// is idle at the revision the watch reached: etcd sends no progress notification to a
	// watch that waits for a revision the store has not reached.
	WatchProgressInterval time.Duration
	// ProgressNotifyInterval is the embedded etcd's watch progress interval
	// (default DefaultProgressNotifyInterval).
	ProgressNotifyInterval time.Duration
	// EtcdListen is the loopback host:port of the embedded etcd's client API (empty: a unix
	// socket in a directory only the server's user may enter, see EmbedConfig.PrivateSocket).
	EtcdListen string
	// UnsafeFast is for tests only: the embedded etcd runs with 10 ms raft ticks and no fsync.
	UnsafeFast bool
	// DiskDir is the directory whose file system must keep MinFreeDisk free (see LowDisk):
	// Open sets it to the embedded etcd's; empty, with an external etcd, checks nothing.
	DiskDir string
	// MinFreeDisk is the free space under DiskDir below which LowDisk says so (0:
	// DefaultMinFreeDisk; negative: no check).
	MinFreeDisk int64
}

// Event is one batch of changes seen by Watch, at Revision.
type Event struct {
	Revision int64
	// Keys are the user keys (relative to <root>kv/) put or deleted at Revision.
	Keys []string
	// SysKeys are the system keys (relative to <root>sys/) put or deleted at Revision.
	SysKeys []string
	// Sys are the same system keys' changes, with their values, in the order etcd applied them.
	Sys []SysChange
	// Progress marks a progress notification: nothing changed up to Revision.
	Progress bool
}

// SysChange is a system key put or deleted, with its new value.
type SysChange struct {
	Key     string // relative to <root>sys/
	Value   []byte // nil when Deleted
	Deleted bool
}

// ErrCompacted is returned by Watch when the start revision was compacted.
var ErrCompacted = errors.New("revision compacted")

// ErrReconnected is returned by Watch when a connection to etcd ended while it ran: the etcd
// client would resume it on another connection, perhaps to another store (another cluster, or
// one restored from a snapshot), whose history is not the one it followed. It ends the watch
// as soon as the connection ends, and is checked again before each answer is delivered.
var ErrReconnected = errors.New("watch: a connection to etcd ended and the watch would resume on another; watching again")

// ErrWatchSilent is returned by Watch when it heard nothing from etcd for twice
// WatchProgressInterval, not even the progress notification it asked for, while the store
// cannot be read, or for three times that while the store is past the revision the watch
// reached.
var ErrWatchSilent = errors.New("watch: etcd sent nothing, not even the progress notification asked for; watching again")

// Store is a handle on the store. It is safe for concurrent use.
type Store struct {
	// applyHook, when set (by tests only), is called by an apply that found the appliance as
	// it asks: "read" after the read, "checked" once keep found it not so any more.
	applyHook func(stage string)
	// liveReadHook, when set (by tests only), is called by an apply with the bytes of keys and
	// values of each answer of etcd's that its read of the appliance's live tree holds.
	liveReadHook func(bytes int)
	// idleHook, when set (by tests only), is called by a silent watch's look at the store
	// right before it reads the store's revision (see idle).
	idleHook func()

	local *inProcess // the embedded etcd's in-process client (nil with an external etcd)
	// remoteKV calls an external etcd's KV service on cli's connection (its interceptors,
	// credentials and stats handler), with remoteOpts, the call options client/v3 gives its
	// calls: commit's transactions are sent as built (see sendTxn).
	remoteKV   pb.KVClient
	remoteOpts []grpc.CallOption
	batch      *batcher  // commit's transactions, in batches (see batch.go)
	trees      treeLocks // writes to one appliance with a schema, one at a time (see lockTrees)
	cfg        Config
	log        *slog.Logger
	cli        *clientv3.Client
	embed      *EmbeddedEtcd
	root       string // <root>
	kvRoot     string // <root>kv/
	sysRoot    string // <root>sys/
	reqRoot    string // <root>req/: write markers (see commit)
	// etcdMaxRequestBytes and etcdMaxTxnOps are the embedded etcd's limits; 0 when external.
	etcdMaxRequestBytes int
	// copyLimitBytes, when > 0, overrides copyLimit (tests).
	copyLimitBytes int
	etcdMaxTxnOps  int

	mu sync.Mutex
	id string

	lease markerLease // the lease of write markers

	priors priorCache // what the keys written lately held, for releases (see release.go)
	// metas is what PruneReleases decoded of the release records.
	metas releaseMetaCache
	// releases shares reads of every release record between the callers of Releases.
	releases releasesReads
	disk     diskCheck

	schemas schemaCache // the appliances' schemas, for write-time validation (see schema.go)

	compacted compactedCache // what Compacted learnt of an external etcd's compaction

	// tlsCfg is how the client speaks to an external etcd (nil for the embedded one or plain
	// http): Health probes the endpoints with it when none answers (see probeEndpoints).
	tlsCfg *tls.Config
	probe  endpointProbe

	observer atomic.Pointer[Observer] // told of every unary etcd request (metrics)
	connEnds connEnds                 // connections to etcd that end (see ErrReconnected)
	progress connEnds                 // closed by RequestProgress (a signal like connEnds)
	reached  atomic.Int64             // the highest revision an answer of etcd carried (see Reached)
	idMade   atomic.Int64             // the revision at which this Store made the root's id, 0 if it found one

	// rootChecked says that checkRoot found the root allowed; until it is, only its own calls
	// reach etcd (see gateUnary). refused closes when it found it refused, after rootRefusal is set.
	rootChecked atomic.Bool
	refused     chan struct{}
	rootRefusal error

	ctx       context.Context // ends on Close; bounds background work
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// rootOf is root as a store takes it: DefaultRoot when it is empty, and refused unless it starts
// and ends with '/'.
func rootOf(root string) (string, error) {
	if root == "" {
		return DefaultRoot, nil
	}
	if !strings.HasPrefix(root, "/") || !strings.HasSuffix(root, "/") {
		return "", fmt.Errorf("root %q must start and end with '/', such as %s", root, DefaultRoot)
	}
	return root, nil
}

// Open opens the store described by cfg, starting the embedded etcd when cfg.Endpoints is empty,
// and makes sure the store has an id.
//
// Embedded: Open fails unless the etcd starts and the id is read or created. External: Open does
// not need the cluster to be reachable. It tries for up to DialTimeout to read (or create) the
// id; when that fails it logs a warning, returns the Store anyway and keeps trying in the
// background until it succeeds or the Store is closed. Until then ID() is "" and every call
// fails with an api.CodeUnavailable error as long as the cluster is away.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	var err error
	if cfg.Root, err = rootOf(cfg.Root); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	if cfg.DataDir == "" {
		cfg.DataDir = DefaultDataDir
	}
	if cfg.MaxValueBytes <= 0 {
		cfg.MaxValueBytes = api.DefaultMaxValueBytes
	}
	if cfg.MaxTxnOps <= 0 {
		cfg.MaxTxnOps = DefaultMaxTxnOps
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.AttemptTimeout <= 0 {
		cfg.AttemptTimeout = min(DefaultAttemptTimeout, cfg.RequestTimeout)
	}
	if cfg.WatchProgressInterval <= 0 {
		cfg.WatchProgressInterval = DefaultWatchProgressInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MinFreeDisk == 0 {
		cfg.MinFreeDisk = DefaultMinFreeDisk
	}
	if len(cfg.Endpoints) == 0 && cfg.DiskDir == "" {
		cfg.DiskDir = EtcdDir(cfg.DataDir)
	}
	s := &Store{
		cfg:     cfg,
		log:     cfg.Logger,
		root:    cfg.Root,
		kvRoot:  cfg.Root + "kv/",
		sysRoot: cfg.Root + "sys/",
		reqRoot: cfg.Root + "req/",
		refused: make(chan struct{}),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())

	endpoints := cfg.Endpoints
	var tlsCfg *tls.Config
	if len(endpoints) == 0 {
		s.etcdMaxRequestBytes = embeddedRequestBytes(cfg.MaxValueBytes)
		// One API op can take several etcd ops (a recursive delete is the key plus its subtree;
		// an apply puts each key and guards it on what was read, and deletes and guards the
		// keys that go; the release record, its copy and the schema and rollout guards come
		// on top), so etcd's own limit sits well above ours: the API's limit is always the one a
		// caller meets first, with a message that names it (an apply of MaxTxnOps keys that
		// replaces a tree of as many others fits).
		s.etcdMaxTxnOps = EmbeddedMaxTxnOps(cfg.MaxTxnOps)
		ee, err := StartEmbedded(ctx, EmbedConfig{
			Dir:                    EtcdDir(cfg.DataDir),
			MaxRequestBytes:        uint(s.etcdMaxRequestBytes),
			MaxTxnOps:              uint(s.etcdMaxTxnOps),
			Logger:                 cfg.Logger,
			ProgressNotifyInterval: cfg.ProgressNotifyInterval,
			UnsafeFast:             cfg.UnsafeFast,
			ClientAddr:             cfg.EtcdListen,
			PrivateSocket:          cfg.EtcdListen == "",
		})
		if err != nil {
			s.cancel()
			return nil, fmt.Errorf("open store: %w", err)
		}
		s.embed = ee
		endpoints = ee.Endpoints()
	} else {
		var err error
		if tlsCfg, err = loadTLS(cfg.CACert, cfg.Cert, cfg.Key); err != nil {
			s.cancel()
			return nil, fmt.Errorf("open store: %w", err)
		}
		s.tlsCfg = tlsCfg
	}

	zl, _ := newZapLogger(cfg.Logger, zapcore.ErrorLevel, "etcd-client")
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: cfg.DialTimeout,
		TLS:         tlsCfg,
		// Let large requests reach etcd, which refuses them with "request is too large" (a
		// 413 naming its limit) instead of the client failing first with a vaguer error.
		MaxCallSendMsgSize: maxSend(s.etcdMaxRequestBytes),
		Logger:             zl,
		Context:            s.ctx,
		// Only while a call or a watch is open: etcd refuses pings on an idle connection.
		DialKeepAliveTime:    keepAliveTime,
		DialKeepAliveTimeout: keepAliveTimeout,
		// gRPC's reconnect backoff grows to 2 minutes by default: cap it so that the server
		// is back within seconds of etcd.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: cfg.DialTimeout,
		}),
			grpc.WithChainUnaryInterceptor(s.gateUnary, s.retryReads, s.observeUnary),
			grpc.WithChainStreamInterceptor(s.gateStream),
			grpc.WithStatsHandler(sentTracker{connEnds: &s.connEnds})},
	})
	if err != nil {
		s.cancel()
		s.closeEmbedded()
		return nil, fmt.Errorf("open store: etcd client of %s: %w", strings.Join(endpoints, ","), err)
	}
	s.cli = cli
	if s.embed != nil {
		s.local = newInProcess(s.embed)
	} else {
		s.remoteKV = pb.NewKVClient(cli.ActiveConnection())
		s.remoteOpts = []grpc.CallOption{grpc.WaitForReady(true), grpc.MaxCallSendMsgSize(maxSend(s.etcdMaxRequestBytes)), grpc.MaxCallRecvMsgSize(math.MaxInt32)}
	}
	s.batch = newBatcher(s.sendTxn, s.etcdMaxRequestBytes)

	// An external etcd is given startWait to answer: the server serves (its /health, and 503
	// with Retry-After for what needs the store) while etcd is away, so that waiting here for
	// the dial's whole timeout only kept /health down (the server started after 20 s).
	wait := cfg.DialTimeout
	if s.embed == nil && !cfg.Once {
		wait = min(wait, startWait)
	}
	cctx := context.WithValue(ctx, rootCheckKey{}, true)
	refusal, lookAgain, err := s.checkRoot(cctx, wait)
	if err == nil && refusal == nil {
		s.rootChecked.Store(true)
		refusal, err = s.ensureIDChecked(ctx, wait, lookAgain)
	}
	if refusal != nil {
		s.Close()
		return nil, refusal
	}
	if err != nil {
		if s.embed != nil || ctx.Err() != nil || cfg.Once {
			s.Close()
			// "did not answer in time" is all the client says, also of a port where nothing
			// listens or of a TLS handshake etcd refuses: a probe names the cause.
			if s.embed == nil && ctx.Err() == nil {
				if why, _ := probeEndpoints(endpoints, tlsCfg, min(cfg.DialTimeout, 2*time.Second)); why != "" {
					err = fmt.Errorf("%w: %s", err, why)
				}
			}
			return nil, fmt.Errorf("open store: %w", err)
		}
		s.log.Warn("etcd not reachable yet; retrying in the background",
			"endpoints", strings.Join(endpoints, ","), "error", err)
		// "did not answer in time" is all the client says when etcd refuses the TLS
		// handshake (no, or an untrusted or expired, client certificate): a probe of each
		// endpoint names the cause and the flags to check.
		go func() {
			why, _ := probeEndpoints(endpoints, tlsCfg, min(cfg.DialTimeout, 2*time.Second))
			if !s.Answered() {
				s.probe.report(s, why)
			}
		}()
		s.wg.Add(1)
		go s.loadIDLoop(lookAgain)
	}
	if s.embed != nil {
		s.freeLeaders(ctx)
	}
	return s, nil
}

// checkRoot returns the error that refuses this store's root (another store's keys hold it, or
// its keys hold another store made before it: see storeAbove and storeBelow), nil when neither,
// and err when etcd could not say. ctx must carry rootCheckKey (see gateUnary); wait bounds
// the reads of the store's id and of the record of an earlier look below.
func (s *Store) checkRoot(ctx context.Context, wait time.Duration) (refusal error, lookAgain bool, err error) {
	idCtx, cancel := context.WithTimeout(ctx, wait)
	outer, err := s.storeAbove(idCtx)
	var made int64
	looked := false
	if err == nil && outer == "" {
		made, looked, err = s.lookedBelow(idCtx)
	}
	cancel()
	inner := ""
	if err == nil && outer == "" && !looked {
		// etcd answered: the look below, which may read the name of every key under kv/ (once
		// in the store's life), has a request's time for each page rather than startWait's.
		inner, err = s.storeBelow(ctx, made)
	}
	switch {
	case outer != "":
		return fmt.Errorf("open store: --root %s lies inside the keys of the Shoelace store at root %s (under its kv/): that store's writers could write this one's tokens and records; choose a root outside it", s.cfg.Root, outer), false, nil
	case inner != "":
		return s.holdsInner(inner), false, nil
	}
	// Without an id yet (made 0), the look is recorded once the id is made (lookAgain).
	return nil, err == nil && !looked && made == 0, err
}

// holdsInner is the refusal of a root that holds the store at root inner in its keys.
func (s *Store) holdsInner(inner string) error {
	return fmt.Errorf("open store: --root %s holds in its keys (under its kv/) the Shoelace store at root %s, made before it: this store's writers could write that one's tokens and records; choose a root outside it", s.cfg.Root, inner)
}

// ensureIDChecked is EnsureID after checkRoot, which recorded no look below the root when the
// store had no id yet (lookAgain): the id made now, the look is recorded at this start, or a
// later one would read again every key the store's writers put under kv/ meanwhile, as many
// and as large as the store holds. The keys created before the id are those checkRoot just
// looked at (kv/ of a new root is empty but for what another program put there).
func (s *Store) ensureIDChecked(ctx context.Context, wait time.Duration, lookAgain bool) (refusal error, err error) {
	idCtx, cancel := context.WithTimeout(ctx, wait)
	_, err = s.EnsureID(idCtx)
	cancel()
	if err != nil || !lookAgain {
		return nil, err
	}
	inner, err := s.lookBelowAgain(ctx)
	if inner != "" {
		return s.holdsInner(inner), nil
	}
	return nil, err
}

// rootCheckKey marks the context of checkRoot's reads and of the id's first load, which go to
// etcd before the root is found allowed (see gateUnary).
type rootCheckKey struct{}

// rootUnchecked is what the store's calls to etcd get while its root is not checked yet: an
// external etcd that was away at Open answered, and checkRoot has not said yet.
const rootUnchecked = "etcd answers, but the store's --root is not checked yet (whether it lies inside another Shoelace store's keys, or holds one); retry"

// gated reports whether method reads or writes the store's keys (KV, Watch, Lease): Maintenance
// and Cluster calls (health checks) go on while the root is unchecked or refused.
func gated(method string) bool {
	return strings.HasPrefix(method, "/etcdserverpb.KV/") || strings.HasPrefix(method, "/etcdserverpb.Watch/") ||
		strings.HasPrefix(method, "/etcdserverpb.Lease/")
}

// gateUnary refuses the store's calls to etcd until its root is checked (rootChecked), other
// than checkRoot's own: when an external etcd was away at Open, the checks run once it answers
// (loadIDLoop), and meanwhile a read or a write (the admin token's, a request's) would be of a
// store nested in another one. After a refusal the gate stays closed.
func (s *Store) gateUnary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if !s.rootChecked.Load() && gated(method) && ctx.Value(rootCheckKey{}) == nil {
		if err := s.Refusal(); err != nil {
			return api.Errorf(api.CodeUnavailable, "the store is refused: %s", err.Error())
		}
		return api.Errorf(api.CodeUnavailable, rootUnchecked)
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

// gateStream is gateUnary for watches (and lease keep-alives): Unavailable, which etcd's
// client retries with backoff, so that a watch opened meanwhile starts once the root is checked.
func (s *Store) gateStream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	if !s.rootChecked.Load() && gated(method) && ctx.Value(rootCheckKey{}) == nil {
		return nil, status.Error(codes.Unavailable, rootUnchecked)
	}
	return streamer(ctx, desc, cc, method, opts...)
}

// Refused is closed when the background start (an external etcd away at Open) found the store's
// root refused, as Open would have (see Refusal): the store serves nothing, and the server
// stops with Refusal's error.
func (s *Store) Refused() <-chan struct{} { return s.refused }

// Refusal is the error that refused the store's root in the background start, nil while none did.
func (s *Store) Refusal() error {
	select {
	case <-s.refused:
		return s.rootRefusal
	default:
		return nil
	}
}

// startWait bounds how long Open waits for an external etcd to answer before it reads the
// store's id in the background (see Answered).
const startWait = time.Second

// Answered reports whether the store has answered since Open (its id is known): while it has
// not, a caller at start reads nothing of it on the way, and leaves it to the background.
func (s *Store) Answered() bool { return s.ID() != "" }

// embeddedRequestBytes sizes the embedded etcd's request limit: two of the largest values plus
// room for keys and overhead, and never under 10 MiB (etcd's recommended maximum) so that an apply of many keys fits.
func embeddedRequestBytes(maxValue int) int {
	return max(minRequestBytes, 2*maxValue+1<<20)
}

func maxSend(etcdLimit int) int {
	return max(64<<20, etcdLimit+1<<20)
}

func loadTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	if caFile == "" && certFile == "" && keyFile == "" {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("etcd ca cert: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("etcd ca cert %s: no PEM certificate found", caFile)
		}
		c.RootCAs = pool
	}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("etcd client cert and key must be given together")
	}
	if certFile != "" {
		cp := &clientPair{certFile: certFile, keyFile: keyFile}
		if err := cp.load(); err != nil {
			return nil, fmt.Errorf("etcd client cert: %w", err)
		}
		c.GetClientCertificate = cp.get
	}
	return c, nil
}

// clientPair is the client certificate presented to etcd. Its files are read again at each new
// connection when they changed, so that a renewed certificate is used without a restart (a
// replica that kept the first one would be refused by etcd once it expired, at its next
// reconnection); a pair that does not load (half written) keeps the one loaded before.
type clientPair struct {
	certFile, keyFile string
	mu                sync.Mutex
	pair              *tls.Certificate
	stamp             string // the files' sizes and modification times when pair was read
}

func (p *clientPair) fileStamp() string {
	var b strings.Builder
	for _, f := range []string{p.certFile, p.keyFile} {
		if fi, err := os.Stat(f); err == nil {
			fmt.Fprintf(&b, "%d/%d;", fi.Size(), fi.ModTime().UnixNano())
		}
	}
	return b.String()
}

func (p *clientPair) load() error {
	stamp := p.fileStamp()
	pair, err := tls.LoadX509KeyPair(p.certFile, p.keyFile)
	if err != nil {
		return err
	}
	p.pair, p.stamp = &pair, stamp
	return nil
}

func (p *clientPair) get(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fileStamp() != p.stamp {
		_ = p.load() // on error the previous pair stays, and the files are read again next time
	}
	return p.pair, nil
}

// loadIDLoop retries EnsureID with capped backoff until it succeeds or the store closes.
// lookAgain is checkRoot's, when Open's checks passed but the id could not be made: the look
// below the root is recorded once it is, as at a start that makes it (a flag reset at each try
// was lost when the checks passed and the id came at a later try).
func (s *Store) loadIDLoop(lookAgain bool) {
	defer s.wg.Done()
	wait := 200 * time.Millisecond
	checked := s.rootChecked.Load() // Open's checks passed, its id not made
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-time.After(wait):
		}
		// The root checks that Open could not make run first: until they pass, nothing else
		// reaches the store (see gateUnary), and a refusal ends the store as it would have
		// ended Open.
		ctx, cancel := context.WithTimeout(context.WithValue(s.ctx, rootCheckKey{}, true), s.cfg.RequestTimeout)
		var err error
		var refusal error
		if !checked {
			if refusal, lookAgain, err = s.checkRoot(ctx, s.cfg.RequestTimeout); err == nil && refusal == nil {
				checked = true
			}
		}
		if err == nil && refusal == nil {
			// The gate opens once the id is made and its look below recorded (its calls carry
			// rootCheckKey): a second look that finds a store made meanwhile refuses the root
			// before anything else reached it.
			if refusal, err = s.ensureIDChecked(ctx, s.cfg.RequestTimeout, lookAgain); err == nil && refusal == nil {
				s.rootChecked.Store(true)
			}
		}
		cancel()
		if refusal != nil {
			s.rootChecked.Store(false)
			s.rootRefusal = refusal
			close(s.refused)
			s.log.Error("the store's root is refused now that etcd answers; the server exits", "error", refusal.Error())
			return
		}
		if err == nil {
			s.log.Info("etcd reachable", "store", s.ID())
			return
		}
		wait = min(2*wait, time.Second)
	}
}

// Close stops the embedded etcd (if any) and closes the client. Open watches end with an
// error. Calling it again does nothing.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		s.wg.Wait()
		if s.local != nil {
			s.local.close()
		}
		if s.cli != nil {
			if err := s.cli.Close(); err != nil && !errors.Is(err, context.Canceled) {
				s.closeErr = fmt.Errorf("close etcd client: %w", err)
			}
		}
		s.closeEmbedded()
	})
	return s.closeErr
}

// embedCloseWait bounds how long Close waits for the embedded etcd (see CloseWithin).
const embedCloseWait = 3 * time.Second

func (s *Store) closeEmbedded() {
	if s.embed != nil {
		if err := s.embed.CloseWithin(embedCloseWait); err != nil {
			s.log.Warn("stop embedded etcd", "error", err.Error())
		}
	}
}

// ID is the store's id, sent as X-Shoelace-Store. It is created once per store (by compare-and-swap
// under sys/) and changes only when the store is replaced or restored from a snapshot.
// It is "" while an external cluster has not been reachable since Open (see Open and EnsureID).
func (s *Store) ID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.id
}

// EnsureID returns the store's id, reading it from etcd (and creating it by compare-and-swap if
// the store has none) when it is not known yet. Every caller racing to create it gets the same id.
func (s *Store) EnsureID(ctx context.Context) (string, error) {
	if id := s.ID(); id != "" {
		return id, nil
	}
	return s.loadID(ctx)
}

// ReloadID re-reads the store's id from etcd (creating one if the store has none), for a caller
// that saw sys/store-id change.
func (s *Store) ReloadID(ctx context.Context) (string, error) { return s.loadID(ctx) }

// SawID makes id the store's id, as a watch event of sys/store-id said it now is.
func (s *Store) SawID(id string) {
	if id == "" {
		return
	}
	s.setID(id)
}

// setID makes id the store's id. Another id than a known one is another store (another cluster,
// a restore): what the prior cache holds of keys, by their revisions, was of the store before.
func (s *Store) setID(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.id != "" && s.id != id {
		s.priors.clear()
	}
	s.id = id
}

// ResetID gives the store a new random id unconditionally, as after restoring a snapshot, so
// that agents notice the store was replaced.
func (s *Store) ResetID(ctx context.Context) (string, error) {
	id := newID()
	if _, err := s.SysPut(ctx, storeIDKey, []byte(id), -1); err != nil {
		return "", fmt.Errorf("reset store id: %w", err)
	}
	s.setID(id)
	return id, nil
}

// RenewID gives the store a new random id if its id is still old (compare-and-swap), for a
// replica that found the store's revisions went back under the same id (etcd brought back from
// a copy of older data without a revision bump): the revisions above the store's now are of a
// history it lost, and agents holding views of it must read theirs again, as after a restore
// (which gives the store a new id, see ResetID). Replicas that find it together make one new
// id. renewed says whether this call made it; when not (another replica did, or the store's id
// is not old), the caller reads the id as it reads any other.
func (s *Store) RenewID(ctx context.Context, old string) (id string, renewed bool, err error) {
	if old == "" {
		return "", false, nil
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	k := s.sysRoot + storeIDKey
	fresh := newID()
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.Value(k), "=", old)).
		Then(clientv3.OpPut(k, fresh)).
		Commit()
	if err != nil {
		return "", false, s.etcdErr(ctx, "renew the store id", err)
	}
	if !resp.Succeeded {
		return "", false, nil
	}
	s.SawID(fresh)
	return fresh, true, nil
}

// storeAbove returns the root of a Shoelace store whose keys hold this store's root (the root
// is <that root>kv/…), "" when there is none: that store's key writers would write this one's
// system keys (tokens, releases, restore records). A store is known by its id key.
func (s *Store) storeAbove(ctx context.Context) (string, error) {
	root := s.cfg.Root
	for i := 1; i < len(root); i++ {
		if root[i-1] != '/' || !strings.HasPrefix(root[i:], "kv/") {
			continue
		}
		outer := root[:i]
		resp, err := s.cli.Get(ctx, outer+"sys/"+storeIDKey, clientv3.WithCountOnly())
		if err != nil {
			return "", s.etcdErr(ctx, "look for a store around the root", err)
		}
		if resp.Count > 0 {
			return outer, nil
		}
	}
	return "", nil
}

// belowCheckedKey, under the system root, says that storeBelow found no store made before this
// one under its keys: keys created before the store's id are never created again, so a later
// start need not read them.
const belowCheckedKey = "below-checked"

// belowPage is how many key names storeBelow reads at a time: keys-only reads are answered from
// etcd's index in memory (etcd 3.7; an earlier one reads each key's record from its database),
// and each counts the keys after its page there too, so that fewer, larger pages cost less than
// many small ones (a page is at most about 5 MiB of names). A variable for tests.
var belowPage int64 = 10_000

// lookedBelow returns the creation revision of this store's id (0 while it has none), and
// whether storeBelow found no store under its keys at an earlier start (see belowCheckedKey).
func (s *Store) lookedBelow(ctx context.Context) (made int64, looked bool, err error) {
	resp, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(s.sysRoot+storeIDKey, clientv3.WithKeysOnly()),
		clientv3.OpGet(s.sysRoot+belowCheckedKey, clientv3.WithCountOnly())).Commit()
	if err != nil {
		return 0, false, s.etcdErr(ctx, "look for a store inside the root's keys", err)
	}
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		made = kvs[0].CreateRevision
	}
	return made, made > 0 && resp.Responses[1].GetResponseRange().Count > 0, nil
}

// storeBelow returns the root of a Shoelace store under this store's keys (its root is
// <this root>kv/…) made before this one, whose id was created at revision made (0 while it
// has none), "" when there is none: this store's key writers would write that one's system
// keys, as storeAbove says for the other order. A store is known by its id key; one whose id
// was created after this store's is not counted, for this store's writers can put a key of
// that name (and that store's own start refuses it, with storeAbove). It reads the names of
// the keys under kv/ created before this store's id, a page at a time, at the store's first
// starts only: once it has found none after this store's id was made, it records so
// (belowCheckedKey), and later starts read that record alone (lookedBelow).
func (s *Store) storeBelow(ctx context.Context, made int64) (string, error) {
	// Each page at the revision of its read: the keys created before this store's id are not
	// made again, and a read at an older revision could find it compacted.
	from, end := s.kvRoot, clientv3.GetPrefixRangeEnd(s.kvRoot)
	// Each page has a request's time: all of them in one, a store of more keys than that time
	// reads (an earlier version's, at its first start after the upgrade) never started on an
	// embedded etcd, and on an external one started as if etcd were away, without the look.
	for {
		pctx, cancel := s.opCtx(ctx)
		page, err := s.cli.Get(pctx, from, clientv3.WithRange(end), clientv3.WithKeysOnly(), clientv3.WithLimit(belowPage))
		if err != nil {
			err = s.etcdErr(pctx, "look for a store inside the root's keys", err)
			cancel()
			return "", err
		}
		cancel()
		for _, kv := range page.Kvs {
			if made > 0 && kv.CreateRevision >= made {
				continue
			}
			if root, ok := strings.CutSuffix(string(kv.Key), "sys/"+storeIDKey); ok && strings.HasSuffix(root, "/") {
				return root, nil
			}
		}
		if !page.More || len(page.Kvs) == 0 {
			break
		}
		from = string(page.Kvs[len(page.Kvs)-1].Key) + "\x00"
	}
	if made > 0 {
		// While this store has no id, a store could still be made under its keys before it
		// gets one: the look is recorded at a start that finds the id made. A record not
		// written (etcd out of space refuses writes, not reads) only has the next start look
		// again.
		pctx, cancel := s.opCtx(ctx)
		_, err := s.cli.Put(pctx, s.sysRoot+belowCheckedKey, strconv.FormatInt(made, 10))
		cancel()
		if err != nil {
			s.log.Debug("record the look for a store inside the root's keys", "error", err)
		}
	}
	return "", nil
}

// lookBelowAgain is storeBelow at the start that made the store's id, which records it.
func (s *Store) lookBelowAgain(ctx context.Context) (string, error) {
	rctx, cancel := s.opCtx(ctx)
	made, _, err := s.lookedBelow(rctx)
	cancel()
	if err != nil || made == 0 {
		return "", err
	}
	return s.storeBelow(ctx, made)
}

func (s *Store) loadID(ctx context.Context) (string, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	k := s.sysRoot + storeIDKey
	// A read first: a store has its id but once, and a read is answered where a write is
	// refused (etcd out of space refuses a transaction that may write, even one that would not).
	if get, err := s.cli.Get(ctx, k); err != nil {
		return "", s.etcdErr(ctx, "store id", err)
	} else if len(get.Kvs) > 0 && len(get.Kvs[0].Value) > 0 {
		s.SawID(string(get.Kvs[0].Value))
		return string(get.Kvs[0].Value), nil
	}
	fresh := newID()
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, fresh)).
		Else(clientv3.OpGet(k)).
		Commit()
	if err != nil {
		return "", s.etcdErr(ctx, "store id", err)
	}
	id := fresh
	if resp.Succeeded {
		s.idMade.Store(resp.Header.Revision)
	} else {
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 || len(kvs[0].Value) == 0 {
			return "", fmt.Errorf("store id: %s is empty", k)
		}
		id = string(kvs[0].Value)
	}
	s.setID(id)
	return id, nil
}

func newID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Observer is told of each unary etcd request the store makes (each attempt, retries
// included): its method, such as "KV/Range", its gRPC status code ("OK" on success, "Canceled"
// when the caller gave up) and how long it took. It must be quick and safe for concurrent use.
type Observer func(method, code string, d time.Duration)

// SetObserver reports every later unary etcd request to o (nil: to nobody), for metrics.
func (s *Store) SetObserver(o Observer) {
	if o == nil {
		s.observer.Store(nil)
		return
	}
	s.observer.Store(&o)
}

func (s *Store) observeUnary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	start := time.Now()
	err := invoker(ctx, method, req, reply, cc, opts...)
	s.observe(strings.TrimPrefix(strings.TrimPrefix(method, "/"), "etcdserverpb."), err, time.Since(start))
	if r, ok := reply.(interface{ GetHeader() *pb.ResponseHeader }); ok && err == nil {
		s.sawRevision(r.GetHeader().GetRevision())
	}
	return err
}

// Reached is the highest revision that an answer of etcd to this store carried (a write's, a
// read's, a watch's) since Open or the last Rewound: the store's history reached it. etcd's
// revisions never go back, but a store brought back from a copy of older data (a restore
// without --bump-revision, a VM snapshot of a member) or another cluster behind the endpoints
// is at a lower one: a revision read after Reached was taken that is below it says so, even
// when a watch never heard of the revisions above it.
func (s *Store) Reached() int64 { return s.reached.Load() }

// Rewound makes rev the store's Reached, for a caller that found the store's history went back
// to rev (or that the endpoints lead to another store, at rev): the revisions above it are of a
// history the store no longer has.
func (s *Store) Rewound(rev int64) { s.reached.Store(rev) }

// sawRevision raises Reached to rev.
func (s *Store) sawRevision(rev int64) {
	for {
		cur := s.reached.Load()
		if rev <= cur || s.reached.CompareAndSwap(cur, rev) {
			return
		}
	}
}

// observe reports one etcd call (method as "KV/Txn") to the observer, if any.
func (s *Store) observe(method string, err error, took time.Duration) {
	if o := s.observer.Load(); o != nil {
		code := status.Code(err)
		if err != nil && code == codes.Unknown {
			code = status.FromContextError(err).Code()
		}
		(*o)(method, code.String(), took)
	}
}

// Embedded reports whether the store runs an embedded etcd.
func (s *Store) Embedded() bool { return s.embed != nil }

// Endpoints are the etcd client URLs the store talks to (the embedded etcd's own when embedded).
func (s *Store) Endpoints() []string { return s.cli.Endpoints() }

// Root is the prefix of all of the store's keys in etcd.
func (s *Store) Root() string { return s.root }

// MaxTxnOps is the most ops (or guards, or keys of an apply) one transaction may hold.
func (s *Store) MaxTxnOps() int { return s.cfg.MaxTxnOps }

// MaxRequestBytes is the embedded etcd's request size limit, 0 for an external cluster (whose
// limit is its own --max-request-bytes, 1.5 MiB by default).
func (s *Store) MaxRequestBytes() int { return s.etcdMaxRequestBytes }

// opCtx bounds one unary call by RequestTimeout.
func (s *Store) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.cfg.RequestTimeout)
}

// etcdErr maps an etcd error to an API error where one fits: limits to api.CodeTooLarge,
// an unreachable or leaderless cluster and timeouts to api.CodeUnavailable, which says "retry".
// Anything else is wrapped with op. It is for reads, and for writes that etcd did not apply or
// that may safely be repeated; commit says when the outcome of a write is unknown.
func (s *Store) etcdErr(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	var ae *api.Error
	if errors.As(err, &ae) {
		return err
	}
	err = clientv3.ContextError(ctx, err)
	switch {
	case errors.Is(err, rpctypes.ErrRequestTooLarge):
		return api.Errorf(api.CodeTooLarge, "%s: the request is larger than %s", op, s.requestLimit())
	case errors.Is(err, rpctypes.ErrTooManyOps):
		return api.Errorf(api.CodeTooLarge, "%s: the transaction has more operations than %s", op, s.txnLimit())
	case errors.Is(err, context.DeadlineExceeded):
		return api.Errorf(api.CodeUnavailable, "%s: etcd did not answer in time (%s)", op, strings.Join(s.cli.Endpoints(), ","))
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("%s: %w", op, err)
	case errors.Is(err, rpctypes.ErrNoSpace):
		// etcd refuses every write before proposing it until an operator frees space and
		// disarms the alarm: nothing was applied, and reads go on.
		e := api.Errorf(api.CodeUnavailable, "%s: etcd is out of space (alarm NOSPACE: its database reached --quota-backend-bytes) and refuses writes; not applied: retry once an operator has compacted, defragmented and run 'etcdctl alarm disarm'", op)
		e.RetryAfter = 30
		return e
	}
	if msg, ok := transient(err); ok {
		return api.Errorf(api.CodeUnavailable, "%s: etcd unavailable (%s); retry", op, msg)
	}
	if st, ok := status.FromError(err); ok && st.Code() == codes.Internal {
		// etcd answers no request with this code: it is gRPC's own, for an answer that could
		// not be read (a message garbled on its way, a stream cut before its trailers). Nothing
		// was read from it, and the next try may be answered whole.
		return api.Errorf(api.CodeUnavailable, "%s: etcd's answer could not be read (%s); retry", op, st.Message())
	}
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return fmt.Errorf("%s: %w", op, err)
	}
	if st, ok := status.FromError(err); ok && st.Code() == codes.ResourceExhausted {
		return api.Errorf(api.CodeTooLarge, "%s: the request is larger than %s (%s)", op, s.requestLimit(), st.Message())
	}
	return fmt.Errorf("%s: %w", op, err)
}

// transient reports whether err is one of the errors an etcd cluster gives while it has no leader,
// elects one, or a member stops or cannot be reached — a 503 the client may retry, never a 500.
func transient(err error) (msg string, ok bool) {
	for _, e := range []error{rpctypes.ErrTimeout, rpctypes.ErrTimeoutDueToLeaderFail,
		rpctypes.ErrTimeoutDueToConnectionLost, rpctypes.ErrTimeoutWaitAppliedIndex,
		rpctypes.ErrNoLeader, rpctypes.ErrNotLeader, rpctypes.ErrLeaderChanged,
		rpctypes.ErrStopped, rpctypes.ErrNotCapable, rpctypes.ErrUnhealthy, rpctypes.ErrTooManyRequests} {
		if errors.Is(err, e) {
			return e.Error(), true
		}
	}
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) && ee.Code() == codes.Unavailable {
		return ee.Error(), true
	}
	st, isStatus := status.FromError(err)
	if !isStatus {
		return "", false
	}
	switch {
	case st.Code() == codes.Unavailable:
		return st.Message(), true
	case st.Code() == codes.Unknown && (strings.Contains(st.Message(), "raft: stopped") ||
		strings.Contains(st.Message(), "server stopped") || strings.Contains(st.Message(), "proposal dropped")):
		// A member stopping, or one without a leader, answers with raft's or etcd's own error, untyped.
		return st.Message(), true
	}
	return "", false
}

func (s *Store) requestLimit() string {
	if s.etcdMaxRequestBytes > 0 {
		return fmt.Sprintf("the embedded etcd's request size limit of %d bytes", s.etcdMaxRequestBytes)
	}
	return "the etcd cluster's request size limit (its --max-request-bytes, 1.5 MiB by default)"
}

func (s *Store) txnLimit() string {
	if s.etcdMaxTxnOps > 0 {
		return fmt.Sprintf("the embedded etcd's limit of %d per transaction", s.etcdMaxTxnOps)
	}
	return "the etcd cluster's limit per transaction (its --max-txn-ops, 128 by default)"
}

func tooManyOps(what string, n, limit int) error {
	return api.Errorf(api.CodeTooLarge, "%s has %d operations, more than the limit of %d per transaction", what, n, limit)
}
