package store_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/server/store"
)

// wantCode fails the test unless err is an *api.Error with code whose message holds every want.
func wantCode(tb testing.TB, err error, code string, want ...string) {
	tb.Helper()
	var ae *api.Error
	if !errors.As(err, &ae) {
		tb.Fatalf("got error %v (%T), want an api.Error with code %s", err, err, code)
	}
	if ae.Code != code {
		tb.Fatalf("got code %s (%q), want %s", ae.Code, ae.Message, code)
	}
	for _, w := range want {
		if !strings.Contains(ae.Message, w) {
			tb.Fatalf("message %q does not mention %q", ae.Message, w)
		}
	}
}

func mustPut(tb testing.TB, s *store.Store, key, value string) int64 {
	tb.Helper()
	rev, err := s.Put(ctxT(tb), key, value, -1)
	if err != nil {
		tb.Fatalf("put %s: %v", key, err)
	}
	return rev
}

func keysOf(kvs []api.KV) []string {
	out := []string{}
	for _, kv := range kvs {
		out = append(out, kv.Key)
	}
	return out
}

// dump returns every user key and value of s.
func dump(tb testing.TB, s *store.Store) map[string]string {
	tb.Helper()
	kvs, _, err := s.List(ctxT(tb), "", false)
	if err != nil {
		tb.Fatalf("list: %v", err)
	}
	out := map[string]string{}
	for _, kv := range kvs {
		out[kv.Key] = kv.Value
	}
	return out
}

func TestStore_GetPutDelete(t *testing.T) {
	s := openStore(t)
	ctx := ctxT(t)

	_, rev0, err := s.Get(ctx, "shared/ntp")
	wantCode(t, err, api.CodeNotFound, `"shared/ntp"`)
	if rev0 <= 0 {
		t.Errorf("not found carries revision %d, want > 0", rev0)
	}

	value := "line 1\n  line 2 \x00 ünïcode\n"
	rev, err := s.Put(ctx, "shared/ntp", value, -1)
	if err != nil {
		t.Fatal(err)
	}
	kv, readRev, err := s.Get(ctx, "shared/ntp")
	if err != nil {
		t.Fatal(err)
	}
	want := api.KV{Key: "shared/ntp", Value: value, ModRevision: rev, CreateRevision: rev, Version: 1}
	if kv != want {
		t.Errorf("got %+v, want %+v", kv, want)
	}
	if readRev < rev {
		t.Errorf("read at %d, before the write at %d", readRev, rev)
	}

	rev2 := mustPut(t, s, "shared/ntp", "v2")
	kv, _, _ = s.Get(ctx, "shared/ntp")
	if kv.Value != "v2" || kv.ModRevision != rev2 || kv.CreateRevision != rev || kv.Version != 2 {
		t.Errorf("after overwrite got %+v", kv)
	}

	_, _, err = s.Delete(ctx, "shared/absent", false)
	wantCode(t, err, api.CodeNotFound, `"shared/absent"`)

	drev, n, err := s.Delete(ctx, "shared/ntp", false)
	if err != nil || n != 1 || drev <= rev2 {
		t.Fatalf("delete: rev %d deleted %d err %v", drev, n, err)
	}
	_, _, err = s.Get(ctx, "shared/ntp")
	wantCode(t, err, api.CodeNotFound)
}

func TestStore_InvalidKeysRefused(t *testing.T) {
	s := openStore(t)
	ctx := ctxT(t)
	for _, k := range []string{"", "/a", "a//b", "a/../b", "a/", "a b"} {
		_, err := s.Put(ctx, k, "v", -1)
		wantCode(t, err, api.CodeInvalidKey)
	}
	_, _, err := s.Delete(ctx, "", true)
	wantCode(t, err, api.CodeInvalidKey, "root")
	if got := dump(t, s); len(got) != 0 {
		t.Errorf("store holds %v after refused writes", got)
	}
}

func TestStore_PutCAS(t *testing.T) {
	s := openStore(t)
	ctx := ctxT(t)

	_, err := s.Put(ctx, "a/k", "v1", 5)
	wantCode(t, err, api.CodeConflict, `"a/k"`, "5", "does not exist")

	rev, err := s.Put(ctx, "a/k", "v1", 0)
	if err != nil {
		t.Fatalf("cas 0 on an absent key: %v", err)
	}
	_, err = s.Put(ctx, "a/k", "v2", 0)
	wantCode(t, err, api.CodeConflict, `"a/k"`, fmt.Sprint(rev), "not to exist")

	_, err = s.Put(ctx, "a/k", "v2", rev-1)
	wantCode(t, err, api.CodeConflict, `"a/k"`, fmt.Sprintf("expected mod_revision %d, found %d", rev-1, rev))

	kv, _, _ := s.Get(ctx, "a/k")
	if kv.Value != "v1" || kv.ModRevision != rev {
		t.Fatalf("a failed cas changed the key: %+v", kv)
	}
	rev2, err := s.Put(ctx, "a/k", "v2", rev)
	if err != nil || rev2 <= rev {
		t.Fatalf("cas with the right revision: rev %d err %v", rev2, err)
	}
	if kv, _, _ := s.Get(ctx, "a/k"); kv.Value != "v2" {
		t.Fatalf("got %q after cas put", kv.Value)
	}
}

func seedSegments(tb testing.TB, s *store.Store) {
	for _, k := range []string{
		"appliances/web", "appliances/web/a", "appliances/web/b/c",
		"appliances/web-frontend/x", "appliances/web.x/y", "appliances/webx",
		"appliances/we", "shared/s",
	} {
		mustPut(tb, s, k, "value of "+k)
	}
}

func TestStore_ListWholeSegments(t *testing.T) {
	s := openStore(t)
	ctx := ctxT(t)
	seedSegments(t, s)

	for _, prefix := range []string{"appliances/web", "appliances/web/"} {
		kvs, rev, err := s.List(ctx, prefix, false)
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"appliances/web", "appliances/web/a", "appliances/web/b/c"}
		if got := keysOf(kvs); !reflect.DeepEqual(got, want) {
			t.Errorf("list %q: got %v, want %v", prefix, got, want)
		}
		for _, kv := range kvs {
			if kv.Value != "value of "+kv.Key || kv.ModRevision == 0 || kv.ModRevision > rev {
				t.Errorf("list %q: entry %+v at revision %d", prefix, kv, rev)
			}
		}
	}

	kvs, _, err := s.List(ctx, "appliances/web", true)
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range kvs {
		if kv.Value != "" || kv.ModRevision == 0 {
			t.Errorf("keys-only entry %+v", kv)
		}
	}

	all, _, err := s.List(ctx, "", true)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"appliances/we", "appliances/web", "appliances/web-frontend/x", "appliances/web.x/y",
		"appliances/web/a", "appliances/web/b/c", "appliances/webx", "shared/s"}
	if got := keysOf(all); !reflect.DeepEqual(got, want) {
		t.Errorf("list everything: got %v, want %v", got, want)
	}

	none, rev, err := s.List(ctx, "nothing/here", false)
	if err != nil || len(none) != 0 || rev <= 0 {
		t.Errorf("empty list: %v rev %d err %v", none, rev, err)
	}
	_, _, err = s.List(ctx, "bad//prefix", false)
	wantCode(t, err, api.CodeInvalidKey)
}

func TestStore_DeleteRecurseWholeSegments(t *testing.T) {
	s := openStore(t)
	ctx := ctxT(t)
	seedSegments(t, s)

	_, n, err := s.Delete(ctx, "appliances/web", true)
	if err != nil || n != 3 {
		t.Fatalf("recursive delete: deleted %d, err %v; want 3", n, err)
	}
	want := map[string]string{}
	for _, k := range []string{"appliances/web-frontend/x", "appliances/web.x/y", "appliances/webx", "appliances/we", "shared/s"} {
		want[k] = "value of " + k
	}
	if got := dump(t, s); !reflect.DeepEqual(got, want) {
		t.Errorf("after deleting appliances/web recursively: got %v, want %v", got, want)
	}
	_, _, err = s.Delete(ctx, "appliances/web", true)
	wantCode(t, err, api.CodeNotFound, `"appliances/web"`)

	// Recursive delete of a subtree without the key itself.
	mustPut(t, s, "x/y/z", "1")
	if _, n, err := s.Delete(ctx, "x", true); err != nil || n != 1 {
		t.Fatalf("delete x recursively: %d %v", n, err)
	}
}

func TestStore_KVNeverReachesSys(t *testing.T) {
	s := openStore(t)
	ctx := ctxT(t)
	if _, err := s.SysPut(ctx, "settings/x", []byte("sys"), -1); err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, "sys/settings/x", "user")
	all := dump(t, s)
	if !reflect.DeepEqual(all, map[string]string{"sys/settings/x": "user"}) {
		t.Errorf("user keys: %v", all)
	}
	if _, _, err := s.Delete(ctx, "sys", true); err != nil {
		t.Fatal(err)
	}
	v, _, err := s.SysGet(ctx, "settings/x")
	if err != nil || string(v) != "sys" {
		t.Fatalf("system key after deleting user key sys/: %q %v", v, err)
	}
	if _, _, err := s.SysGet(ctx, "store-id"); err != nil {
		t.Fatalf("store id: %v", err)
	}
}

func TestStore_Sys(t *testing.T) {
	s := openStore(t)
	ctx := ctxT(t)
	_, mod, err := s.SysGet(ctx, "tokens/a")
	wantCode(t, err, api.CodeNotFound, `"tokens/a"`)
	if mod != 0 {
		t.Errorf("absent key has mod_revision %d", mod)
	}
	rev, err := s.SysPut(ctx, "tokens/a", []byte("A"), 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.SysPut(ctx, "tokens/a", []byte("A2"), 0)
	wantCode(t, err, api.CodeConflict, `"tokens/a"`)
	v, mod, err := s.SysGet(ctx, "tokens/a")
	if err != nil || string(v) != "A" || mod != rev {
		t.Fatalf("get: %q %d %v", v, mod, err)
	}
	if _, err := s.SysPut(ctx, "tokens/a", []byte("A2"), mod); err != nil {
		t.Fatal(err)
	}
	s.SysPut(ctx, "tokens/b", []byte("B"), -1)
	s.SysPut(ctx, "tokens-old/c", []byte("C"), -1)
	s.SysPut(ctx, "tokens", []byte("T"), -1)

	m, _, err := s.SysList(ctx, "tokens/")
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string][]byte{"tokens/a": []byte("A2"), "tokens/b": []byte("B")}; !reflect.DeepEqual(m, want) {
		t.Errorf("sys list tokens/: got %q, want %q", m, want)
	}
	m, _, _ = s.SysList(ctx, "tokens")
	if len(m) != 3 || m["tokens-old/c"] != nil {
		t.Errorf("sys list tokens: got %q", m)
	}
	m, _, _ = s.SysList(ctx, "")
	if len(m) != 6 { // store-id and below-checked too
		t.Errorf("sys list everything: got %q", m)
	}
	if _, err := s.SysDelete(ctx, "tokens/a"); err != nil {
		t.Fatal(err)
	}
	_, err = s.SysDelete(ctx, "tokens/a")
	wantCode(t, err, api.CodeNotFound)
	_, err = s.SysPut(ctx, "", nil, -1)
	wantCode(t, err, api.CodeInvalidKey)
	if got := dump(t, s); len(got) != 0 {
		t.Errorf("system writes show up as user keys: %v", got)
	}
}

// SysDeleteIfPresent deletes only while the keys it depends on exist: of two records that each
// depend on the other, only one can go.
func TestSysDeleteIfPresent(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	for _, k := range []string{"tokens/a", "tokens/b"} {
		if _, err := s.SysPut(ctx, k, []byte("x"), -1); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.SysDeleteIfPresent(ctx, "tokens/a", []string{"tokens/b"}); err != nil {
		t.Fatalf("delete a while b exists: %v", err)
	}
	if _, err := s.SysDeleteIfPresent(ctx, "tokens/b", []string{"tokens/a"}); !errors.Is(err, api.ErrConflict) {
		t.Fatalf("delete b after a went = %v, want a conflict", err)
	}
	if _, _, err := s.SysGet(ctx, "tokens/b"); err != nil {
		t.Fatalf("b was deleted anyway: %v", err)
	}
	if _, err := s.SysDeleteIfPresent(ctx, "tokens/gone", []string{"tokens/b"}); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("delete of an absent key = %v, want not found", err)
	}
}

// SysGets reads keys written together as they were written, at one revision: a reader racing
// a writer that puts two keys in one transaction sees both or neither, never one of them (two
// SysGet calls could fall on either side of the write).
func TestSysGets_KeysWrittenTogetherSeenTogether(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	got, err := s.SysGets(ctx, "instances/x", "tokens/x")
	if err != nil || len(got) != 2 || got[0].Rev != 0 || got[1].Rev != 0 || got[0].Data != nil {
		t.Fatalf("absent keys: %+v %v, want two zero values", got, err)
	}
	if _, err := s.SysGets(ctx, "tokens/x", ""); api.AsError(err).Code != api.CodeInvalidKey {
		t.Fatalf("an empty key: %v, want invalid_key", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 200 {
			v := []byte(fmt.Sprint(i))
			if _, err := s.SysPutAll(ctx, map[string][]byte{"instances/x": v, "tokens/x": v}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for reads := 0; ; reads++ {
		select {
		case <-done:
			if reads == 0 {
				t.Fatal("no read raced the writes")
			}
			return
		default:
		}
		got, err := s.SysGets(ctx, "instances/x", "tokens/x")
		if err != nil {
			t.Fatal(err)
		}
		if got[0].Rev != got[1].Rev || string(got[0].Data) != string(got[1].Data) {
			t.Fatalf("read %d: %q at %d beside %q at %d, written together", reads, got[0].Data, got[0].Rev, got[1].Data, got[1].Rev)
		}
	}
}
