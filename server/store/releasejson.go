package store

import (
	"encoding/json"
	"strconv"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// encodeRelease is json.Marshal(rec), byte for byte, written without reflection: every API
// write encodes its release record, and json.Marshal's walk of the struct (with time.Time's
// MarshalJSON and the check of its output) was ~2% of the server's CPU under 64 writers. A
// string that needs escaping, or a time json.Marshal refuses (a year outside [0,9999], a
// zone's hour outside [0,23]), is left to encoding/json.
// TestEncodeRelease_AsJSONMarshal compares the two, and fails when api.Release or
// api.ReleaseChange gains a field this does not write.
func encodeRelease(rec *api.Release) ([]byte, error) { return appendRelease(nil, rec) }

// appendRelease is encodeRelease appending to b.
func appendRelease(b []byte, rec *api.Release) ([]byte, error) {
	if y := rec.Time.Year(); y < 0 || y > 9999 {
		return marshalRelease(b, rec)
	}
	if _, off := rec.Time.Zone(); off <= -24*3600 || off >= 24*3600 {
		return marshalRelease(b, rec) // a zone's hour outside [0,23]: json.Marshal refuses it
	}
	b = append(b, `{"revision":`...)
	b = strconv.AppendInt(b, rec.Revision, 10)
	b = appendMember(b, "id", rec.ID)
	b = append(appendName(b, "time"), '"')
	b = rec.Time.AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	b = appendMember(b, "token", rec.Token)
	b = appendOmitEmpty(b, "remote", rec.Remote)
	b = appendOmitEmpty(b, "message", rec.Message)
	b = appendOmitEmpty(b, "source", rec.Source)
	b = appendMember(b, "kind", rec.Kind)
	if rec.RollbackTo != 0 {
		b = appendInt(b, "rollback_to", rec.RollbackTo)
	}
	b = appendOmitEmpty(b, "rollout", rec.Rollout)
	b = append(b, `,"changes":`...)
	if rec.Changes == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i := range rec.Changes {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendChange(b, &rec.Changes[i])
		}
		b = append(b, ']')
	}
	b = appendOmitEmpty(b, "copy", rec.Copy)
	if rec.CopyBytes != 0 {
		b = appendInt(b, "copy_bytes", rec.CopyBytes)
	}
	b = appendOmitEmpty(b, "copy_skipped", rec.CopySkipped)
	return append(b, '}'), nil
}

// marshalRelease appends json.Marshal's encoding of rec to b. It marshals a copy, so that rec
// (made on its caller's stack) does not escape to the heap on the common path.
func marshalRelease(b []byte, rec *api.Release) ([]byte, error) {
	data, err := json.Marshal(*rec)
	if err != nil {
		return nil, err
	}
	return append(b, data...), nil
}

func appendChange(b []byte, c *api.ReleaseChange) []byte {
	b = append(b, `{"scope":`...)
	b = appendString(b, c.Scope)
	b = appendOmitEmpty(b, "appliance", c.Appliance)
	for _, l := range []struct {
		name  string
		names []string
	}{{"created", c.Created}, {"changed", c.Changed}, {"deleted", c.Deleted}} {
		if len(l.names) == 0 {
			continue
		}
		b = append(appendName(b, l.name), '[')
		for i, n := range l.names {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, n)
		}
		b = append(b, ']')
	}
	b = appendInt(b, "created_count", int64(c.CreatedCount))
	b = appendInt(b, "changed_count", int64(c.ChangedCount))
	b = appendInt(b, "deleted_count", int64(c.DeletedCount))
	return append(b, '}')
}

// appendName appends ,"name": (name needs no escape).
func appendName(b []byte, name string) []byte {
	b = append(b, `,"`...)
	b = append(b, name...)
	return append(b, `":`...)
}

// appendMember appends ,"name":s.
func appendMember(b []byte, name, s string) []byte { return appendString(appendName(b, name), s) }

// appendInt appends ,"name":n.
func appendInt(b []byte, name string, n int64) []byte {
	return strconv.AppendInt(appendName(b, name), n, 10)
}

// appendOmitEmpty is appendMember, nothing for an empty s (omitempty).
func appendOmitEmpty(b []byte, name, s string) []byte {
	if s == "" {
		return b
	}
	return appendMember(b, name, s)
}

// appendString appends s as json.Marshal writes it: as it is, quoted, when it holds only
// printable ASCII that needs no escape (json.Marshal escapes '"', '\\', and '<', '>', '&' for
// HTML); else through json.Marshal.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
