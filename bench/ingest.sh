#!/usr/bin/env bash
# Ingest benchmark: `rondo upload DIR` (CLI -> gateway over HTTPS multipart ->
# tag probe and decode check -> gRPC stream to the storage node -> fsync'd
# blob + redb commit) against a plain copy of the same files into a
# directory on the same file system with fsync of each file and of the
# directory (the least any durable store must do). Prints MB/s of both and
# the ratio. FILES (default 40) distinct stereo WAVs of SECONDS (default 30)
# seconds each (about 5 MiB), made with Python's standard library.
#
# Usage: bash bench/ingest.sh
set -euo pipefail
cd "$(dirname "$0")/.."
FILES=${FILES:-40}
SECONDS_EACH=${SECONDS_EACH:-30}
cargo build --release --bins --locked -q
work=$(mktemp -d -p "$PWD/target")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

mkdir -p "$work/in"
python3 - "$work/in" "$FILES" "$SECONDS_EACH" <<'PY'
import math, struct, sys, wave
out, files, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for n in range(files):
    freq = 220 + 7 * n  # distinct content per file
    second = b"".join(struct.pack("<hh", int(6000 * math.sin(2 * math.pi * freq * i / 44100)),
                                  int(6000 * math.sin(2 * math.pi * freq * 1.5 * i / 44100)))
                      for i in range(44100))
    with wave.open(f"{out}/track-{n:03}.wav", "wb") as w:
        w.setnchannels(2); w.setsampwidth(2); w.setframerate(44100)
        for _ in range(secs):
            w.writeframes(second)
PY
bytes=$(du -sb "$work/in" | cut -f1)

# Reference: copy + fsync each file + fsync the directory.
ref_s=$(python3 - "$work/in" "$work/copy" <<'PY'
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
)

port=$((20000 + RANDOM % 20000))
./target/release/rondo dev --data "$work/data" --port "$port" --nodes 1 --no-demo >"$work/dev.log" 2>&1 &
pids+=($!)
for _ in $(seq 600); do [ -f "$work/data/dev.json" ] && break; sleep 0.1; done
[ -f "$work/data/dev.json" ] || { cat "$work/dev.log"; exit 1; }
export RONDO_DATA="$work/data"
start=$(date +%s.%N)
./target/release/rondo upload ${JOBS:+--jobs $JOBS} "$work/in" >"$work/upload.log"
end=$(date +%s.%N)
grep -q "$FILES uploaded, 0 skipped, 0 failed" "$work/upload.log" || { cat "$work/upload.log"; exit 1; }
rondo_s=$(python3 -c "print(f'{$end - $start:.3f}')")

mb() { python3 -c "print(f'{$bytes / 1e6 / $1:.1f}')"; }
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(. /etc/os-release; echo "$PRETTY_NAME"), $(df -T "$work" | awk 'NR==2 {print $2}')"
echo "files: $FILES WAVs, $bytes bytes in all"
echo "copy + fsync: $ref_s s, $(mb "$ref_s") MB/s"
echo "rondo upload: $rondo_s s, $(mb "$rondo_s") MB/s"
echo "ratio rondo / copy: $(python3 -c "print(f'{$ref_s / $rondo_s:.2f}')") (target >= 0.5)"
