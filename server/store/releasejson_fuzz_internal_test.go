package store

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// FuzzEncodeRelease: encodeRelease writes what json.Marshal writes, error or bytes, for any
// strings (the fuzzer's, split on '|' into the record's fields and lists), numbers, times and
// zones (any offset, seconds included). Seeds in testdata/fuzz/FuzzEncodeRelease.
func FuzzEncodeRelease(f *testing.F) {
	f.Add("id|tok|1.2.3.4|msg|src|apply|ro|copy|skip|appliance|web|a/b", int64(7), int64(0), int64(1700000000), int64(5), 0, 2)
	f.Add("\xff\xfe|\u2028\u2029|<>&|\x00\x1f\x7f|\"\\|", int64(-1), int64(1<<62), int64(-62135596800), int64(999999999), -86399, 3)
	f.Add("", int64(0), int64(0), int64(253402300799), int64(0), 3600*24, 1)
	f.Add("", int64(0), int64(0), int64(0), int64(0), 3600*24, 1) // +24:00: json.Marshal refuses it
	f.Fuzz(func(t *testing.T, s string, rev, num, sec, nsec int64, offset int, nchanges int) {
		p := strings.Split(s, "|")
		at := func(i int) string {
			if i < len(p) {
				return p[i]
			}
			return ""
		}
		rec := api.Release{Revision: rev, ID: at(0), Token: at(1), Remote: at(2), Message: at(3), Source: at(4),
			Kind: at(5), RollbackTo: num, Rollout: at(6), Copy: at(7), CopyBytes: -num, CopySkipped: at(8),
			Time: time.Unix(sec, nsec).In(time.FixedZone(at(9), offset))}
		switch {
		case nchanges < 0:
		case nchanges == 0:
			rec.Changes = []api.ReleaseChange{}
		default:
			for i := range nchanges % 8 {
				c := api.ReleaseChange{Scope: at(10 + i), Appliance: at(11 + i), CreatedCount: int(num), ChangedCount: int(rev), DeletedCount: -i}
				if len(p) > 12+i {
					c.Created = p[12+i:]
				}
				if i%2 == 1 {
					c.Changed = []string{}
					c.Deleted = p
				}
				rec.Changes = append(rec.Changes, c)
			}
		}
		want, wantErr := json.Marshal(rec)
		got, gotErr := encodeRelease(&rec)
		if (wantErr != nil) != (gotErr != nil) || (wantErr == nil && !bytes.Equal(got, want)) {
			t.Fatalf("record %+v:\n got %s (%v)\nwant %s (%v)", rec, got, gotErr, want, wantErr)
		}
	})
}
