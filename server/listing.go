package server

import (
	"bytes"
	"net/http"
	"strconv"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// writeListing answers GET /v1/kv/{prefix}?recurse: the keys under prefix that filter lets
// the token read (nil: all), with their values unless keysOnly.
//
// A listing that etcd gives in one page (store.ListPaged) is answered as any answer, whole.
// A longer one is written a page at a time as it is read, every page at the first one's
// revision, each page counted against the bounds on answers while it is written: read whole
// first, a listing of 64 MiB took the heap up by ~400 MiB (etcd's answer, its copy as
// strings, the JSON) before the bounds counted it, and they let a token hold one answer
// however large. Its status and X-Shoelace-Index go before the second page is read: a
// failure after them (etcd away, the revision compacted meanwhile) cuts the answer off, so
// that the client reads no JSON that ends and knows the listing failed.
func (s *Server) writeListing(w http.ResponseWriter, r *http.Request, prefix string, keysOnly bool, filter func(string) bool) error {
	var (
		started bool
		total   int // entries written
		written int // bytes
		left    int // bytes read and left out (keys the token's grants do not cover)
		buf     bytes.Buffer
	)
	err := s.st.ListPaged(r.Context(), prefix, keysOnly, func(kvs []api.KV, rev int64, more bool) error {
		names, entries := []string{}, []api.KV{}
		for _, e := range kvs {
			if filter != nil && !filter(e.Key) {
				left += len(e.Key) + len(e.Value)
				continue
			}
			if keysOnly {
				names = append(names, e.Key)
			} else {
				entries = append(entries, e)
			}
		}
		if !started && !more {
			out := listAnswer{Revision: rev}
			if keysOnly {
				out.Keys = &names
			} else {
				out.Entries = &entries
			}
			return writeJSON(w, http.StatusOK, rev, out)
		}
		buf.Reset()
		if !started {
			field := "entries"
			if keysOnly {
				field = "keys"
			}
			buf.WriteString(`{"revision":` + strconv.FormatInt(rev, 10) + `,"` + field + `":[`)
		}
		n := 0
		if keysOnly {
			n = len(names)
		} else {
			n = len(entries)
		}
		for i := range n {
			var b []byte
			var err error
			if keysOnly {
				b, err = api.Marshal(names[i])
			} else {
				b, err = api.Marshal(entries[i])
			}
			if err != nil {
				return err
			}
			if total > 0 || i > 0 {
				buf.WriteByte(',')
			}
			buf.Write(b)
		}
		total += n
		if !more {
			buf.WriteString("]}\n")
		}
		release, err := holdAnswerPart(w, buf.Len(), false)
		if err != nil {
			return err // once started, the bounds cut the listing off (the client asks again)
		}
		defer release()
		if !started {
			w.Header().Set("Content-Type", "application/json")
			setIndex(w, rev)
			w.WriteHeader(http.StatusOK)
			started = true
		}
		written += buf.Len()
		_, err = w.Write(buf.Bytes())
		return err
	})
	// The rate limit is charged for what the store was read for, the keys the answer left out
	// as if answered: a token whose grants are narrower than the prefix (one key) listing a
	// wide one (appliances) made the replica read all of it at its rate of requests, and paid
	// for its few entries. A paged answer is charged whole, once, as an answer written whole
	// (at most one burst), not for each page; one written whole (writeJSON) was charged.
	if started {
		s.chargeAnswer(principalOf(r), written+left)
	} else {
		s.chargeAnswer(principalOf(r), left)
	}
	if err != nil && started {
		// The answer's status is sent: cut it off, so that the client does not take what it
		// got for the whole listing.
		s.log.Warn("listing cut off", "request_id", info(r).id, "prefix", prefix, "err", err)
		panic(http.ErrAbortHandler)
	}
	return err
}
