#!/usr/bin/env bash
# The operator doing its main job on the local closed loop: a real kube-apiserver and
# controller-manager, a real Prometheus, emulated GPU pods, an example resource under a load
# surge. Sets everything up first (the first run builds the kube binaries: 6-9 minutes).
# Extra arguments go to `specops demo` (see `specops demo --help`).
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
step 1/3 "python environment"
hack/setup-python.sh
step 2/3 "test world binaries"
hack/setup-testbed.sh
step 3/3 "demo (about 7 minutes)"
mkdir -p .local
exec "$VENV/bin/specops" demo --run-dir .local/demo --plot .local/demo-timeline.png "$@"
