"""Benchmark of the tally job against a plain-Python baseline (benchmarks/plain_tally.py).

    .venv/bin/python benchmarks/bench_tally.py [--repeats 3] [--whole_repeats 3] [--skip_whole]

Three checks, each measurement in a fresh child process (peak RSS from ``os.wait4``):

* in-process ratio: ``build_tally_pipeline`` on the DirectRunner vs ``plain_tally.tally_files``
  over 1,000,000 logs in 100 files, timing only the work (imports excluded), alternating,
  median of ``--repeats``; then the outputs are compared (the final global tally must be equal);
* memory: the pipeline over the same number of logs spread over 1,000 files, peak RSS compared
  with the 100-file runs;
* whole process: ``beam-tally tally`` (default options: two workers on two cores for this
  input) vs ``python benchmarks/plain_tally.py`` (one core), and Polars
  (``benchmarks/polars_tally.py``) and DuckDB (``benchmarks/duckdb_tally.py``) when installed
  (``pip install 'beam-tally[bench]'``; else one line says so), over 10,000,000 logs in 100 files,
  wall time from here including interpreter start-up, alternating, median (and best) of
  ``--whole_repeats``; beam-tally's outputs are checked against the baseline's, Polars' and
  DuckDB's final global tally too.

Data sets are generated under ``bench_data/`` (one subdirectory per size, reused when its
manifest matches). Exit status 1 if a run fails or the outputs differ.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass

import harness
from harness import MANIFEST, BenchError, Run, mib

SCRIPT = os.path.abspath(__file__)
PATTERN = "logs_*.json"


# --- the child: one measurement -------------------------------------------------------------


def generate_worker(data: str, params: str) -> None:
    from beam_tally.generate.tally import generate_tally

    print(json.dumps(generate_tally(data, **json.loads(params))))


def worker(args: argparse.Namespace) -> None:
    """Runs one measurement and prints ``{"seconds": ...}``; imports are not timed."""
    pattern = os.path.join(args.data, PATTERN)
    out = args.out
    os.makedirs(out, exist_ok=True)
    if args.worker == "pipeline":
        from beam_tally.jobs.tally import build_tally_pipeline

        argv = ["--runner=DirectRunner", "--input", pattern, "--output", out, "--print_limit", "0"]
        work = harness.pipeline_work(build_tally_pipeline, argv)
    else:
        sys.path.insert(0, harness.HERE)
        import plain_tally

        def work() -> None:
            plain_tally.tally_files(sorted(glob.glob(pattern)), out)

    harness.time_work(work, args.profile)


# --- the parent: children, data, report ----------------------------------------------------


@dataclass
class DataSet:
    logs: int
    files: int
    path: str

    @property
    def glob(self) -> str:
        return os.path.join(self.path, PATTERN)

    @property
    def label(self) -> str:
        return f"{self.logs:,} logs in {self.files:,} files"


def prepare(root: str, logs: int, files: int, args) -> tuple[DataSet, str]:
    """Generates the data set, or reuses it when its manifest and file count match."""
    if logs % files:
        raise BenchError(f"{logs:,} logs do not split evenly over {files:,} files")
    path = os.path.join(root, f"logs{logs}_files{files}")
    params = {
        "files": files,
        "logs_per_file": logs // files,
        "emails": args.emails,
        "bad_fraction": args.bad_fraction,
        "seed": args.seed,
    }
    manifest_path = os.path.join(path, MANIFEST)
    existing = sorted(glob.glob(os.path.join(path, PATTERN)))
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        with open(manifest_path) as handle:
            manifest = json.load(handle)
        if manifest.get("params") == params and len(existing) == files:
            written = manifest["written"]
            return DataSet(logs, files, path), f"reused ({written['bad_logs']:,} bad logs)"
    for stale in [*existing, manifest_path]:
        with contextlib.suppress(FileNotFoundError):
            os.remove(stale)
    # In a child, like every measurement, so that this process stays small (see run_child).
    cmd = harness.worker_cmd(SCRIPT, "generate", "--data", path)
    run = harness.run_child([*cmd, "--params", json.dumps(params)], args.timeout)
    seconds = run.seconds
    written = run.result()
    with open(manifest_path, "w") as handle:
        json.dump({"params": params, "written": written}, handle)
    return DataSet(logs, files, path), (
        f"generated in {seconds:.1f} s ({written['bad_logs']:,} bad logs)"
    )


def measure(kind: str, data: DataSet, out: str, timeout: float) -> Run:
    cmd = harness.worker_cmd(SCRIPT, kind, "--data", data.path, "--out", out)
    return harness.measure(kind, cmd, timeout)


def compare(pipeline_dir: str, baseline_dir: str, timeout: float) -> str:
    return harness.compare(SCRIPT, pipeline_dir, baseline_dir, timeout)


def _lines(path: str) -> Counter:
    """The multiset of a file's lines."""
    with open(path, "rb") as handle:
        return Counter(handle)


def compare_outputs(pipeline_dir: str, baseline_dir: str) -> str:
    """Raises BenchError unless the pipeline's outputs match the baseline's; returns a note.

    The final global tally and per-file tallies must be equal; update lines must be as many.
    ``after`` names the last file applied, which depends on the order files reach the global
    tally: it is reported, not required to match.
    """
    finals = []
    for directory in (pipeline_dir, baseline_dir):
        with open(os.path.join(directory, "global_tally_final.json"), encoding="utf-8") as f:
            finals.append(json.load(f))
    pipe, base = finals
    problems = []
    if pipe["global_tally"] != base["global_tally"]:
        problems.append("final global_tally differs")
    if pipe["files"] != base["files"]:
        problems.append(f"final files {pipe['files']} != {base['files']}")
    lines = {}
    for name in ("tallies.jsonl", "dead_letters.jsonl", "global_tally.jsonl"):
        a = _lines(os.path.join(pipeline_dir, name))
        b = _lines(os.path.join(baseline_dir, name))
        lines[name] = b.total()
        if name == "global_tally.jsonl":  # the updates depend on the order files arrive
            if a.total() != b.total():
                problems.append(f"{name} has {a.total()} lines, baseline {b.total()}")
        elif a != b:
            problems.append(f"{name} differs ({a.total()} vs {b.total()} lines)")
    if problems:
        raise BenchError(
            f"outputs differ: {'; '.join(problems)} ({pipeline_dir} vs {baseline_dir})"
        )
    logs = sum(entry["total"] for entry in base["global_tally"])
    after = "same" if pipe["after"] == base["after"] else "differs (arrival order)"
    return (
        f"{base['files']:,} files, {logs:,} logs, {len(base['global_tally']):,} emails, "
        f"{lines['dead_letters.jsonl']:,} dead letters; "
        f"'after' {after}"
    )


def in_process(args, data: DataSet, tmp: str) -> tuple[float, float, float]:
    """Alternating pipeline/baseline runs; returns (ratio, pipeline RSS MiB, pipeline s)."""
    print(f"\nin-process: {data.label}, {args.repeats} runs each, alternating (median)")

    def run(kind: str, i: int) -> Run:
        return measure(kind, data, os.path.join(tmp, f"inproc_{kind}_{i}"), args.timeout)

    runs = harness.alternate(args.repeats, ("pipeline", "baseline"), run)
    medians = {}
    for kind, kind_runs in runs.items():
        seconds = statistics.median(r.seconds for r in kind_runs)
        rss = max(r.rss_mib for r in kind_runs)
        medians[kind] = (seconds, rss)
        print(
            f"  {kind:<8} median {seconds:7.2f} s  {data.logs / seconds:>12,.0f} logs/s  "
            f"peak RSS {mib(rss)}"
        )
    ratio = medians["pipeline"][0] / medians["baseline"][0]
    print(f"  ratio pipeline/baseline {ratio:.2f}")
    baseline_dir = os.path.join(tmp, "inproc_baseline_0")
    for i in range(args.repeats):
        note = compare(os.path.join(tmp, f"inproc_pipeline_{i}"), baseline_dir, args.timeout)
    print(f"correctness: OK, all {args.repeats} pipeline runs match the baseline ({note})")
    return ratio, medians["pipeline"][1], medians["pipeline"][0]


def memory(args, data: DataSet, tmp: str, rss_100: float, seconds_100: float) -> float:
    print(f"\nmemory: pipeline over {data.label} ({args.memory_repeats} run(s))")
    runs = [
        measure("pipeline", data, os.path.join(tmp, f"many_pipeline_{i}"), args.timeout)
        for i in range(args.memory_repeats)
    ]
    seconds = statistics.median(r.seconds for r in runs)
    rss = max(r.rss_mib for r in runs)
    base = measure("baseline", data, os.path.join(tmp, "many_baseline"), args.timeout)
    note = compare(
        os.path.join(tmp, "many_pipeline_0"), os.path.join(tmp, "many_baseline"), args.timeout
    )
    print(
        f"  pipeline {seconds:7.2f} s  {data.logs / seconds:>12,.0f} logs/s  peak RSS "
        f"{mib(rss)}  ({args.files:,} files: {seconds_100:.2f} s, {mib(rss_100)})"
    )
    print(
        f"  baseline {base.seconds:7.2f} s  peak RSS {mib(base.rss_mib)}  "
        f"(ratio pipeline/baseline {seconds / base.seconds:.2f})"
    )
    print(f"  correctness: OK ({note})")
    ratio = rss / rss_100
    print(f"  peak RSS {data.files:,} files / {args.files:,} files {ratio:.2f}")
    return ratio


OTHER_TOOLS = {"polars": "polars_tally.py", "duckdb": "duckdb_tally.py"}
WHOLE_TARGET = 0.70  # beam-tally / plain Python, whole process, 10M logs (issue 15)


def other_tool_ratios(whole: dict[str, float], name: str) -> str:
    """Another tool's ratio to plain Python and beam-tally's to it (``whole_process``'s)."""
    return (
        f"{name}/plain {whole[name]:.2f}, beam-tally/{name} {whole['beam-tally'] / whole[name]:.2f}"
    )


def compare_finals(name: str, other_dir: str, baseline_dir: str) -> str:
    """Another tool's final global tally against the baseline's (the only output it writes)."""
    finals = []
    for directory in (other_dir, baseline_dir):
        with open(os.path.join(directory, "global_tally_final.json"), encoding="utf-8") as f:
            finals.append(json.load(f)["global_tally"])
    if finals[0] != finals[1]:
        raise BenchError(f"{name}'s final global tally differs ({other_dir} vs {baseline_dir})")
    return f"final global tally equal, {len(finals[1]):,} emails"


def whole_process(args, data: DataSet, tmp: str) -> dict[str, float]:
    commands = {
        "beam-tally": [harness.cli(), "tally", "--print_limit", "0"],
        "plain_tally": [sys.executable, os.path.join(harness.HERE, "plain_tally.py")],
    }
    for name, script in OTHER_TOOLS.items():
        if importlib.util.find_spec(name) is None:
            print(f"\n{name}: not installed (pip install 'beam-tally[bench]'): skipped")
        else:
            commands[name] = [sys.executable, os.path.join(harness.HERE, script)]

    def rate(seconds: float) -> str:
        return f"{data.logs / seconds:>12,.0f} logs/s"

    return harness.whole_process(
        SCRIPT, args, tmp, data.label, commands, data.glob, rate, compare_finals
    )


def bench(args) -> int:
    started = time.perf_counter()
    print(f"beam-tally benchmark: {harness.machine(SCRIPT, args.timeout)}")
    root = harness.data_root(args.data_root)
    sets = [(args.logs, args.files), (args.logs, args.many_files)]
    if not args.skip_whole:
        sets.append((args.whole_logs, args.files))
    print(
        f"data under {root} (emails {args.emails}, bad_fraction {args.bad_fraction}, "
        f"seed {args.seed}):"
    )
    prepared = []
    for logs, files in sets:
        data, note = prepare(root, logs, files, args)
        prepared.append(data)
        print(f"  {os.path.basename(data.path):<26} {data.label}: {note}")

    with tempfile.TemporaryDirectory(prefix="bench_tally_") as tmp:
        ratio, rss_100, seconds_100 = in_process(args, prepared[0], tmp)
        rss_ratio = memory(args, prepared[1], tmp, rss_100, seconds_100)
        whole = None if args.skip_whole else whole_process(args, prepared[2], tmp)

    harness.print_totals(started)
    print(f"ratio (in-process) {ratio:.2f} (target <= 2.0)")
    if whole is None:
        print(f"whole process ratio skipped (--skip_whole) (target <= {WHOLE_TARGET:.2f})")
    else:
        print(f"whole process ratio {whole['beam-tally']:.2f} (target <= {WHOLE_TARGET:.2f})")
        for name in OTHER_TOOLS:
            if name in whole:
                print(f"  {other_tool_ratios(whole, name)}")
    print(f"peak RSS 1000 files / 100 files {rss_ratio:.2f}")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench_tally.py", description=__doc__.split("\n")[0], allow_abbrev=False
    )
    parser.add_argument("--logs", type=int, default=1_000_000, help="logs of the main data set")
    parser.add_argument("--files", type=int, default=100, help="files of the main data set")
    parser.add_argument("--many_files", type=int, default=1_000, help="files, memory check")
    parser.add_argument("--whole_logs", type=int, default=10_000_000, help="logs, whole process")
    parser.add_argument("--emails", type=int, default=1_000)
    parser.add_argument("--bad_fraction", type=float, default=0.001)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=3, help="in-process runs of each")
    parser.add_argument("--memory_repeats", type=int, default=1, help="pipeline runs, 1,000 files")
    parser.add_argument("--whole_repeats", type=int, default=3, help="whole-process runs of each")
    parser.add_argument("--skip_whole", action="store_true", help="skip the whole-process check")
    harness.add_common_args(parser)
    args = parser.parse_args(argv)
    harness.check_at_least_one(
        parser, args, ("repeats", "memory_repeats", "whole_repeats", "logs", "files", "many_files")
    )
    return args


def main(argv: list[str] | None = None) -> int:
    return harness.main(parse_args(argv), bench, worker, generate_worker, compare_outputs)


if __name__ == "__main__":
    sys.exit(main())
