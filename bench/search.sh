#!/usr/bin/env bash
# Search benchmark: a gateway whose index holds SONGS songs (default 100,000,
# loaded into a storage node through its gRPC upload path by seed-catalog)
# and CJK more with Japanese and Chinese titles (default 10,000)
# answers `songs(search:)` from 50 concurrent clients (wrk, HTTP/1.1 over
# TLS, 2000 distinct word-prefix searches in turn, 20 songs per page with a
# signed stream URL each). Reference, same run, same load: the cheapest query
# the gateway answers (`{ __typename }`), which costs the HTTP, TLS and
# GraphQL floor. Then 2,000 searches for one to three characters from
# inside the CJK titles (bigram lookups). Prints p50/p99 latency and
# throughput of each, and the
# gateway's RSS with the catalog loaded.
#
# Usage: bash bench/search.sh   (as root: installs wrk if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
SONGS=${SONGS:-100000}
CJK=${CJK:-10000}
TOTAL=$((SONGS + CJK))
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-50}
command -v wrk >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends wrk >/dev/null
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
gql="https://127.0.0.1:$port/graphql"
ca="$work/data/tls/ca.pem"

./target/release/seed-catalog "$work/data" "$SONGS" 32 "$CJK"
count() {
  curl -s --cacert "$ca" "$gql" -H 'content-type: application/json' -d '{"query":"{ songs { totalCount } }"}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["songs"]["totalCount"])' 2>/dev/null || echo 0
}
for _ in $(seq 600); do [ "$(count)" = "$TOTAL" ] && break; sleep 0.5; done
[ "$(count)" = "$TOTAL" ] || { echo "gateway never indexed $TOTAL songs (has $(count))" >&2; exit 1; }

load() { # QUERY_KIND -> "p50_ms p99_ms requests_per_s"; fails on any error
  local out
  out=$(cd bench && QUERIES="$work/data/cjk-queries.txt" QUERY_KIND=$1 wrk -t2 -c"$CLIENTS" -d"${DURATION}s" --latency -s search.lua "$gql")
  if grep -q "Non-2xx" <<<"$out" || ! grep -q "graphql_errors 0" <<<"$out"; then
    echo "errors under load ($1):" >&2; echo "$out" >&2; exit 1
  fi
  awk 'function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
       $1 == "50%" { p50 = ms($2) } $1 == "99%" { p99 = ms($2) } /^Requests\/sec/ { rps = $2 }
       END { printf "%.2f %.2f %.0f", p50, p99, rps }' <<<"$out"
}
gw_pid=$(pgrep -f "rondo-gateway --config $work/data/gateway.toml")
read -r f50 f99 frps <<<"$(load floor)"
read -r s50 s99 srps <<<"$(load search)"
c50=0; c99=0; crps=0
[ "$CJK" -gt 0 ] && read -r c50 c99 crps <<<"$(load cjk)"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(. /etc/os-release; echo "$PRETTY_NAME")"
echo "catalog: $SONGS songs + $CJK with CJK titles; $CLIENTS concurrent clients, ${DURATION}s per run"
echo "floor  ({ __typename }): p50 $f50 ms, p99 $f99 ms, $frps req/s"
echo "search (songs(search:)): p50 $s50 ms, p99 $s99 ms (target <= 20), $srps req/s"
echo "search throughput / floor throughput: $(python3 -c "print(f'{$srps/$frps:.3f}')")"
echo "CJK search (1-3 characters inside titles): p50 $c50 ms, p99 $c99 ms (target <= 20), $crps req/s"
echo "gateway RSS with the catalog loaded: $(awk '/VmRSS/ { printf "%.1f", $2/1024 }' "/proc/$gw_pid/status") MiB"
