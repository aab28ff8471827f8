package server

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoelace-dev/shoelace/internal/api"
	"github.com/shoelace-dev/shoelace/internal/testutil"
)

// etcdRanges is the count of range reads the package's embedded etcd has served (its
// etcd_mvcc_range_total), which counts the reads a request costs the store.
func etcdRanges(t *testing.T) float64 {
	t.Helper()
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "etcd_mvcc_range_total" {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatal("etcd_mvcc_range_total not found")
	return 0
}

// A run of thousands of records under sys/tokens/ that are no token's (only a direct etcd
// write makes them) cost a page that met it one etcd read per record with limit=1 (each
// record's value held until the answer was written), and those records' values were read
// though never listed. Now the run is read past by names only, many to a read: a page costs a
// few reads whatever the run's length, and every token is still listed once, no stray value
// in any answer (nor a record that decodes as a token's under such a key). So do records under
// a token's name that are no token's: a page ended on one (no token listed, a next naming
// nothing listed), at one read each.
func TestTokens_ListPagesPastARunOfStrayRecordsCheaply(t *testing.T) {
	f := newFixture(t)
	for _, name := range []string{"a", "b", "zz"} {
		f.newToken(api.TokenRequest{Name: name, Read: []string{"shared"}})
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: testutil.Etcd(t), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	const run = 3000
	base := f.st.Root() + "sys/" + tokenPrefix
	for i := 0; i < run; i += 100 {
		var ops []clientv3.Op
		for j := i; j < i+100; j++ {
			// "a/…" sorts between the tokens a and b; "zz x…" after every token.
			ops = append(ops, clientv3.OpPut(fmt.Sprintf("%sa/%05d", base, j), "STRAY-VALUE"))
		}
		ops = append(ops, clientv3.OpPut(fmt.Sprintf("%szz x%05d", base, i), strings.Repeat("STRAY-VALUE", 100)))
		if i < run/2 {
			// Token names whose records are no token's: between b and zz, and before and
			// after every token.
			for j := i; j < i+100; j++ {
				ops = append(ops, clientv3.OpPut(fmt.Sprintf("%sb%05d", base, j), "STRAY-VALUE"))
			}
		}
		if i == 0 {
			ops = append(ops, clientv3.OpPut(base+"0first", "STRAY-VALUE"), clientv3.OpPut(base+"zzz", "STRAY-VALUE"))
		}
		if _, err := cli.Txn(context.Background()).Then(ops...).Commit(); err != nil {
			t.Fatal(err)
		}
	}
	// A record that decodes as a token's, under a key that is no token name, is no more listed.
	forged := fmt.Sprintf(`{"name":"b/forged","hash":"%s","admin":true}`, strings.Repeat("0", 64))
	if _, err := cli.Put(context.Background(), base+"b/forged", forged); err != nil {
		t.Fatal(err)
	}
	want := []string{"a", "admin", "b", "zz"}
	if got := f.tokenNames(false); len(got) != len(want)+run+run/100+run/2+3 {
		t.Fatalf("the store holds %d token records", len(got))
	}
	for _, limit := range []int{1, 2, 1000} {
		if got := f.tokenPages("all=false", limit, nil); !slices.Equal(got, want) {
			t.Errorf("?limit=%d listed %v, want %v", limit, got, want)
		}
	}
	for _, q := range []string{"limit=1&after=a", "limit=1&after=admin", "limit=1&after=zz", "limit=1&after=b", "all&limit=1&after=a", "all&limit=2&after=b", "limit=1000&after=a", "all"} {
		before := etcdRanges(t)
		r := f.do("GET", "/v1/tokens?"+q, "")
		reads := etcdRanges(t) - before
		var l api.TokenList
		f.must(r, 200, &l)
		if strings.Contains(string(r.body), "STRAY") {
			t.Errorf("GET /v1/tokens?%s shows a stray record's value: %.200s", q, r.body)
		}
		// A read of names takes up to 1000 of them: the run of 3000 is a few reads, not 3000.
		if reads > 20 {
			t.Errorf("GET /v1/tokens?%s cost etcd %v range reads past a run of %d stray records, want a few", q, reads, run)
		}
	}
}
