#!/usr/bin/env bash
# The test suite: creates or reuses .venv, checks lint and format, runs pytest.
# Extra arguments go to pytest, e.g. ./run_tests.sh -k tally -x
set -euo pipefail
ROOT="$(cd "$(dirname "$0")" && pwd)"
source "$ROOT/scripts/ensure_venv.sh"
cd "$ROOT"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
exec "$VENV/bin/python" -m pytest "$@"
