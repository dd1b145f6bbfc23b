#!/usr/bin/env bash
# Makes the image the Docker tests use, with no registry: a Debian
# bookworm base made with debootstrap from the machine's own apt mirror
# (imported as debian:bookworm-slim, the tag the Dockerfile starts from),
# then the Dockerfile's `host` target over the binaries built on the host
# (BIN_DIR, default target/debug) and the built web app (webapp/dist).
# Starts dockerd if none answers (its pid in target/docker/dockerd.pid, for
# tests/docker/stop-dockerd.sh).
#
# Usage: bash tests/docker/build-image.sh [TAG]   (default rondo:local)
set -euo pipefail
cd "$(dirname "$0")/../.."
tag=${1:-rondo:local}
bin=${BIN_DIR:-target/debug}
work=target/docker
mkdir -p "$work"

if ! docker info >/dev/null 2>&1; then
  command -v dockerd >/dev/null || { echo "no dockerd: apt-get install docker.io" >&2; exit 1; }
  dockerd >"$work/dockerd.log" 2>&1 &
  echo $! >"$work/dockerd.pid"
  for _ in $(seq 120); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { tail -20 "$work/dockerd.log" >&2; exit 1; }
fi

if ! docker image inspect debian:bookworm-slim >/dev/null 2>&1; then
  command -v debootstrap >/dev/null || { echo "no debootstrap: apt-get install debootstrap" >&2; exit 1; }
  # The mirror this machine's apt uses (deb822 or one-line sources).
  mirror=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null |
    awk '/security/ { next }
         $1 == "URIs:" { print $2; exit }
         $1 == "deb" { print ($2 ~ /^\[/) ? $3 : $2; exit }' || true)
  [ -n "$mirror" ] || { echo "no apt mirror found in /etc/apt/sources*" >&2; exit 1; }
  root=$(mktemp -d)
  debootstrap --variant=minbase --include=ca-certificates,curl,libcap2-bin bookworm "$root" "$mirror" \
    >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; rm -rf "$root"; exit 1; }
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | docker import - debian:bookworm-slim >/dev/null
  rm -rf "$root"
fi

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
