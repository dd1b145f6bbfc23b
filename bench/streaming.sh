#!/usr/bin/env bash
# Streaming and memory benchmark: rondo-node against nginx serving the same
# 20 MiB file over loopback HTTPS with the same certificate, the same load
# tool (wrk, HTTP/1.1) and the same concurrency (1 and 64). Also records the
# node's and gateway's RSS idle and while serving 100 concurrent streams.
#
# Usage: bash bench/streaming.sh   (as root: installs nginx-light and wrk)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-8}
ROUNDS=${ROUNDS:-5}
command -v nginx >/dev/null && command -v wrk >/dev/null || {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nginx-light wrk >/dev/null
}
cargo build --release --bins --locked -q
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

port=$((20000 + RANDOM % 20000))
./target/release/rondo dev --data "$work/data" --port "$port" --nodes 1 --no-demo >"$work/dev.log" 2>&1 &
pids+=($!)
for _ in $(seq 600); do [ -f "$work/data/dev.json" ] && break; sleep 0.1; done
[ -f "$work/data/dev.json" ] || { cat "$work/dev.log"; exit 1; }

# A 20 MiB WAV (44.1 kHz mono 16-bit tone), made with Python's standard library.
python3 - "$work/song.wav" <<'PY'
import math, struct, sys, wave
frames = (20 * 1024 * 1024 - 44) // 2
with wave.open(sys.argv[1], "wb") as w:
    w.setnchannels(1); w.setsampwidth(2); w.setframerate(44100)
    chunk = b"".join(struct.pack("<h", int(8000 * math.sin(i * 0.0627))) for i in range(44100))
    full, rest = divmod(frames, 44100)
    for _ in range(full): w.writeframes(chunk)
    w.writeframes(chunk[: rest * 2])
PY
export RONDO_DATA="$work/data"
./target/release/rondo upload "$work/song.wav" >/dev/null
ca="$work/data/tls/ca.pem"
url=$(curl -s --cacert "$ca" "https://127.0.0.1:$port/graphql" -H 'content-type: application/json' \
  -d '{"query":"{ songs(first: 1) { nodes { streamUrl } } }"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["songs"]["nodes"][0]["streamUrl"])')

mkdir -p "$work/www"
cp "$work/song.wav" "$work/www/song.wav"
nport=$((port + 50))
cat >"$work/nginx.conf" <<NGX
user root;
worker_processes auto;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  server {
    listen 127.0.0.1:$nport ssl;
    ssl_certificate $work/data/tls/server.pem;
    ssl_certificate_key $work/data/tls/server-key.pem;
    root $work/www;
  }
}
NGX
nginx -c "$work/nginx.conf" -g 'daemon off;' &
pids+=($!)
for _ in $(seq 100); do curl -s -o /dev/null --cacert "$ca" "https://127.0.0.1:$nport/song.wav" && break; sleep 0.1; done

cmp <(curl -sf --cacert "$ca" "$url") "$work/song.wav" && echo "rondo serves the file byte-identical"
cmp <(curl -sf --cacert "$ca" "https://127.0.0.1:$nport/song.wav") "$work/song.wav" && echo "nginx serves the file byte-identical"

rate() { # MB/s from wrk's Transfer/sec line; fails on any non-2xx answer
  local out
  out=$(wrk -t"$(( $1 < 2 ? 1 : 2 ))" -c"$1" -d"${DURATION}s" "$2")
  if grep -q "Non-2xx" <<<"$out"; then echo "non-2xx answers from $2:" >&2; echo "$out" >&2; exit 1; fi
  awk '/Transfer\/sec/ { v=$2; u=substr(v, length(v)-1); n=v+0;
    if (u=="GB") n*=1024; else if (u=="KB") n/=1024; printf "%.1f", n }' <<<"$out"
}
rss() { awk '/VmRSS/ { printf "%.1f", $2/1024 }' "/proc/$1/status"; }
node_pid=$(pgrep -f "rondo-node --config $work/data/node-0/node.toml")
gw_pid=$(pgrep -f "rondo-gateway --config $work/data/gateway.toml")

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(. /etc/os-release; echo "$PRETTY_NAME")"
echo "idle RSS: node $(rss "$node_pid") MiB, gateway $(rss "$gw_pid") MiB"
median() { python3 -c 'import statistics,sys; print(f"{statistics.median(map(float, sys.argv[1:])):.1f}")' "$@"; }
for c in 1 64; do
  ns=(); rs=()
  for _ in $(seq "$ROUNDS"); do # interleaved, so drift in the machine hits both sides alike
    ns+=("$(rate "$c" "https://127.0.0.1:$nport/song.wav")")
    rs+=("$(rate "$c" "$url")")
  done
  n=$(median "${ns[@]}"); r=$(median "${rs[@]}")
  echo "concurrency $c: nginx ${ns[*]} MB/s, rondo-node ${rs[*]} MB/s"
  echo "concurrency $c: medians nginx $n MB/s, rondo-node $r MB/s, ratio $(python3 -c "print(f'{$r/$n:.2f}')")"
done
peak=0
wrk -t2 -c100 -d"${DURATION}s" "$url" >/dev/null &
load=$!
while kill -0 "$load" 2>/dev/null; do
  cur=$(rss "$node_pid"); peak=$(python3 -c "print(max($peak, $cur))"); sleep 0.5
done
echo "node RSS under 100 concurrent streams: peak $peak MiB (target <= 200)"
