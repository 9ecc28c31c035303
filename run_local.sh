#!/usr/bin/env bash
# The main jobs on the embedded default (DirectRunner) over generated sample files: the tally
# job, then the access-log monitor; each leaves report.html beside its outputs. Extra arguments
# go to `beam-tally tally`, e.g. ./run_local.sh --print_limit 5
set -euo pipefail
ROOT="$(cd "$(dirname "$0")" && pwd)"
source "$ROOT/scripts/ensure_venv.sh"
DATA="$ROOT/sample_data/logs"
if ! ls "$DATA"/logs_*.json >/dev/null 2>&1; then
  "$VENV/bin/beam-tally" generate tally --out "$DATA" --files 12 --logs_per_file 2000 \
    --emails 300 --bad_fraction 0.002 --bad_files 2 --empty_files 1 --seed 7
fi
"$VENV/bin/beam-tally" tally --input "$DATA/logs_*.json" --output "$ROOT/output/tally" \
  --runner=DirectRunner --print_limit 10 "$@"

# The access-log monitor over 15 minutes of traffic with a burst: an alert, then its recovery.
ACCESS="$ROOT/sample_data/access/access.csv"
if [ ! -f "$ACCESS" ]; then
  "$VENV/bin/beam-tally" generate access --out "$ACCESS" --format csv --seconds 900 --rate 6 \
    --burst 200:150:25 --disorder 20 --bad_fraction 0.01 --seed 1
fi
echo
echo "== beam-tally monitor: 10-second stats and the high-traffic alerts in event-time order, then the summary =="
"$VENV/bin/beam-tally" monitor --input "$ACCESS" --output "$ROOT/output/monitor" \
  --runner=DirectRunner
echo
echo "== reports: open them in a browser (one file each, no network needed) =="
echo "  tally:   $ROOT/output/tally/report.html"
echo "  monitor: $ROOT/output/monitor/report.html"
