#!/usr/bin/env bash
# Creates or reuses .venv and installs the project with its test extras.
# Sourced by run_local.sh and run_tests.sh. Re-installs only when pyproject.toml changed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${BEAM_TALLY_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
  # Missing, or half-made by an earlier failure (e.g. no ensurepip): start again.
  echo "creating virtualenv $VENV" >&2
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV" || {
    echo "could not create a virtualenv with $PYTHON: install Python 3.11 with venv and pip" >&2
    exit 2
  }
fi
STAMP="$VENV/.beam-tally-installed"
HASH="$("$VENV/bin/python" -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$ROOT/pyproject.toml")"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$HASH" ]; then
  echo "installing beam-tally and its dependencies into $VENV (first run takes a minute)" >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT[test,dev]"
  echo "$HASH" > "$STAMP"
fi
