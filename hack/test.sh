#!/usr/bin/env bash
# Set up everything the tests need and run them all: lint, format, types, import layers, pytest.
# Usage: hack/test.sh [pytest args...]
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
step 1/5 "python environment"
hack/setup-python.sh
step 2/5 "ruff (lint + format check)"
"$VENV/bin/ruff" check operator tests
"$VENV/bin/ruff" format --check operator tests
step 3/5 "mypy (strict, package)"
"$VENV/bin/mypy"
step 4/5 "import layers (import-linter)"
"$VENV/bin/lint-imports"
step 5/5 "pytest"
set +e
"$VENV/bin/pytest" "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi
exit "$rc"
