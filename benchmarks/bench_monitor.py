"""Benchmark of the monitor job against a plain-Python baseline (benchmarks/plain_monitor.py).

    .venv/bin/python benchmarks/bench_monitor.py [--repeats 3] [--goaccess_repeats 3]
        [--whole_repeats 3] [--skip_goaccess] [--skip_whole]

Three checks, each measurement in a fresh child process (peak RSS from ``os.wait4``):

* in-process ratio: ``build_monitor_pipeline`` on the DirectRunner vs
  ``plain_monitor.monitor_files`` over ~1,000,000 CSV lines (one day of traffic), timing only
  the work (imports excluded), alternating, median of ``--repeats``; then the outputs are
  compared (stats per window, alerts and dead-letter counts must be equal);
* GoAccess (the ``goaccess`` command, used when it is on PATH; skipped with a message if not):
  ``goaccess --log-format=COMBINED -o report.json`` vs the whole ``beam-tally monitor --format
  clf`` process over ~3.3M lines of the same traffic written as Combined Log Format, wall time
  including start-up (GoAccess is a C program: its start-up is negligible), alternating, median
  of ``--goaccess_repeats``; beam-tally's CLF outputs are checked against the baseline's;
* whole process: ``beam-tally monitor`` (default options: two workers for one file this
  large) vs ``python benchmarks/plain_monitor.py`` (one core) over ~3.3M CSV lines, wall time
  from here including interpreter start-up, median (and best) of ``--whole_repeats``.

The traffic (``beam_tally.generate.access``): ``--rate`` lines/s with a burst of
``--burst_rate`` lines/s for ``--burst_seconds`` every ``--burst_every`` seconds, so that the
default alert rule (above 10 req/s over 120 s) fires and recovers after each burst; lines up to
``--disorder`` s out of order, a ``--bad_fraction`` of bad lines. Data sets are generated under
``bench_data/`` (one subdirectory per file, reused when its manifest matches). Exit status 1 if
a run fails or the outputs differ.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass

import harness
from harness import MANIFEST, BenchError, Run, mib

SCRIPT = os.path.abspath(__file__)


# --- the child: one measurement -------------------------------------------------------------


def generate_worker(path: str, params: str) -> None:
    from beam_tally.generate.access import generate_access

    params = json.loads(params)
    params["bursts"] = [tuple(burst) for burst in params["bursts"]]
    print(json.dumps(generate_access(path, **params)))


def worker(args: argparse.Namespace) -> None:
    """Runs one measurement and prints ``{"seconds": ...}``; imports are not timed."""
    data, out, fmt = args.data, args.out, args.format
    os.makedirs(out, exist_ok=True)
    if args.worker == "pipeline":
        from beam_tally.jobs.monitor import build_monitor_pipeline

        argv = ["--runner=DirectRunner", "--input", data, "--output", out, "--format", fmt]
        work = harness.pipeline_work(build_monitor_pipeline, argv)
    else:
        sys.path.insert(0, harness.HERE)
        import plain_monitor

        def work() -> None:
            plain_monitor.monitor_files([data], out, fmt=fmt)

    harness.time_work(work, args.profile)


# --- the parent: children, data, report ----------------------------------------------------


@dataclass
class DataSet:
    path: str
    fmt: str
    lines: int
    good: int
    bad: int

    @property
    def label(self) -> str:
        return f"{self.lines:,} {self.fmt} lines"


def traffic(args, seconds: int) -> dict:
    """``generate_access`` arguments for ``seconds`` of traffic with the bursts of ``args``."""
    bursts = []
    start = args.burst_every // 2
    while start + args.burst_seconds <= seconds:
        bursts.append([start, args.burst_seconds, args.burst_rate])
        start += args.burst_every
    return {
        "seconds": seconds,
        "rate": args.rate,
        "bursts": bursts,
        "disorder": args.disorder,
        "bad_fraction": args.bad_fraction,
        "seed": args.seed,
    }


def prepare(root: str, fmt: str, seconds: int, args) -> tuple[DataSet, str]:
    """Generates the file, or reuses it when its manifest and size match."""
    params = {"fmt": fmt, **traffic(args, seconds)}
    path = os.path.join(root, f"access_{fmt}_{seconds}s_seed{args.seed}")
    data_file = os.path.join(path, f"access.{fmt}")
    manifest_path = os.path.join(path, MANIFEST)
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        with open(manifest_path) as handle:
            manifest = json.load(handle)
        written = manifest["written"]
        if manifest.get("params") == params and os.path.getsize(data_file) == manifest["size"]:
            data = DataSet(data_file, fmt, written["lines"], written["good"], written["bad"])
            return data, f"reused ({data.bad:,} bad)"
    for stale in (data_file, manifest_path):
        with contextlib.suppress(FileNotFoundError):
            os.remove(stale)
    os.makedirs(path, exist_ok=True)
    # In a child, like every measurement, so that this process stays small (see run_child).
    cmd = harness.worker_cmd(SCRIPT, "generate", "--data", data_file)
    run = harness.run_child([*cmd, "--params", json.dumps(params)], args.timeout)
    written = run.result()
    with open(manifest_path, "w") as handle:
        json.dump(
            {"params": params, "written": written, "size": os.path.getsize(data_file)}, handle
        )
    data = DataSet(data_file, fmt, written["lines"], written["good"], written["bad"])
    return data, f"generated in {run.seconds:.1f} s ({data.bad:,} bad)"


def measure(kind: str, data: DataSet, out: str, timeout: float) -> Run:
    cmd = harness.worker_cmd(SCRIPT, kind, "--data", data.path, "--out", out)
    return harness.measure(kind, [*cmd, "--format", data.fmt], timeout)


def compare(pipeline_dir: str, baseline_dir: str, timeout: float) -> str:
    return harness.compare(SCRIPT, pipeline_dir, baseline_dir, timeout)


def _jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def compare_outputs(pipeline_dir: str, baseline_dir: str) -> str:
    """Raises BenchError unless the pipeline's outputs match the baseline's; returns a note.

    Required: the same stats windows with the same (start, hits, bytes); the same alerts as
    (kind, at, hits); as many dead letters. Reported: whether every other stats field, the
    alert averages and the dead-letter reasons are equal as well.
    """
    outputs = []
    for directory in (pipeline_dir, baseline_dir):
        stats = {s["start"]: s for s in _jsonl(os.path.join(directory, "stats.jsonl"))}
        alerts = sorted(_jsonl(os.path.join(directory, "alerts.jsonl")), key=lambda a: a["at"])
        dead = _jsonl(os.path.join(directory, "dead_letters.jsonl"))
        outputs.append((stats, alerts, dead))
    (p_stats, p_alerts, p_dead), (b_stats, b_alerts, b_dead) = outputs
    problems = []

    def key(s: dict) -> tuple:
        return (s["start"], s["hits"], s["bytes"])

    p_keys = sorted(key(s) for s in p_stats.values())
    b_keys = sorted(key(s) for s in b_stats.values())
    if p_keys != b_keys:
        differ = sorted(set(p_keys) ^ set(b_keys))
        problems.append(
            f"stats differ: {len(p_keys):,} vs {len(b_keys):,} windows, "
            f"{len(differ):,} (start, hits, bytes) not in both, first {differ[:2]}"
        )
    p_alert_keys = [(a["kind"], a["at"], a["hits"]) for a in p_alerts]
    b_alert_keys = [(a["kind"], a["at"], a["hits"]) for a in b_alerts]
    if p_alert_keys != b_alert_keys:
        problems.append(f"alerts differ: {p_alert_keys[:4]} vs {b_alert_keys[:4]}")
    if len(p_dead) != len(b_dead):
        problems.append(f"dead letters: {len(p_dead):,} vs {len(b_dead):,}")
    if problems:
        raise BenchError(
            f"outputs differ: {'; '.join(problems)} ({pipeline_dir} vs {baseline_dir})"
        )
    other = sum(p_stats[start] != b_stats[start] for start in b_stats)
    reasons = [Counter(d["reason"].split(":", 1)[0] for d in dead) for dead in (p_dead, b_dead)]
    extra = [
        "all stats fields equal" if not other else f"{other:,} windows differ in other fields",
        "averages equal" if p_alerts == b_alerts else "alert averages or times differ",
        "reasons equal" if reasons[0] == reasons[1] else "dead-letter reasons differ",
    ]
    hits = sum(s["hits"] for s in b_stats.values())
    alerts = sum(a["kind"] == "alert" for a in b_alerts)
    return (
        f"{len(b_stats):,} windows, {hits:,} hits, {alerts} alerts, "
        f"{len(b_alerts) - alerts} recoveries, {len(b_dead):,} dead letters; {', '.join(extra)}"
    )


def goaccess_version(goaccess: str, timeout: float) -> str:
    try:
        first = harness.run_child([goaccess, "--version"], timeout).stdout.strip().splitlines()[0]
    except (BenchError, IndexError, OSError):
        return "goaccess ?"
    return first.replace("GoAccess - ", "goaccess ").rstrip(".")


def machine(timeout: float) -> str:
    def with_goaccess(versions: str) -> str:
        goaccess = shutil.which("goaccess")
        versions += f", {goaccess_version(goaccess, timeout)}" if goaccess else ", no goaccess"
        return versions

    return harness.machine(SCRIPT, timeout, with_goaccess)


def in_process(args, data: DataSet, tmp: str) -> tuple[float, float]:
    """Alternating pipeline/baseline runs; returns (ratio, pipeline lines/s)."""
    print(f"\nin-process: {data.label}, {args.repeats} runs each, alternating (median)")

    def run(kind: str, i: int) -> Run:
        return measure(kind, data, os.path.join(tmp, f"inproc_{kind}_{i}"), args.timeout)

    runs = harness.alternate(args.repeats, ("pipeline", "baseline"), run)
    medians = {}
    for kind, kind_runs in runs.items():
        medians[kind] = statistics.median(r.seconds for r in kind_runs)
        rss = max(r.rss_mib for r in kind_runs)
        print(
            f"  {kind:<8} median {medians[kind]:7.2f} s  {data.lines / medians[kind]:>10,.0f} "
            f"lines/s  peak RSS {mib(rss)}"
        )
    ratio = medians["pipeline"] / medians["baseline"]
    print(f"  ratio pipeline/baseline {ratio:.2f}")
    baseline_dir = os.path.join(tmp, "inproc_baseline_0")
    for i in range(args.repeats):
        note = compare(os.path.join(tmp, f"inproc_pipeline_{i}"), baseline_dir, args.timeout)
    print(f"  correctness: OK, all {args.repeats} pipeline runs match the baseline ({note})")
    return ratio, data.lines / medians["pipeline"]


def goaccess_check(args, data: DataSet, tmp: str) -> tuple[float, float] | None:
    """Alternating GoAccess / ``beam-tally monitor`` runs over CLF; (goaccess, beam) lines/s."""
    goaccess = shutil.which("goaccess")
    if goaccess is None:
        print("\ngoaccess: not installed (no 'goaccess' on PATH; e.g. apt-get install goaccess)")
        return None
    print(
        f"\ngoaccess vs beam-tally: {data.label} (Combined Log Format), whole processes, "
        f"{args.goaccess_repeats} runs each, alternating (median)"
    )
    commands = {
        "goaccess": [goaccess, data.path, "--log-format=COMBINED", "--no-global-config"],
        "beam-tally": [harness.cli(), "monitor", "--input", data.path, "--format", "clf"],
    }

    def run(name: str, i: int) -> Run:
        out = os.path.join(tmp, f"clf_{name}_{i}")
        os.makedirs(out, exist_ok=True)
        if name == "goaccess":
            cmd = [*commands[name], "-o", os.path.join(out, "report.json")]
        else:
            cmd = [*commands[name], "--output", out]
        return harness.run_child(cmd, args.timeout, capture_stdout=False)

    runs = harness.alternate(args.goaccess_repeats, commands, run)
    rates = {}
    medians = {}
    for name, name_runs in runs.items():
        seconds = medians[name] = statistics.median(r.seconds for r in name_runs)
        rates[name] = data.lines / seconds
        best = min(r.seconds for r in name_runs)
        print(
            f"  {name:<10} median {seconds:7.2f} s (best {best:.2f})  {rates[name]:>10,.0f} "
            "lines/s (wall, with start-up)"
        )
    print(f"  ratio beam-tally/goaccess {medians['beam-tally'] / medians['goaccess']:.2f}")
    with open(os.path.join(tmp, "clf_goaccess_0", "report.json"), encoding="utf-8") as handle:
        general = json.load(handle)["general"]
    print(
        f"  goaccess counted {general['total_requests']:,} requests, "
        f"{general['valid_requests']:,} valid, {general['failed_requests']:,} failed"
    )
    baseline_dir = os.path.join(tmp, "clf_baseline")
    measure("baseline", data, baseline_dir, args.timeout)
    note = compare(os.path.join(tmp, "clf_beam-tally_0"), baseline_dir, args.timeout)
    print(f"  correctness: OK, beam-tally's CLF outputs match the baseline's ({note})")
    return rates["goaccess"], rates["beam-tally"]


def whole_process(args, data: DataSet, tmp: str) -> float:
    commands = {
        "beam-tally": [harness.cli(), "monitor", "--format", data.fmt],
        "plain_monitor": [sys.executable, os.path.join(harness.HERE, "plain_monitor.py")],
    }
    commands["plain_monitor"] += ["--format", data.fmt]

    def rate(seconds: float) -> str:
        return f"{data.lines / seconds:>10,.0f} lines/s"

    ratios = harness.whole_process(SCRIPT, args, tmp, data.label, commands, data.path, rate)
    return ratios["beam-tally"]


def bench(args) -> int:
    started = time.perf_counter()
    print(f"beam-tally monitor benchmark: {machine(args.timeout)}")
    root = harness.data_root(args.data_root)
    sets = [("csv", args.seconds)]
    if not args.skip_goaccess:
        sets.append(("clf", args.whole_seconds))
    if not args.skip_whole:
        sets.append(("csv", args.whole_seconds))
    bursts = len(traffic(args, args.seconds)["bursts"])
    print(
        f"data under {root}: {args.rate} lines/s, {bursts} bursts of {args.burst_rate} lines/s "
        f"for {args.burst_seconds} s (one every {args.burst_every} s), disorder "
        f"{args.disorder} s, bad_fraction {args.bad_fraction}, seed {args.seed}:"
    )
    prepared = {}
    for fmt, seconds in sets:
        data, note = prepare(root, fmt, seconds, args)
        prepared[fmt, seconds] = data
        name = os.path.relpath(data.path, root)
        print(f"  {name:<42} {seconds:,} s, {data.label}: {note}")

    with tempfile.TemporaryDirectory(prefix="bench_monitor_") as tmp:
        ratio, _ = in_process(args, prepared["csv", args.seconds], tmp)
        rates = None
        if args.skip_goaccess:
            print("\ngoaccess: skipped (--skip_goaccess)")
        else:
            rates = goaccess_check(args, prepared["clf", args.whole_seconds], tmp)
        whole = None
        if not args.skip_whole:
            whole = whole_process(args, prepared["csv", args.whole_seconds], tmp)

    harness.print_totals(started)
    print(f"ratio (in-process) {ratio:.2f} (target <= 2.5)")
    if args.skip_goaccess:
        print("goaccess: skipped (--skip_goaccess)")
    elif rates is None:
        print("goaccess: not installed")
    else:
        print(f"goaccess lines/s {rates[0]:,.0f} vs beam-tally lines/s {rates[1]:,.0f}")
    if whole is None:
        print("whole process ratio skipped (--skip_whole) (target <= 1.0)")
    else:
        print(f"whole process ratio {whole:.2f} (target <= 1.0)")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench_monitor.py", description=__doc__.split("\n")[0], allow_abbrev=False
    )
    parser.add_argument("--seconds", type=int, default=86_400, help="event seconds, main data")
    parser.add_argument(
        "--whole_seconds",
        type=int,
        default=285_120,
        help="event seconds, whole-process and GoAccess data (about 3.3M lines)",
    )
    parser.add_argument("--rate", type=float, default=8.0, help="lines per second between bursts")
    parser.add_argument("--burst_rate", type=float, default=20.0, help="lines per second")
    parser.add_argument("--burst_seconds", type=int, default=2_100, help="length of a burst")
    parser.add_argument("--burst_every", type=int, default=7_200, help="seconds between bursts")
    parser.add_argument("--disorder", type=float, default=30.0)
    parser.add_argument("--bad_fraction", type=float, default=0.001)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=3, help="in-process runs of each")
    parser.add_argument("--goaccess_repeats", type=int, default=3, help="goaccess runs of each")
    parser.add_argument("--whole_repeats", type=int, default=3, help="whole-process runs of each")
    parser.add_argument("--skip_goaccess", action="store_true", help="skip the GoAccess check")
    parser.add_argument("--skip_whole", action="store_true", help="skip the whole-process check")
    harness.add_common_args(parser)
    parser.add_argument("--format", default="csv", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    harness.check_at_least_one(
        parser, args, ("repeats", "goaccess_repeats", "whole_repeats", "seconds", "whole_seconds")
    )
    if args.burst_every < 1 or args.burst_seconds < 0:
        parser.error("--burst_every must be at least 1 and --burst_seconds at least 0")
    return args


def main(argv: list[str] | None = None) -> int:
    return harness.main(parse_args(argv), bench, worker, generate_worker, compare_outputs)


if __name__ == "__main__":
    sys.exit(main())
