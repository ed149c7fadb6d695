#!/usr/bin/env bash
# The operator's pure core on the examples: budget verdicts, a refused resource, rendered manifests.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
step 1/4 "python environment"
hack/setup-python.sh
SPECOPS=$VENV/bin/specops
step 2/4 "budget plan: Llama-3.1-70B INT8 + 8B draft on 2 x H100"
"$SPECOPS" plan manifests/examples/llama70b-int8-h100.yaml
step 3/4 "a resource that cannot work is refused, naming the field and the fix"
"$SPECOPS" validate manifests/examples/invalid-bf16-on-h100.yaml || echo "(exit code $? as expected)"
step 4/4 "rendered pools and Service (speculative=1, baseline=1), vLLM args only"
"$SPECOPS" render manifests/examples/llama70b-int8-h100.yaml --replicas-split speculative=1,baseline=1 \
  | grep -E '^(kind|  name)|--speculative-config|^        - .\{' || true
echo
echo "Full manifests: $SPECOPS render manifests/examples/<file>.yaml"
