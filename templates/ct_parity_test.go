//go:build ctparity

// This file links consul-template's template engine (and through it the Consul, Vault and
// Nomad clients), so it builds only with -tags ctparity:
//
//	go test -tags ctparity ./templates -run TestConsulTemplateParity

package templates

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	dep "github.com/hashicorp/consul-template/dependency"
	cttemplate "github.com/hashicorp/consul-template/template"
)

// ctGoldens are the golden files written for consul-template alone.
var ctGoldens = []string{"consul-template-redis", "consul-template-compat"}

// TestConsulTemplateParity renders the consul-template goldens with consul-template's own
// template engine, feeding its Brain what Consul's KV API would answer for
// testdata/view.json (as consul-template's runner does, until nothing is missing), and
// compares with the goldens.
func TestConsulTemplateParity(t *testing.T) {
	view := MustView(t).Keys
	sorted := make([]string, 0, len(view))
	for k := range view {
		sorted = append(sorted, k)
	}
	sort.Strings(sorted)

	// answer is what Consul answers for one dependency.
	answer := func(d dep.Dependency) any {
		s := d.String()
		switch d.(type) {
		case *dep.KVGetQuery:
			key := s[strings.Index(s, "(")+1 : len(s)-1]
			if v, ok := view[key]; ok {
				return v
			}
			return nil
		case *dep.KVListQuery:
			prefix := s[strings.Index(s, "(")+1 : len(s)-1]
			pairs := []*dep.KeyPair{}
			for _, k := range sorted {
				if strings.HasPrefix(k, prefix) { // Consul's prefixes are raw strings
					pairs = append(pairs, &dep.KeyPair{Path: k, Key: strings.TrimLeft(strings.TrimPrefix(k, prefix), "/"), Value: view[k]})
				}
			}
			return pairs
		}
		t.Fatalf("no answer for dependency %s (%T)", s, d)
		return nil
	}

	for _, name := range ctGoldens {
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join("testdata", name+".golden"))
			if err != nil {
				t.Fatal(err)
			}
			input, want, _ := strings.Cut(string(raw), goldenSep)
			tmpl, err := cttemplate.NewTemplate(&cttemplate.NewTemplateInput{Contents: input})
			if err != nil {
				t.Fatal(err)
			}
			brain := cttemplate.NewBrain()
			var res *cttemplate.ExecuteResult
			for round := 0; ; round++ {
				if round == 20 {
					t.Fatalf("still missing after %d rounds: %s", round, res.Missing)
				}
				res, err = tmpl.Execute(&cttemplate.ExecuteInput{Brain: brain})
				if err != nil {
					t.Fatal(err)
				}
				if res.Missing.Len() == 0 {
					break
				}
				for _, d := range res.Missing.List() {
					brain.Remember(d, answer(d))
				}
			}
			if got := string(res.Output); got != want {
				t.Errorf("consul-template renders differently from Shoelace\n--- consul-template\n%s\n--- shoelace (golden)\n%s", got, want)
			}
		})
	}
}
