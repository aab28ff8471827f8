package main

import (
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
)

// debugPprof serves Go's profiles (/debug/pprof/: heap, goroutine, profile, trace) on the
// loopback address in $SHOELACE_DEBUG_PPROF, for profiling a replica (the fan-out benchmark
// sets it when asked). Unset, it does nothing; an address that is not loopback is refused
// before anything listens on it.
func debugPprof(log *slog.Logger) {
	addr := os.Getenv("SHOELACE_DEBUG_PPROF")
	if addr == "" {
		return
	}
	if !loopbackAddr(addr) {
		log.Warn("SHOELACE_DEBUG_PPROF: not serving profiles on an address that is not loopback (127.0.0.1:PORT, [::1]:PORT or localhost:PORT)", "addr", addr)
		return
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Warn("SHOELACE_DEBUG_PPROF: not serving profiles", "err", err)
		return
	}
	if a, ok := ln.Addr().(*net.TCPAddr); !ok || !a.IP.IsLoopback() {
		ln.Close()
		log.Warn("SHOELACE_DEBUG_PPROF: not serving profiles on an address that is not loopback", "addr", addr)
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	log.Info("serving profiles (SHOELACE_DEBUG_PPROF)", "addr", ln.Addr().String())
	go func() { _ = http.Serve(ln, mux) }()
}

// loopbackAddr says whether addr (host:port) names a loopback address: an IP that is one, or
// localhost. An empty host is every address.
func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return host == "localhost" || (ip != nil && ip.IsLoopback())
}
