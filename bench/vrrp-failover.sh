#!/usr/bin/env bash
# Gateway failover benchmark (issue 4): kill -9 of the master gateway
# replica's host to the floating address answering GraphQL on the backup,
# at 1 s and 100 ms adverts, TRIALS (default 20) times each, side by side
# with keepalived 2.2.7 managing the same address in the same harness (the
# reference; the ratio is ours / keepalived). Needs root (network
# namespaces) and `apt-get install keepalived`.
#
# Usage: sudo bash bench/vrrp-failover.sh   (TRIALS=20)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins --locked -q
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(. /etc/os-release; echo "$PRETTY_NAME"), keepalived $(keepalived --version 2>&1 | head -1 | awk '{print $2}')"
./target/release/vrrp-failover
