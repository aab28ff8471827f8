package client

import (
	"context"
	"encoding/json"
	"net/http"
)

// Maintenance is the body of GET and PUT /v1/maintenance: while On, every replica refuses
// writes with 503 and reads go on.
type Maintenance struct {
	On bool `json:"on"`
	// Revision is the store revision of a PUT (from the answer's X-Shoelace-Index).
	Revision int64 `json:"-"`
}

// Maintenance reads whether maintenance (read-only) mode is on.
func (c *Client) Maintenance(ctx context.Context) (Maintenance, error) {
	var m Maintenance
	_, err := c.Do(ctx, Request{Method: http.MethodGet, Path: "/v1/maintenance"}, &m)
	return m, err
}

// SetMaintenance turns maintenance (read-only) mode on or off (admin only).
func (c *Client) SetMaintenance(ctx context.Context, on bool) (Maintenance, error) {
	body, err := JSONBody(Maintenance{On: on})
	if err != nil {
		return Maintenance{}, err
	}
	var m Maintenance
	meta, err := c.Do(ctx, Request{Method: http.MethodPut, Path: "/v1/maintenance", Body: body,
		Header: http.Header{"Content-Type": {"application/json"}}}, &m)
	if err == nil && m.Revision == 0 {
		m.Revision = meta.Index
	}
	return m, err
}

// Health reads GET /health (or /health/deps with deps), which need no token. It returns the
// JSON answer as is; an answer other than 2xx is an *api.Error with the status set.
func (c *Client) Health(ctx context.Context, deps bool) (json.RawMessage, error) {
	path := "/health"
	if deps {
		path = "/health/deps"
	}
	var raw json.RawMessage
	_, err := c.Do(ctx, Request{Method: http.MethodGet, Path: path}, &raw)
	return raw, err
}

// Status reads GET /v1/status (a read, write or admin token): the replica's version, store id,
// revision, open long-polls and the replicas sharing the store. It returns the JSON answer as is.
func (c *Client) Status(ctx context.Context) (json.RawMessage, error) {
	var raw json.RawMessage
	_, err := c.Do(ctx, Request{Method: http.MethodGet, Path: "/v1/status"}, &raw)
	return raw, err
}
