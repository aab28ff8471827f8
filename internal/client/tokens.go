package client

import (
	"context"
	"net/http"
)

// TokenSpec is the body of POST /v1/tokens: a name and what the token may do. Exactly one of
// Appliance, Read/Write or Admin is expected.
type TokenSpec struct {
	Name string `json:"name"`
	// Appliance grants what an agent of that appliance needs: read its view, report its status.
	Appliance string `json:"appliance,omitempty"`
	// Read and Write are key prefixes (whole segments) the token may read, or read and write.
	Read  []string `json:"read,omitempty"`
	Write []string `json:"write,omitempty"`
	// Admin grants everything, token management included.
	Admin bool `json:"admin,omitempty"`
}

// TokenInfo describes a token as GET /v1/tokens lists it; it never holds the secret.
type TokenInfo struct {
	TokenSpec
	// Created is when the token was created (RFC 3339), if the server says.
	Created string `json:"created,omitempty"`
	// LastUsed is when the answering replica last saw the token used (RFC 3339), if it did.
	LastUsed string `json:"last_used,omitempty"`
}

// CreatedToken answers POST /v1/tokens: the token's description and its secret, shown only once.
type CreatedToken struct {
	TokenInfo
	// Token is the secret to send as "Authorization: Bearer <token>".
	Token string `json:"token"`
	// Revision is the store revision of the write, if the server says.
	Revision int64 `json:"revision,omitempty"`
}

// TokenList answers GET /v1/tokens.
type TokenList struct {
	Tokens []TokenInfo `json:"tokens"`
}

// CreateToken creates a token (admin only) and returns it with its secret.
func (c *Client) CreateToken(ctx context.Context, spec TokenSpec) (CreatedToken, error) {
	body, err := jsonBody(spec)
	if err != nil {
		return CreatedToken{}, err
	}
	var t CreatedToken
	_, err = c.Do(ctx, Request{Method: http.MethodPost, Path: "/v1/tokens", Body: body,
		Header: http.Header{"Content-Type": {"application/json"}}}, &t)
	return t, err
}

// Tokens lists the tokens (admin only), without their secrets.
func (c *Client) Tokens(ctx context.Context) ([]TokenInfo, error) {
	var l TokenList
	_, err := c.Do(ctx, Request{Method: http.MethodGet, Path: "/v1/tokens"}, &l)
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
