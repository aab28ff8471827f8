package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/shoelace-dev/shoelace/internal/sdnotify"
	"github.com/shoelace-dev/shoelace/server/store"
)

// shutdownTimeout bounds draining after ctx ends, so that the process exits within 10 s.
const shutdownTimeout = 7 * time.Second

// shutdownAnswer is how long before the end of shutdownTimeout the requests still running
// (waiting for a frozen etcd) reach their deadline, so that they are answered (503) before
// their connections are closed.
const shutdownAnswer = 2 * time.Second

// Run opens the store, listens on cfg.Listen and serves until ctx ends, then drains: open
// long-polls are answered 304 and the server exits within 10 seconds. SIGHUP reloads the TLS
// certificate (unless cfg.Reload is set), and systemd is told of readiness, reloads and
// stopping through $NOTIFY_SOCKET.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if cfg.Reload == nil {
		// Catch SIGHUP even without TLS: its default action would end the process on
		// `systemctl reload`.
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		reload := make(chan struct{})
		cfg.Reload = reload
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-hup:
					select {
					case reload <- struct{}{}:
					case <-ctx.Done():
						return
					}
				}
			}
		}()
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	return Serve(ctx, ln, cfg, log)
}

// Serve is Run on a listener of the caller's (which it closes).
func Serve(ctx context.Context, ln net.Listener, cfg Config, log *slog.Logger) error {
	defer ln.Close()
	if log == nil {
		log = slog.Default()
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	if _, err := loadSealer(cfg.SecretsKeyFile); err != nil {
		return err
	}
	maxConns, reserve := fitConnections(cfg, log)
	cfg.MaxWaiters = fitLongPolls(cfg.MaxWaiters, maxConns, log)
	useTLS := cfg.TLSCert != ""
	var certs *certReloader
	if useTLS {
		var err error
		if certs, err = newCertReloader(cfg.TLSCert, cfg.TLSKey, log); err != nil {
			return err
		}
	}
	st, err := store.Open(ctx, cfg.storeConfig(log))
	if err != nil {
		return err // store.Open names its step ("open store: …")
	}
	defer st.Close()
	if st.Embedded() {
		log.Warn("running an embedded etcd: one embedded store must never sit behind several replicas; give --etcd-endpoints to run more than one", "data_dir", cfg.DataDir)
		if cfg.EtcdListen != "" {
			log.Info("the embedded etcd serves its client API on loopback (--etcd-listen): no access control, local tools only", "addr", cfg.EtcdListen)
		}
	}
	if !useTLS && !isLoopback(ln.Addr()) {
		log.Warn("serving plain HTTP on a non-loopback address: tokens cross the network in clear text; give --tls-cert and --tls-key", "addr", ln.Addr().String())
	}
	if _, port, err := net.SplitHostPort(cfg.Listen); err == nil && port == "0" {
		// The port the system picked: the replica's record (its id, the address /v1/status
		// shows) names it, so that two such replicas on one host are two.
		cfg.Listen = ln.Addr().String()
	}
	s := New(st, cfg, log)
	if err := s.bootstrap(ctx); err != nil {
		cctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		_ = s.Close(cctx)
		return err
	}
	srv := s.httpServer()
	if useTLS {
		srv.TLSConfig = certs.tlsConfig()
	}
	var inner net.Listener = ln
	if len(cfg.ProxyProtocolFrom) > 0 {
		log.Info("reading PROXY protocol headers from the load balancers of --proxy-protocol-from", "from", fmt.Sprint(cfg.ProxyProtocolFrom))
		pl := newProxyListener(ln, cfg.ProxyProtocolFrom, proxyReadCap(reserve), log)
		defer pl.Close()
		s.m.reg.MustRegister(pl.errors)
		inner = pl
	}
	lim := newConnLimiter(inner, maxConns, cfg.MaxConnsPerAddr, cfg.UnauthIdleTimeout, !useTLS, log)
	lim.stamp = func() (int64, string) { return s.hub.current(), s.st.ID() }
	srv.ConnState, srv.ConnContext = lim.connState, lim.connContext
	s.m.reg.MustRegister(lim.collectors()...)
	errc := make(chan error, 1)
	go func() {
		if useTLS {
			errc <- srv.ServeTLS(lim, "", "")
		} else {
			errc <- srv.Serve(lim)
		}
	}()
	log.Info("serving", "addr", ln.Addr().String(), "tls", useTLS, "store_id", st.ID(), "embedded", st.Embedded(), "version", cfg.Version)
	notify(log, sdnotify.Ready)

	rctx, rcancel := context.WithCancel(ctx)
	defer rcancel()
	if cfg.Reload != nil {
		go reloadLoop(rctx, cfg.Reload, certs, log)
	}

	var serveErr error
	select {
	case serveErr = <-errc:
	case <-ctx.Done():
	case <-st.Refused():
		// The background start (etcd away at Open) found the root refused, as Open would have:
		// the server stops with Open's error, as a start that found it so.
	}
	rcancel()
	notify(log, sdnotify.Stopping)
	log.Info("draining")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	s.Drain()
	over := time.AfterFunc(shutdownTimeout-shutdownAnswer, s.grace.end)
	defer over.Stop()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("shutdown: closing remaining connections", "err", err)
		_ = srv.Close()
	}
	if err := s.Close(sctx); err != nil {
		log.Warn("stop store watch", "err", err)
	}
	if err := st.Refusal(); err != nil {
		return err
	}
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return fmt.Errorf("serve %s: %w", ln.Addr(), serveErr)
	}
	log.Info("stopped")
	return nil
}

// graceCtx is the root of the requests' contexts: it ends as a deadline does when the shutdown
// grace is over (end), so that a request still waiting for the store then answers as at its
// own deadline: 503 unavailable, or outcome_unknown for a write etcd may have applied. (A
// canceled one would be taken for a request whose client went away, and answered nothing.)
// It has Background's values and no deadline. base, a context.WithCancel of it, stands
// between it and the connections, whose contexts then join base's children: no goroutine per
// connection waits for the grace.
type graceCtx struct {
	context.Context
	inner context.Context
	end   context.CancelFunc
	base  context.Context
	// stopBase is never called: base ends with the grace, as a deadline (a cancel would race
	// the AfterFunc that ends it so).
	stopBase context.CancelFunc
}

func newGraceCtx() *graceCtx {
	inner, end := context.WithCancel(context.Background())
	g := &graceCtx{Context: context.Background(), inner: inner, end: end}
	g.base, g.stopBase = context.WithCancel(g)
	return g
}

func (g *graceCtx) Done() <-chan struct{} { return g.inner.Done() }

func (g *graceCtx) Err() error {
	if g.inner.Err() != nil {
		return context.DeadlineExceeded
	}
	return nil
}

// AfterFunc lets context.WithCancel(g) wait for g without a goroutine.
func (g *graceCtx) AfterFunc(f func()) (stop func() bool) { return context.AfterFunc(g.inner, f) }

// withValues is a context that ends as its Context does, with the values of vals.
type withValues struct {
	context.Context
	vals context.Context
}

func (c withValues) Value(key any) any {
	if v := c.Context.Value(key); v != nil {
		return v
	}
	return c.vals.Value(key)
}

// fitLongPolls is the cap on long-polls that leaves a fifth of maxConns to other requests: a
// long-poll holds its connection, and the hub's fair share between tokens only works while
// the connections are not all taken by long-polls first. (A fifth, not more: under the usual
// open files limit of 20,000, a third would cap a replica at 12,650 long-polls.)
func fitLongPolls(maxWaiters, maxConns int, log *slog.Logger) int {
	fit := max(1, maxConns*4/5)
	if maxWaiters <= fit {
		return maxWaiters
	}
	log.Warn("--max-long-polls lowered to four fifths of the connection cap, so that long-polls cannot take every connection",
		"max_long_polls", maxWaiters, "lowered_to", fit, "max_conns", maxConns)
	return fit
}

// fitConnections raises the open files limit to its hard limit and returns the cap on open
// connections that fits under it (see connCap), saying so in the log.
func fitConnections(cfg Config, log *slog.Logger) (maxConns int, reserve uint64) {
	nofile, err := raiseFileLimit()
	if err != nil {
		log.Info("open files limit not raised", "err", err)
	}
	maxConns, lowered := connCap(cfg.MaxConns, nofile)
	reserve = fdReserve(nofile)
	if lowered && cfg.MaxConns > 0 {
		log.Warn("--max-conns lowered to fit the open files limit, less a reserve for the store; raise the limit (LimitNOFILE) to allow more",
			"max_conns", cfg.MaxConns, "lowered_to", maxConns, "open_files_limit", nofile)
	}
	if lowered && cfg.MaxConns == 0 && maxConns < 10000 {
		log.Warn("the open files limit allows fewer connections than a 10,000-agent fleet holds; raise it (LimitNOFILE=65536)",
			"max_conns", maxConns, "open_files_limit", nofile)
	}
	log.Info("connection limits", "max_conns", maxConns, "max_conns_per_addr", cfg.MaxConnsPerAddr,
		"unauth_idle_timeout", cfg.UnauthIdleTimeout.String(), "open_files_limit", nofile)
	return maxConns, reserve
}

// httpServer is the HTTP server of s, bounded against slow and hostile clients: headers must
// arrive within HeaderTimeout and stay under MaxHeaderBytes (else 431); bodies and write
// deadlines are set per request by outer, so that long-polls may wait up to MaxWait.
func (s *Server) httpServer() *http.Server {
	return &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: s.cfg.headerTimeout(),
		IdleTimeout:       DefaultIdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
		BaseContext:       func(net.Listener) context.Context { return s.reqBase },
		ErrorLog:          s.clientLines.errorLog(),
		// "OPTIONS *" reaches the handler, which refuses its path and counts it against the
		// client address's rate limit; net/http answered it 200 by itself, unlimited.
		DisableGeneralOptionsHandler: true,
	}
}

// reloadLoop reloads the TLS pair each time reload fires, telling systemd around it.
func reloadLoop(ctx context.Context, reload <-chan struct{}, certs *certReloader, log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-reload:
		}
		notify(log, sdnotify.Reloading)
		switch {
		case certs == nil:
			log.Info("reload: nothing to reload (no --tls-cert)")
		default:
			if err := certs.reload(); err != nil {
				log.Error("reload TLS certificate; still serving the previous one", "err", err)
			}
		}
		notify(log, sdnotify.Ready)
	}
}

// notify reports a state to systemd; failures are logged, never fatal.
func notify(log *slog.Logger, f func() error) {
	if err := f(); err != nil {
		log.Warn("notify systemd", "err", err)
	}
}

func isLoopback(a net.Addr) bool {
	tcp, ok := a.(*net.TCPAddr)
	if !ok {
		return a.Network() == "unix"
	}
	return tcp.IP.IsLoopback()
}
