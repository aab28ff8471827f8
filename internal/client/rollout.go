package client

import (
	"context"
	"net/http"
	"strconv"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// Report tells the server what the agent's last pass did (POST /v1/appliances/{name}/report).
func (c *Client) Report(ctx context.Context, name string, r api.Report) error {
	body, err := JSONBody(r)
	if err != nil {
		return err
	}
	h := http.Header{"Content-Type": {"application/json"}}
	if r.Instance != "" {
		h.Set(api.HeaderInstance, r.Instance)
	}
	h.Set(api.HeaderApplied, strconv.FormatInt(r.Applied, 10))
	if r.AppliedRollout != "" {
		h.Set(api.HeaderRollout, r.AppliedRollout)
	}
	_, err = c.Do(ctx, Request{Method: http.MethodPost, Path: "/v1/appliances/" + name + "/report", Body: body, Header: h}, nil)
	return err
}

// Rollout reads the appliance's current or last rollout.
func (c *Client) Rollout(ctx context.Context, name string) (api.RolloutStatus, Meta, error) {
	var st api.RolloutStatus
	m, err := c.Do(ctx, Request{Method: http.MethodGet, Path: "/v1/appliances/" + name + "/rollout"}, &st)
	return st, m, err
}

// RolloutAction promotes ("promote") or aborts ("abort") the appliance's running rollout.
func (c *Client) RolloutAction(ctx context.Context, name, action string) (api.RolloutStatus, error) {
	return c.RolloutActionIf(ctx, name, api.RolloutAction{Action: action})
}

// RolloutActionIf sends act, whose Rollout and Step (when set) the running rollout must match.
func (c *Client) RolloutActionIf(ctx context.Context, name string, act api.RolloutAction) (api.RolloutStatus, error) {
	body, err := JSONBody(act)
	if err != nil {
		return api.RolloutStatus{}, err
	}
	var st api.RolloutStatus
	_, err = c.Do(ctx, Request{Method: http.MethodPost, Path: "/v1/appliances/" + name + "/rollout", Body: body,
		Header: http.Header{"Content-Type": {"application/json"}}}, &st)
	return st, err
}
