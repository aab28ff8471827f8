package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"

	"gopkg.in/yaml.v3"

	"github.com/shoelace-dev/shoelace/docs"
)

// openAPIJSON is docs/openapi.yaml as JSON, converted once, at the first request.
var openAPIJSON = sync.OnceValues(func() ([]byte, error) { return yamlToJSON(docs.OpenAPI) })

// yamlToJSON converts a YAML document (anchors and merge keys expanded) to indented JSON. A map
// key that is not a string (an unquoted status code such as 200) is an error: JSON has none.
func yamlToJSON(in []byte) ([]byte, error) {
	var doc any
	if err := yaml.Unmarshal(in, &doc); err != nil {
		return nil, fmt.Errorf("parse openapi.yaml: %w", err)
	}
	if err := stringKeys(doc, ""); err != nil {
		return nil, err
	}
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetIndent("", "  ")
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("encode openapi.json: %w", err)
	}
	return out.Bytes(), nil
}

// stringKeys checks that every map in v has string keys (yaml.v3 decodes those as
// map[string]any; others as map[any]any, which encoding/json cannot write).
func stringKeys(v any, at string) error {
	switch t := v.(type) {
	case map[string]any:
		for k, e := range t {
			if err := stringKeys(e, at+"/"+k); err != nil {
				return err
			}
		}
	case map[any]any:
		for k := range t {
			if _, ok := k.(string); !ok {
				return fmt.Errorf("openapi.yaml: key %v under %q is not a string: quote it", k, at)
			}
		}
		return fmt.Errorf("openapi.yaml: a map under %q has keys that are not strings", at)
	case []any:
		for i, e := range t {
			if err := stringKeys(e, fmt.Sprintf("%s/%d", at, i)); err != nil {
				return err
			}
		}
	}
	return nil
}

// handleOpenAPI answers the API's description. It needs no token: it is the same for every
// server of a version, holds nothing of the store, and a client generator fetches it before it
// has a token. Like every request without a token, it is held to the rate limit of the
// client's address: each answer is over 100 KiB.
func (s *Server) handleOpenAPI(w http.ResponseWriter, r *http.Request) error {
	if err := s.limitOpen(r); err != nil {
		return err
	}
	if _, err := query(r); err != nil {
		return err
	}
	body, err := openAPIJSON()
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	_, err = w.Write(body)
	return err
}
