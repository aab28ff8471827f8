package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// CreateToken creates a token (admin only) and returns it with its secret.
func (c *Client) CreateToken(ctx context.Context, spec api.TokenRequest) (api.TokenCreated, error) {
	body, err := JSONBody(spec)
	if err != nil {
		return api.TokenCreated{}, err
	}
	var t api.TokenCreated
	_, err = c.Do(ctx, Request{Method: http.MethodPost, Path: "/v1/tokens", Body: body,
		Header: http.Header{"Content-Type": {"application/json"}}}, &t)
	return t, err
}

// Tokens lists the tokens (admin only), without their secrets: every page of GET /v1/tokens.
func (c *Client) Tokens(ctx context.Context) ([]api.TokenInfo, error) {
	return c.tokenPages(ctx, false)
}

// AllTokens lists the tokens as Tokens does, and the instance tokens of enrolled agents too.
func (c *Client) AllTokens(ctx context.Context) ([]api.TokenInfo, error) {
	return c.tokenPages(ctx, true)
}

// maxTokenPage is the largest page GET /v1/tokens answers.
const maxTokenPage = 1000

// TokensPage reads a page of the tokens by name (admin only): limit of them (0: every one)
// past the name after ("": from the first); with all, the instance tokens too. The
// answer's Next, when set, is the after of the next page.
func (c *Client) TokensPage(ctx context.Context, all bool, limit int, after string) (api.TokenList, error) {
	q := url.Values{}
	if all {
		q.Set("all", "")
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	if after != "" {
		q.Set("after", after)
	}
	var l api.TokenList
	_, err := c.Do(ctx, Request{Method: http.MethodGet, Path: "/v1/tokens", Query: q}, &l)
	return l, err
}

// tokenPages reads every page of the tokens, as large as the server allows. A server that
// does not page (an older one: a replica not upgraded yet, behind the same load balancer)
// refuses limit as an unknown parameter; the tokens are then asked for without it, which
// every server answers whole.
func (c *Client) tokenPages(ctx context.Context, all bool) ([]api.TokenInfo, error) {
	var out []api.TokenInfo
	after := ""
	for {
		l, err := c.TokensPage(ctx, all, maxTokenPage, after)
		if ae := (*api.Error)(nil); errors.As(err, &ae) && ae.Code == api.CodeInvalidRequest {
			l, err = c.TokensPage(ctx, all, 0, "")
			return l.Tokens, err
		}
		if err != nil {
			return nil, err
		}
		out = append(out, l.Tokens...)
		if l.Next == "" {
			return out, nil
		}
		if l.Next <= after {
			return nil, fmt.Errorf("GET /v1/tokens: the server's next page (after %q) does not start past the last one (after %q)", l.Next, after)
		}
		after = l.Next
	}
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
