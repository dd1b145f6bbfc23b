#!/usr/bin/env bash
# Control-plane benchmark: write commit latency through the token ring with
# 1, 3 and 5 storage nodes (real processes on loopback) under 1 and 32
# concurrent writers, token rotations per second idle and loaded, and the
# time from kill -9 of a ring member to the first write committed by the
# others; and the time a node added to a 3-node cluster takes to apply the
# whole log and fetch every blob, against the time the cluster took to write
# them. The 1-node cluster is the reference for latency (same write path, no
# peer to wait for); ratios are printed against it.
#
# Usage: bash bench/ring.sh   (DURATION=5 s per step, TRIALS=10 failovers,
#                              TOKEN_TIMEOUT_MS=1000)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins --locked -q
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(. /etc/os-release; echo "$PRETTY_NAME"), $(df -T target | awk 'NR==2 {print $2}')"
./target/release/ring-bench
