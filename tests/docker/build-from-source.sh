#!/usr/bin/env bash
# Builds the Dockerfile's from-source target (`runtime`: the Rust and web
# app build stages, then the runtime) on this machine, where no registry
# is reachable, and checks what it made: the three binaries answer
# --version with this commit, the web app is in the gateway's share
# directory, the gateway binary carries exactly cap_net_admin and
# cap_net_raw, and processes run as `rondo`.
#
# The build stages' images (rust:1-bookworm and node:20-bookworm for users
# with a registry) are replaced by stand-ins made here: the debootstrapped
# base (tests/docker/common.sh) with gcc, plus this machine's own Rust
# toolchain or Node 20, and the machine's trust roots (it reaches crates.io
# and npm through an intercepting proxy whose CA only the host trusts).
# Everything else is the Dockerfile as users run it: `cargo build
# --release --locked` and `npm ci` inside the build, from the registries.
#
# Slow (a release build of the workspace in a fresh container: 8 to 10
# minutes on 2 cores), so it is not part of the test suite; its last run
# is recorded in BENCHMARKS.md §13 ("Image from source"). The stand-ins are
# removed at the end; BuildKit's caches (cargo's registry and target
# directory, several GB) stay for the next build: `docker builder prune`
# removes them.
#
# Usage, as root: bash tests/docker/build-from-source.sh [TAG]  (default rondo:source)
set -euo pipefail
cd "$(dirname "$0")/../.."
tag=${1:-rondo:source}
. tests/docker/common.sh
cleanup() {
  docker image rm -f rondo-build/rust:local rondo-build/node:local >/dev/null 2>&1 || true
  stop_started_dockerd
}
trap cleanup EXIT
ensure_dockerd
ensure_base

# A build with BuildKit: the buildx plugin (its image loaded into the
# local store), else a 20.10 CLI (Debian's docker.io), whose
# DOCKER_BUILDKIT=1 uses the daemon's built-in BuildKit.
if docker buildx version >/dev/null 2>&1; then
  builder=(docker buildx build --load)
elif docker --version | grep -q ' 20\.'; then
  builder=(env DOCKER_BUILDKIT=1 docker build)
elif [ -x /usr/bin/docker ] && /usr/bin/docker --version | grep -q ' 20\.'; then
  builder=(env DOCKER_BUILDKIT=1 /usr/bin/docker build)
else
  echo "no BuildKit: install docker-buildx (or Debian's docker.io)" >&2
  exit 1
fi

stand_in() { # NAME: builds rondo-build/NAME:local from $docker_work/NAME
  DOCKER_BUILDKIT=0 docker build -q -t "rondo-build/$1:local" "$docker_work/$1" \
    >"$docker_work/$1.log" 2>&1 || { cat "$docker_work/$1.log" >&2; return 1; }
}

# Rust: the toolchain rustc comes from, with gcc for build scripts (ring).
rust_dir="$docker_work/rust"
rm -rf "$rust_dir" && mkdir -p "$rust_dir"
sysroot=$(rustc --print sysroot)
tar -C "$sysroot" -cf "$rust_dir/toolchain.tar" --exclude='share/doc' bin lib
cp /etc/ssl/certs/ca-certificates.crt "$rust_dir/"
cat >"$rust_dir/Dockerfile" <<'DOCKERFILE'
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
ADD toolchain.tar /usr/local/rust/
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV PATH=/usr/local/rust/bin:/usr/local/cargo/bin:$PATH CARGO_HOME=/usr/local/cargo
DOCKERFILE
stand_in rust

# Node: this machine's node binary and its npm (as installed, which may
# be newer than the nodejs package's own files).
node_dir="$docker_work/node"
rm -rf "$node_dir" && mkdir -p "$node_dir"
tar -C / -cf "$node_dir/node.tar" usr/bin/node usr/bin/npm usr/bin/npx usr/lib/node_modules/npm
cp /etc/ssl/certs/ca-certificates.crt "$node_dir/"
cat >"$node_dir/Dockerfile" <<'DOCKERFILE'
FROM debian:bookworm-slim
ADD node.tar /
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
DOCKERFILE
stand_in node

commit=$(git rev-parse --short=12 HEAD)
echo "building $tag from source at $commit"
start=$(date +%s)
"${builder[@]}" --progress=plain --target runtime \
  --build-arg RUST_IMAGE=rondo-build/rust:local \
  --build-arg NODE_IMAGE=rondo-build/node:local \
  --build-arg RONDO_COMMIT="$commit" \
  -t "$tag" . >"$docker_work/build-from-source.log" 2>&1 \
  || { tail -40 "$docker_work/build-from-source.log" >&2; exit 1; }
took=$(($(date +%s) - start))

fail() { echo "FAIL: $*" >&2; exit 1; }
# The gateway binary's file capabilities must be in the container's
# bounding set, else its exec fails (as compose gives them: cap_add).
for b in rondo rondo-node rondo-gateway; do
  v=$(docker run --rm --cap-drop ALL --cap-add NET_ADMIN --cap-add NET_RAW "$tag" "$b" --version)
  case "$v" in *"$commit"*) echo "$v" ;; *) fail "$b --version: '$v' lacks $commit" ;; esac
done
user=$(docker run --rm "$tag" id -un)
[ "$user" = rondo ] || fail "runs as '$user', not rondo"
docker run --rm "$tag" test -f /usr/share/rondo/webapp/index.html || fail "no web app in the image"
caps=$(docker run --rm "$tag" getcap /usr/local/bin/rondo-gateway)
[ "$caps" = "/usr/local/bin/rondo-gateway cap_net_admin,cap_net_raw=ep" ] || fail "gateway capabilities: '$caps'"
size=$(docker image inspect -f '{{.Size}}' "$tag")
echo "image $tag: built from source in ${took} s, $((size / 1000000)) MB; runs as $user; gateway $caps"
