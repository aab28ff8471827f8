package templates

import (
	"os/exec"
	"strings"
	"testing"
)

// consulTemplateLibraries are the versions consul-template v0.41.1 links (its go.mod, and `go
// version -m` of the binary build-peers.sh builds) of the libraries whose results consul-template
// mode shares: sprig and what its hermetic functions call, yaml.v2 (toYAML, parseYAML) and
// BurntSushi/toml (toTOML). Another version answers some inputs otherwise: semver v3.4.0 matches
// prereleases otherwise ("1.2.3-beta.1" against "!=1.2.3"), cast v1.10.0 reads "1.9" as 1 where
// v1.7.0 reads 0.
var consulTemplateLibraries = map[string]string{
	"github.com/Masterminds/sprig/v3":    "v3.3.0",
	"github.com/Masterminds/semver/v3":   "v3.3.0",
	"github.com/spf13/cast":              "v1.7.0",
	"github.com/Masterminds/goutils":     "v1.1.1",
	"github.com/huandu/xstrings":         "v1.5.0",
	"github.com/mitchellh/copystructure": "v1.2.0",
	"github.com/mitchellh/reflectwalk":   "v1.0.2",
	"github.com/shopspring/decimal":      "v1.4.0",
	"github.com/google/uuid":             "v1.6.0",
	"dario.cat/mergo":                    "v1.0.2",
	"gopkg.in/yaml.v2":                   "v2.4.0",
	"github.com/BurntSushi/toml":         "v1.5.0",
}

// TestConsulTemplate_LibrariesAsConsulTemplates: this build links the versions consul-template
// v0.41.1 links of the libraries its functions share. A tool of go.mod (nfpm, for make package)
// once raised semver and cast for every package of the module; tools whose needs differ live in
// a modfile of their own (packaging/nfpm.mod).
func TestConsulTemplate_LibrariesAsConsulTemplates(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{with .Module}}{{.Path}} {{.Version}}{{end}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	linked := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		if path, version, ok := strings.Cut(line, " "); ok {
			linked[path] = version
		}
	}
	for path, want := range consulTemplateLibraries {
		if got := linked[path]; got != want {
			t.Errorf("%s is %q here, %s in consul-template v0.41.1: consul-template mode would answer otherwise", path, got, want)
		}
	}
}
