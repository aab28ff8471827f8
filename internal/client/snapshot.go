package client

import (
	"context"
	"fmt"
	"io"
	"net/http"
)

// maxErrorBody bounds how much of a failed streaming answer is read for its error message.
const maxErrorBody = 64 << 10

// Snapshot streams an etcd snapshot of the whole store (GET /v1/snapshot, admin only) to w,
// without holding it in memory. It returns the answer's Meta (Index: the revision of the
// snapshot) and the number of bytes written. The snapshot holds every secret: keep it private.
func (c *Client) Snapshot(ctx context.Context, w io.Writer) (Meta, int64, error) {
	const op = "GET /v1/snapshot"
	u := *c.base
	u.Path = c.base.Path + "/v1/snapshot"
	u.RawPath = ""
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return Meta{}, 0, fmt.Errorf("%s: %w", op, err)
	}
	if c.opts.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.opts.Token)
	}
	if c.opts.UserAgent != "" {
		req.Header.Set("User-Agent", c.opts.UserAgent)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return Meta{}, 0, &TransportError{Op: op, Err: err}
	}
	defer resp.Body.Close()
	meta := metaOf(resp)
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		return meta, 0, decodeError(resp.StatusCode, body)
	}
	body := &readErr{r: resp.Body}
	n, err := io.Copy(w, body)
	if body.err != nil {
		return meta, n, &TransportError{Op: op, Err: body.err}
	}
	if err != nil {
		return meta, n, fmt.Errorf("%s: write: %w", op, err)
	}
	return meta, n, nil
}

// readErr remembers the error of its reader, to tell a broken answer from a failed write.
type readErr struct {
	r   io.Reader
	err error
}

func (r *readErr) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}
