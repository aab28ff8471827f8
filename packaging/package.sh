#!/usr/bin/env bash
# Builds the Shoelace packages:
#   $DIST/shoelace-agent_<version>_<arch>.deb and .rpm
#   $DIST/shoelace-server_<version>_<arch>.deb and .rpm
# with nfpm (a go tool of packaging/nfpm.mod) from binaries it builds itself.
#
# Usage: bash packaging/package.sh           build the packages
#        bash packaging/package.sh version   print the package version only
# Environment (all optional):
#   VERSION   what `version` prints, default `git describe --tags --always --dirty`
#             (0.0.0-dev without git); made into a deb/rpm version (PKG_VERSION)
#   ARCH      Go architecture, default `go env GOARCH`
#   DIST      output directory, default dist
#   FORMATS   default "deb rpm"
#   BIN_DIR   take shoelace and shoelace-agent from this directory instead of
#             building them (they must be linux/$ARCH binaries)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

# pkg_version turns a `git describe` string into a version that dpkg and rpm
# both accept and order correctly: no '-', '~' for pre-releases (sorts
# before the release), '+' for commits after a tag (sorts after it).
#   v1.2.3 → 1.2.3          v1.2.3-4-gabc123-dirty → 1.2.3+4.gabc123.dirty
#   v1.3.0-rc1 → 1.3.0~rc1  abc1234 (no tag; N commits) → 0.0.0~N.gabc1234  dev → 0.0.0~dev
pkg_version() {
	local v="${1#v}" dirty="" post=""
	if [[ $v == *-dirty ]]; then
		dirty=dirty
		v="${v%-dirty}"
	fi
	if [[ $v =~ ^(.+)-([0-9]+)-g([0-9a-f]+)$ ]]; then
		v="${BASH_REMATCH[1]}"
		post="${BASH_REMATCH[2]}.g${BASH_REMATCH[3]}"
	fi
	local full=""
	if [[ $v =~ ^[0-9a-f]{4,40}$ ]]; then
		full="$(git rev-parse -q --verify "$v^{commit}" 2>/dev/null || true)"
	fi
	if [[ -n $full && $full == "$v"* ]]; then
		# A bare commit of this repository (no tag yet): its commit count first, so that
		# later builds sort after earlier ones (hashes are in no order), and a hash of
		# digits only never passes for a version above every release.
		v="0.0.0~$(git rev-list --count "$full").g$v"
	elif [[ $v =~ ^[0-9a-f]{4,40}$ && ! $v =~ ^[0-9]+$ ]]; then
		v="0.0.0~g$v" # a bare commit: no tag yet
	elif [[ ! $v =~ ^[0-9] ]]; then
		v="0.0.0~$v"
	fi
	v="${v//-/\~}"
	local extra="$post"
	if [[ -n $dirty ]]; then
		extra="${extra:+$extra.}$dirty"
	fi
	v="$v${extra:++$extra}"
	# Anything else dpkg or rpm could refuse becomes a dot.
	printf '%s\n' "${v//[^A-Za-z0-9.+~]/.}"
}

VERSION="${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo 0.0.0-dev)}"
PKG_VERSION="${PKG_VERSION:-$(pkg_version "$VERSION")}"
if [[ ${1:-} == version ]]; then
	echo "$PKG_VERSION"
	exit 0
fi
if [[ $# -gt 0 ]]; then
	echo "usage: bash packaging/package.sh [version]" >&2
	exit 2
fi

ARCH="${ARCH:-$(go env GOARCH)}"
DIST="${DIST:-dist}"
FORMATS="${FORMATS:-deb rpm}"

# Temporary directories made here, removed at exit (never BIN_DIR).
CLEANUP=()
trap 'rm -rf "${CLEANUP[@]}"' EXIT
if [[ -n ${BIN_DIR:-} ]]; then
	STAGE="$(cd "$BIN_DIR" && pwd)"
else
	STAGE="$(mktemp -d)"
	CLEANUP+=("$STAGE")
	echo "building shoelace and shoelace-agent $VERSION for linux/$ARCH" >&2
	# The agent's cold packages are compiled without inlining, as make build does: the file says why.
	noinline="$(grep '^[[:alnum:]]' cmd/shoelace-agent/noinline.txt)"
	agent_gcflags=()
	for p in $noinline; do agent_gcflags+=("-gcflags=$p=-l"); done
	for cmd in shoelace shoelace-agent; do
		flags=()
		if [[ $cmd == shoelace-agent ]]; then
			flags=("${agent_gcflags[@]}")
		fi
		if ! CGO_ENABLED=0 GOOS=linux GOARCH="$ARCH" go build -trimpath -tags urfave_cli_no_docs \
			-ldflags "-s -w -X main.version=$VERSION" "${flags[@]}" \
			-o "$STAGE/" "./cmd/$cmd"; then
			echo "package.sh: building cmd/$cmd failed" >&2
			exit 3 # the tests tell this apart from a packaging failure
		fi
	done
fi
# The shell completion scripts (what `shoelace completion bash` prints), from the host.
COMPLETIONS="$(mktemp -d)"
CLEANUP+=("$COMPLETIONS")
go run ./scripts/completions "$COMPLETIONS"
export ARCH PKG_VERSION STAGE COMPLETIONS

mkdir -p "$DIST"
for pkg in agent server; do
	for format in $FORMATS; do
		target="$DIST/shoelace-${pkg}_${PKG_VERSION}_${ARCH}.$format"
		go tool -modfile=packaging/nfpm.mod nfpm package --config "packaging/nfpm-$pkg.yaml" \
			--packager "$format" --target "$target" >&2
		echo "$target"
	done
done
