package store

import (
	"context"
	"crypto/tls"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// ForeignEtcd is an etcd v3 cluster other than the store's, such as the one a confd keyspace
// lives in (shoelace import --from-etcd).
type ForeignEtcd struct {
	// Endpoints are its client URLs (https://etcd:2379).
	Endpoints []string
	// CACert, Cert and Key are PEM files: the CA that signs its certificate, and a client
	// certificate and key.
	CACert, Cert, Key string
	// DialTimeout bounds the connection; 0 means 5s.
	DialTimeout time.Duration
}

// ForeignKV is one key of a foreign etcd, as stored: bytes, which need not be UTF-8.
type ForeignKV struct {
	Key, Value []byte
}

// ReadForeign reads every key of f that starts with prefix (byte-wise, as etcd's prefix
// ranges do), sorted, at one revision, which it returns.
func ReadForeign(ctx context.Context, f ForeignEtcd, prefix string) ([]ForeignKV, int64, error) {
	tlsCfg, err := loadTLS(f.CACert, f.Cert, f.Key)
	if err != nil {
		return nil, 0, err
	}
	for _, e := range f.Endpoints {
		if tlsCfg == nil && strings.HasPrefix(e, "https://") {
			tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12} // the system's roots
		}
	}
	dial := f.DialTimeout
	if dial <= 0 {
		dial = 5 * time.Second
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: f.Endpoints, DialTimeout: dial, TLS: tlsCfg, Logger: zap.NewNop(), Context: ctx})
	if err != nil {
		return nil, 0, fmt.Errorf("etcd %s: %w", strings.Join(f.Endpoints, ","), err)
	}
	defer cli.Close()
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, 0, fmt.Errorf("etcd %s: read %q: %w", strings.Join(f.Endpoints, ","), prefix, clientv3.ContextError(ctx, err))
	}
	out := make([]ForeignKV, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out = append(out, ForeignKV{Key: kv.Key, Value: kv.Value})
	}
	return out, resp.Header.Revision, nil
}
