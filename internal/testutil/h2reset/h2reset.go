// Package h2reset is an HTTPS server for tests that answers HTTP/1.1 as a handler does and,
// over HTTP/2, resets the stream of the first request of each method and path with
// PROTOCOL_ERROR once it has it whole: a load balancer that took the request, passed it on
// (the replica applied it) and then broke the stream. net/http's HTTP/2 client sends such a
// request again by itself. Import it only from tests.
package h2reset

import (
	"bytes"
	"crypto/tls"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// answerIndex and answerStore are the X-Shoelace-Index and X-Shoelace-Store of every answer.
const (
	answerIndex = "7"
	answerStore = "h2reset"
)

// Server is the test server; Answer gives each request's status and JSON body.
type Server struct {
	// URL is https://127.0.0.1:port.
	URL string
	// Client trusts the server's certificate (and speaks HTTP/2 to it).
	Client *http.Client
	// CAFile is a PEM file of the server's certificate, for --ca-file.
	CAFile string

	answer func(method, path string) (int, string)
	ln     net.Listener
	h1     *http.Server

	mu    sync.Mutex
	seen  map[string]int // "METHOD /path" → requests received whole, either protocol
	conns []net.Conn     // the HTTP/2 connections, closed when the test ends
}

// Start starts a server on a loopback port, stopped when the test ends.
func Start(tb testing.TB, answer func(method, path string) (status int, body string)) *Server {
	tb.Helper()
	ts := httptest.NewUnstartedServer(nil)
	ts.EnableHTTP2 = true
	ts.StartTLS()
	cert, client := ts.TLS.Certificates, ts.Client()
	raw := ts.Certificate().Raw
	ts.Close()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: cert, NextProtos: []string{"h2", "http/1.1"}})
	if err != nil {
		tb.Fatal(err)
	}
	ca := filepath.Join(tb.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: raw}), 0o644); err != nil {
		tb.Fatal(err)
	}
	s := &Server{URL: "https://" + ln.Addr().String(), Client: client, CAFile: ca, answer: answer, ln: ln, seen: map[string]int{}}
	s.h1 = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		s.count(r.Method, r.URL.Path)
		status, body := answer(r.Method, r.URL.Path)
		w.Header().Set("Content-Type", "application/json")
		// What every answer of a Shoelace server carries (the client refuses one without).
		w.Header().Set("X-Shoelace-Index", answerIndex)
		w.Header().Set("X-Shoelace-Store", answerStore)
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	})}
	h1 := make(chan net.Conn)
	h1ln := &chanListener{conns: h1, addr: ln.Addr(), done: make(chan struct{})}
	go func() { _ = s.h1.Serve(h1ln) }()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				tc := c.(*tls.Conn)
				if err := tc.Handshake(); err != nil {
					c.Close()
					return
				}
				if tc.ConnectionState().NegotiatedProtocol == "h2" {
					s.mu.Lock()
					s.conns = append(s.conns, c)
					s.mu.Unlock()
					s.serveH2(c)
					return
				}
				select {
				case h1 <- c:
				case <-h1ln.done:
					c.Close()
				}
			}()
		}
	}()
	tb.Cleanup(func() {
		ln.Close()
		close(h1ln.done)
		s.h1.Close()
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, c := range s.conns {
			c.Close()
		}
	})
	return s
}

// Seen is how many times the server received method path whole.
func (s *Server) Seen(method, path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen[method+" "+path]
}

func (s *Server) count(method, path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seen[method+" "+path]++
	return s.seen[method+" "+path]
}

// serveH2 speaks just enough HTTP/2 for one client: settings, then for each stream received
// whole, a reset (the first of its method and path) or the answer.
func (s *Server) serveH2(c net.Conn) {
	defer c.Close()
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(c, preface); err != nil {
		return
	}
	fr := http2.NewFramer(c, c)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if fr.WriteSettings() != nil {
		return
	}
	type stream struct{ method, path string }
	streams := map[uint32]stream{}
	whole := func(id uint32) error {
		st := streams[id]
		delete(streams, id)
		if s.count(st.method, st.path) == 1 {
			return fr.WriteRSTStream(id, http2.ErrCodeProtocol)
		}
		status, body := s.answer(st.method, st.path)
		var hb bytes.Buffer
		enc := hpack.NewEncoder(&hb)
		_ = enc.WriteField(hpack.HeaderField{Name: ":status", Value: fmt.Sprint(status)})
		_ = enc.WriteField(hpack.HeaderField{Name: "content-type", Value: "application/json"})
		_ = enc.WriteField(hpack.HeaderField{Name: "x-shoelace-index", Value: answerIndex})
		_ = enc.WriteField(hpack.HeaderField{Name: "x-shoelace-store", Value: answerStore})
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndHeaders: true}); err != nil {
			return err
		}
		return fr.WriteData(id, true, []byte(body))
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() && fr.WriteSettingsAck() != nil {
				return
			}
		case *http2.MetaHeadersFrame:
			path, _, _ := strings.Cut(f.PseudoValue("path"), "?")
			streams[f.StreamID] = stream{f.PseudoValue("method"), path}
			if f.StreamEnded() && whole(f.StreamID) != nil {
				return
			}
		case *http2.DataFrame:
			if n := len(f.Data()); n > 0 {
				_ = fr.WriteWindowUpdate(0, uint32(n))
				_ = fr.WriteWindowUpdate(f.StreamID, uint32(n))
			}
			if f.StreamEnded() && whole(f.StreamID) != nil {
				return
			}
		case *http2.PingFrame:
			if !f.IsAck() && fr.WritePing(true, f.Data) != nil {
				return
			}
		}
	}
}

// chanListener hands the HTTP/1.1 connections to the handler's server.
type chanListener struct {
	conns chan net.Conn
	addr  net.Addr
	done  chan struct{}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error   { return nil }
func (l *chanListener) Addr() net.Addr { return l.addr }
