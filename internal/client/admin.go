package client

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
)

// Maintenance is the body of GET and PUT /v1/maintenance: while Enabled, every replica refuses
// writes with 503 and reads go on.
type Maintenance struct {
	Enabled bool `json:"enabled"`
	// Revision is the store revision of a PUT, if the server says.
	Revision int64 `json:"revision,omitempty"`
}

// UnmarshalJSON accepts {"enabled":…} and, from servers that name it so, {"maintenance":…}.
func (m *Maintenance) UnmarshalJSON(b []byte) error {
	var raw struct {
		Enabled     *bool `json:"enabled"`
		Maintenance *bool `json:"maintenance"`
		Revision    int64 `json:"revision"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	switch {
	case raw.Enabled != nil:
		m.Enabled = *raw.Enabled
	case raw.Maintenance != nil:
		m.Enabled = *raw.Maintenance
	default:
		return errors.New(`maintenance answer has neither "enabled" nor "maintenance"`)
	}
	m.Revision = raw.Revision
	return nil
}

// Maintenance reads whether maintenance (read-only) mode is on.
func (c *Client) Maintenance(ctx context.Context) (Maintenance, error) {
	var m Maintenance
	_, err := c.Do(ctx, Request{Method: http.MethodGet, Path: "/v1/maintenance"}, &m)
	return m, err
}

// SetMaintenance turns maintenance (read-only) mode on or off (admin only). The answer's
// Revision falls back to the answer's X-Shoelace-Index.
func (c *Client) SetMaintenance(ctx context.Context, enabled bool) (Maintenance, error) {
	body, err := jsonBody(Maintenance{Enabled: enabled})
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
