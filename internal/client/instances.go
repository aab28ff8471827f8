package client

import (
	"context"
	"net/http"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// Instances lists the agents of appliance name that reported recently.
func (c *Client) Instances(ctx context.Context, name string) (api.Instances, error) {
	var l api.Instances
	_, err := c.Do(ctx, Request{Method: http.MethodGet, Path: "/v1/appliances/" + name + "/instances"}, &l)
	return l, err
}
