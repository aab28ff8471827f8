package main

import (
	"bytes"
	"errors"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Ctrl-C stops a command that reads its input from stdin (kv put KEY -, -f -, import -) while
// that input is still open: a terminal the user typed into, or a pipe whose writer lives on. The
// read blocked in the kernel and the CLI ignored Ctrl-C until stdin ended (found by a CLI walk:
// "shoelace kv put KEY -" at a terminal, then Ctrl-C, did nothing). Nothing is sent.
func TestE2E_InterruptWhileReadingStdin(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	conns := make(chan struct{}, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns <- struct{}{}
			c.Close()
		}
	}()
	for _, args := range [][]string{
		{"kv", "put", "shared/a", "-"},
		{"txn", "-f", "-"},
		{"appliance", "apply", "web", "-f", "-"},
		{"appliance", "schema", "set", "web", "-f", "-"},
		{"import", "-"},
		{"import", "--from-consul-export", "-", "--prefix", "/", "--appliance", "web"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			cmd := exec.Command(binPath, args...)
			cmd.Env = append(cleanEnv(), "SHOELACE_ADDR=http://"+ln.Addr().String(), "SHOELACE_TOKEN=x")
			cmd.Stdin = r
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			r.Close()
			// More than a pipe holds: once written, the CLI is reading stdin, its signal handler set.
			if _, err := w.Write(bytes.Repeat([]byte("x"), 256<<10)); err != nil {
				cmd.Process.Kill()
				t.Fatal(err)
			}
			cmd.Process.Signal(syscall.SIGINT)
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				cmd.Process.Kill()
				<-done
				t.Fatalf("still reading stdin 30s after SIGINT (stderr %q)", stderr.String())
			}
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != exitInterrupted || stderr.String() != "shoelace: interrupted\n" {
				t.Errorf("interrupted: %v, stderr %q; want exit 130 and \"shoelace: interrupted\"", err, stderr.String())
			}
		})
	}
	select {
	case <-conns:
		t.Error("an interrupted command connected to the server; want nothing sent")
	default:
	}
}
