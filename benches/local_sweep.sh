#!/usr/bin/env bash
# A local sweep of the thermal example's shell script (N points, default
# 1,000): `simcache run -j 2` against `-j 1`, against the same script run N
# times in a plain shell loop (no simcache at all), and the repeat of the
# sweep served from the cache. Same machine, same run, one after another.
#
#   benches/local_sweep.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000}
cargo build -q --release -p simcache
bin=$PWD/target/release/simcache
script=$PWD/examples/run-api/thermal.sh
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/sweep.yaml" <<YAML
apiVersion: simcache.io/v1alpha1
kind: Simulation
metadata:
  name: thermal-sh
  annotations:
    simcache.io/local-command: '["sh", "$script"]'
spec:
  version: "1.0.0"
  image: example
  inputs:
    temperature: {type: number, units: K, min: 0, max: 2000}
    length: {type: number, units: m, default: 1.0}
  outputs:
    max_stress: {type: number, units: Pa}
    elongation: {type: number, units: m}
---
apiVersion: simcache.io/v1alpha1
kind: SimulationSweep
metadata: {name: bench}
spec:
  simulation: {name: thermal-sh}
  parameters:
    temperature: {linspace: {from: 300, to: 1300, count: $N}}
YAML
now() { date +%s.%N; }
timed() {
  local s; s=$(now)
  "$@" > /dev/null 2> "$work/stderr" || { cat "$work/stderr"; exit 1; }
  echo "$(now) - $s" | bc
}
loop() {
  for i in $(seq 0 $((N - 1))); do
    T=$(echo "300 + 1000 * $i / ($N - 1)" | bc -l)
    SIMCACHE_INPUT_TEMPERATURE=$T SIMCACHE_OUTPUTS="$work/out.json" sh "$script" > /dev/null
  done
}
j1=$(timed "$bin" --home "$work/j1" run -f "$work/sweep.yaml" -j 1)
j2=$(timed "$bin" --home "$work/j2" run -f "$work/sweep.yaml" -j 2)
tail -1 "$work/stderr"
again=$(timed "$bin" --home "$work/j2" run -f "$work/sweep.yaml" -j 2)
tail -1 "$work/stderr"
shell=$(timed loop)
printf '%s points on %s cores\n' "$N" "$(nproc)"
printf '  simcache run -j 1:        %6.2f s  (%.1f ms/point)\n' "$j1" "$(echo "$j1 * 1000 / $N" | bc -l)"
printf '  simcache run -j 2:        %6.2f s  (%.1f ms/point, %.2fx -j 1)\n' "$j2" "$(echo "$j2 * 1000 / $N" | bc -l)" "$(echo "$j1 / $j2" | bc -l)"
printf '  the same, from the cache: %6.2f s\n' "$again"
printf '  shell loop, no simcache:  %6.2f s  (%.1f ms/point)\n' "$shell" "$(echo "$shell * 1000 / $N" | bc -l)"
