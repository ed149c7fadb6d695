#!/usr/bin/env bash
# Set up everything the tests need and run them all: lint, format, types, import layers, then
# pytest (unit, property and integration tests; the integration tests start a real control plane
# and Prometheus themselves).
# Usage: hack/test.sh [pytest args...]      e.g. hack/test.sh tests/unit -q
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
t0=$(date +%s)
step 1/6 "python environment"
hack/setup-python.sh
step 2/6 "test world: etcd, Prometheus, kube-apiserver + kube-controller-manager (built once, cached)"
hack/setup-testbed.sh
step 3/6 "ruff (lint + format check)"
"$VENV/bin/ruff" check operator testkit tests benchmarks
"$VENV/bin/ruff" format --check operator testkit tests benchmarks
step 4/6 "mypy (strict, package)"
"$VENV/bin/mypy"
step 5/6 "import layers (import-linter)"
"$VENV/bin/lint-imports"
step 6/6 "pytest"
set +e
"$VENV/bin/pytest" "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi
echo "hack/test.sh finished in $(( $(date +%s) - t0 )) s with exit code $rc"
exit "$rc"
