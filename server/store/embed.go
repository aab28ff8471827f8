package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Defaults of EmbedConfig.
const (
	// DefaultProgressNotifyInterval is how often the embedded etcd sends progress notifications
	// to watchers that saw no change (etcd's own default is 10 minutes).
	DefaultProgressNotifyInterval = 10 * time.Second
	// DefaultReadyTimeout bounds the wait for the embedded etcd to serve.
	DefaultReadyTimeout = 30 * time.Second
	// DefaultAutoCompaction is the embedded etcd's retention: periodic compaction keeping at
	// least an hour of history, so long-polls and re-watches rarely meet a compacted revision
	// even after a burst of writes (a revision window would shrink exactly then).
	DefaultAutoCompaction = "1h"
	// minRequestBytes is the smallest request size the embedded etcd is given: enough for a
	// whole-appliance apply of many small keys.
	minRequestBytes = 10 << 20
	// EmbeddedCatchUpEntries is how many applied raft entries the embedded etcd keeps in memory
	// (etcd keeps 5000 for slow followers, and a single-node etcd has none), and
	// EmbeddedSnapshotCount how many it replays from its WAL at a start (etcd's 10,000): each
	// entry is a whole write, a batch of up to 256 instance reports or a value of up to
	// --max-value-bytes. With etcd's defaults a fleet of 10,000 agents, whose reports are most
	// of the writes, kept 130 MB of them in the heap of an idle server after a restart (up to
	// gigabytes with large values), for good.
	EmbeddedCatchUpEntries = 100
	EmbeddedSnapshotCount  = 1000
)

// embeddedName is the embedded etcd's member name.
const embeddedName = "shoelace"

// EtcdDir is where Open keeps the embedded etcd's files inside a data dir (a snapshot restore
// goes there).
func EtcdDir(dataDir string) string { return filepath.Join(dataDir, "etcd") }

// EmbedConfig configures StartEmbedded.
type EmbedConfig struct {
	// Dir is etcd's data dir; it is created (mode 0700) if missing, and Dir+".lock" guards it
	// against a second process.
	Dir string
	// ClientAddr is the host:port to serve clients on (default: a free 127.0.0.1 port, picked
	// before etcd starts so that etcd knows its number). Tests that restart an etcd pass its previous address so clients reconnect.
	ClientAddr string
	// PrivateSocket, without ClientAddr, serves the client API (and the peer listener) on unix
	// sockets in a directory of mode 0700 made for them (and removed with them), instead of
	// 127.0.0.1 ports: etcd has no access control of its own, and any local user (nobody,
	// another service's) could reach a loopback port, read every secret and write itself an
	// admin token record.
	PrivateSocket bool
	// MaxRequestBytes and MaxTxnOps are etcd's limits (defaults: 10 MiB and 2*DefaultMaxTxnOps+1).
	MaxRequestBytes uint
	MaxTxnOps       uint
	// Logger receives etcd's logs at LogLevel and above ("debug", "info", "warn" (default),
	// "error").
	Logger   *slog.Logger
	LogLevel string
	// ProgressNotifyInterval defaults to DefaultProgressNotifyInterval. etcd keeps it in a
	// package variable: every etcd started in one process uses the last one set.
	ProgressNotifyInterval time.Duration
	// ReadyTimeout defaults to DefaultReadyTimeout.
	ReadyTimeout time.Duration
	// UnsafeFast is for tests only: 10 ms raft ticks and no fsync. Data may be lost on a crash.
	UnsafeFast bool
}

// EmbeddedEtcd is a running single-node etcd serving on a loopback port, or a private unix
// socket, of its own.
type EmbeddedEtcd struct {
	e         *embed.Etcd
	dir       string
	sockDir   string // the private directory of the client socket; "" on a port
	endpoints []string
	muted     *atomic.Bool
	unlock    func()
	closeOnce sync.Once
	done      chan struct{} // closed once etcd has stopped and the dir is released
}

// StartEmbedded starts a single-node etcd in cfg.Dir and waits until it serves. It listens on
// free 127.0.0.1 ports (the peer's is port 0), so any number of them can run on one machine.
// The advertised peer URL stays http://127.0.0.1:0 (no peer ever dials a single node), which
// keeps the member identity the same across restarts.
func StartEmbedded(ctx context.Context, cfg EmbedConfig) (*EmbeddedEtcd, error) {
	if cfg.Dir == "" {
		return nil, errors.New("start embedded etcd: no data dir")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxRequestBytes == 0 {
		cfg.MaxRequestBytes = minRequestBytes
	}
	if cfg.MaxTxnOps == 0 {
		cfg.MaxTxnOps = uint(EmbeddedMaxTxnOps(DefaultMaxTxnOps))
	}
	if cfg.ProgressNotifyInterval <= 0 {
		cfg.ProgressNotifyInterval = DefaultProgressNotifyInterval
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = DefaultReadyTimeout
	}
	level := zapcore.WarnLevel
	if cfg.LogLevel != "" {
		l, err := zapcore.ParseLevel(cfg.LogLevel)
		if err != nil {
			return nil, fmt.Errorf("start embedded etcd: log level %q: %w", cfg.LogLevel, err)
		}
		level = l
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("start embedded etcd: %w", err)
	}
	if prev, ok := closing.Load(cfg.Dir); ok {
		// An etcd of this process on the same dir is still closing: wait for it.
		select {
		case <-prev.(chan struct{}):
		case <-ctx.Done():
			return nil, fmt.Errorf("start embedded etcd in %s: the previous etcd on this dir is still closing: %w", cfg.Dir, ctx.Err())
		}
	}
	unlock, err := lockDir(cfg.Dir + ".lock")
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd in %s: %w", cfg.Dir, err)
	}

	zl, muted := newZapLogger(cfg.Logger, level, "etcd")
	hook := etcdFatal{log: cfg.Logger, dir: cfg.Dir}
	zl = zl.WithOptions(zap.WithFatalHook(hook), zap.WithPanicHook(hook))
	newConfig := func(client url.URL) *embed.Config {
		ec := embed.NewConfig()
		ec.Name = embeddedName
		ec.Dir = cfg.Dir
		loop := url.URL{Scheme: "http", Host: "127.0.0.1:0"}
		ec.ListenClientUrls = []url.URL{client}
		ec.AdvertiseClientUrls = []url.URL{client}
		ec.ListenPeerUrls = []url.URL{loop}
		if client.Scheme == "unix" {
			// Its peer port too: it serves raft and lease renewals to whoever connects. etcd
			// listens on a peer URL's host, the socket's path here; no peer ever dials it.
			ec.ListenPeerUrls = []url.URL{{Scheme: "unix", Host: filepath.Join(filepath.Dir(client.Path), "peer.sock")}}
		}
		ec.AdvertisePeerUrls = []url.URL{loop}
		ec.InitialCluster = ec.InitialClusterFromName(ec.Name)
		ec.MaxRequestBytes = cfg.MaxRequestBytes
		ec.MaxTxnOps = cfg.MaxTxnOps
		ec.AutoCompactionMode = embed.CompactorModePeriodic
		ec.AutoCompactionRetention = DefaultAutoCompaction
		ec.SnapshotCatchUpEntries = EmbeddedCatchUpEntries
		ec.SnapshotCount = EmbeddedSnapshotCount
		ec.WatchProgressNotifyInterval = cfg.ProgressNotifyInterval
		ec.LogLevel = level.String()
		ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zl)
		if cfg.UnsafeFast {
			ec.TickMs = 10
			ec.ElectionMs = 50
			ec.UnsafeNoFsync = true
		}
		return ec
	}

	var e *embed.Etcd
	var sockDir string
	for try := 1; ; try++ {
		client := url.URL{Scheme: "http", Host: cfg.ClientAddr}
		if cfg.ClientAddr == "" && cfg.PrivateSocket {
			if sockDir, err = privateSocketDir(cfg.Dir); err != nil {
				unlock()
				return nil, fmt.Errorf("start embedded etcd in %s: %w", cfg.Dir, err)
			}
			client = url.URL{Scheme: "unix", Path: filepath.Join(sockDir, "etcd.sock")}
		} else if cfg.ClientAddr == "" {
			// etcd's HTTP/JSON gateway (/v3/…) dials the client address etcd was configured
			// with, and the member advertises it: with port 0 both would name no port. Take a
			// free one first; another process may bind it before etcd does, hence the retries.
			addr, err := freeLoopbackAddr()
			if err != nil {
				unlock()
				return nil, fmt.Errorf("start embedded etcd in %s: %w", cfg.Dir, err)
			}
			client.Host = addr
		}
		e, err = embed.StartEtcd(newConfig(client))
		if err == nil {
			break
		}
		if sockDir != "" {
			os.RemoveAll(sockDir)
		}
		if cfg.ClientAddr == "" && !cfg.PrivateSocket && try < 5 && errors.Is(err, syscall.EADDRINUSE) {
			continue
		}
		unlock()
		return nil, fmt.Errorf("start embedded etcd in %s: %w", cfg.Dir, err)
	}
	ee := &EmbeddedEtcd{e: e, dir: cfg.Dir, sockDir: sockDir, muted: muted, unlock: unlock}
	timer := time.NewTimer(cfg.ReadyTimeout)
	defer timer.Stop()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		ee.Close()
		return nil, fmt.Errorf("start embedded etcd in %s: %w", cfg.Dir, err)
	case <-timer.C:
		ee.Close()
		return nil, fmt.Errorf("start embedded etcd in %s: not ready after %s", cfg.Dir, cfg.ReadyTimeout)
	case <-ctx.Done():
		ee.Close()
		return nil, fmt.Errorf("start embedded etcd in %s: %w", cfg.Dir, ctx.Err())
	}
	for _, l := range e.Clients {
		if sockDir != "" {
			ee.endpoints = append(ee.endpoints, "unix://"+l.Addr().String()) // unix:///…: an absolute path
			continue
		}
		ee.endpoints = append(ee.endpoints, "http://"+l.Addr().String())
	}
	if len(ee.endpoints) == 0 {
		ee.Close()
		return nil, fmt.Errorf("start embedded etcd in %s: no client listener", cfg.Dir)
	}
	return ee, nil
}

// privateSocketDir makes a directory of mode 0700 for the embedded etcd's sockets: etcdDir's
// own, etcdDir + ".socket", under the lock on etcdDir (so that one left by a process killed
// before it could remove it is stale, and goes); else, when that path would make the sockets'
// too long for a unix socket or is in a directory another user may rename in, a new one in the
// temp dir (or /tmp), which a killed process leaves behind.
func privateSocketDir(etcdDir string) (string, error) {
	var errs []error
	own := etcdDir + ".socket"
	parent, err := placeForSocket(filepath.Dir(own))
	if err == nil {
		dir := filepath.Join(parent, filepath.Base(own))
		if err = socketPathFits(dir); err == nil {
			if err = os.RemoveAll(dir); err == nil {
				err = os.Mkdir(dir, 0o700)
			}
		}
		if err == nil {
			return dir, nil
		}
	}
	errs = append(errs, err)
	for _, parent := range []string{os.TempDir(), "/tmp"} {
		parent, err := placeForSocket(parent)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		dir, err := os.MkdirTemp(parent, "shoelace-etcd-socket-") // mode 0700
		if err == nil {
			if err = socketPathFits(dir); err != nil {
				os.Remove(dir)
			}
		}
		if err == nil {
			return dir, nil
		}
		errs = append(errs, err)
	}
	return "", fmt.Errorf("make a directory for the client socket: %w (give --etcd-listen to serve it on a loopback port instead)", errors.Join(errs...))
}

// placeForSocket returns dir, absolute and its links resolved, when the sockets may go there.
// Their path is dialed again at each reconnection: it must name the directory made there then,
// through no link another user may point elsewhere (hence resolved once, here), and in no
// directory where another user may rename it and put one of theirs in its place.
func placeForSocket(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err == nil {
		dir, err = filepath.EvalSymlinks(dir)
	}
	if err == nil {
		err = onlyOursToRename(dir)
	}
	return dir, err
}

// socketPathFits refuses a dir whose sockets' paths would not fit a sockaddr_un's 108 bytes.
func socketPathFits(dir string) error {
	if len(filepath.Join(dir, "peer.sock")) >= 100 {
		return fmt.Errorf("%s: too long a path for a unix socket", dir)
	}
	return nil
}

// freeLoopbackAddr is a 127.0.0.1 host:port that the kernel had free a moment ago.
func freeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("pick a client port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// Endpoints are the client URLs the etcd serves on.
func (ee *EmbeddedEtcd) Endpoints() []string { return append([]string(nil), ee.endpoints...) }

// Err reports a fatal error of the running etcd (see embed.Etcd.Err).
func (ee *EmbeddedEtcd) Err() <-chan error { return ee.e.Err() }

// ErrStillClosing is returned by CloseWithin when etcd had not stopped in time.
var ErrStillClosing = errors.New("embedded etcd still closing: a client (another replica?) keeps a stream open; the process exit ends it, and etcd replays its WAL at the next start")

// closing holds, by data dir, the done channel of an etcd of this process that is still
// closing in the background, so that a start on the same dir waits for it.
var closing sync.Map

// Close stops the etcd and releases its data dir. It is safe to call more than once.
func (ee *EmbeddedEtcd) Close() error {
	<-ee.startClose()
	return nil
}

// CloseWithin is Close, but returns ErrStillClosing when etcd has not stopped after d; etcd then
// goes on closing (and releases its data dir) in the background. etcd gives its clients'
// streams, such as another replica's watch, up to its request timeout (7 s by default) to end on
// their own, and a server must exit within 10 s of SIGTERM. Leaving the rest to the process exit
// is safe: what etcd acknowledged is in its fsynced WAL, which it replays at the next start.
func (ee *EmbeddedEtcd) CloseWithin(d time.Duration) error {
	done := ee.startClose()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return nil
	case <-t.C:
		return ErrStillClosing
	}
}

// startClose starts closing etcd, once, and returns a channel closed when it is done.
func (ee *EmbeddedEtcd) startClose() <-chan struct{} {
	ee.closeOnce.Do(func() {
		ee.muted.Store(true)
		ee.done = make(chan struct{})
		closing.Store(ee.dir, ee.done)
		go func() {
			ee.e.Close()
			if ee.sockDir != "" {
				os.RemoveAll(ee.sockDir)
			}
			ee.unlock()
			closing.CompareAndDelete(ee.dir, ee.done)
			close(ee.done)
		}()
	})
	return ee.done
}

// EmbeddedMaxTxnOps is the embedded etcd's limit of operations per transaction for an API
// limit of apiOps. etcd counts a transaction's largest list (compares, Then or Else) and, for a
// nested transaction, against what its parent's count left: a write nested under its release's
// guards spends both. An apply of apiOps keys over a tree of as many others guards each of the
// 2×apiOps keys it touches (the outer list) and puts and deletes them, with a create-revision
// compare per old key under cas (the inner one): about 4×apiOps, plus a few for the release,
// its copy, the marker and the schema and rollout guards.
func EmbeddedMaxTxnOps(apiOps int) int { return 4*apiOps + 64 }
