#!/usr/bin/env bash
# Streams while the cluster re-replicates (issue 15). Five storage nodes
# (`rondo dev`, release), R = 3, FILES (default 500) distinct stereo WAVs
# of SECONDS (default 30) seconds each (about 5 MiB). One song's signed
# stream URL is loaded with wrk (CONNECTIONS, default 8, whole-file GETs,
# DURATION seconds each, default 4) three times:
#  - idle: nothing moves;
#  - unthrottled resync: another node is killed with SIGKILL and marked
#    out (`rondo node out`), and the four survivors fetch its share at
#    their default rate (no limit) while wrk runs;
#  - throttled resync: the dead node is started again with its resync
#    rate set to RATE (default 32MiB) and marked in (`rondo node in`), so
#    it fetches its share back from the others, the streaming node among
#    them, at that rate while wrk runs.
# Each loaded phase checks that the move was still under way when wrk
# ended (the placement before had not retired). Prints wrk's p99 latency
# and throughput per phase and the ratios to idle (target: throttled p99
# <= 1.5 x idle).
#
# Usage: bash bench/resync-streams.sh   (as root: installs wrk)
set -euo pipefail
cd "$(dirname "$0")/.."
FILES=${FILES:-500}
SECONDS_EACH=${SECONDS_EACH:-30}
CONNECTIONS=${CONNECTIONS:-8}
DURATION=${DURATION:-4}
RATE=${RATE:-32MiB}
command -v wrk >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends wrk >/dev/null
cargo build --release --bins --locked -q
work=$(mktemp -d -p "$PWD/target")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

python3 bench/wavs.py "$work/in" "$FILES" "$SECONDS_EACH"
data="$work/data"
port=$((20000 + RANDOM % 20000))
./target/release/rondo dev --data "$data" --port "$port" --nodes 5 --no-demo >"$work/dev.log" 2>&1 &
pids+=($!)
for _ in $(seq 900); do [ -f "$data/dev.json" ] && break; sleep 0.1; done
[ -f "$data/dev.json" ] || { cat "$work/dev.log"; exit 1; }
export RONDO_DATA="$data"
rondo() { ./target/release/rondo "$@"; }
for _ in $(seq 100); do rondo node replication 3 >/dev/null 2>&1 && break; sleep 0.2; done
rondo upload "$work/in" >"$work/upload.log"
grep -q "$FILES uploaded, 0 skipped, 0 failed" "$work/upload.log" || { cat "$work/upload.log"; exit 1; }
at_r() { rondo status 2>/dev/null | grep -q "partitions with fewer than R verified copies: 0"; }
for _ in $(seq 600); do at_r && break; sleep 0.1; done
at_r || { echo "not at R after the upload" >&2; exit 1; }

ca="$data/tls/ca.pem"
url=$(curl -s --cacert "$ca" "https://127.0.0.1:$port/graphql" -H 'content-type: application/json' \
  -d '{"query":"{ songs(first: 1) { nodes { streamUrl } } }"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["songs"]["nodes"][0]["streamUrl"])')
serving=$(($(python3 -c "import sys, urllib.parse; print(urllib.parse.urlparse(sys.argv[1]).port)" "$url") - port - 1))
victim=$(((serving + 2) % 5))
victim_id=$(cat "$data/node-$victim/node-id")
placement() { rondo layout show | awk '/^placement epoch/ { sub(",", "", $3); print $3 }'; }
retired() { rondo layout show | grep -Eq "^retired  placement\(s\) ([0-9]+, )*$1(,|\s)"; }

load() { # wrk's p99 (ms) and throughput (MB/s); fails on any non-2xx answer
  local out
  out=$(wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency "$url")
  if grep -q "Non-2xx" <<<"$out"; then echo "non-2xx answers:" >&2; echo "$out" >&2; exit 1; fi
  awk '/^ +99%/ { v=$2; n=v+0; if (v ~ /us$/) n/=1000; else if (v ~ /ms$/) n=n; else if (v ~ /s$/) n*=1000; p=n }
    /Transfer\/sec/ { v=$2; u=substr(v, length(v)-1); t=v+0; if (u=="GB") t*=1024; else if (u=="KB") t/=1024 }
    END { printf "%.1f %.1f", p, t }' <<<"$out"
}

idle=$(load)

# Unthrottled: the victim dies and is marked out; the survivors fetch.
before=$(placement)
pkill -9 -f -- "--config $data/node-$victim/node.toml"
rondo node out "$victim_id" >/dev/null
unthrottled=$(load)
retired "$before" && echo "warning: the unthrottled move ended inside the window" >&2
for _ in $(seq 6000); do retired "$before" && break; sleep 0.1; done
retired "$before" || { echo "placement $before never retired" >&2; exit 1; }

# Throttled: the victim back at RATE, marked in; it fetches its share.
./target/release/rondo-node --config "$data/node-$victim/node.toml" >>"$work/victim.log" 2>&1 &
pids+=($!)
for _ in $(seq 300); do rondo node rates "$victim_id" --resync "$RATE" >/dev/null 2>&1 && break; sleep 0.1; done
before=$(placement)
rondo node in "$victim_id" >/dev/null
throttled=$(load)
retired "$before" && { echo "the throttled move ended inside the window: use more FILES" >&2; exit 1; }

p99() { echo "${1% *}"; }
mbs() { echo "${1#* }"; }
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(. /etc/os-release; echo "$PRETTY_NAME")"
echo "files: $FILES WAVs, R=3 of 5; wrk $CONNECTIONS connections, ${DURATION} s per phase, streaming from node $serving, node $victim lost and back"
echo "idle:                p99 $(p99 "$idle") ms, $(mbs "$idle") MB/s"
echo "unthrottled resync:  p99 $(p99 "$unthrottled") ms, $(mbs "$unthrottled") MB/s; p99 ratio $(ratio "$(p99 "$unthrottled")" "$(p99 "$idle")"), throughput ratio $(ratio "$(mbs "$unthrottled")" "$(mbs "$idle")")"
echo "throttled ($RATE):  p99 $(p99 "$throttled") ms, $(mbs "$throttled") MB/s; p99 ratio $(ratio "$(p99 "$throttled")" "$(p99 "$idle")") (target <= 1.5), throughput ratio $(ratio "$(mbs "$throttled")" "$(mbs "$idle")")"
