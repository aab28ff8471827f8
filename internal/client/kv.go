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
	w, err := c.PutResult(ctx, key, value, cas)
	return w.Revision, err
}

// PutResult is Put, with the server's whole answer: Unchanged says that a put sent with canary
// (Options.WriteQuery) changed nothing, so that no rollout started and nothing was written.
func (c *Client) PutResult(ctx context.Context, key string, value []byte, cas int64) (api.WriteResult, error) {
	var w api.WriteResult
	_, err := c.Do(ctx, putRequest(key, value, cas), &w)
	return w, err
}

// SharedCanaryResult is the answer to a write of shared/ keys with the rollout flags: the
// shared rollout group it started, or, when shared/ held the change already, Unchanged and the
// revision (no group started, nothing written).
type SharedCanaryResult struct {
	api.SharedRolloutStatus
	Unchanged bool `json:"unchanged"`
}

// PutSharedCanary is Put of a shared/ key written with the rollout flags (Options.WriteQuery
// holding canary): it answers the shared rollout group the write started.
func (c *Client) PutSharedCanary(ctx context.Context, key string, value []byte, cas int64) (SharedCanaryResult, error) {
	var g SharedCanaryResult
	_, err := c.Do(ctx, putRequest(key, value, cas), &g)
	return g, err
}

func putRequest(key string, value []byte, cas int64) Request {
	if value == nil {
		value = []byte{}
	}
	return Request{Method: http.MethodPut, Path: "/v1/kv/" + key, Query: casQuery(cas), Body: value}
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

// TxnResult is Txn, with the server's whole answer: Unchanged says that a txn sent with canary
// (Options.WriteQuery) changed nothing, so that no rollout started and nothing was written.
func (c *Client) TxnResult(ctx context.Context, t api.Txn) (api.WriteResult, error) {
	var w api.WriteResult
	err := c.txnInto(ctx, t, http.Header{"Content-Type": {"application/json"}}, &w)
	return w, err
}

// TxnSharedCanary is Txn of shared/ keys written with the rollout flags (Options.WriteQuery
// holding canary): it answers the shared rollout group the write started.
func (c *Client) TxnSharedCanary(ctx context.Context, t api.Txn) (SharedCanaryResult, error) {
	var g SharedCanaryResult
	err := c.txnInto(ctx, t, http.Header{"Content-Type": {"application/json"}}, &g)
	return g, err
}

// Import is Txn for `shoelace import`: its release has kind import.
func (c *Client) Import(ctx context.Context, t api.Txn) (int64, error) {
	return c.txn(ctx, t, http.Header{"Content-Type": {"application/json"}, api.HeaderImport: {"1"}})
}

func (c *Client) txn(ctx context.Context, t api.Txn, h http.Header) (int64, error) {
	var w api.WriteResult
	err := c.txnInto(ctx, t, h, &w)
	return w.Revision, err
}

// txnInto posts t and decodes the answer into out.
func (c *Client) txnInto(ctx context.Context, t api.Txn, h http.Header, out any) error {
	body, err := JSONBody(t)
	if err != nil {
		return err
	}
	_, err = c.Do(ctx, Request{Method: http.MethodPost, Path: "/v1/txn", Body: body, Header: h}, out)
	return err
}
