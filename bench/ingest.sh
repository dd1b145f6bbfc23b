#!/usr/bin/env bash
# Ingest benchmark: `rondo upload DIR` (per file: `createUpload` on the
# gateway, then an HTTPS PUT of the file straight to a storage node, which
# hashes and writes it in one pass, fsyncs, checks the audio, indexes the
# blob, copies it to a majority and commits the song through the ring; at
# the end the CLI waits until the gateway lists every song) against a
# plain copy of the same files into a
# directory on the same file system with fsync of each file and of the
# directory (the least any durable store must do). Prints MB/s of both and
# the ratio. FILES (default 40) distinct stereo WAVs of SECONDS (default 30)
# seconds each (about 5 MiB), made with Python's standard library; ROUNDS
# (default 5) interleaved rounds, each with its own files; medians compared.
# NODES (default 1) storage nodes.
#
# Usage: bash bench/ingest.sh
set -euo pipefail
cd "$(dirname "$0")/.."
FILES=${FILES:-40}
SECONDS_EACH=${SECONDS_EACH:-30}
ROUNDS=${ROUNDS:-5}
cargo build --release --bins --locked -q
work=$(mktemp -d -p "$PWD/target")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# One set of distinct files per round, so no round re-sends bytes the node
# already holds.
python3 bench/wavs.py "$work/in" "$FILES" "$SECONDS_EACH" "$ROUNDS"
bytes=$(du -sb "$work/in/0" | cut -f1)

port=$((20000 + RANDOM % 20000))
./target/release/rondo dev --data "$work/data" --port "$port" --nodes "${NODES:-1}" --no-demo >"$work/dev.log" 2>&1 &
pids+=($!)
for _ in $(seq 600); do [ -f "$work/data/dev.json" ] && break; sleep 0.1; done
[ -f "$work/data/dev.json" ] || { cat "$work/dev.log"; exit 1; }
export RONDO_DATA="$work/data"

# Each measured step starts from the same state: nothing dirty waiting for
# writeback, and the guest's free memory recently used. On a VM whose host
# backs guest memory lazily (this machine: a first write to a page runs at
# ~430 MB/s, a rewrite at ~5 GB/s), whichever side happened to get fresh
# pages would otherwise pay for the hypervisor, not for its own work.
settle() {
  sync
  dd if=/dev/zero of="$work/warm" bs=1M count=$((3 * bytes / 1048576)) status=none
  rm "$work/warm"
  sync
}

# Reference: copy + fsync each file + fsync the directory.
copy() {
  python3 - "$1" "$2" <<'PY'
import os, shutil, sys, time
src, dst = sys.argv[1], sys.argv[2]
os.makedirs(dst)
t = time.monotonic()
for name in sorted(os.listdir(src)):
    with open(os.path.join(src, name), "rb") as i, open(os.path.join(dst, name), "wb") as o:
        shutil.copyfileobj(i, o, 1 << 20)
        o.flush(); os.fsync(o.fileno())
    d = os.open(dst, os.O_RDONLY); os.fsync(d); os.close(d)
print(f"{time.monotonic() - t:.3f}")
PY
}

refs=(); rondos=()
for r in $(seq 0 $((ROUNDS - 1))); do # interleaved, so drift hits both sides alike
  settle
  refs+=("$(copy "$work/in/$r" "$work/copy-$r")")
  settle
  start=$(date +%s.%N)
  ./target/release/rondo upload ${JOBS:+--jobs $JOBS} "$work/in/$r" >"$work/upload.log"
  end=$(date +%s.%N)
  grep -q "$FILES uploaded, 0 skipped, 0 failed" "$work/upload.log" || { cat "$work/upload.log"; exit 1; }
  rondos+=("$(python3 -c "print(f'{$end - $start:.3f}')")")
done
median() { python3 -c 'import statistics,sys; print(f"{statistics.median(map(float, sys.argv[1:])):.3f}")' "$@"; }
ref_s=$(median "${refs[@]}"); rondo_s=$(median "${rondos[@]}")

mb() { python3 -c "print(f'{$bytes / 1e6 / $1:.1f}')"; }
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(. /etc/os-release; echo "$PRETTY_NAME"), $(df -T "$work" | awk 'NR==2 {print $2}')"
echo "files: $FILES WAVs, $bytes bytes per round, $ROUNDS rounds, rondo upload --jobs ${JOBS:-default}, ${NODES:-1} node(s)"
echo "copy + fsync: ${refs[*]} s; median $ref_s s, $(mb "$ref_s") MB/s"
echo "rondo upload: ${rondos[*]} s; median $rondo_s s, $(mb "$rondo_s") MB/s"
echo "ratio rondo / copy: $(python3 -c "print(f'{$ref_s / $rondo_s:.2f}')") (target >= 0.5)"
