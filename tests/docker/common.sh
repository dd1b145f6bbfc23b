# Shared by the Docker scripts here (sourced, not run): a dockerd, and the
# Debian bookworm base the Dockerfile starts from, made with debootstrap
# from this machine's own apt mirror (no registry is reachable here).
# Expects to run from the repository's root with `set -euo pipefail`.

docker_work=target/docker
mkdir -p "$docker_work"

# Starts dockerd if none answers; sets started_dockerd to its pid (empty
# when one was running already).
started_dockerd=
ensure_dockerd() {
  docker info >/dev/null 2>&1 && return 0
  command -v dockerd >/dev/null || { echo "no dockerd: apt-get install docker.io" >&2; return 1; }
  dockerd >"$docker_work/dockerd.log" 2>&1 &
  started_dockerd=$!
  echo "$started_dockerd" >"$docker_work/dockerd.pid"
  for _ in $(seq 120); do docker info >/dev/null 2>&1 && return 0; sleep 0.5; done
  tail -20 "$docker_work/dockerd.log" >&2
  stop_started_dockerd
  return 1
}

# Stops the dockerd ensure_dockerd started, if it did.
stop_started_dockerd() {
  [ -n "$started_dockerd" ] || return 0
  kill "$started_dockerd" 2>/dev/null || true
  wait "$started_dockerd" 2>/dev/null || true
  rm -f "$docker_work/dockerd.pid"
  started_dockerd=
}

# Imports debian:bookworm-slim (the Dockerfile's BASE) if it is missing.
ensure_base() {
  docker image inspect debian:bookworm-slim >/dev/null 2>&1 && return 0
  command -v debootstrap >/dev/null || { echo "no debootstrap: apt-get install debootstrap" >&2; return 1; }
  # The mirror this machine's apt uses (deb822 or one-line sources).
  local mirror root
  mirror=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null |
    awk '/security/ { next }
         $1 == "URIs:" { print $2; exit }
         $1 == "deb" { print ($2 ~ /^\[/) ? $3 : $2; exit }' || true)
  [ -n "$mirror" ] || { echo "no apt mirror found in /etc/apt/sources*" >&2; return 1; }
  root=$(mktemp -d)
  local made=0
  if debootstrap --variant=minbase --include=ca-certificates,curl,libcap2-bin bookworm "$root" "$mirror" \
    >"$docker_work/debootstrap.log" 2>&1; then
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" -c . | docker import - debian:bookworm-slim >/dev/null && made=1
  else
    tail -20 "$docker_work/debootstrap.log" >&2
  fi
  rm -rf "$root"
  [ "$made" = 1 ]
}
