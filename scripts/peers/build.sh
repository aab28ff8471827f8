#!/usr/bin/env bash
# Builds the peers `make bench` measures Shoelace against, into DIR (default bin/peers), once:
#   confd            — confd v0.16.0 with its etcd v3 backend (write → file latency, footprint)
#   consul-template  — consul-template v0.41.1 (footprint)
#   etcd, etcdctl    — etcd v3.7.3, the version of go.mod: the real etcd that rewriting the peers'
#                      goldens runs confd against (go test ./templates … -args -peers DIR)
# All are built the way the agent is (-trimpath, stripped: -ldflags "-s -w") so that their sizes
# compare. Everything comes from the Go module proxy; about 2 minutes from an empty module cache.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(mkdir -p "${1:-bin/peers}" && cd "${1:-bin/peers}" && pwd)
# etcd and etcdctl from this module's go.mod (its etcd version), which must not change: built
# before GOFLAGS=-mod=mod below.
for tool in etcd:go.etcd.io/etcd/server/v3 etcdctl:go.etcd.io/etcd/etcdctl/v3; do
	if [ ! -x "$out/${tool%%:*}" ]; then
		(cd "$here/../.." && GOTOOLCHAIN=local CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/${tool%%:*}" "${tool#*:}")
	fi
done
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
if [ ! -x "$out/confd" ]; then
	# confd v0.16.0 predates Go modules: its source from the proxy, built with pinned versions.
	dir=$(go mod download -json github.com/kelseyhightower/confd@v0.16.0 | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
	[ -n "$dir" ] && [ -f "$dir/confd.go" ] || { echo "confd v0.16.0 source not available from the module proxy" >&2; exit 1; }
	work=$(mktemp -d)
	trap 'rm -rf "$work"' EXIT
	cp -r "$dir/." "$work/"
	chmod -R u+w "$work"
	cp "$here/confd/go.mod" "$here/confd/go.sum" "$work/"
	(cd "$work" && go build -trimpath -ldflags "-s -w" -o "$out/confd" .)
fi
if [ ! -x "$out/consul-template" ]; then
	GOBIN="$out" go install -trimpath -ldflags "-s -w" github.com/hashicorp/consul-template@v0.41.1
fi
