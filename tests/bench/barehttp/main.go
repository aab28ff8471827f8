// Command barehttp is the floor of the fan-out benchmark (tests/bench/fanout_test.go): a bare
// net/http server whose every request (any GET but /waiting) blocks until one POST /wake wakes
// them all, and is then answered a body of -body-size bytes, the size of Shoelace's view, with
// the headers given by -header (Shoelace's: the same bytes on the wire). GET /waiting answers
// how many requests are blocked. It prints its address on stdout once it listens.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// headers are -header flags, as name and value.
type headers [][2]string

func (h *headers) String() string { return fmt.Sprint(*h) }

func (h *headers) Set(s string) error {
	name, value, ok := strings.Cut(s, ":")
	if !ok {
		return fmt.Errorf("header %q is not Name: value", s)
	}
	*h = append(*h, [2]string{strings.TrimSpace(name), strings.TrimSpace(value)})
	return nil
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	size := flag.Int("body-size", 256, "bytes of each answer")
	pprofAddr := flag.String("pprof", "", "serve Go's profiles (/debug/pprof/) on this address, to compare with the server's")
	var header headers
	flag.Var(&header, "header", `a header of every answer, "Name: value" (repeat the flag for more)`)
	flag.Parse()

	body := bytes.Repeat([]byte("x"), *size)
	var (
		mu      sync.Mutex
		wake    = make(chan struct{})
		waiting atomic.Int64
	)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /waiting", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, waiting.Load())
	})
	mux.HandleFunc("POST /wake", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		close(wake)
		wake = make(chan struct{})
		mu.Unlock()
	})
	mux.HandleFunc("GET /", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		ch := wake
		mu.Unlock()
		waiting.Add(1)
		select {
		case <-ch:
		case <-r.Context().Done():
			waiting.Add(-1)
			return
		}
		waiting.Add(-1)
		h := w.Header()
		for _, kv := range header {
			h.Set(kv[0], kv[1])
		}
		if len(header) == 0 {
			h.Set("Content-Type", "application/json")
		}
		h.Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
	})
	if *pprofAddr != "" {
		go func() { _ = http.ListenAndServe(*pprofAddr, nil) }() // net/http/pprof's DefaultServeMux
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "barehttp:", err)
		os.Exit(1)
	}
	fmt.Println(ln.Addr().String())
	if err := http.Serve(ln, mux); err != nil {
		fmt.Fprintln(os.Stderr, "barehttp:", err)
		os.Exit(1)
	}
}
