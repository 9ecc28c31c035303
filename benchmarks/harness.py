"""What the benchmarks share: child processes and their peak RSS, timing, the common report.

Each benchmark script (``bench_tally.py``, ``bench_monitor.py``) runs every measurement in a
fresh child, itself run again with ``--worker KIND``; both import this module from their own
directory, which Python puts first on ``sys.path`` for a script.
"""

from __future__ import annotations

import argparse
import contextlib
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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MANIFEST = "manifest.json"


class BenchError(Exception):
    """A run failed, timed out, or produced different outputs."""


# --- the child: one measurement -------------------------------------------------------------


def pipeline_work(build: Callable, argv: list[str]) -> Callable[[], None]:
    """The work of a pipeline measurement: what the CLI's ``run()`` does, through the same
    ``run_pipeline`` (GC tuned, graph built, run to the end). Beam is imported here, before any
    timing."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from beam_tally.options import IOOptions
    from beam_tally.runtime import run_pipeline

    def work() -> None:
        options = PipelineOptions(argv)
        run_pipeline(options, options.view_as(IOOptions).output, build)

    return work


def time_work(work: Callable[[], None], profile: str | None) -> None:
    """Runs ``work`` (its stdout discarded) and prints ``{"seconds": ...}``.

    With ``profile``, under cProfile, the stats dumped to that file.
    """
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


def versions_worker() -> None:
    import importlib.metadata

    versions = []
    for dist in ("apache-beam", "orjson"):
        try:
            versions.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{dist} ?")
    print(", ".join(versions))


def compare_worker(
    compare_outputs: Callable[[str, str], str], pipeline_dir: str, baseline_dir: str
) -> None:
    try:
        print(json.dumps({"ok": True, "note": compare_outputs(pipeline_dir, baseline_dir)}))
    except BenchError as err:
        print(json.dumps({"ok": False, "note": str(err)}))


# --- the parent: children, report -----------------------------------------------------------


@dataclass
class Run:
    seconds: float
    rss_mib: float
    stdout: str

    def result(self):
        """The JSON value on the last line the child printed."""
        return json.loads(self.stdout.strip().splitlines()[-1])


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


def worker_cmd(script: str, kind: str, *args: str) -> list[str]:
    """The command that runs ``script`` again as the ``kind`` worker."""
    return [sys.executable, script, "--worker", kind, *args]


def measure(kind: str, cmd: list[str], timeout: float) -> Run:
    """Runs a measuring worker; the run's seconds are the ones it timed."""
    run = run_child(cmd, timeout)
    try:
        run.seconds = run.result()["seconds"]
    except (IndexError, ValueError, KeyError) as err:
        raise BenchError(f"{kind} worker printed no result: {run.stdout[-500:]!r}") from err
    return run


def compare(script: str, pipeline_dir: str, baseline_dir: str, timeout: float) -> str:
    """``compare_outputs`` in a child (see run_child); raises BenchError if the outputs differ."""
    cmd = worker_cmd(script, "compare")
    result = run_child([*cmd, "--data", baseline_dir, "--out", pipeline_dir], timeout).result()
    if not result["ok"]:
        raise BenchError(result["note"])
    return result["note"]


def alternate(
    repeats: int, names: Iterable[str], run: Callable[[str, int], Run]
) -> dict[str, list[Run]]:
    """``repeats`` rounds of ``run(name, i)`` for each name in turn, each run printed."""
    runs: dict[str, list[Run]] = {name: [] for name in names}
    width = max(len(name) for name in runs)
    for i in range(repeats):
        for name, name_runs in runs.items():
            result = run(name, i)
            name_runs.append(result)
            print(
                f"  run {i + 1} {name:<{width}} {result.seconds:7.2f} s  "
                f"peak RSS {mib(result.rss_mib)}"
            )
    return runs


def whole_process(
    script: str,
    args: argparse.Namespace,
    tmp: str,
    label: str,
    commands: dict[str, list[str]],
    input_path: str,
    rate: Callable[[float], str],
    others: Callable[[str, str, str], str] | None = None,
) -> dict[str, float]:
    """``beam-tally`` vs its plain-Python baseline (and other tools) as whole processes,
    alternating; returns each command's median seconds divided by the baseline's.

    ``commands`` names ``beam-tally`` first, then the baseline, then any other tool; each gets
    ``--input`` and ``--output``. ``rate(seconds)`` formats the throughput of a median run.
    beam-tally's outputs are compared with the baseline's (``compare_outputs``); another tool's
    with ``others(name, its output dir, the baseline's)``, which returns a note or raises
    BenchError.
    """
    print(f"\nwhole process: {label}, {args.whole_repeats} runs each, alternating (median)")

    def run(name: str, i: int) -> Run:
        out = os.path.join(tmp, f"whole_{name}_{i}")
        cmd = [*commands[name], "--input", input_path, "--output", out]
        return run_child(cmd, args.timeout, capture_stdout=False)

    runs = alternate(args.whole_repeats, commands, run)
    width = max(len(name) for name in commands)
    medians = {}
    for name, name_runs in runs.items():
        medians[name] = statistics.median(r.seconds for r in name_runs)
        best = min(r.seconds for r in name_runs)
        rss = max(r.rss_mib for r in name_runs)
        print(
            f"  {name:<{width}} median {medians[name]:7.2f} s (best {best:.2f})  "
            f"{rate(medians[name])} (wall, with start-up), peak RSS {mib(rss)}"
        )
    beam, plain, *rest = commands
    plain_dir = os.path.join(tmp, f"whole_{plain}_0")
    note = compare(script, os.path.join(tmp, f"whole_{beam}_0"), plain_dir, args.timeout)
    print(f"  correctness: OK ({note})")
    for name in rest:
        other_note = others(name, os.path.join(tmp, f"whole_{name}_0"), plain_dir)
        print(f"  correctness of {name}: OK ({other_note})")
    ratios = {name: medians[name] / medians[plain] for name in commands}
    for name in (beam, *rest):
        print(f"  ratio {name}/{plain} {ratios[name]:.2f}")
    return ratios


def machine(script: str, timeout: float, extra: Callable[[str], str] | None = None) -> str:
    """The machine, Python and package versions (``extra`` may add to the versions)."""
    cpus = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cpus
    versions = run_child(worker_cmd(script, "versions"), timeout).stdout.strip()
    if extra:
        versions = extra(versions)
    return (
        f"{cpus} CPUs ({usable} usable), {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}, {versions}"
    )


def mib(value: float) -> str:
    return f"{value:,.0f} MiB"


def cli() -> str:
    """The ``beam-tally`` command next to this Python, else on PATH."""
    cli = os.path.join(os.path.dirname(sys.executable), "beam-tally")
    return cli if os.path.exists(cli) else shutil.which("beam-tally") or cli


def data_root(path: str) -> str:
    return os.path.join(ROOT, path) if not os.path.isabs(path) else path


def print_totals(started: float) -> None:
    """The benchmark's time and this process's own peak RSS."""
    floor = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\ntotal benchmark time {time.perf_counter() - started:.0f} s; this process's peak RSS")
    print(f"{mib(floor)} (a floor under every child's peak RSS: Linux carries it over exec)")


# --- the command line -----------------------------------------------------------------------


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """The options after the benchmark's own: timeout, data root, and the workers' (hidden)."""
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


def check_at_least_one(parser: argparse.ArgumentParser, args, names: Sequence[str]) -> None:
    for name in names:
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")


def main(
    args: argparse.Namespace,
    bench: Callable[[argparse.Namespace], int],
    worker: Callable[[argparse.Namespace], None],
    generate_worker: Callable[[str, str], None],
    compare_outputs: Callable[[str, str], str],
) -> int:
    """Runs the worker ``args.worker`` names, or else the benchmark."""
    if args.worker == "versions":
        versions_worker()
        return 0
    if args.worker == "compare":
        compare_worker(compare_outputs, args.out, args.data)
        return 0
    if args.worker == "generate":
        generate_worker(args.data, args.params)
        return 0
    if args.worker:
        worker(args)
        return 0
    try:
        return bench(args)
    except BenchError as err:
        print(f"\nFAILED: {err}", file=sys.stderr)
        return 1
