package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// ApplianceAt reads an appliance's own keys (relative to appliances/<name>/) as they were at
// revision rev. Meta.Index is the store's current revision.
func (c *Client) ApplianceAt(ctx context.Context, name string, rev int64) (map[string]string, Meta, error) {
	var out struct {
		Keys map[string]string `json:"keys"`
	}
	m, err := c.Do(ctx, Request{Method: http.MethodGet, Path: "/v1/appliances/" + name + "/at/" + strconv.FormatInt(rev, 10)}, &out)
	return out.Keys, m, err
}

// Rollback sets an appliance's own keys back to what they were at revision rev (from etcd's
// history, or once compacted from the release copies), in one transaction guarded so that a
// change made since they were read fails it (api.ErrConflict). The write is a release of kind
// rollback; note, when not empty, is added to its message. It returns the server's answer (the
// revision written; Unchanged when the appliance held those keys already and nothing was
// written) and how many keys the appliance now has.
func (c *Client) Rollback(ctx context.Context, name string, rev int64, note string) (api.WriteResult, int, error) {
	keys, m, err := c.ApplianceAt(ctx, name, rev)
	if err != nil {
		return api.WriteResult{}, 0, err
	}
	body, err := JSONBody(api.Apply{Keys: keys})
	if err != nil {
		return api.WriteResult{}, 0, err
	}
	if len(body) > api.RollbackBodyBytes {
		// The server reads the tree at rev itself: a tree made of single puts may be larger than
		// an apply body may be (413), though the write, of the keys that differ, fits etcd.
		body = nil
	}
	h := http.Header{"Content-Type": {"application/json"}, api.HeaderRollback: {strconv.FormatInt(rev, 10)}}
	if note != "" {
		msg := note
		if c.opts.Message != "" {
			msg = c.opts.Message + " (" + note + ")"
		}
		h.Set(api.HeaderMessage, msg)
	}
	var w api.WriteResult
	_, err = c.Do(ctx, Request{Method: http.MethodPut, Path: "/v1/appliances/" + name, Query: casQuery(m.Index), Body: body, Header: h}, &w)
	return w, len(keys), err
}

// ApplianceReleases reads a page of the releases that changed an appliance, newest first:
// limit of them (0: the server's default) before revision before (0: from the newest).
func (c *Client) ApplianceReleases(ctx context.Context, name string, limit int, before int64, includeShared bool) (api.Releases, error) {
	q := url.Values{}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	if before > 0 {
		q.Set("before", strconv.FormatInt(before, 10))
	}
	if includeShared {
		q.Set("include_shared", "true")
	}
	var out api.Releases
	_, err := c.Do(ctx, Request{Method: http.MethodGet, Path: "/v1/appliances/" + name + "/releases", Query: q}, &out)
	return out, err
}

// KeyHistory reads a key's values while etcd has them and the releases that touched it, newest
// first, at most limit of each (0: the server's default).
func (c *Client) KeyHistory(ctx context.Context, key string, limit int) (api.KeyHistory, error) {
	q := url.Values{"history": {"true"}}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out api.KeyHistory
	_, err := c.Do(ctx, Request{Method: http.MethodGet, Path: "/v1/kv/" + key, Query: q}, &out)
	return out, err
}
