#!/usr/bin/env bash
# Release check: the dialect table (operator/specops/vllm/dialect.py) and the commands SpecOps
# renders, checked by real vLLM releases' own parsers and config classes (docs/vllm-compat.md).
#
# Usage: hack/vllm-compat.sh [--no-record] [--shallow] VERSION...
#        e.g. hack/vllm-compat.sh 0.32.0 0.15.1 0.10.2 0.8.5 0.6.6
#
# Per version, a virtualenv is built once under $SPECOPS_CACHE/vllm/<version>: the vLLM wheel without
# its dependencies, the CPU build of torch, then only the packages the checks import (found by
# tests/vllm_compat/bootstrap.py from the import errors): no CUDA, no triton, no GPU.  The first
# build of a version downloads about 1 GB and takes 15-30 minutes on 2 cores; later runs reuse it
# and take 1-8 minutes per version.  The results are recorded in docs/vllm-compat-results.json
# and the table of docs/vllm-compat.md (unless --no-record); the exit code is 1 when vLLM
# contradicts the table for any version.
#
# torch: SPECOPS_VLLM_TORCH (default torch==2.13.0+cpu) is installed with pip; set
# SPECOPS_TORCH_INDEX to the address of PyTorch's CPU wheel index (the "CPU" line of PyTorch's own
# install instructions for pip) when your pip cannot find that build otherwise.  A CUDA build is
# refused: the checks never need one.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

record=--record
shallow=
versions=()
for arg in "$@"; do
  case "$arg" in
    --no-record) record= ;;
    --shallow) shallow=--shallow ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    -*) echo "unknown option $arg" >&2; exit 2 ;;
    *) versions+=("$arg") ;;
  esac
done
[ "${#versions[@]}" -gt 0 ] || { sed -n '4,5p' "$0" >&2; exit 2; }

TORCH_SPEC=${SPECOPS_VLLM_TORCH:-torch==2.13.0+cpu}
TORCH_INDEX=${SPECOPS_TORCH_INDEX:-}

vllm_env() {  # build (once) the environment of one version; prints nothing but progress
  local version=$1 dir=$SPECOPS_CACHE/vllm/$1
  local py=$dir/bin/python
  local pip=("$py" -m pip install -q --disable-pip-version-check)
  [ -x "$py" ] || python3 -m venv "$dir"
  if ! "$py" -c "import importlib.metadata as m; assert m.version('vllm') == '$version'" 2>/dev/null; then
    echo "   vLLM $version wheel (without its dependencies)"
    VLLM_TARGET_DEVICE=cpu "${pip[@]}" --no-deps "vllm==$version"
  fi
  if ! "$py" -c "import torch" 2>/dev/null; then
    echo "   $TORCH_SPEC"
    if [ -n "$TORCH_INDEX" ]; then
      "${pip[@]}" --index-url "$TORCH_INDEX" "$TORCH_SPEC"
    else
      "${pip[@]}" "$TORCH_SPEC"
    fi
  fi
  if ! "$py" -c "import torch, sys; sys.exit(torch.version.cuda is not None)"; then
    echo "$dir has a CUDA build of torch; remove $dir and set SPECOPS_TORCH_INDEX (see the header)" >&2
    return 1
  fi
  echo "   packages the checks import (tests/vllm_compat/bootstrap.py)"
  VLLM_TARGET_DEVICE=cpu "$py" tests/vllm_compat/bootstrap.py
}

hack/setup-python.sh >/dev/null
failed=()
for version in "${versions[@]}"; do
  t0=$(date +%s)
  step "$version" "environment ($SPECOPS_CACHE/vllm/$version)"
  if ! vllm_env "$version"; then
    failed+=("$version (environment)")
    continue
  fi
  step "$version" "checks"
  if ! "$PY" -m tests.vllm_compat.run --python "$SPECOPS_CACHE/vllm/$version/bin/python" \
      --log-dir "$ROOT/.local/vllm-compat" $record $shallow "$version"; then
    failed+=("$version")
  fi
  echo "   vLLM $version: $(( $(date +%s) - t0 )) s"
done
if [ "${#failed[@]}" -gt 0 ]; then
  echo "vLLM contradicts the dialect table (or could not be checked): ${failed[*]}" >&2
  exit 1
fi
echo "every checked version agrees with the dialect table"
