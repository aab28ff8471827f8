package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoelace-dev/shoelace/agent"
)

// Issue 20, target 5: 200 templates over a 10,000-key view.
const (
	renderTemplates = 200
	renderViewKeys  = 10000
	renderBackends  = 40 // svc/NNN/backends/bNN per service
)

// renderView is a 10,000-key view: 200 services of 44 keys each (port, host, weight, tls, 40
// backends), a few global keys, and flags no template reads.
func renderView() map[string]string {
	keys := map[string]string{"global/domain": "Example.COM", "global/env": "prod"}
	for i := range 8 {
		keys[fmt.Sprintf("global/dns/%d", i)] = fmt.Sprintf("10.53.0.%d", i+1)
	}
	for s := range renderTemplates {
		p := fmt.Sprintf("svc/%03d/", s)
		keys[p+"port"] = fmt.Sprint(8000 + s)
		keys[p+"host"] = fmt.Sprintf("svc%03d", s)
		keys[p+"weight"] = fmt.Sprint(1 + s%5)
		keys[p+"tls/enabled"] = fmt.Sprint(s%2 == 0)
		for b := range renderBackends {
			keys[fmt.Sprintf("%sbackends/b%02d", p, b)] = fmt.Sprintf("10.%d.%d.%d:%d", s/250, s%250, b, 9000+b)
		}
	}
	for i := 0; len(keys) < renderViewKeys; i++ {
		keys[fmt.Sprintf("flags/f%05d", i)] = fmt.Sprint(i%3 == 0)
	}
	return keys
}

// renderTemplate is service s's template, as an nginx upstream might be written: ranges over its
// backends (ls, getvs), a few getv, the shared resolvers, sprig functions.
func renderTemplate(s int) string {
	return strings.NewReplacer("NNN", fmt.Sprintf("%03d", s)).Replace(`# {{ appliance }}: service NNN
upstream svcNNN {
{{- range ls "/svc/NNN/backends" }}
  server {{ .Value }} weight={{ getv "/svc/NNN/weight" }}; # {{ .Key }}
{{- end }}
}
server {
  listen {{ getv "/svc/NNN/port" }}{{ if eq (getv "/svc/NNN/tls/enabled") "true" }} ssl{{ end }};
  server_name {{ getv "/svc/NNN/host" }}.{{ key "global/domain" | lower }};
  # backends {{ getvs "/svc/NNN/backends/*" | join "," | sha256sum | trunc 12 }}
{{- range ls "global/dns" }}
  resolver {{ .Value | quote }};
{{- end }}
  set $env {{ keyOr "global/env" "dev" | upper | default "DEV" }};
}
`)
}

// renderAgent writes an agent config of renderTemplates templates rendering into dir/out and
// returns the agent (it never reaches its server: RenderView is handed the views).
func renderAgent(b *testing.B, dir string) *agent.Agent {
	os.MkdirAll(filepath.Join(dir, "templates"), 0o755)
	os.MkdirAll(filepath.Join(dir, "out"), 0o755)
	tok := filepath.Join(dir, "token")
	os.WriteFile(tok, []byte("bench"), 0o600)
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "server: http://127.0.0.1:1\ntoken_file: %s\nappliance: web\ncache_dir: %s\ntemplates:\n", tok, filepath.Join(dir, "cache"))
	for s := range renderTemplates {
		src := filepath.Join(dir, "templates", fmt.Sprintf("svc%03d.tmpl", s))
		if err := os.WriteFile(src, []byte(renderTemplate(s)), 0o644); err != nil {
			b.Fatal(err)
		}
		fmt.Fprintf(&cfg, "  - source: %s\n    destination: %s\n", src, filepath.Join(dir, "out", fmt.Sprintf("svc%03d.conf", s)))
	}
	path := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(path, []byte(cfg.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	c, err := agent.LoadConfig(path)
	if err != nil {
		b.Fatal(err)
	}
	a, err := agent.New(c, agent.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	return a
}

// BenchmarkRender measures the agent's render path (agent.RenderView: what Run does with each
// view a long-poll brings) with 200 templates over a 10,000-key view: the first pass renders
// every template; after it, each change of one backend's address must re-render only the
// template that reads it. The figures are the time to decide what to render and execute it;
// the files' staging and fsynced installs are timed apart and given in the notes.
func BenchmarkRender(b *testing.B) {
	firsts, changes := 3, 100
	if quick() {
		firsts, changes = 1, 20
	}
	ctx := context.Background()
	var first, firstWrite latencies
	var a *agent.Agent
	keys := renderView()
	for i := range firsts {
		a = renderAgent(b, b.TempDir())
		st := a.RenderView(ctx, int64(1+i), keys)
		if st.Failed != 0 || st.Executed != renderTemplates || st.Rendered != renderTemplates {
			b.Fatalf("first pass: %+v, want %d templates rendered", st, renderTemplates)
		}
		first, firstWrite = append(first, st.Render), append(firstWrite, st.Write)
	}
	var one, oneWrite latencies
	rev := int64(100)
	for i := range changes {
		// A new view, as each long-poll answer is: one backend of one service changed.
		next := make(map[string]string, len(keys))
		for k, v := range keys {
			next[k] = v
		}
		s := (i * 37) % renderTemplates
		next[fmt.Sprintf("svc/%03d/backends/b%02d", s, i%renderBackends)] = fmt.Sprintf("10.99.%d.%d:9999", i/250, i%250)
		keys = next
		rev++
		st := a.RenderView(ctx, rev, keys)
		if st.Failed != 0 || st.Executed != 1 || st.Rendered != 1 {
			b.Fatalf("change %d: %+v, want the one template of service %d re-rendered", i, st, s)
		}
		one, oneWrite = append(one, st.Render), append(oneWrite, st.Write)
	}
	b.ReportMetric(first.at(0.5), "first-ms")
	b.ReportMetric(one.at(0.5), "one-change-ms")
	b.ReportMetric(0, "ns/op")
	record(b, Row{Target: fmt.Sprintf("5. first render, %d templates over a %d-key view", renderTemplates, renderViewKeys),
		Unit: "ms", Figure: first.at(0.5), Limit: 150,
		Note: fmt.Sprintf("median of %d agents: deciding and executing; staging and installing the %d files (fsynced) took %.0f ms more",
			firsts, renderTemplates, firstWrite.at(0.5))})
	record(b, Row{Target: fmt.Sprintf("5. one key change re-renders the one template of %d that reads it", renderTemplates),
		Unit: "ms", Figure: one.at(0.5), Limit: 5,
		Note: fmt.Sprintf("p50 of %d changes (p99 %.2f ms): deciding and executing; staging and installing its file (fsynced) p50 %.2f ms more",
			changes, one.at(0.99), oneWrite.at(0.5))})
}
