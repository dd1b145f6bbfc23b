#!/usr/bin/env bash
# Scrub rate (issue 15): a storage node's scrub re-hashing every blob it
# holds (8 MiB pieces, read 256 KiB at a time on the blocking pool,
# BLAKE3, one blob per core; its rate limit lifted with `rondo node rates
# --scrub 0`) against b3sum over the same files, both reading from the
# page cache: b3sum as it runs by default (memory-mapped, every core) and
# with one thread. FILES (default 800) distinct WAVs of SECONDS (default
# 30) seconds each (about 5 MiB, so about 4 GiB in all), made with Python's standard library and uploaded to
# one node with `rondo upload`. ROUNDS (default 5) times: the node is
# restarted so that its scrub starts a pass; once the limit is lifted, the
# rate is read from the node's counter (`rondo_node_scrub_bytes`) twice,
# half a second apart, in the middle of the pass (the pass must not end
# inside the window: `rondo_node_scrub_passes` stays 0); then b3sum runs.
# b3sum comes from crates.io (`cargo install b3sum`) into
# target/bench-tools.
#
# Usage: bash bench/scrub.sh
set -euo pipefail
cd "$(dirname "$0")/.."
FILES=${FILES:-800}
ROUNDS=${ROUNDS:-5}
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

# Each restart begins a scrub pass (at the default 32 MiB/s); lift the
# limit and read the rate in the middle of the pass: two samples of the
# counter half a second apart (a poll loop would take a core from the scrub it
# measures). Then let the pass end, stop the node, and time b3sum over
# the same files; ROUNDS rounds, medians compared.
token=$(cat "$work/data/admin-token")
node=$(cat "$work/data/node-0/node-id")
metric() {
  curl -sk -H "authorization: Bearer $token" "https://127.0.0.1:$((port + 1))/metrics" |
    awk -v m="$1" '$1 == m { print $2 }'
}
blobs=$(find "$work/data/node-0/blobs" -type f)
bytes=$(du -cb $blobs | tail -1 | cut -f1)
timed() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); python3 -c "print(f'{$e - $s:.3f}')"; }
"$tools/bin/b3sum" $blobs >/dev/null # the page cache holds them all, as for the scrub
# The upload's run left a pass under way (its cursor is in the store):
# finish it, so that every measured round starts a whole pass.
start_dev
for _ in $(seq 300); do ./target/release/rondo node rates "$node" --scrub 0 >/dev/null 2>&1 && break; sleep 0.1; done
while [ "$(metric rondo_node_scrub_passes_total)" != "1" ]; do sleep 0.2; done
kill -INT "$dev"; wait "$dev" || true; dev=""
scrubs=(); b3s=(); b3ones=()
for _ in $(seq "$ROUNDS"); do
  start_dev
  for _ in $(seq 300); do ./target/release/rondo node rates "$node" --scrub 0 >/dev/null 2>&1 && break; sleep 0.1; done
  sleep 0.2
  t0=$(date +%s.%N); b0=$(metric rondo_node_scrub_bytes_total)
  sleep 0.5
  t1=$(date +%s.%N); b1=$(metric rondo_node_scrub_bytes_total)
  [ "$(metric rondo_node_scrub_passes_total)" = "0" ] || { echo "the pass ended inside the window: use more FILES" >&2; exit 1; }
  while [ "$(metric rondo_node_scrub_passes_total)" != "1" ]; do sleep 0.2; done
  kill -INT "$dev"; wait "$dev" || true; dev=""
  scrubs+=("$(python3 -c "print(f'{($b1 - $b0) / 1e6 / ($t1 - $t0):.0f}')")")
  b3s+=("$(python3 -c "print(f'{$bytes / 1e6 / $(timed "$tools/bin/b3sum" $blobs):.0f}')")")
  b3ones+=("$(python3 -c "print(f'{$bytes / 1e6 / $(timed "$tools/bin/b3sum" --num-threads 1 $blobs):.0f}')")")
done
median() { python3 -c 'import statistics,sys; print(f"{statistics.median(map(float, sys.argv[1:])):.0f}")' "$@"; }
scrub=$(median "${scrubs[@]}"); b3=$(median "${b3s[@]}"); b3one=$(median "${b3ones[@]}")
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(. /etc/os-release; echo "$PRETTY_NAME")"
echo "blobs: $(echo "$blobs" | wc -l) files, $bytes bytes, $ROUNDS rounds"
echo "scrub (no limit, 0.5 s window mid-pass): ${scrubs[*]} MB/s; median $scrub"
echo "b3sum (default): ${b3s[*]} MB/s; median $b3"
echo "b3sum --num-threads 1: ${b3ones[*]} MB/s; median $b3one"
echo "ratio scrub / b3sum: $(python3 -c "print(f'{$scrub / $b3:.2f}')") (target >= 0.8)"
echo "ratio scrub / b3sum one thread: $(python3 -c "print(f'{$scrub / $b3one:.2f}')")"
