#!/usr/bin/env bash
# Re-replication after a node is lost (issue 15). Five storage nodes
# (`rondo dev`, release), R = 3, FILES (default 300) distinct stereo WAVs
# of SECONDS (default 30) seconds each (about 5 MiB) uploaded. One node is
# killed with SIGKILL and marked out at once by the operator (`rondo node
# out`), which stands for the down-out interval (600 s by default, 60 s
# under `rondo dev`: a configured wait, reported apart, not measured). The
# new placement gives its partitions to the four survivors, whose resync
# workers (rate unlimited, the default) fetch the blobs they now own from
# the other owners. Measured: the time from the mark-out until the
# placement before it retires (every owner of the new one has ordered
# `Synced`: it holds every blob it owns; `rondo layout show` polled every
# 500 ms, since each call takes CPU from the survivors: the time measured
# is at most that much late), and the bytes the survivors received
# (`rondo_node_resync_received_bytes`).
# Reference: the same blobs copied over a plain loopback TCP connection
# by a Python sender and receiver, each file written and fsync'd with its
# directory, as the resync worker does (no TLS, no hashing, no gRPC): the
# ratio of the two throughputs is the target (>= 0.5).
#
# Usage: bash bench/rereplication.sh
set -euo pipefail
cd "$(dirname "$0")/.."
FILES=${FILES:-300}
SECONDS_EACH=${SECONDS_EACH:-30}
cargo build --release --bins --locked -q
work=$(mktemp -d -p "$PWD/target")
dev=""
cleanup() { [ -n "$dev" ] && kill "$dev" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

python3 bench/wavs.py "$work/in" "$FILES" "$SECONDS_EACH"
data="$work/data"
port=$((20000 + RANDOM % 20000))
./target/release/rondo dev --data "$data" --port "$port" --nodes 5 --no-demo >"$work/dev.log" 2>&1 &
dev=$!
for _ in $(seq 900); do [ -f "$data/dev.json" ] && break; sleep 0.1; done
[ -f "$data/dev.json" ] || { cat "$work/dev.log"; exit 1; }
export RONDO_DATA="$data"
for _ in $(seq 100); do ./target/release/rondo node replication 3 >/dev/null 2>&1 && break; sleep 0.2; done
./target/release/rondo upload "$work/in" >"$work/upload.log"
grep -q "$FILES uploaded, 0 skipped, 0 failed" "$work/upload.log" || { cat "$work/upload.log"; exit 1; }
# At R before the kill: every owner holds what it owns.
for _ in $(seq 600); do
  ./target/release/rondo status 2>/dev/null | grep -q "partitions with fewer than R verified copies: 0" && break
  sleep 0.1
done
./target/release/rondo status | grep -q "partitions with fewer than R verified copies: 0" || { echo "not at R before the kill" >&2; exit 1; }
old=$(./target/release/rondo layout show | awk '/^placement epoch/ { sub(",", "", $3); print $3 }')
token=$(cat "$data/admin-token")
received() { # resync bytes received by the survivors
  local sum=0 i v
  for i in 0 1 3 4; do
    v=$(curl -sk -H "authorization: Bearer $token" "https://127.0.0.1:$((port + 1 + i))/metrics" |
      awk '$1 == "rondo_node_resync_received_bytes_total" { print $2 }')
    sum=$((sum + ${v:-0}))
  done
  echo "$sum"
}
victim=2
victim_id=$(cat "$data/node-$victim/node-id")
lost=$(find "$data/node-$victim/blobs" -type f | wc -l)
r0=$(received)
pkill -9 -f -- "--config $data/node-$victim/node.toml"
t0=$(date +%s.%N)
./target/release/rondo node out "$victim_id" >/dev/null
t1=$(date +%s.%N)
# Back at R: the placement before the out retires once every owner of the
# new one has ordered `Synced` (it holds every blob it owns).
retired() { ./target/release/rondo layout show | grep -Eq "^retired  placement\(s\) ([0-9]+, )*$old(,|\s)"; }
for _ in $(seq 1200); do retired && break; sleep 0.5; done
t2=$(date +%s.%N)
retired || { echo "placement $old never retired" >&2; ./target/release/rondo layout show >&2; exit 1; }
moved=$(($(received) - r0))
kill -INT "$dev"; wait "$dev" || true; dev=""

# Reference: the same blobs (those the killed node held) over loopback TCP.
ref=$(python3 - "$data/node-$victim/blobs" "$work/ref" <<'PY'
import os, socket, sys, threading, time
src, dst = sys.argv[1], sys.argv[2]
files = sorted(os.path.join(d, f) for d, _, fs in os.walk(src) for f in fs)
os.makedirs(dst)
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
def receive():
    c, _ = srv.accept()
    r = c.makefile("rb")
    d = os.open(dst, os.O_RDONLY)
    for i in range(len(files)):
        n = int.from_bytes(r.read(8), "big")
        with open(os.path.join(dst, str(i)), "wb") as o:
            left = n
            while left:
                b = r.read(min(left, 1 << 20)); o.write(b); left -= len(b)
            o.flush(); os.fsync(o.fileno())
        os.fsync(d)
    c.sendall(b"k")
t = threading.Thread(target=receive); t.start()
s = socket.create_connection(srv.getsockname())
start = time.monotonic()
for p in files:
    size = os.path.getsize(p)
    s.sendall(size.to_bytes(8, "big"))
    with open(p, "rb") as f:
        s.sendfile(f)
s.recv(1); t.join()
print(f"{time.monotonic() - start:.3f} {sum(os.path.getsize(p) for p in files)}")
PY
)
ref_s=${ref% *}; ref_bytes=${ref#* }
out_s=$(python3 -c "print(f'{$t1 - $t0:.3f}')")
heal_s=$(python3 -c "print(f'{$t2 - $t1:.3f}')")
mbs() { python3 -c "print(f'{$1 / 1e6 / $2:.1f}')"; }
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(. /etc/os-release; echo "$PRETTY_NAME")"
echo "files: $FILES WAVs, R=3 of 5; the killed node held $lost blobs"
echo "mark-out (rondo node out, ordered): $out_s s; down-out interval (configured, not measured): 600 s by default"
echo "mark-out to every blob at R on the survivors (placement $old retired): $heal_s s, $moved bytes received, $(mbs "$moved" "$heal_s") MB/s"
echo "loopback copy + fsync of the killed node's $ref_bytes bytes: $ref_s s, $(mbs "$ref_bytes" "$ref_s") MB/s"
echo "ratio re-replication / loopback copy: $(python3 -c "print(f'{($moved / $heal_s) / ($ref_bytes / $ref_s):.2f}')") (target >= 0.5)"
