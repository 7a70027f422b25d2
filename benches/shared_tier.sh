#!/usr/bin/env bash
# The shared tier's figures (issue 26), beside the bare-hyper ceiling in the
# same run: pod memory-tier hits, misses served by the tier, writes through
# it, and how soon a change reaches another pod's memory tier.
# Needs PostgreSQL server binaries (the test kit finds or installs them).
#
#   benches/shared_tier.sh        (BENCH_SECONDS, default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p simcache-sidecar -p simcache-benches
exec target/release/shared-tier "$@"
