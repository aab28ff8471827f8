package main

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A write interrupted (Ctrl-C, a CI job's timeout) after it was sent may be applied by the
// server: the CLI says its outcome is unknown (it said only "interrupted"); a read interrupted
// says "interrupted". Both exit 130.
func TestE2E_InterruptedWriteSaysOutcomeUnknown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 4) // the method of each request read whole
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				req, err := http.ReadRequest(bufio.NewReader(conn))
				if err != nil {
					return
				}
				io.Copy(io.Discard, req.Body)
				got <- req.Method
				io.Copy(io.Discard, conn) // never answer; wait for the client to go
			}()
		}
	}()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"kv", "put", "shared/a", "v"}, "shoelace: interrupted after the write was sent: its outcome is unknown; read the key or the appliance to check, then retry if needed\n"},
		{[]string{"kv", "get", "shared/a"}, "shoelace: interrupted\n"},
	} {
		cmd := exec.Command(binPath, tc.args...)
		cmd.Env = append(cleanEnv(), "SHOELACE_ADDR=http://"+ln.Addr().String(), "SHOELACE_TOKEN=x")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		select {
		case <-got:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			t.Fatalf("shoelace %q sent no request", tc.args)
		}
		time.Sleep(200 * time.Millisecond) // the client's own "written" mark follows the server's read
		cmd.Process.Signal(syscall.SIGINT)
		err := cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != exitInterrupted || stderr.String() != tc.want {
			t.Errorf("shoelace %s interrupted: %v, stderr %q; want exit 130 and %q", strings.Join(tc.args, " "), err, stderr.String(), tc.want)
		}
	}
}
