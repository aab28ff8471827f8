package server

import (
	"context"
	"net/http"
	"strconv"
	"time"
)

// snapshotTimeout bounds streaming a snapshot.
const snapshotTimeout = 10 * time.Minute

// lazyWriter writes the response header on the first byte, so that a snapshot that fails before
// it streams anything is still answered with a proper error.
type lazyWriter struct {
	w       http.ResponseWriter
	rev     int64
	started bool
}

func (l *lazyWriter) Write(p []byte) (int, error) {
	if !l.started {
		l.started = true
		h := l.w.Header()
		h.Set("Content-Type", "application/octet-stream")
		h.Set("Content-Disposition", `attachment; filename="shoelace-`+strconv.FormatInt(l.rev, 10)+`.snapshot"`)
		setIndex(l.w, l.rev)
		l.w.WriteHeader(http.StatusOK)
	}
	return l.w.Write(p)
}

// handleSnapshot streams an etcd snapshot of the whole store (admin only); X-Shoelace-Index is
// a revision the snapshot holds at least.
func (s *Server) handleSnapshot(w http.ResponseWriter, r *http.Request) error {
	if _, err := query(r); err != nil {
		return err
	}
	if err := principalOf(r).mayAdmin(); err != nil {
		return err
	}
	extendWrite(w, snapshotTimeout)
	ctx, cancel := context.WithTimeout(r.Context(), snapshotTimeout)
	defer cancel()
	rev, err := s.st.Revision(ctx)
	if err != nil {
		return err
	}
	lw := &lazyWriter{w: w, rev: rev}
	n, err := s.st.Snapshot(ctx, lw)
	if err != nil {
		if !lw.started {
			return err
		}
		// The status is sent: cutting the stream short is all that is left to say.
		s.log.Error("snapshot stream broken", "request_id", info(r).id, "bytes", n, "err", err)
		panic(http.ErrAbortHandler)
	}
	s.audit(r, "snapshot", nil, rev)
	return nil
}
