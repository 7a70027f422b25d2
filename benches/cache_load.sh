#!/usr/bin/env bash
# Load benchmark of the sidecar cache API (issue 2's figures).
# Needs wrk (apt-get install wrk) and PostgreSQL server binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk" >&2; exit 1; }
cargo build --release -q -p simcache-sidecar -p simcache-benches
exec target/release/cache-load "$@"
