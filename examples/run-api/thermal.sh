#!/bin/sh
# The same simulation without HTTP: read inputs from the environment, print
# progress (captured as logs), and leave the outputs as JSON in the file the
# sidecar names in SIMCACHE_OUTPUTS.
set -eu
T="${SIMCACHE_INPUT_TEMPERATURE:?}"
L="${SIMCACHE_INPUT_LENGTH:-1.0}"
echo "heating a steel bar of ${L} m to ${T} K"
awk -v t="$T" -v l="$L" 'BEGIN {
  dt = t - 293.15; e = 200e9; a = 12e-6
  s = e * a * (dt < 0 ? -dt : dt)
  printf "{\"max_stress\": %.6g, \"elongation\": %.6g}\n", s, a * dt * l
}' > "$SIMCACHE_OUTPUTS"
echo "done"
