"""Scale on one machine, in one run: both jobs as whole processes with default options.

    .venv/bin/python benchmarks/bench_scale.py [--whole_repeats 3] [--goaccess_repeats 3]
        [--skip_goaccess] [--timeout 600]

* the tally over 10,000,000 logs in 100 files (``bench_tally.whole_process``): ``beam-tally
  tally`` against single-core plain Python (``plain_tally.py``: orjson + Counter), Polars and
  DuckDB (``pip install 'beam-tally[bench]'``; each is skipped with a line when absent);
* the monitor over ~3.3M CSV lines (``bench_monitor.whole_process``): ``beam-tally monitor``
  against single-core plain Python (``plain_monitor.py``: the csv module);
* the monitor over the same traffic as Combined Log Format against GoAccess
  (``bench_monitor.goaccess_check``; skipped with a line when ``goaccess`` is not on PATH).

Every measurement is a fresh child process, wall time including start-up, the tools
alternating, median (and best) of the repeats; every output is checked against the baseline's.
The data is ``bench_tally.py``'s and ``bench_monitor.py``'s (generated under ``bench_data/`` on
first use, then reused). The summary at the end gives each ratio against issue 15's target.
Exit status 1 if a run fails or an output differs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import bench_monitor
import bench_tally
import harness
from harness import BenchError

TALLY_TARGET = bench_tally.WHOLE_TARGET
MONITOR_TARGET = 1.0  # beam-tally / plain Python, whole process, ~3.3M lines


def _verdict(ratio: float, target: float) -> str:
    return f"{ratio:.2f} (target <= {target:.2f}: {'met' if ratio <= target else 'NOT met'})"


def bench(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    common = ["--timeout", str(args.timeout), "--data_root", args.data_root]
    tally_args = bench_tally.parse_args(["--whole_repeats", str(args.whole_repeats), *common])
    monitor_args = bench_monitor.parse_args(
        [
            "--whole_repeats",
            str(args.whole_repeats),
            "--goaccess_repeats",
            str(args.goaccess_repeats),
            *common,
        ]
    )
    print(f"beam-tally scale benchmark: {bench_monitor.machine(args.timeout)}")
    root = harness.data_root(args.data_root)
    print(f"data under {root}:")
    logs, note = bench_tally.prepare(root, tally_args.whole_logs, tally_args.files, tally_args)
    print(f"  {os.path.basename(logs.path):<42} {logs.label}: {note}")
    formats = ["csv"] if args.skip_goaccess else ["csv", "clf"]
    lines = {}
    for fmt in formats:
        lines[fmt], note = bench_monitor.prepare(
            root, fmt, monitor_args.whole_seconds, monitor_args
        )
        name = os.path.relpath(lines[fmt].path, root)
        print(f"  {name:<42} {lines[fmt].label}: {note}")

    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        tally = bench_tally.whole_process(tally_args, logs, tmp)
        monitor = bench_monitor.whole_process(monitor_args, lines["csv"], tmp)
        if args.skip_goaccess:
            print("\ngoaccess: skipped (--skip_goaccess)")
            goaccess = None
        else:
            goaccess = bench_monitor.goaccess_check(monitor_args, lines["clf"], tmp)

    harness.print_totals(started)
    print("\nsummary (whole processes, default options, medians of alternating runs):")
    print(f"  tally, {logs.label}: beam-tally/plain {_verdict(tally['beam-tally'], TALLY_TARGET)}")
    for name in bench_tally.OTHER_TOOLS:
        if name in tally:
            print(f"    {bench_tally.other_tool_ratios(tally, name)}")
        else:
            print(f"    {name}: not installed")
    print(f"  monitor, {lines['csv'].label}: beam-tally/plain {_verdict(monitor, MONITOR_TARGET)}")
    if goaccess is None:
        print("  monitor, CLF: goaccess not measured")
    else:
        goaccess_rate, beam_rate = goaccess
        print(
            f"  monitor, {lines['clf'].label}: beam-tally/goaccess "
            f"{goaccess_rate / beam_rate:.2f} (goaccess {goaccess_rate:,.0f} lines/s, "
            f"beam-tally {beam_rate:,.0f} lines/s)"
        )
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench_scale.py", description=__doc__.split("\n")[0], allow_abbrev=False
    )
    parser.add_argument("--whole_repeats", type=int, default=3, help="runs of each tool")
    parser.add_argument("--goaccess_repeats", type=int, default=3, help="goaccess runs of each")
    parser.add_argument("--skip_goaccess", action="store_true", help="skip the GoAccess check")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per child process")
    parser.add_argument("--data_root", default="bench_data", help="relative to the repo root")
    args = parser.parse_args(argv)
    harness.check_at_least_one(parser, args, ("whole_repeats", "goaccess_repeats"))
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        return bench(parse_args(argv))
    except BenchError as err:
        print(f"\nFAILED: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
