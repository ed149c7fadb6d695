#!/usr/bin/env bash
# Create a kind cluster, build the SpecOps image, load it into the cluster and install the chart.
#
# NOT RUNNABLE HERE: this repository's CI and dev machines have no Docker engine, so this script
# has never been run by CI. It needs docker, kind (https://kind.sigs.k8s.io), kubectl and helm 3.
#
# Usage: hack/kind-up.sh [extra helm args...]   e.g. hack/kind-up.sh --set prometheus.url=http://...
# Env:   CLUSTER (default specops), IMAGE (default specops:dev), NAMESPACE (default specops-system)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CLUSTER=${CLUSTER:-specops}
IMAGE=${IMAGE:-specops:dev}
NAMESPACE=${NAMESPACE:-specops-system}

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "kind-up: $tool not found on PATH" >&2; exit 1; }
done

if ! kind get clusters | grep -qx "$CLUSTER"; then
  kind create cluster --name "$CLUSTER" --config "$ROOT/manifests/kind/cluster.yaml" --wait 120s
fi
kubectl config use-context "kind-$CLUSTER"

docker build -t "$IMAGE" "$ROOT"
kind load docker-image "$IMAGE" --name "$CLUSTER"

# The CRD is in the chart's crds/ (installed on first install); apply it too so re-runs upgrade it.
kubectl apply --server-side -f "$ROOT/charts/specops/crds/"
helm upgrade --install specops "$ROOT/charts/specops" \
  --namespace "$NAMESPACE" --create-namespace \
  --set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}" --set image.pullPolicy=Never \
  --wait --timeout 180s "$@"

kubectl -n "$NAMESPACE" get pods
echo "SpecOps is running in kind cluster '$CLUSTER'. Try: kubectl create namespace serving &&" \
     "kubectl apply -f $ROOT/manifests/examples/ngram-summarization.yaml && kubectl get specinf -A"
