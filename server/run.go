package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/shoelace-dev/shoelace/server/store"
)

// shutdownTimeout bounds draining after ctx ends, so that the process exits within 10 s.
const shutdownTimeout = 7 * time.Second

// Run opens the store, listens on cfg.Listen and serves until ctx ends, then drains: open
// long-polls are answered 304 and the server exits within 10 seconds.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return err
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
	st, err := store.Open(ctx, cfg.storeConfig(log))
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	defer st.Close()
	if st.Embedded() {
		log.Warn("running an embedded etcd: one embedded store must never sit behind several replicas; give --etcd-endpoints to run more than one", "data_dir", cfg.DataDir)
	}
	useTLS := cfg.TLSCert != ""
	if !useTLS && !isLoopback(ln.Addr()) {
		log.Warn("serving plain HTTP on a non-loopback address: tokens cross the network in clear text; give --tls-cert and --tls-key", "addr", ln.Addr().String())
	}
	s := New(st, cfg, log)
	if err := s.bootstrap(ctx); err != nil {
		cctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		_ = s.Close(cctx)
		return err
	}
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() {
		if useTLS {
			errc <- srv.ServeTLS(ln, cfg.TLSCert, cfg.TLSKey)
		} else {
			errc <- srv.Serve(ln)
		}
	}()
	log.Info("serving", "addr", ln.Addr().String(), "tls", useTLS, "store_id", st.ID(), "embedded", st.Embedded(), "version", cfg.Version)

	var serveErr error
	select {
	case serveErr = <-errc:
	case <-ctx.Done():
	}
	log.Info("draining")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	s.Drain()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("shutdown: closing remaining connections", "err", err)
		_ = srv.Close()
	}
	if err := s.Close(sctx); err != nil {
		log.Warn("stop store watch", "err", err)
	}
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return fmt.Errorf("serve %s: %w", ln.Addr(), serveErr)
	}
	log.Info("stopped")
	return nil
}

func isLoopback(a net.Addr) bool {
	tcp, ok := a.(*net.TCPAddr)
	if !ok {
		return a.Network() == "unix"
	}
	return tcp.IP.IsLoopback()
}
