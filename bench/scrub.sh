#!/usr/bin/env bash
# Scrub rate (issue 15): a storage node's scrub re-hashing every blob it
# holds (8 MiB reads on the blocking pool, BLAKE3, one blob per core; its
# rate limit lifted with `rondo node rates --scrub 0`) against b3sum over
# the same files, both reading from the page cache: b3sum as it runs by
# default (memory-mapped, every core) and with one thread. FILES (default 200)
# distinct WAVs of SECONDS (default 30) seconds each (about 5 MiB, so about
# 1 GiB in all), made with Python's standard library and uploaded to one
# node with `rondo upload`. The node is restarted so that its scrub starts
# a pass; the pass is timed from the moment the limit is lifted to the end
# of the pass, from the node's counters (`rondo_node_scrub_bytes`,
# `rondo_node_scrub_passes`). b3sum comes from crates.io (`cargo install
# b3sum`) into target/bench-tools.
#
# Usage: bash bench/scrub.sh
set -euo pipefail
cd "$(dirname "$0")/.."
FILES=${FILES:-200}
SECONDS_EACH=${SECONDS_EACH:-30}
cargo build --release --bins --locked -q
tools="$PWD/target/bench-tools"
[ -x "$tools/bin/b3sum" ] || cargo install -q --locked --root "$tools" b3sum
work=$(mktemp -d -p "$PWD/target")
dev=""
cleanup() { [ -n "$dev" ] && kill "$dev" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

python3 bench/wavs.py "$work/in" "$FILES" "$SECONDS_EACH"

port=$((20000 + RANDOM % 20000))
start_dev() {
  rm -f "$work/data/dev.json"
  ./target/release/rondo dev --data "$work/data" --port "$port" --nodes 1 --no-demo >>"$work/dev.log" 2>&1 &
  dev=$!
  for _ in $(seq 600); do [ -f "$work/data/dev.json" ] && break; sleep 0.1; done
  [ -f "$work/data/dev.json" ] || { cat "$work/dev.log"; exit 1; }
}
export RONDO_DATA="$work/data"
start_dev
./target/release/rondo upload "$work/in" >"$work/upload.log"
grep -q "$FILES uploaded, 0 skipped, 0 failed" "$work/upload.log" || { cat "$work/upload.log"; exit 1; }
kill -INT "$dev"; wait "$dev" || true; dev=""

# The restart begins a scrub pass (at the default 32 MiB/s); lift the
# limit and time the rest of the pass.
start_dev
token=$(cat "$work/data/admin-token")
node=$(cat "$work/data/node-0/node-id")
metric() {
  curl -sk -H "authorization: Bearer $token" "https://127.0.0.1:$((port + 1))/metrics" |
    awk -v m="$1" '$1 == m { print $2 }'
}
for _ in $(seq 300); do ./target/release/rondo node rates "$node" --scrub 0 >/dev/null 2>&1 && break; sleep 0.1; done
t0=$(date +%s.%N); b0=$(metric rondo_node_scrub_bytes_total)
while [ "$(metric rondo_node_scrub_passes_total)" != "1" ]; do sleep 0.02; done
t1=$(date +%s.%N); b1=$(metric rondo_node_scrub_bytes_total)
kill -INT "$dev"; wait "$dev" || true; dev=""

blobs=$(find "$work/data/node-0/blobs" -type f)
bytes=$(du -cb $blobs | tail -1 | cut -f1)
timed() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); python3 -c "print(f'{$e - $s:.3f}')"; }
"$tools/bin/b3sum" $blobs >/dev/null # the page cache holds them all, as for the scrub
b3=$(timed "$tools/bin/b3sum" $blobs)
b3one=$(timed "$tools/bin/b3sum" --num-threads 1 $blobs)
rate() { python3 -c "print(f'{$1 / 1e6 / $2:.0f}')"; }
scrub_s=$(python3 -c "print(f'{$t1 - $t0:.3f}')")
scrub_mb=$(rate "$((b1 - b0))" "$scrub_s")
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(. /etc/os-release; echo "$PRETTY_NAME")"
echo "blobs: $(echo "$blobs" | wc -l) files, $bytes bytes"
echo "scrub (no limit): $((b1 - b0)) bytes in $scrub_s s, $scrub_mb MB/s"
echo "b3sum (default): $b3 s, $(rate "$bytes" "$b3") MB/s"
echo "b3sum --num-threads 1: $b3one s, $(rate "$bytes" "$b3one") MB/s"
echo "ratio scrub / b3sum: $(python3 -c "print(f'{($((b1 - b0)) / $scrub_s) / ($bytes / $b3):.2f}')") (target >= 0.8)"
echo "ratio scrub / b3sum one thread: $(python3 -c "print(f'{($((b1 - b0)) / $scrub_s) / ($bytes / $b3one):.2f}')")"
