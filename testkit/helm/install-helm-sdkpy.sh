#!/usr/bin/env bash
# Installs helm-sdkpy (Helm's own Go library behind a Python API, from PyPI)
# into a virtualenv under $1, for the chart tests. Idempotent and safe to run
# from several test binaries at once.
#
# helm-sdkpy declares Python >= 3.12 but its wheel is pure Python over a
# bundled shared library, so on an older python3 we fetch the wheel built for
# 3.12 and install it with --ignore-requires-python.
set -euo pipefail
VERSION="${HELM_SDKPY_VERSION:-0.1.32}"
dir="$1"
mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9
py="$dir/venv/bin/python"
if [ -x "$py" ] && "$py" -c 'import helm_sdkpy' 2>/dev/null; then
  exit 0
fi
command -v python3 >/dev/null || { echo "python3 is needed for the chart tests (apt-get install python3 python3-venv)" >&2; exit 1; }
rm -rf "$dir/venv" "$dir/wheels"
python3 -m venv "$dir/venv" || { echo "python3 -m venv failed (apt-get install python3-venv)" >&2; exit 1; }
"$py" -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
"$py" -m pip download --quiet --disable-pip-version-check "helm-sdkpy==$VERSION" \
  --no-deps --python-version 3.12 --only-binary=:all: -d "$dir/wheels"
"$py" -m pip install --quiet --disable-pip-version-check --ignore-requires-python "$dir"/wheels/helm_sdkpy-*.whl
"$py" -c 'import helm_sdkpy; from helm_sdkpy._ffi import get_version; print("helm-sdkpy", get_version())'
