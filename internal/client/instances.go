package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// Instances lists the agents of appliance name that reported recently, and the store's revision
// when the list was read.
func (c *Client) Instances(ctx context.Context, name string) (api.Instances, int64, error) {
	return c.InstancesFor(ctx, name, 0)
}

// InstancesFor is Instances asked for revision rev (0: none), the one appliance wait waits
// for: the server answers a revision that a restore lost with an api.CodeCompacted error.
func (c *Client) InstancesFor(ctx context.Context, name string, rev int64) (api.Instances, int64, error) {
	var l api.Instances
	var q url.Values
	if rev > 0 {
		q = url.Values{"revision": {strconv.FormatInt(rev, 10)}}
	}
	meta, err := c.Do(ctx, Request{Method: http.MethodGet, Path: "/v1/appliances/" + name + "/instances", Query: q}, &l)
	return l, meta.Index, err
}

// Enroll obtains an instance token bound to instance of appliance name (with the appliance's
// agent token): the secret is in the answer only. key, when not empty, is the agent's
// enrollment key (api.HeaderEnrollKey): the same key may enroll again while the token was
// never used, as when this answer is lost.
func (c *Client) Enroll(ctx context.Context, name, instance, key string) (api.Enrolled, error) {
	body, err := JSONBody(api.Enroll{Instance: instance})
	if err != nil {
		return api.Enrolled{}, err
	}
	h := http.Header{"Content-Type": {"application/json"}, api.HeaderInstance: {instance}}
	if key != "" {
		h.Set(api.HeaderEnrollKey, key)
	}
	var e api.Enrolled
	m, err := c.Do(ctx, Request{Method: http.MethodPost, Path: "/v1/appliances/" + name + "/enroll", Body: body, Header: h}, &e)
	e.Store = m.Store
	return e, err
}

// ForgetInstance removes the record of instance of appliance name and revokes its instance
// token at once (admin only), so that another agent may enroll under its name. It returns the
// revision of the write.
func (c *Client) ForgetInstance(ctx context.Context, name, instance string) (int64, error) {
	var w api.WriteResult
	m, err := c.Do(ctx, Request{Method: http.MethodDelete, Path: "/v1/appliances/" + name + "/instances/" + instance}, &w)
	if err == nil && w.Revision == 0 {
		w.Revision = m.Index
	}
	return w.Revision, err
}
