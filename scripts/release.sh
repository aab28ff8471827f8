#!/usr/bin/env bash
# Builds a release of one version into OUT (default dist/release/VERSION):
#   shoelace-agent_VERSION_OS_ARCH[.exe] for linux/amd64, linux/arm64, windows/amd64, darwin/arm64;
#   shoelace_VERSION_linux_ARCH for linux/amd64 and linux/arm64;
#   the .deb and .rpm of both packages for linux/amd64 and linux/arm64;
#   sbom.cdx.json (CycloneDX, from the kept go tool cyclonedx-gomod);
#   SHA256SUMS of all of them.
# Reproducible: -trimpath, an empty build id, the commit's time as SOURCE_DATE_EPOCH for the
# packages' file times, no timestamp or serial in the SBOM: two runs of one commit give the same
# bytes (scripts/release_test.go checks it).
#
# Usage: VERSION=v1.2.3 bash scripts/release.sh   (make release VERSION=v1.2.3)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
VERSION="${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo 0.0.0-dev)}"
OUT="${OUT:-dist/release/$VERSION}"
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"
LDFLAGS="-s -w -buildid= -X main.version=$VERSION"
# The agent's cold packages are compiled without inlining, as make build does: the file says why.
noinline="$(grep '^[[:alnum:]]' cmd/shoelace-agent/noinline.txt)"
AGENT_GCFLAGS=()
for p in $noinline; do AGENT_GCFLAGS+=("-gcflags=$p=-l"); done

rm -rf "$OUT"
mkdir -p "$OUT"
build() { # build OS ARCH PKG NAME
	local ext="" flags=()
	[[ $1 == windows ]] && ext=.exe
	if [[ $3 == shoelace-agent ]]; then
		flags=("${AGENT_GCFLAGS[@]}")
	fi
	echo "building $4 $VERSION for $1/$2" >&2
	CGO_ENABLED=0 GOOS=$1 GOARCH=$2 go build -trimpath -tags urfave_cli_no_docs -ldflags "$LDFLAGS" "${flags[@]}" -o "$OUT/${4}_${VERSION}_$1_$2$ext" "./cmd/$3"
}
for t in linux/amd64 linux/arm64 windows/amd64 darwin/arm64; do
	build "${t%/*}" "${t#*/}" shoelace-agent shoelace-agent
done
for arch in amd64 arm64; do
	build linux "$arch" shoelace shoelace
	stage="$(mktemp -d)"
	cp "$OUT/shoelace_${VERSION}_linux_$arch" "$stage/shoelace"
	cp "$OUT/shoelace-agent_${VERSION}_linux_$arch" "$stage/shoelace-agent"
	# The packages' files get the commit's time; the binaries are the ones above.
	touch -d "@$SOURCE_DATE_EPOCH" "$stage"/*
	VERSION="$VERSION" ARCH="$arch" DIST="$OUT" BIN_DIR="$stage" bash packaging/package.sh >/dev/null
	rm -rf "$stage"
done
go tool cyclonedx-gomod mod -json -noserial -notimestamp -licenses -type application -output "$OUT/sbom.cdx.json" . 2>/dev/null
(cd "$OUT" && find . -maxdepth 1 -type f ! -name SHA256SUMS -printf '%f\n' | LC_ALL=C sort | xargs sha256sum >SHA256SUMS)
echo "$OUT"
