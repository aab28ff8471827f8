package agent

import (
	"reflect"
	"testing"
)

// TestTemplatesYAML_ReadBack: every string a conversion prints (convert-confd,
// convert-consul-template) is read back by the agent as it was, whatever its bytes: blank lines
// first, a tab first, CR LF, YAML's own markers, values YAML would read as another type.
func TestTemplatesYAML_ReadBack(t *testing.T) {
	odd := []string{"\n\nx\n", "\tx\n", "a\r\nb", " x ", "#x", "- x", "x: y", "---\n", "...", "null", "~", "yes", "0644", "1e3",
		"'q'", "\"q\"", "a\n\tb\n", "\u2028", "x\u0085y", "{{", "}}", "[[", "&a", "*a", "!t", "%x", "@x", "`x", "|", ">", "ǆ ñ 日本"}
	for _, s := range odd {
		want := Template{Source: "/t/" + s, Contents: s, Destination: "/d/" + s, Functions: "confd", Prefix: "/p" + s,
			Keys: []string{"/k" + s, s}, Owner: s, Group: s, LeftDelimiter: s, RightDelimiter: s, Check: s, Command: s}
		out, err := TemplatesYAML([]string{"head"}, Wait{}, []Template{want}, [][]string{{"from here"}})
		if err != nil {
			t.Errorf("%q: %v", s, err)
			continue
		}
		cfg, err := ParseConfig("agent.yaml", out)
		if err != nil {
			t.Errorf("%q: the agent refuses what was printed: %v\n%s", s, err, out)
			continue
		}
		got := cfg.Templates[0]
		for _, f := range []struct {
			name      string
			got, want any
		}{
			{"source", got.Source, want.Source}, {"contents", got.Contents, want.Contents}, {"destination", got.Destination, want.Destination},
			{"prefix", got.Prefix, want.Prefix}, {"keys", got.Keys, want.Keys}, {"owner", got.Owner, want.Owner}, {"group", got.Group, want.Group},
			{"left_delimiter", got.LeftDelimiter, want.LeftDelimiter}, {"right_delimiter", got.RightDelimiter, want.RightDelimiter},
			{"check", got.Check, want.Check}, {"command", got.Command, want.Command},
		} {
			if !reflect.DeepEqual(f.got, f.want) {
				t.Errorf("%q: %s %q is read back as %q from\n%s", s, f.name, f.want, f.got, out)
			}
		}
	}
}
