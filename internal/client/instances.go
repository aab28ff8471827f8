package client

import (
	"context"
	"net/http"
)

// Instance is what an agent last reported about itself: its instance name and the last
// revision at which all its templates were installed.
type Instance struct {
	Appliance string `json:"appliance"`
	Instance  string `json:"instance"`
	Applied   int64  `json:"applied"`
	// LastSeen is when the agent last asked for its view (RFC 3339).
	LastSeen string `json:"last_seen"`
	Remote   string `json:"remote,omitempty"`
	Token    string `json:"token,omitempty"`
}

// InstanceList answers GET /v1/appliances/{name}/instances.
type InstanceList struct {
	Appliance string     `json:"appliance"`
	Instances []Instance `json:"instances"`
}

// Instances lists the agents of appliance name that reported recently.
func (c *Client) Instances(ctx context.Context, name string) (InstanceList, error) {
	var l InstanceList
	_, err := c.Do(ctx, Request{Method: http.MethodGet, Path: "/v1/appliances/" + name + "/instances"}, &l)
	return l, err
}
