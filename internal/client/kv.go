package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// NoCAS is the cas argument of an unconditional write.
const NoCAS = -1

func casQuery(cas int64) url.Values {
	if cas < 0 {
		return nil
	}
	return url.Values{"cas": {strconv.FormatInt(cas, 10)}}
}

// Get reads one key.
func (c *Client) Get(ctx context.Context, key string) (api.KV, Meta, error) {
	var kv api.KV
	m, err := c.Do(ctx, Request{Method: http.MethodGet, Path: "/v1/kv/" + key}, &kv)
	return kv, m, err
}

// List reads every key under prefix (whole segments); with keysOnly, names only.
func (c *Client) List(ctx context.Context, prefix string, keysOnly bool) (api.List, Meta, error) {
	q := url.Values{"recurse": {""}}
	if keysOnly {
		q.Set("keys", "")
	}
	var l api.List
	m, err := c.Do(ctx, Request{Method: http.MethodGet, Path: "/v1/kv/" + prefix, Query: q}, &l)
	return l, m, err
}

// Put writes value verbatim under key; cas >= 0 makes it conditional (0: the key must not exist).
func (c *Client) Put(ctx context.Context, key string, value []byte, cas int64) (int64, error) {
	if value == nil {
		value = []byte{}
	}
	var w api.WriteResult
	_, err := c.Do(ctx, Request{Method: http.MethodPut, Path: "/v1/kv/" + key, Query: casQuery(cas), Body: value}, &w)
	return w.Revision, err
}

// Delete deletes key, or every key under it with recurse.
func (c *Client) Delete(ctx context.Context, key string, recurse bool) (api.DeleteResult, error) {
	var q url.Values
	if recurse {
		q = url.Values{"recurse": {""}}
	}
	var d api.DeleteResult
	_, err := c.Do(ctx, Request{Method: http.MethodDelete, Path: "/v1/kv/" + key, Query: q}, &d)
	return d, err
}

// Txn applies t all or nothing.
func (c *Client) Txn(ctx context.Context, t api.Txn) (int64, error) {
	return c.txn(ctx, t, http.Header{"Content-Type": {"application/json"}})
}

// Import is Txn for `shoelace import`: its release has kind import.
func (c *Client) Import(ctx context.Context, t api.Txn) (int64, error) {
	return c.txn(ctx, t, http.Header{"Content-Type": {"application/json"}, api.HeaderImport: {"1"}})
}

func (c *Client) txn(ctx context.Context, t api.Txn, h http.Header) (int64, error) {
	body, err := jsonBody(t)
	if err != nil {
		return 0, err
	}
	var w api.WriteResult
	_, err = c.Do(ctx, Request{Method: http.MethodPost, Path: "/v1/txn", Body: body, Header: h}, &w)
	return w.Revision, err
}
