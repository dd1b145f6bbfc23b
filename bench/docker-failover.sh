#!/usr/bin/env bash
# Gateway failover in the compose deployment (issue 16), against BENCHMARKS
# §6's harness in the same run: `docker kill` of the gateway container
# holding the floating address to the address answering GraphQL from the
# other replica, at 1 s and 100 ms adverts, TRIALS (default 20) times
# each; the reference rows are keepalived 2.2.7 and our VRRP between
# network namespaces (§6). Needs root, Docker (docker.io, docker-compose,
# debootstrap: dockerd is started if none runs and stopped after) and
# keepalived; the image is made from this release build
# (tests/docker/build-image.sh). The bridge's addresses are
# docker-compose.yml's: run it while no other compose deployment of
# Rondo is up.
#
# Also needs nsenter (util-linux): adverts are read in the backup's
# network namespace.
#
# Usage, as root: bash bench/docker-failover.sh   (TRIALS=20)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins --locked -q
[ -f webapp/dist/index.html ] || (cd webapp && npm run build --silent)
. tests/docker/common.sh
image=rondo:failover-bench
cleanup() {
  # What an interrupted run leaves: the project holds the compose subnets.
  RONDO_IMAGE=$image docker-compose -p rondofailoverbench -f docker-compose.yml \
    down -v --remove-orphans -t 2 >/dev/null 2>&1 || true
  docker image rm -f "$image" >/dev/null 2>&1 || true
  stop_started_dockerd
}
trap cleanup EXIT
ensure_dockerd
BIN_DIR=target/release bash tests/docker/build-image.sh "$image" >/dev/null
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(. /etc/os-release; echo "$PRETTY_NAME"), keepalived $(keepalived --version 2>&1 | head -1 | awk '{print $2}'), dockerd $(dockerd --version | awk '{print $3}' | tr -d ,)"
RONDO_IMAGE=$image ./target/release/docker-failover
