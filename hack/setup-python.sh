#!/usr/bin/env bash
# Create (once) the project's virtualenv under $SPECOPS_CACHE and install SpecOps with its test
# extras, and the test kit (testkit/, a distribution of its own that the image never contains). Re-runs are instant unless pyproject.toml changed.
source "$(dirname "$0")/lib.sh"
stamp=$VENV/.specops-installed
want=$(cat "$ROOT/pyproject.toml" "$ROOT/testkit/pyproject.toml" | sha256sum | cut -c1-16)-$ROOT
if [ -x "$PY" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "python environment up to date ($VENV)"
  exit 0
fi
[ -x "$PY" ] || python3 -m venv "$VENV"
"$PY" -m pip install -q --disable-pip-version-check -U pip 2>&1 | grep -v '^WARNING: Location' || true
"$PY" -m pip install -q --disable-pip-version-check -e "$ROOT[test,plots]" -e "$ROOT/testkit" 2>&1 | grep -v '^WARNING: Location' || true
"$PY" -c "import specops, specops_testkit, kopf, kubernetes, pydantic, typer" # fail here, not in a test
echo "$want" > "$stamp"
echo "python environment ready ($VENV)"
