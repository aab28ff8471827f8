package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// CreateToken creates a token (admin only) and returns it with its secret.
func (c *Client) CreateToken(ctx context.Context, spec api.TokenRequest) (api.TokenCreated, error) {
	body, err := jsonBody(spec)
	if err != nil {
		return api.TokenCreated{}, err
	}
	var t api.TokenCreated
	_, err = c.Do(ctx, Request{Method: http.MethodPost, Path: "/v1/tokens", Body: body,
		Header: http.Header{"Content-Type": {"application/json"}}}, &t)
	return t, err
}

// Tokens lists the tokens (admin only), without their secrets.
func (c *Client) Tokens(ctx context.Context) ([]api.TokenInfo, error) {
	var l api.TokenList
	_, err := c.Do(ctx, Request{Method: http.MethodGet, Path: "/v1/tokens"}, &l)
	return l.Tokens, err
}

// AllTokens lists the tokens as Tokens does, and the instance tokens of enrolled agents too.
func (c *Client) AllTokens(ctx context.Context) ([]api.TokenInfo, error) {
	var l api.TokenList
	_, err := c.Do(ctx, Request{Method: http.MethodGet, Path: "/v1/tokens", Query: url.Values{"all": {""}}}, &l)
	return l.Tokens, err
}

// RevokeToken deletes the token name (admin only), ending its open long-polls. It returns the
// revision of the write (the X-Shoelace-Index of the answer when the body has none).
func (c *Client) RevokeToken(ctx context.Context, name string) (int64, error) {
	var w struct {
		Revision int64 `json:"revision"`
	}
	m, err := c.Do(ctx, Request{Method: http.MethodDelete, Path: "/v1/tokens/" + name}, &w)
	if err == nil && w.Revision == 0 {
		w.Revision = m.Index
	}
	return w.Revision, err
}
