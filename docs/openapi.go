// Package docs holds the OpenAPI description of the server's HTTP API, docs/openapi.yaml, so
// that the server serves the one copy that is reviewed with the code.
package docs

import _ "embed"

// OpenAPI is the content of openapi.yaml (OpenAPI 3.1).
//
//go:embed openapi.yaml
var OpenAPI []byte
