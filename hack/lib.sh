# Shared by the hack/ scripts: where things are cached and how progress is shown.
# shellcheck shell=bash
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export SPECOPS_CACHE=${SPECOPS_CACHE:-$HOME/.cache/specops}
# One virtualenv per checkout: the project is installed editable, so a shared one would point at
# whichever checkout installed it last.
VENV=$SPECOPS_CACHE/venvs/$(printf '%s' "$ROOT" | sha256sum | cut -c1-12)
PY=$VENV/bin/python
mkdir -p "$SPECOPS_CACHE"

step() { printf '\n\033[1m==> [%s] %s\033[0m\n' "$1" "$2"; }
