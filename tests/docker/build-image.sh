#!/usr/bin/env bash
# Makes the image the Docker tests use, with no registry: a Debian
# bookworm base made with debootstrap from the machine's own apt mirror
# (imported as debian:bookworm-slim, the tag the Dockerfile starts from),
# then the Dockerfile's `host` target over the binaries built on the host
# (BIN_DIR, default target/debug) and the built web app (webapp/dist).
# Starts dockerd if none answers and leaves it running for what comes next
# (its pid in target/docker/dockerd.pid; `kill $(cat …)` stops it).
#
# Usage: bash tests/docker/build-image.sh [TAG]   (default rondo:local)
set -euo pipefail
cd "$(dirname "$0")/../.."
tag=${1:-rondo:local}
bin=${BIN_DIR:-target/debug}
. tests/docker/common.sh
ensure_dockerd
ensure_base
work=$docker_work

ctx="$work/context"
rm -rf "$ctx"
mkdir -p "$ctx/bin"
for b in rondo rondo-node rondo-gateway; do
  [ -x "$bin/$b" ] || { echo "$bin/$b missing: cargo build --workspace --bins" >&2; exit 1; }
  cp "$bin/$b" "$ctx/bin/"
done
[ -f webapp/dist/index.html ] || { echo "webapp/dist missing: (cd webapp && npm run build)" >&2; exit 1; }
cp -r webapp/dist "$ctx/webapp"
DOCKER_BUILDKIT=0 docker build -q --target host -t "$tag" -f Dockerfile "$ctx" >/dev/null
echo "$tag"
