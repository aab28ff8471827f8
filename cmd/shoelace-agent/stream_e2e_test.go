//go:build !windows

package main

// End to end: the agent follows its view by a streaming long-poll with deltas, falls back to
// plain long-polls where the stream does not get through, and reports what it applied by its
// own requests either way.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// listTemplate renders every key under list/ as key=value lines, so that the file shows the
// whole view the agent holds.
const listTemplate = `  - contents: "{{ range ls \"list\" }}{{ .Key }}={{ .Value }}\n{{ end }}"
    destination: $DIR/out/list
`

// listFile is what listTemplate renders from model.
func listFile(model map[string]string) string {
	var b strings.Builder
	names := make([]string, 0, len(model))
	for k := range model {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		fmt.Fprintf(&b, "%s=%s\n", k, model[k])
	}
	return b.String()
}

// applied is the revision the server records as applied by the agent's instance vm-e2e.
func applied(t *testing.T, srv *server) int64 {
	l, _, err := srv.client.Instances(context.Background(), "web")
	if err != nil {
		t.Logf("instances: %v", err)
		return 0
	}
	for _, in := range l.Instances {
		if in.Instance == "vm-e2e" {
			return in.Applied
		}
	}
	return 0
}

// changeList makes n random changes to list/ (puts and deletes), one at a time, waiting each
// time until the agent rendered the view that follows it.
func changeList(t *testing.T, srv *server, e *env, model map[string]string, n int) int64 {
	t.Helper()
	var rev int64
	for i := range n {
		k := fmt.Sprintf("k%02d", rand.IntN(12))
		if _, ok := model[k]; ok && len(model) > 1 && rand.IntN(3) == 0 {
			res, err := srv.client.Delete(context.Background(), "appliances/web/list/"+k, false)
			if err != nil {
				t.Fatalf("delete %s: %v", k, err)
			}
			delete(model, k)
			rev = res.Revision
		} else {
			model[k] = fmt.Sprint(i)
			rev = srv.put("appliances/web/list/"+k, model[k])
		}
		waitFor(t, fmt.Sprintf("change %d rendered", i), fileIs(e.path("out/list"), listFile(model)))
	}
	return rev
}

// A streaming agent renders every change (sets and deletes, applied as deltas to the view it
// holds), and the server learns what it applied from its reports, the stream carrying none.
func TestE2E_StreamRendersEveryChange(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	model := map[string]string{"k00": "start"}
	srv.put("appliances/web/list/k00", "start")
	e := newEnv(t, srv, "", listTemplate)
	ag := e.startAgent()
	waitFor(t, "first render", fileIs(e.path("out/list"), listFile(model)))
	rev := changeList(t, srv, e, model, 40)
	waitFor(t, "the server to record the applied revision", func() bool { return applied(t, srv) >= rev })
	logs := ag.logs.String()
	if n := strings.Count(logs, `"by":"stream"`); n < 40 {
		t.Fatalf("%d views came by stream, want every change's", n)
	}
	if strings.Contains(logs, `"by":"long-poll"`) || strings.Contains(logs, "streaming long-poll unavailable") {
		t.Fatal("the agent left the stream")
	}
}

// proxy is a reverse proxy in front of a server: with buffer it reads each answer whole
// before it passes it on (as a proxy that buffers does: a stream's lines never come through
// before its end); with refuse it answers 400 to a stream, as a server older than streams
// does to an unknown query parameter.
type proxy struct {
	*httptest.Server
	streams atomic.Int64 // stream requests seen
}

func newProxy(t *testing.T, target string, buffer, refuse bool) *proxy {
	p := &proxy{}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Has("stream") {
			p.streams.Add(1)
			if refuse {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusBadRequest)
				fmt.Fprint(w, `{"error":{"code":"invalid_request","message":"unknown query parameter stream"}}`)
				return
			}
		}
		u, _ := url.Parse(target + r.URL.RequestURI())
		req, err := http.NewRequestWithContext(r.Context(), r.Method, u.String(), r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		req.Header = r.Header.Clone()
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body) // whole, as a buffering proxy does
		if err != nil && !buffer {
			return
		}
		for k, vs := range resp.Header {
			w.Header()[k] = vs
		}
		w.WriteHeader(resp.StatusCode)
		w.Write(body)
	}))
	t.Cleanup(func() {
		p.CloseClientConnections()
		p.Close()
	})
	return p
}

// Where the stream does not get through — a proxy that buffers whole answers (no first line
// within seconds), or a server that refuses the stream (400) — the agent falls back to plain
// long-polls, renders every change and still reports what it applied.
func TestE2E_StreamFallsBack(t *testing.T) {
	for _, tc := range []struct {
		name           string
		buffer, refuse bool
	}{{"buffering-proxy", true, false}, {"refused", false, true}} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startServer(t, "", t.TempDir())
			model := map[string]string{"k00": "start"}
			srv.put("appliances/web/list/k00", "start")
			px := newProxy(t, "http://"+srv.addr, tc.buffer, tc.refuse)
			e := newEnv(t, srv, "", listTemplate)
			b, err := os.ReadFile(e.config)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(e.config, bytes.Replace(b, []byte("http://"+srv.addr), []byte(px.URL), 1), 0o644); err != nil {
				t.Fatal(err)
			}
			ag := e.startAgent()
			waitFor(t, "first render", fileIs(e.path("out/list"), listFile(model)))
			waitFor(t, "the fallback", func() bool {
				return strings.Contains(ag.logs.String(), "streaming long-poll unavailable: using plain long-polls")
			})
			rev := changeList(t, srv, e, model, 10)
			waitFor(t, "the server to record the applied revision", func() bool { return applied(t, srv) >= rev })
			if n := strings.Count(ag.logs.String(), `"by":"long-poll"`); n < 10 {
				t.Fatalf("%d views came by long-poll, want every change's", n)
			}
			if n := px.streams.Load(); n != 1 {
				t.Fatalf("%d stream requests, want 1 (the next after 10 minutes)", n)
			}
		})
	}
}

// A rollout's canary that streams gets the candidate on its stream, and the reports of the
// streaming agents move the rollout: a good change steps through to a release, a bad one
// halts at the canary, whose previous file comes back.
func TestE2E_StreamRolloutCanary(t *testing.T) {
	srv := startServer(t, "", t.TempDir())
	srv.put("appliances/web/port", "80")
	fleet := startFleet(t, srv, 2)
	rendered(t, srv, fleet, "port=80\n")

	code, out, errOut := srv.shoelace(t, "kv", "put", "appliances/web/port", "8080", "--canary", "50%", "--step", "50%", "--bake", "1s")
	if code != 0 {
		t.Fatalf("kv put --canary: exit %d\n%s\n%s", code, out, errOut)
	}
	st := srv.rollout(t)
	if len(st.Cohort) != 1 {
		t.Fatalf("cohort: %v", st.Cohort)
	}
	waitFor(t, "the promotion", func() bool {
		st := srv.rollout(t)
		if st.State != api.RolloutRunning && st.State != api.RolloutPromoted {
			t.Fatalf("rollout ended %s: %s", st.State, st.Reason)
		}
		return st.State == api.RolloutPromoted
	})
	waitAll(t, fleet, "has the change", "port=8080\n")

	code, out, errOut = srv.shoelace(t, "kv", "put", "appliances/web/port", "bad", "--canary", "50%", "--bake", "1h")
	if code != 0 {
		t.Fatalf("kv put --canary: exit %d\n%s\n%s", code, out, errOut)
	}
	canary := srv.rollout(t).Cohort[0]
	waitFor(t, "the halt", func() bool {
		st := srv.rollout(t)
		return st.State == api.RolloutHalted && st.Instance == canary
	})
	for _, a := range fleet {
		waitFor(t, a.name+" has the last good file", fileIs(a.conf(), "port=8080\n"))
		logs := a.run.logs.String()
		if !strings.Contains(logs, `"by":"stream"`) || strings.Contains(logs, "streaming long-poll unavailable") {
			t.Fatalf("%s did not follow its view by stream:\n%s", a.name, logs)
		}
		if a.name == canary && !strings.Contains(readFile(t, a.env.path("commands")), "\n") {
			t.Fatalf("the canary ran no command")
		}
	}
}

// Nothing is lost across restarts: changes made while the agent is stopped, or killed, are
// rendered when it starts again; changes made while the server restarts reach the agent on
// its next stream.
func TestE2E_StreamRestarts(t *testing.T) {
	data := t.TempDir()
	srv := startServer(t, "", data)
	model := map[string]string{"k00": "start"}
	srv.put("appliances/web/list/k00", "start")
	e := newEnv(t, srv, "", listTemplate)
	ag := e.startAgent()
	waitFor(t, "first render", fileIs(e.path("out/list"), listFile(model)))
	changeList(t, srv, e, model, 5)

	ag.stop(t)
	model["k90"] = "while stopped"
	srv.put("appliances/web/list/k90", model["k90"])
	ag = e.startAgent()
	waitFor(t, "the change made while stopped", fileIs(e.path("out/list"), listFile(model)))
	changeList(t, srv, e, model, 5)

	ag.cmd.Process.Signal(syscall.SIGKILL)
	ag.cmd.Wait()
	model["k91"] = "while killed"
	srv.put("appliances/web/list/k91", model["k91"])
	ag = e.startAgent()
	waitFor(t, "the change made while killed", fileIs(e.path("out/list"), listFile(model)))

	srv.kill()
	waitFor(t, "the agent to notice", func() bool { return strings.Contains(ag.logs.String(), "server unreachable; keeping files") })
	srv = startServer(t, srv.addr, data)
	model["k92"] = "after the server's restart"
	rev := srv.put("appliances/web/list/k92", model["k92"])
	waitFor(t, "the change after the server's restart", fileIs(e.path("out/list"), listFile(model)))
	rev = max(rev, changeList(t, srv, e, model, 5))
	waitFor(t, "the server to record the applied revision", func() bool { return applied(t, srv) >= rev })
	if strings.Contains(ag.logs.String(), "streaming long-poll unavailable") {
		t.Fatal("the agent left the stream")
	}
}
