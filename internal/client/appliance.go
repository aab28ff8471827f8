package client

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// JSONBody is v as the client sends it in a request's body: JSON that leaves <, > and & as
// they are (api.Marshal), which the server's body limit (--max-value-bytes plus 4 MiB) counts
// as they were written.
func JSONBody(v any) ([]byte, error) {
	b, err := api.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	return b, nil
}

// Appliances lists the appliances the token may read.
func (c *Client) Appliances(ctx context.Context) ([]string, error) {
	var a api.Appliances
	_, err := c.Do(ctx, Request{Method: http.MethodGet, Path: "/v1/appliances"}, &a)
	return a.Appliances, err
}

// View reads an appliance's view now.
func (c *Client) View(ctx context.Context, name string) (api.View, Meta, error) {
	var v api.View
	m, err := c.Do(ctx, Request{Method: http.MethodGet, Path: "/v1/appliances/" + name}, &v)
	return v, m, err
}

// Poll describes one long-poll of an appliance's view.
type Poll struct {
	// Index is the revision the caller has; the server answers when the view changed after it.
	Index int64
	// Wait is how long the server may hold the request (0: the server's default, 55 s).
	Wait time.Duration
	// Store is the store id the caller knows; a different one is answered at once.
	Store string
	// Instance and Applied identify an agent (X-Shoelace-Instance, X-Shoelace-Applied).
	Instance string
	Applied  int64
	// Rollout names the rollout whose candidate Applied was of (X-Shoelace-Rollout).
	Rollout string
	// Delta asks the server for the difference from the caller's view instead of the whole
	// view (`&delta`): WatchView and StreamView apply it to Base and check its sum, reading
	// the full view when it does not match. Without a base, Delta is ignored.
	Delta bool
	// Base is the view the caller holds at Index (nil: none); it is left as it is.
	Base *api.View
}

// query returns p's long-poll query parameters (delta only with a Base to apply it to).
func (p Poll) query() url.Values {
	q := url.Values{"index": {strconv.FormatInt(p.Index, 10)}}
	if p.Wait > 0 {
		q.Set("wait", p.Wait.String())
	}
	if p.Delta && p.Base != nil {
		q.Set("delta", "true")
		if p.Base.Rollout != "" {
			q.Set("base_rollout", p.Base.Rollout)
		}
	}
	return q
}

// Headers returns the agent's identity headers for p.
func (p Poll) Headers() http.Header {
	h := http.Header{}
	if p.Instance != "" {
		h.Set(api.HeaderInstance, p.Instance)
	}
	if p.Applied > 0 {
		h.Set(api.HeaderApplied, strconv.FormatInt(p.Applied, 10))
	}
	if p.Rollout != "" {
		h.Set(api.HeaderRollout, p.Rollout)
	}
	if p.Store != "" {
		h.Set(api.HeaderStore, p.Store)
	}
	return h
}

// WatchView long-polls an appliance's view. It returns the new view, or nil when the wait
// expired with no change (304). The caller's ctx should outlive p.Wait plus a margin.
//
// With p.Delta and p.Base, the server may answer the difference from p.Base; WatchView applies
// it (p.Base is left as it is) and returns the whole view. When the result does not match the
// server's sum, it reads the full view at once instead.
func (c *Client) WatchView(ctx context.Context, name string, p Poll) (*api.View, Meta, error) {
	var u api.Update
	m, err := c.Do(ctx, Request{Method: http.MethodGet, Path: "/v1/appliances/" + name, Query: p.query(), Header: p.Headers()}, &u)
	if err != nil || m.Status == http.StatusNotModified {
		return nil, m, err
	}
	if !u.IsDelta() {
		v := u.View()
		return &v, m, nil
	}
	if p.Base == nil {
		return nil, m, fmt.Errorf("GET /v1/appliances/%s: the server answered a delta to a long-poll without delta", name)
	}
	if err := c.checkGrowth(p.Base, u.Delta()); err != nil {
		return nil, m, fmt.Errorf("GET /v1/appliances/%s: %w", name, err)
	}
	v, err := api.ApplyDelta(*p.Base, u.Delta())
	if err != nil {
		return c.fullView(ctx, name, p)
	}
	m.Delta = true
	return &v, m, nil
}

// fullView reads name's view now, as the agent p describes gets it (its rollout's candidate
// when in a cohort), for a caller whose delta did not match.
func (c *Client) fullView(ctx context.Context, name string, p Poll) (*api.View, Meta, error) {
	var v api.View
	m, err := c.Do(ctx, Request{Method: http.MethodGet, Path: "/v1/appliances/" + name, Header: p.Headers()}, &v)
	if err != nil {
		return nil, m, err
	}
	return &v, m, nil
}

// PlanApply is Apply's dry run: what the apply of body would put, change and delete in the
// appliance as it is now (PUT /v1/appliances/{name}?dry_run). It writes nothing.
func (c *Client) PlanApply(ctx context.Context, name string, body []byte, contentType string) (api.ApplyPlan, error) {
	if contentType == "" {
		contentType = "application/json"
	}
	var p api.ApplyPlan
	_, err := c.Do(ctx, Request{Method: http.MethodPut, Path: "/v1/appliances/" + name, Query: url.Values{"dry_run": {"true"}}, Body: body,
		Header: http.Header{"Content-Type": {contentType}}}, &p)
	return p, err
}

// Apply replaces an appliance's whole tree with body, JSON ({"keys":{…}}) or YAML
// (contentType api.ContentTypeYAML). cas >= 0 guards it.
func (c *Client) Apply(ctx context.Context, name string, body []byte, contentType string, cas int64) (int64, error) {
	w, err := c.ApplyResult(ctx, name, body, contentType, cas)
	return w.Revision, err
}

// ApplyResult is Apply, with the server's whole answer: Unchanged says that the appliance
// already held exactly those keys, and nothing was written.
func (c *Client) ApplyResult(ctx context.Context, name string, body []byte, contentType string, cas int64) (api.WriteResult, error) {
	if contentType == "" {
		contentType = "application/json"
	}
	var w api.WriteResult
	_, err := c.Do(ctx, Request{Method: http.MethodPut, Path: "/v1/appliances/" + name, Query: casQuery(cas), Body: body,
		Header: http.Header{"Content-Type": {contentType}}}, &w)
	return w, err
}
