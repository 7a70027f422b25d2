#!/usr/bin/env bash
# Installs Debian's prometheus package (prometheus and promtool, static Go
# binaries) into $1 without running its maintainer scripts: `apt-get
# download` then `dpkg -x`. Idempotent and safe to run from several test
# binaries at once.
set -euo pipefail
dir="$1"
mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9
if [ -x "$dir/usr/bin/promtool" ] && [ -x "$dir/usr/bin/prometheus" ]; then
  exit 0
fi
command -v apt-get >/dev/null || { echo "apt-get is needed to fetch Debian's prometheus package" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
if ! apt-get download prometheus >/dev/null 2>&1; then
  # A fresh machine may have no package lists yet.
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  apt-get download prometheus >/dev/null || { echo "apt-get download prometheus failed" >&2; exit 1; }
fi
dpkg -x prometheus_*.deb "$dir"
"$dir/usr/bin/promtool" --version | head -1
