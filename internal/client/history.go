package client

import (
	"context"
	"net/http"
	"strconv"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// ApplianceAt reads an appliance's own keys (relative to appliances/<name>/) as they were at
// revision rev. Meta.Index is the store's current revision.
func (c *Client) ApplianceAt(ctx context.Context, name string, rev int64) (map[string]string, Meta, error) {
	var out struct {
		Keys map[string]string `json:"keys"`
	}
	m, err := c.Do(ctx, Request{Method: http.MethodGet, Path: "/v1/appliances/" + name + "/at/" + strconv.FormatInt(rev, 10)}, &out)
	return out.Keys, m, err
}

// Rollback sets an appliance's own keys back to what they were at revision rev, in one
// transaction guarded so that a change made since they were read fails it (api.ErrConflict).
// It returns the revision written and how many keys the appliance now has.
func (c *Client) Rollback(ctx context.Context, name string, rev int64) (int64, int, error) {
	keys, m, err := c.ApplianceAt(ctx, name, rev)
	if err != nil {
		return 0, 0, err
	}
	body, err := jsonBody(api.Apply{Keys: keys})
	if err != nil {
		return 0, 0, err
	}
	written, err := c.Apply(ctx, name, body, "application/json", m.Index)
	return written, len(keys), err
}
