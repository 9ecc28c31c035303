#!/usr/bin/env bash
# The main job on the embedded default (DirectRunner) over generated sample files.
# Extra arguments go to `beam-tally tally`, e.g. ./run_local.sh --print_limit 5
set -euo pipefail
ROOT="$(cd "$(dirname "$0")" && pwd)"
source "$ROOT/scripts/ensure_venv.sh"
DATA="$ROOT/sample_data/logs"
if ! ls "$DATA"/logs_*.json >/dev/null 2>&1; then
  "$VENV/bin/beam-tally" generate tally --out "$DATA" --files 12 --logs_per_file 2000 \
    --emails 300 --bad_fraction 0.002 --bad_files 2 --empty_files 1 --seed 7
fi
exec "$VENV/bin/beam-tally" tally --input "$DATA/logs_*.json" --output "$ROOT/output/tally" \
  --runner=DirectRunner --print_limit 10 "$@"
