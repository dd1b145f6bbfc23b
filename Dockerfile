# Rondo's image: rondo-node, rondo-gateway and rondo, with the web app
# built into the gateway's share directory. One image for every service
# of docker-compose.yml and docker-stack.yml; processes run as the user
# `rondo` (uid 10001).
#
# Two ways to build it:
# - from source, for users with a registry (the last stage is the
#   default target): `docker build -t rondo .` (Rust and Node build
#   stages, then the runtime on Debian bookworm-slim). It needs BuildKit
#   (Docker's default builder since 23.0, through buildx; on 20.10,
#   DOCKER_BUILDKIT=1), which skips the host stage; the build images are RUST_IMAGE and NODE_IMAGE
#   (tests/docker/build-from-source.sh builds this target here, on
#   stand-ins made from the machine's own toolchains);
# - from binaries and a web app built on the host, which is what the
#   tests here use (no registry is reachable): a context holding bin/ and
#   webapp/ (tests/docker/build-image.sh makes it) and
#   `docker build --target host -t rondo:local -f Dockerfile CONTEXT`.
#   The host stage comes first so that the classic builder, which builds
#   every stage before its target, needs no other image.

ARG BASE=debian:bookworm-slim
ARG RUST_IMAGE=rust:1-bookworm
ARG NODE_IMAGE=node:20-bookworm

# The runtime: what every target shares.
FROM ${BASE} AS base
# curl (health checks), ca-certificates, setcap (the gateway's VRRP
# capabilities); a base made with debootstrap here has them already.
RUN if ! command -v curl >/dev/null || ! command -v setcap >/dev/null; then \
      apt-get update && apt-get install -y --no-install-recommends \
        ca-certificates curl libcap2-bin && rm -rf /var/lib/apt/lists/*; \
    fi \
 && groupadd --system --gid 10001 rondo \
 && useradd --system --uid 10001 --gid rondo --home-dir /var/lib/rondo --shell /usr/sbin/nologin rondo \
 && mkdir -p /etc/rondo/authority /var/lib/rondo /usr/share/rondo/webapp \
 && chown rondo:rondo /etc/rondo /etc/rondo/authority /var/lib/rondo
ENV RONDO_LOG=info
EXPOSE 7400 7443 8443

# From the host's build: bin/ and webapp/ in the context.
FROM base AS host
COPY bin/rondo bin/rondo-node bin/rondo-gateway /usr/local/bin/
COPY webapp/ /usr/share/rondo/webapp/
# VRRP: the gateway sends adverts on a raw socket and moves the floating
# address; it gets exactly these two capabilities (the container must be
# given them: cap_add NET_ADMIN, NET_RAW).
RUN setcap cap_net_admin,cap_net_raw+ep /usr/local/bin/rondo-gateway
USER rondo
WORKDIR /var/lib/rondo
CMD ["rondo-node"]

# From source (needs a registry for rust and node).
FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
ARG RONDO_COMMIT=unknown
# Without the workspace's line tables (for backtraces on the build
# machine): binaries a fifth of the size.
ENV RONDO_COMMIT=${RONDO_COMMIT} \
    CARGO_PROFILE_RELEASE_DEBUG=false \
    CARGO_PROFILE_RELEASE_STRIP=debuginfo
# The registry and the build directory are BuildKit caches: a rebuild
# compiles only what changed.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bins \
 && mkdir -p /out \
 && cp target/release/rondo target/release/rondo-node target/release/rondo-gateway /out/

FROM ${NODE_IMAGE} AS webapp
WORKDIR /src/webapp
COPY webapp/package.json webapp/package-lock.json ./
RUN --mount=type=cache,target=/root/.npm npm ci --no-audit --no-fund
COPY webapp/ ./
COPY gateway/schema.graphql /src/gateway/schema.graphql
RUN npm run build

FROM base AS runtime
COPY --from=build /out/ /usr/local/bin/
COPY --from=webapp /src/webapp/dist/ /usr/share/rondo/webapp/
RUN setcap cap_net_admin,cap_net_raw+ep /usr/local/bin/rondo-gateway
USER rondo
WORKDIR /var/lib/rondo
CMD ["rondo-node"]
