package client

import (
	"bytes"
	"context"
	"net/http"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// SetSchema sets appliance name's JSON Schema (PUT /v1/appliances/{name}/schema), sent as
// contentType: application/schema+json when "", or api.ContentTypeYAML for a schema written in
// YAML. A schema that does not compile is refused (400 invalid_schema).
func (c *Client) SetSchema(ctx context.Context, name string, schema []byte, contentType string) (api.SchemaResult, error) {
	if contentType == "" {
		contentType = "application/schema+json"
	}
	var res api.SchemaResult
	_, err := c.Do(ctx, Request{Method: http.MethodPut, Path: "/v1/appliances/" + name + "/schema", Body: schema,
		Header: http.Header{"Content-Type": {contentType}}}, &res)
	return res, err
}

// Schema reads appliance name's JSON Schema as it was set; api.ErrNotFound when it has none.
func (c *Client) Schema(ctx context.Context, name string) ([]byte, Meta, error) {
	var b bytes.Buffer
	m, err := c.Do(ctx, Request{Method: http.MethodGet, Path: "/v1/appliances/" + name + "/schema"}, &b)
	return b.Bytes(), m, err
}

// DeleteSchema removes appliance name's JSON Schema; api.ErrNotFound when it has none.
func (c *Client) DeleteSchema(ctx context.Context, name string) (int64, error) {
	var w api.WriteResult
	_, err := c.Do(ctx, Request{Method: http.MethodDelete, Path: "/v1/appliances/" + name + "/schema"}, &w)
	return w.Revision, err
}
