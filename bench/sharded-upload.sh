#!/usr/bin/env bash
# Upload under placement (issue 15): `rondo upload DIR` to five storage
# nodes with each song's audio on R=3 of them (write quorum 2) against the
# same five under full replication (every node holds every blob; write
# quorum 3, a majority), on the same machine, one cluster after the other.
# Two times per round: until `rondo upload` returns (every song
# acknowledged and listed by the gateway), and until every copy is in
# place (3 per blob under R=3, 5 under full replication: the pushes and
# fetches after the acknowledgement), counted as blob files under the
# nodes' data directories. FILES (default 40) distinct stereo WAVs of
# SECONDS (default 30) seconds each (about 5 MiB) per round, ROUNDS
# (default 5) rounds, each with its own files; medians compared.
#
# Usage: bash bench/sharded-upload.sh
set -euo pipefail
cd "$(dirname "$0")/.."
FILES=${FILES:-40}
SECONDS_EACH=${SECONDS_EACH:-30}
ROUNDS=${ROUNDS:-5}
NODES=5
cargo build --release --bins --locked -q
work=$(mktemp -d -p "$PWD/target")
dev=""
cleanup() { [ -n "$dev" ] && kill "$dev" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

python3 bench/wavs.py "$work/in" "$FILES" "$SECONDS_EACH" "$ROUNDS"
bytes=$(du -sb "$work/in/0" | cut -f1)

# As in bench/ingest.sh: nothing dirty waiting for writeback, and free
# memory recently touched (this VM backs guest pages lazily).
settle() {
  sync
  dd if=/dev/zero of="$work/warm" bs=1M count=$((3 * bytes / 1048576)) status=none
  rm "$work/warm"
  sync
}
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.3f}')"; }
copies() { find "$1"/node-*/blobs -type f 2>/dev/null | wc -l; }

# run MODE: prints "ack-times|placed-times" of ROUNDS rounds.
run() {
  local mode=$1 data="$work/data-$1" port=$((20000 + RANDOM % 20000)) per
  ./target/release/rondo dev --data "$data" --port "$port" --nodes "$NODES" --no-demo >"$work/dev-$mode.log" 2>&1 &
  dev=$!
  for _ in $(seq 900); do [ -f "$data/dev.json" ] && break; sleep 0.1; done
  [ -f "$data/dev.json" ] || { cat "$work/dev-$mode.log" >&2; exit 1; }
  export RONDO_DATA="$data"
  if [ "$mode" = r3 ]; then
    for _ in $(seq 100); do ./target/release/rondo node replication 3 >/dev/null 2>&1 && break; sleep 0.2; done
    ./target/release/rondo layout show | grep -q "3 replicas, write quorum 2" || { ./target/release/rondo layout show >&2; exit 1; }
    per=3
  else
    per=$NODES
  fi
  local acks=() placed=()
  for r in $(seq 0 $((ROUNDS - 1))); do
    settle
    local start end done_at want
    start=$(now)
    ./target/release/rondo upload "$work/in/$r" >"$work/upload.log"
    end=$(now)
    grep -q "$FILES uploaded, 0 skipped, 0 failed" "$work/upload.log" || { cat "$work/upload.log" >&2; exit 1; }
    want=$(((r + 1) * FILES * per))
    for _ in $(seq 6000); do [ "$(copies "$data")" -ge "$want" ] && break; sleep 0.02; done
    [ "$(copies "$data")" -ge "$want" ] || { echo "$mode: $(copies "$data") copies, want $want" >&2; exit 1; }
    done_at=$(now)
    acks+=("$(secs "$start" "$end")")
    placed+=("$(secs "$start" "$done_at")")
  done
  kill -INT "$dev"; wait "$dev" || true; dev=""
  echo "${acks[*]}|${placed[*]}"
}

median() { python3 -c 'import statistics,sys; print(f"{statistics.median(map(float, sys.argv[1:])):.3f}")' "$@"; }
full=$(run full)
r3=$(run r3)
full_ack=$(median ${full%|*}); full_placed=$(median ${full#*|})
r3_ack=$(median ${r3%|*}); r3_placed=$(median ${r3#*|})
mb() { python3 -c "print(f'{$bytes / 1e6 / $1:.1f}')"; }
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(. /etc/os-release; echo "$PRETTY_NAME")"
echo "files: $FILES WAVs, $bytes bytes per round, $ROUNDS rounds, $NODES nodes on this machine"
echo "full replication, acknowledged: ${full%|*} s; median $full_ack s, $(mb "$full_ack") MB/s"
echo "full replication, every copy:   ${full#*|} s; median $full_placed s, $(mb "$full_placed") MB/s"
echo "R=3 of 5, acknowledged:         ${r3%|*} s; median $r3_ack s, $(mb "$r3_ack") MB/s"
echo "R=3 of 5, every copy:           ${r3#*|} s; median $r3_placed s, $(mb "$r3_placed") MB/s"
echo "ratio R=3 / full, acknowledged: $(python3 -c "print(f'{$full_ack / $r3_ack:.2f}')") (target > 1: faster)"
echo "ratio R=3 / full, every copy:   $(python3 -c "print(f'{$full_placed / $r3_placed:.2f}')") (target > 1: faster)"
