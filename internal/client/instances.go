package client

import (
	"context"
	"net/http"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// Instances lists the agents of appliance name that reported recently, and the store's revision
// when the list was read.
func (c *Client) Instances(ctx context.Context, name string) (api.Instances, int64, error) {
	var l api.Instances
	meta, err := c.Do(ctx, Request{Method: http.MethodGet, Path: "/v1/appliances/" + name + "/instances"}, &l)
	return l, meta.Index, err
}
