//go:build !windows

package agent_test

import (
	"strings"
	"testing"

	"github.com/shoelace-dev/shoelace/agent"
)

// wait's bounds name the line of the field that breaks them, as the decoding errors and the
// templates' checks name theirs: "wait: {min: 11m}" said only the file.
func TestLoadConfig_WaitBoundsNameTheirLine(t *testing.T) {
	base := "server: http://127.0.0.1:7400\nappliance: web\ncache_dir: $DIR/cache\ntoken: t\n"
	tmpl := "templates:\n  - contents: x\n    destination: $DIR/a\n"
	for _, tc := range []struct {
		name, text string
		want       []string
	}{
		{"flow min over", base + "wait: {min: 11m}\n" + tmpl, []string{"agent.yaml:5: wait: min 11m0s is over 10m0s"}},
		{"flow max over", base + "wait: {min: 1s, max: 100h}\n" + tmpl, []string{"agent.yaml:5: wait: max 100h0m0s is over 10m0s"}},
		{"one duration over", base + "wait: 11m\n" + tmpl, []string{"agent.yaml:5: wait: min 11m0s is over 10m0s"}},
		{"flow min > max", base + "wait: {min: 5s, max: 1s}\n" + tmpl, []string{"agent.yaml:5: wait: min 5s is greater than max 1s"}},
		{"block, each on its line", base + "wait:\n  min: 20m\n\n  max: 30m\n" + tmpl,
			[]string{"2 problems", "agent.yaml:6: wait: min 20m0s is over 10m0s", "agent.yaml:8: wait: max 30m0s is over 10m0s"}},
		{"block min > max", base + "wait:\n  max: 2s\n  min: 3s\n" + tmpl, []string{"agent.yaml:7: wait: min 3s is greater than max 2s"}},
		{"after templates", base + tmpl + "wait:\n  min: 1s\n  max: 11m\n", []string{"agent.yaml:10: wait: max 11m0s is over 10m0s"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, path := writeConfig(t, tc.text)
			_, err := agent.LoadConfig(path)
			if err == nil {
				t.Fatalf("LoadConfig accepted:\n%s", tc.text)
			}
			for _, w := range tc.want {
				w = strings.ReplaceAll(w, "$DIR", dir)
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}
