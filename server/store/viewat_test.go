package store_test

import (
	"reflect"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/api"
)

func TestStore_ViewAt(t *testing.T) {
	s := openStore(t)
	ctx := ctxT(t)
	mustPut(t, s, "shared/system/ntp", "shared-ntp")
	r1 := mustPut(t, s, "appliances/web/app/port", "8080")
	r2 := mustPut(t, s, "appliances/web/app/port", "8081")
	r3 := mustPut(t, s, "shared/system/dns", "shared-dns")
	mustPut(t, s, "appliances/web/app/port", "8082")

	for _, c := range []struct {
		rev  int64
		want map[string]string
	}{
		{r1, map[string]string{"system/ntp": "shared-ntp", "app/port": "8080"}},
		{r2, map[string]string{"system/ntp": "shared-ntp", "app/port": "8081"}},
		{r3, map[string]string{"system/ntp": "shared-ntp", "system/dns": "shared-dns", "app/port": "8081"}},
	} {
		v, err := s.ViewAt(ctx, "web", c.rev)
		if err != nil {
			t.Fatalf("view at %d: %v", c.rev, err)
		}
		if v.Revision != c.rev || v.Appliance != "web" || !reflect.DeepEqual(v.Keys, c.want) {
			t.Errorf("view at %d: got %+v, want keys %v at exactly that revision", c.rev, v, c.want)
		}
	}

	// Before the appliance had a key of its own: not found, at that revision.
	v, err := s.ViewAt(ctx, "web", r1-1)
	wantCode(t, err, api.CodeNotFound, `appliance "web" has no keys`)
	if v.Revision != r1-1 {
		t.Errorf("not-found view carries revision %d, want %d", v.Revision, r1-1)
	}

	// A revision the store has not reached falls back to a read at the current revision.
	cur, err := s.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	v, err = s.ViewAt(ctx, "web", cur+1000)
	if err != nil || v.Revision < cur || v.Keys["app/port"] != "8082" {
		t.Errorf("view ahead of the store: got %+v, %v; want the current view at >= %d", v, err, cur)
	}
	// rev <= 0 is a plain current read.
	if v, err := s.ViewAt(ctx, "web", 0); err != nil || v.Keys["app/port"] != "8082" {
		t.Errorf("view at 0: got %+v, %v", v, err)
	}
	// A compacted revision falls back to a read at the current revision too.
	if err := s.Compact(ctx, cur); err != nil {
		t.Fatalf("compact: %v", err)
	}
	v, err = s.ViewAt(ctx, "web", r1)
	if err != nil || v.Revision < cur || v.Keys["app/port"] != "8082" {
		t.Errorf("view at compacted %d: got %+v, %v; want the current view at >= %d", r1, v, err, cur)
	}
	_, err = s.ViewAt(ctx, "../x", r1)
	wantCode(t, err, api.CodeInvalidName)
}
