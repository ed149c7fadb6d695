#!/usr/bin/env bash
# Build kube-apiserver and kube-controller-manager v1.20.2 from Debian bookworm's `kubernetes`
# source package with Debian's golang-go (1.19), offline. Cached: a second run with the binaries
# present returns at once.
#
# Gotcha fixed here: built with Go >= 1.18 the bundled modern-go/reflect2 1.0.1 makes the apiserver
# segfault on its first CRD request; Debian's newer reflect2 and json-iterator sources replace them.
#
# Env: SPECOPS_CACHE (default ~/.cache/specops); binaries land in $SPECOPS_CACHE/kube/bin.
set -euo pipefail
CACHE=${SPECOPS_CACHE:-$HOME/.cache/specops}
WORK=$CACHE/kube
BIN=$WORK/bin
if [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kube-controller-manager" ]; then
  echo "kube binaries cached in $BIN"; exit 0
fi
mkdir -p "$WORK"/apt/src "$WORK"/apt/sources.list.d "$WORK"/apt/lists/partial "$WORK"/apt/cache/archives/partial "$BIN"
export DEBIAN_FRONTEND=noninteractive
echo "[1/4] installing the Go toolchain and replacement sources (apt)"
dpkg -s golang-go golang-github-modern-go-reflect2-dev >/dev/null 2>&1 || apt-get update -qq
apt-get install -y -qq --no-install-recommends golang-go rsync \
  golang-github-modern-go-reflect2-dev golang-github-json-iterator-go-dev >/dev/null
# Source lines come from this machine's own apt configuration, pinned to bookworm, whose
# `kubernetes` source package is v1.20.2.
sed -e 's/^Types: deb$/Types: deb-src/' -e 's/^Suites: .*/Suites: bookworm/' \
  /etc/apt/sources.list.d/debian.sources | awk 'BEGIN{RS="";ORS="\n\n"} /debian-security/{next} {print}' \
  > "$WORK/apt/sources.list.d/src.sources"
APTOPTS=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$WORK/apt/sources.list.d"
  -o "Dir::State::Lists=$WORK/apt/lists" -o "Dir::Cache=$WORK/apt/cache")
SRC=$WORK/apt/src/k/kubernetes-1.20.2
if [ ! -d "$SRC" ]; then
  echo "[2/4] fetching the kubernetes source package"
  apt-get "${APTOPTS[@]}" update >/dev/null
  (cd "$WORK/apt/src" && apt-get "${APTOPTS[@]}" source --download-only kubernetes >/dev/null 2>&1)
  mkdir -p "$WORK/apt/src/k"
  tar -xzf "$WORK"/apt/src/kubernetes_*.orig.tar.gz -C "$WORK/apt/src/k"
  V=$SRC/vendor/github.com
  rm -rf "$V/modern-go/reflect2" "$V/json-iterator/go"
  cp -a /usr/share/gocode/src/github.com/modern-go/reflect2 "$V/modern-go/reflect2"
  cp -a /usr/share/gocode/src/github.com/json-iterator/go "$V/json-iterator/go"
  find "$V/modern-go/reflect2" "$V/json-iterator/go" -name '*_test.go' -delete
else
  echo "[2/4] kubernetes source already unpacked"
fi
cd "$SRC"
export GOPATH=$SRC/.go CGO_ENABLED=0 GOCACHE=$WORK/gocache GOPROXY=off HOME=$WORK/home
export KUBE_GIT_VERSION=v1.20.2 KUBE_GIT_TREE_STATE=clean KUBE_GIT_COMMIT=faecb196815e248d3ecfb03c680a4507229c2a56
mkdir -p .go/src/k8s.io "$HOME"
[ -L .go/src/k8s.io/kubernetes ] || ln -s ../../.. .go/src/k8s.io/kubernetes
echo "[3/4] building kube-apiserver and kube-controller-manager (about 9 min cold, 3.5 warm)"
t0=$(date +%s)
make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" >"$WORK/build.log" 2>&1 || {
  tail -40 "$WORK/build.log"; exit 1; }
cp -f _output/bin/kube-apiserver _output/bin/kube-controller-manager "$BIN/"
echo "[4/4] built in $(( $(date +%s) - t0 )) s; binaries in $BIN"
# The unpacked tree and Go cache (~2.6 GB) are only needed for a rebuild.
rm -rf "$WORK/apt/src" "$WORK/gocache"
