#!/usr/bin/env bash
# Builds the real kube-apiserver (Kubernetes 1.20.2, Debian's `kubernetes`
# source package) and installs etcd, once per machine; prints the directory
# holding the binaries. Cached outside the repository, keyed by version.
#
# Known facts this relies on: Debian bookworm ships etcd-server 3.4 and
# golang-go 1.19; Kubernetes 1.20 builds in GOPATH mode with
# `make WHAT=cmd/kube-apiserver` (needs rsync); its vendored
# modern-go/reflect2 1.0.1 crashes under Go >= 1.18 when a custom resource is
# created, and Debian's golang-github-modern-go-reflect2-dev (1.0.2) is a
# drop-in replacement. The system's apt sources are left alone: a private
# apt configuration adds deb-src entries derived from the machine's own.
set -euo pipefail

VERSION=1.20.2
CACHE="${SIMCACHE_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/simcache/kubernetes-$VERSION}"
BIN="$CACHE/bin"
if [ -x "$BIN/kube-apiserver" ] && command -v etcd >/dev/null 2>&1; then
  echo "$BIN"
  exit 0
fi
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9
if [ -x "$BIN/kube-apiserver" ] && command -v etcd >/dev/null 2>&1; then
  echo "$BIN"
  exit 0
fi

if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
need=""
for p in etcd-server golang-go rsync golang-github-modern-go-reflect2-dev dpkg-dev openssl make; do
  dpkg -s "$p" >/dev/null 2>&1 || need="$need $p"
done
if [ -n "$need" ]; then
  echo "installing:$need" >&2
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $need >&2
fi

work="$CACHE/build"
rm -rf "$work"
mkdir -p "$work/apt/lists/partial" "$work/apt/sources.list.d"
# The source entries are the machine's own apt sources turned into deb-src
# ones (one-line and deb822 files alike), so this script names no mirror.
: > "$work/apt/sources.list"
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
  [ -f "$f" ] || continue
  sed -n 's/^[[:space:]]*deb[[:space:]]\(.*\)$/deb-src \1/p' "$f" >> "$work/apt/sources.list"
done
for f in /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] || continue
  sed 's/^Types:.*$/Types: deb-src/' "$f" > "$work/apt/sources.list.d/$(basename "$f")"
done
aptopts=(-o "Dir::Etc::SourceList=$work/apt/sources.list" -o "Dir::Etc::SourceParts=$work/apt/sources.list.d"
         -o "Dir::State::Lists=$work/apt/lists" -o "APT::Sandbox::User=root")
# A third-party repository without source packages makes `update` complain;
# `source` below fails plainly if no repository has the package.
(cd "$work" && { apt-get -qq "${aptopts[@]}" update >&2 || echo "apt-get update reported errors (see above); trying the sources it did read" >&2; } \
  && apt-get -qq "${aptopts[@]}" source --download-only kubernetes >&2)
(cd "$work" && dpkg-source -x --no-check kubernetes_*.dsc src >&2)
rm -rf "$work/src/vendor/github.com/modern-go/reflect2"
cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 "$work/src/vendor/github.com/modern-go/reflect2"
echo "building kube-apiserver $VERSION (about five minutes)" >&2
(cd "$work/src" && make WHAT=cmd/kube-apiserver >&2)
mkdir -p "$BIN"
cp "$work/src/_output/bin/kube-apiserver" "$BIN/"
rm -rf "$work"
echo "$BIN"
