"""``beam-tally report DIR``: rebuilds ``DIR/report.html`` from a finished run's outputs."""

from __future__ import annotations

import os
import sys

from beam_tally.errors import HelpRequested, UsageError, UsageParser
from beam_tally.report import JOBS, load_params, write_report
from beam_tally.report.data import job_of
from beam_tally.report.page import PlotlyMissing
from beam_tally.terminal import escape_control

HELP = """usage: beam-tally report DIR [--job monitor|tally] [--threshold R] [--alert_window S]

Rebuilds DIR/report.html from the outputs a run of 'beam-tally monitor' or 'beam-tally tally'
left in DIR (batch files or a live run's parts), with the --threshold and --alert_window
of the run (kept in its report.html) unless given here; without a report.html, 10 and 120.
The page is one file that needs no network: open it in a browser."""


def run(argv: list[str]) -> int:
    if any(arg in ("-h", "--help") for arg in argv):
        raise HelpRequested(HELP)
    parser = UsageParser(prog="beam-tally report", add_help=False)
    parser.add_argument("directory")
    parser.add_argument("--job", choices=JOBS)
    parser.add_argument("--threshold", type=float)
    parser.add_argument("--alert_window", type=int)
    args = parser.parse_args(argv)
    output = args.directory
    if "://" not in output and not os.path.isdir(output):
        raise UsageError(f"{output!r} is not a directory: give the --output of a run")
    saved = load_params(output)
    job = args.job or saved.get("job") or job_of(output)
    if job is None:
        raise UsageError(
            f"{output!r} holds no output of the monitor or the tally (stats*.jsonl, "
            "tallies*.jsonl...): give the --output of a run"
        )
    params = {k: v for k, v in saved.items() if k != "job"}
    if args.threshold is not None:
        if args.threshold < 0:
            raise UsageError("--threshold must be 0 or more requests per second")
        params["threshold"] = args.threshold
    if args.alert_window is not None:
        if args.alert_window <= 0:
            raise UsageError("--alert_window must be a positive number of seconds")
        params["alert_window"] = args.alert_window
    try:
        print(f"report: {escape_control(write_report(output, job, params))}")
    except PlotlyMissing as missing:
        print(f"beam-tally report: {missing}", file=sys.stderr)
        return 1
    return 0
