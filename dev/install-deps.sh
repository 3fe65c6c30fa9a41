#!/usr/bin/env bash
# dev/install-deps.sh - installs everything needed to build, run and test
# the engine on Debian bookworm (run as root or with sudo available), then
# the pinned npm package the end-to-end tests verify signatures with.
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "$0")/.." && pwd)
SUDO=
if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
fi

PACKAGES=(
    build-essential pkg-config                   # compiler and make
    librdkafka-dev libcurl4-openssl-dev libpq-dev # Kafka, HTTP, Postgres
    libssl-dev libprotobuf-c-dev protobuf-c-compiler
    libmicrohttpd-dev libjansson-dev             # webhook-api: HTTP server, JSON
    postgresql postgresql-client                 # throwaway servers, psql
    kcat                                         # publishing from the shell
    python3 jq curl openssl ca-certificates procps iproute2 # tests
    nodejs                                       # signature verification in tests
    wrk                                          # make bench: the HTTP ceiling
    clang libclang-rt-14-dev llvm-14             # make fuzz: clang, libFuzzer
                                                 # and sanitizer runtimes,
                                                 # llvm-symbolizer
    binutils                                     # readelf (test_hardening.sh)
)

$SUDO apt-get update
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    "${PACKAGES[@]}"
# Debian packages npm separately; some Node.js builds bring their own.
if ! command -v npm >/dev/null 2>&1; then
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends npm
fi
npm ci --prefix "$ROOT/tests/verify" --no-audit --no-fund
