package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// appliance wait gives up after --for, not an --interval before it: with an --interval as long
// as --for it asks once more when --for ends. Before, it gave up as soon as its next ask would
// have come at or after the end, so that `--for 2s --interval 1m` (or the same interval and
// for: 30s and 30s) exited 1 at once, saying "after 2s", and a wait was up to an interval short.
func TestE2E_WaitWaitsTheWholeFor(t *testing.T) {
	s := sharedServer(t)
	c := newCLI(t, s)
	const name = "e2e-wait-for"
	r0 := revisionOf(t, c.ok("kv", "put", "appliances/"+name+"/a", "1"))
	en, err := adminClient(t, s).Enroll(context.Background(), name, "vm-1", "")
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodGet, s.url()+"/v1/appliances/"+name, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+en.Token)
	req.Header.Set(api.HeaderInstance, "vm-1")
	req.Header.Set(api.HeaderApplied, fmt.Sprint(r0))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("vm-1's view: %s", resp.Status)
	}
	rev := revisionOf(t, c.ok("kv", "put", "appliances/"+name+"/a", "2"))

	const wait = 2 * time.Second
	for _, tc := range []struct {
		what string
		args []string
		want string
	}{
		{"a plain wait", []string{"--revision", fmt.Sprint(rev)}, fmt.Sprintf("after 2s, 1 of 1 agent has not applied revision %d", rev)},
		{"a rollout's wait", nil, "the rollout has not ended after the time given with --for"},
	} {
		if tc.args == nil {
			c.ok("kv", "put", "appliances/"+name+"/a", "3", "--canary", "100%", "--manual")
		}
		start := time.Now()
		c.fails(exitError, tc.want, append([]string{"appliance", "wait", name, "--for", wait.String(), "--interval", "1m"}, tc.args...)...)
		if took := time.Since(start); took < wait || took > 45*time.Second {
			t.Errorf("%s with --for %s --interval 1m gave up after %s, want after --for (and before the interval)", tc.what, wait, took.Round(time.Millisecond))
		}
	}
	c.ok("appliance", "rollout", "abort", name)
}

// appliance wait bounds each request by --timeout, as its help says, and gives up after --for:
// a server (or a balancer in front of one) that takes the connection and never answers held
// the wait for ever, --for and --timeout notwithstanding, where it holds kv get for --timeout.
func TestE2E_WaitBoundsEachRequest(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		var held []net.Conn // taken, never answered
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	for _, args := range [][]string{{"--revision", "5"}, nil} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		cmd := exec.CommandContext(ctx, binPath, append([]string{"appliance", "wait", "web", "--for", "2s", "--interval", "500ms"}, args...)...)
		cmd.Env = append(cleanEnv(), "SHOELACE_ADDR=http://"+ln.Addr().String(), "SHOELACE_TOKEN=sl_frozen", "SHOELACE_TIMEOUT=1s")
		var stderr strings.Builder
		cmd.Stderr = &stderr
		err := cmd.Run()
		timedOut := ctx.Err() != nil
		cancel()
		var ee *exec.ExitError
		switch {
		case timedOut:
			t.Fatalf("appliance wait %q against a server that never answers, --for 2s --timeout 1s: still waiting after a minute", args)
		case !errors.As(err, &ee) || ee.ExitCode() != exitUnavailable:
			t.Errorf("appliance wait %q against a server that never answers: %v, stderr %q; want exit %d", args, err, stderr.String(), exitUnavailable)
		}
	}
}
