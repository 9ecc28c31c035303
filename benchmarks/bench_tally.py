"""Benchmark of the tally job against a plain-Python baseline (benchmarks/plain_tally.py).

    .venv/bin/python benchmarks/bench_tally.py [--repeats 3] [--whole_repeats 3] [--skip_whole]

Three checks, each measurement in a fresh child process (peak RSS from ``os.wait4``):

* in-process ratio: ``build_tally_pipeline`` on the DirectRunner vs ``plain_tally.tally_files``
  over 1,000,000 logs in 100 files, timing only the work (imports excluded), alternating,
  median of ``--repeats``; then the outputs are compared (the final global tally must be equal);
* memory: the pipeline over the same number of logs spread over 1,000 files, peak RSS compared
  with the 100-file runs;
* whole process: ``beam-tally tally`` vs ``python benchmarks/plain_tally.py`` over 2,000,000 logs
  in 100 files, wall time from here including interpreter start-up, median of ``--whole_repeats``.

Data sets are generated under ``bench_data/`` (one subdirectory per size, reused when its
manifest matches). Exit status 1 if a run fails or the outputs differ.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PATTERN = "logs_*.json"
MANIFEST = "manifest.json"


class BenchError(Exception):
    """A run failed, timed out, or produced different outputs."""


# --- the child: one measurement -------------------------------------------------------------


def generate_worker(data: str, params: str) -> None:
    from beam_tally.generate import generate_tally

    print(json.dumps(generate_tally(data, **json.loads(params))))


def worker(kind: str, data: str, out: str, profile: str | None) -> None:
    """Runs one measurement and prints ``{"seconds": ...}``; imports are not timed."""
    pattern = os.path.join(data, PATTERN)
    os.makedirs(out, exist_ok=True)
    if kind == "pipeline":
        import apache_beam as beam
        from apache_beam.options.pipeline_options import PipelineOptions

        from beam_tally.runtime import tune_gc
        from beam_tally.tally_pipeline import build_tally_pipeline

        argv = ["--runner=DirectRunner", "--input", pattern, "--output", out, "--print_limit", "0"]

        def work() -> None:
            options = PipelineOptions(argv)
            # Exactly what the CLI's run() does: build, tune the GC, run.
            p = beam.Pipeline(options=options)
            build_tally_pipeline(p, options)
            tune_gc()
            p.run().wait_until_finish()

    else:
        sys.path.insert(0, HERE)
        import plain_tally

        def work() -> None:
            plain_tally.tally_files(sorted(glob.glob(pattern)), out)

    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        started = time.perf_counter()
        if profiler:
            profiler.runcall(work)
        else:
            work()
        seconds = time.perf_counter() - started
    if profiler:
        profiler.dump_stats(profile)
    print(json.dumps({"seconds": seconds}))


# --- the parent: children, data, report ----------------------------------------------------


@dataclass
class Run:
    seconds: float
    rss_mib: float
    stdout: str


def run_child(cmd: list[str], timeout: float, *, capture_stdout: bool = True) -> Run:
    """Runs ``cmd`` in its own process group; wall seconds and peak RSS (``ru_maxrss``).

    The group is killed if the child outlives ``timeout``. On Linux a child's ``ru_maxrss``
    starts from this process's own peak RSS (the high-water mark survives fork and exec), so
    this process must stay small: data generation runs in a child too, and outputs are compared
    in a child as well.
    """
    timed_out = threading.Event()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            cmd,
            stdout=out if capture_stdout else subprocess.DEVNULL,
            stderr=err,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=ROOT,
        )

        def kill() -> None:
            timed_out.set()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            # Wait without reaping, so the pid cannot be reused before the timer is cancelled.
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        except BaseException:
            kill()
            raise
        finally:
            timer.cancel()
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    if timed_out.is_set():
        raise BenchError(f"timed out after {timeout:.0f} s and killed: {' '.join(cmd)}")
    if proc.returncode != 0:
        tail = "\n".join(stderr.strip().splitlines()[-25:])
        raise BenchError(f"exit status {proc.returncode}: {' '.join(cmd)}\n{tail}")
    return Run(seconds, usage.ru_maxrss / 1024, stdout)


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
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "generate", "--data", path]
    run = run_child([*cmd, "--params", json.dumps(params)], args.timeout)
    seconds = run.seconds
    written = json.loads(run.stdout.strip().splitlines()[-1])
    with open(manifest_path, "w") as handle:
        json.dump({"params": params, "written": written}, handle)
    return DataSet(logs, files, path), (
        f"generated in {seconds:.1f} s ({written['bad_logs']:,} bad logs)"
    )


def worker_cmd(kind: str, data: DataSet, out: str) -> list[str]:
    script = os.path.abspath(__file__)
    return [sys.executable, script, "--worker", kind, "--data", data.path, "--out", out]


def measure(kind: str, data: DataSet, out: str, timeout: float) -> Run:
    run = run_child(worker_cmd(kind, data, out), timeout)
    try:
        run.seconds = json.loads(run.stdout.strip().splitlines()[-1])["seconds"]
    except (IndexError, ValueError, KeyError) as err:
        raise BenchError(f"{kind} worker printed no result: {run.stdout[-500:]!r}") from err
    return run


def _lines(path: str) -> Counter:
    """The multiset of a file's lines."""
    with open(path, "rb") as handle:
        return Counter(handle)


def compare_worker(pipeline_dir: str, baseline_dir: str) -> None:
    try:
        print(json.dumps({"ok": True, "note": compare_outputs(pipeline_dir, baseline_dir)}))
    except BenchError as err:
        print(json.dumps({"ok": False, "note": str(err)}))


def compare(pipeline_dir: str, baseline_dir: str, timeout: float) -> str:
    """``compare_outputs`` in a child (see run_child); raises BenchError if the outputs differ."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "compare"]
    run = run_child([*cmd, "--data", baseline_dir, "--out", pipeline_dir], timeout)
    result = json.loads(run.stdout.strip().splitlines()[-1])
    if not result["ok"]:
        raise BenchError(result["note"])
    return result["note"]


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


def versions_worker() -> None:
    import importlib.metadata

    versions = []
    for dist in ("apache-beam", "orjson"):
        try:
            versions.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{dist} ?")
    print(", ".join(versions))


def machine(timeout: float) -> str:
    cpus = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cpus
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "versions"]
    versions = run_child(cmd, timeout).stdout.strip()
    return (
        f"{cpus} CPUs ({usable} usable), {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}, {versions}"
    )


def _mib(value: float) -> str:
    return f"{value:,.0f} MiB"


def in_process(args, data: DataSet, tmp: str) -> tuple[float, float, float]:
    """Alternating pipeline/baseline runs; returns (ratio, pipeline RSS MiB, pipeline s)."""
    print(f"\nin-process: {data.label}, {args.repeats} runs each, alternating (median)")
    runs: dict[str, list[Run]] = {"pipeline": [], "baseline": []}
    for i in range(args.repeats):
        for kind in ("pipeline", "baseline"):
            run = measure(kind, data, os.path.join(tmp, f"inproc_{kind}_{i}"), args.timeout)
            runs[kind].append(run)
            print(f"  run {i + 1} {kind:<8} {run.seconds:7.2f} s  peak RSS {_mib(run.rss_mib)}")
    medians = {}
    for kind, kind_runs in runs.items():
        seconds = statistics.median(r.seconds for r in kind_runs)
        rss = max(r.rss_mib for r in kind_runs)
        medians[kind] = (seconds, rss)
        print(
            f"  {kind:<8} median {seconds:7.2f} s  {data.logs / seconds:>12,.0f} logs/s  "
            f"peak RSS {_mib(rss)}"
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
        f"{_mib(rss)}  ({args.files:,} files: {seconds_100:.2f} s, {_mib(rss_100)})"
    )
    print(
        f"  baseline {base.seconds:7.2f} s  peak RSS {_mib(base.rss_mib)}  "
        f"(ratio pipeline/baseline {seconds / base.seconds:.2f})"
    )
    print(f"  correctness: OK ({note})")
    ratio = rss / rss_100
    print(f"  peak RSS {data.files:,} files / {args.files:,} files {ratio:.2f}")
    return ratio


def whole_process(args, data: DataSet, tmp: str) -> float:
    print(f"\nwhole process: {data.label}, {args.whole_repeats} runs each, alternating (median)")
    cli = os.path.join(os.path.dirname(sys.executable), "beam-tally")
    if not os.path.exists(cli):
        cli = shutil.which("beam-tally") or cli
    plain = os.path.join(HERE, "plain_tally.py")
    commands = {
        "beam-tally": [cli, "tally", "--print_limit", "0"],
        "plain_tally": [sys.executable, plain],
    }
    runs: dict[str, list[Run]] = {name: [] for name in commands}
    for i in range(args.whole_repeats):
        for name, command in commands.items():
            out = os.path.join(tmp, f"whole_{name}_{i}")
            cmd = [*command, "--input", data.glob, "--output", out]
            run = run_child(cmd, args.timeout, capture_stdout=False)
            runs[name].append(run)
            print(f"  run {i + 1} {name:<11} {run.seconds:7.2f} s  peak RSS {_mib(run.rss_mib)}")
    medians = {}
    for name, name_runs in runs.items():
        medians[name] = statistics.median(r.seconds for r in name_runs)
        print(
            f"  {name:<11} median {medians[name]:7.2f} s  "
            f"{data.logs / medians[name]:>12,.0f} logs/s (wall, with start-up)"
        )
    note = compare(
        os.path.join(tmp, "whole_beam-tally_0"),
        os.path.join(tmp, "whole_plain_tally_0"),
        args.timeout,
    )
    print(f"  correctness: OK ({note})")
    ratio = medians["beam-tally"] / medians["plain_tally"]
    print(f"  ratio beam-tally/plain_tally {ratio:.2f}")
    return ratio


def bench(args) -> int:
    started = time.perf_counter()
    print(f"beam-tally benchmark: {machine(args.timeout)}")
    root = (
        os.path.join(ROOT, args.data_root) if not os.path.isabs(args.data_root) else args.data_root
    )
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

    floor = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\ntotal benchmark time {time.perf_counter() - started:.0f} s; this process's peak RSS")
    print(f"{_mib(floor)} (a floor under every child's peak RSS: Linux carries it over exec)")
    print(f"ratio (in-process) {ratio:.2f} (target <= 2.0)")
    if whole is None:
        print("whole process ratio skipped (--skip_whole) (target <= 3.0)")
    else:
        print(f"whole process ratio {whole:.2f} (target <= 3.0)")
    print(f"peak RSS 1000 files / 100 files {rss_ratio:.2f}")
    return 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench_tally.py", description=__doc__.split("\n")[0], allow_abbrev=False
    )
    parser.add_argument("--logs", type=int, default=1_000_000, help="logs of the main data set")
    parser.add_argument("--files", type=int, default=100, help="files of the main data set")
    parser.add_argument("--many_files", type=int, default=1_000, help="files, memory check")
    parser.add_argument("--whole_logs", type=int, default=2_000_000, help="logs, whole process")
    parser.add_argument("--emails", type=int, default=1_000)
    parser.add_argument("--bad_fraction", type=float, default=0.001)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=3, help="in-process runs of each")
    parser.add_argument("--memory_repeats", type=int, default=1, help="pipeline runs, 1,000 files")
    parser.add_argument("--whole_repeats", type=int, default=3, help="whole-process runs of each")
    parser.add_argument("--skip_whole", action="store_true", help="skip the whole-process check")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per child process")
    parser.add_argument("--data_root", default="bench_data", help="relative to the repo root")
    parser.add_argument(
        "--worker",
        choices=("pipeline", "baseline", "generate", "compare", "versions"),
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--params", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--profile", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("repeats", "memory_repeats", "whole_repeats", "logs", "files", "many_files"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.worker == "versions":
        versions_worker()
        return 0
    if args.worker == "compare":
        compare_worker(args.out, args.data)
        return 0
    if args.worker == "generate":
        generate_worker(args.data, args.params)
        return 0
    if args.worker:
        worker(args.worker, args.data, args.out, args.profile)
        return 0
    try:
        return bench(args)
    except BenchError as err:
        print(f"\nFAILED: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
