package store

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/shoelace-dev/shoelace/internal/api"
)

// encodeRelease writes what json.Marshal writes of any record: strings of every kind
// (escapes, HTML characters, control characters, invalid UTF-8, U+2028), empty and missing
// lists, zero and non-zero numbers, times of every precision and zone.
func TestEncodeRelease_AsJSONMarshal(t *testing.T) {
	strs := []string{"", "a", "appliances/web/port", "tok-1", "127.0.0.1:5555", `say "hi"`, `back\slash`,
		"<b>&amp;</b>", "tab\tnew\nline\r", "\x00\x01\x1f\x7f", "\b\f", "héllo wörld", "日本語", "\xff\xfe bad",
		"line\u2028sep\u2029", "emoji 🎉", "a/b/c-d_e.f~g"}
	str := func(r *rand.Rand) string { return strs[r.IntN(len(strs))] }
	list := func(r *rand.Rand) []string {
		switch r.IntN(3) {
		case 0:
			return nil
		case 1:
			return []string{}
		}
		l := make([]string, 1+r.IntN(3))
		for i := range l {
			l[i] = str(r)
		}
		return l
	}
	num := func(r *rand.Rand) int64 {
		return []int64{0, 1, -1, 42, 1 << 40, -(1 << 62)}[r.IntN(6)]
	}
	zones := []*time.Location{time.UTC, time.FixedZone("x", 3600+1800), time.FixedZone("y", -7*3600)}
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 5000 {
		rec := api.Release{Revision: num(r), ID: str(r), Token: str(r), Remote: str(r), Message: str(r), Source: str(r),
			Kind: str(r), RollbackTo: num(r), Rollout: str(r), Copy: str(r), CopyBytes: num(r), CopySkipped: str(r),
			Time: time.Unix(r.Int64N(1<<34), []int64{0, 1, 120_000_000, 123_456_789, 999_999_999}[r.IntN(5)]).In(zones[r.IntN(len(zones))])}
		switch r.IntN(3) {
		case 0:
			rec.Changes = nil
		case 1:
			rec.Changes = []api.ReleaseChange{}
		default:
			for range 1 + r.IntN(3) {
				rec.Changes = append(rec.Changes, api.ReleaseChange{Scope: str(r), Appliance: str(r), Created: list(r),
					Changed: list(r), Deleted: list(r), CreatedCount: int(num(r)), ChangedCount: int(num(r)), DeletedCount: int(num(r))})
			}
		}
		if i%500 == 0 {
			rec.Time = time.Date(10000+i, 1, 1, 0, 0, 0, 0, time.UTC) // json.Marshal refuses it
		}
		want, wantErr := json.Marshal(rec)
		got, gotErr := encodeRelease(&rec)
		if (wantErr != nil) != (gotErr != nil) || !bytes.Equal(got, want) {
			t.Fatalf("record %d:\n got %s (%v)\nwant %s (%v)", i, got, gotErr, want, wantErr)
		}
	}
}

// encodeRelease writes every field: a field added to api.Release or api.ReleaseChange must be
// added to it too (and to this list).
func TestEncodeRelease_KnowsEveryField(t *testing.T) {
	for _, tc := range []struct {
		v    any
		tags []string
	}{
		{api.Release{}, []string{"revision", "id", "time", "token", "remote,omitempty", "message,omitempty", "source,omitempty",
			"kind", "rollback_to,omitempty", "rollout,omitempty", "changes", "copy,omitempty", "copy_bytes,omitempty", "copy_skipped,omitempty"}},
		{api.ReleaseChange{}, []string{"scope", "appliance,omitempty", "created,omitempty", "changed,omitempty", "deleted,omitempty",
			"created_count", "changed_count", "deleted_count"}},
	} {
		typ := reflect.TypeOf(tc.v)
		var tags []string
		for i := range typ.NumField() {
			tags = append(tags, typ.Field(i).Tag.Get("json"))
		}
		if !reflect.DeepEqual(tags, tc.tags) {
			t.Errorf("%s's fields are %q; encodeRelease writes %q", typ, tags, tc.tags)
		}
	}
}
