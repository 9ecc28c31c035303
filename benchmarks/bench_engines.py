"""Both jobs on every engine that runs here, in one run: the DirectRunner (the baseline),
Prism, Flink's embedded MiniCluster, and a standalone Flink cluster on loopback at parallelism
1 and 2. Each is a whole ``beam-tally`` process, wall time from start to exit; every engine's
outputs are checked equal to the DirectRunner's before its figures count.

    .venv/bin/python benchmarks/bench_engines.py [--logs 1000000] [--lines 1000000]

Fixed cost is each engine on a tiny input (one file of 10 logs; 10 access lines). Engines are
fetched on first use (``beam-tally engines install all``); the cluster is started and stopped
by this script, its state in a temporary folder.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from beam_tally.generate.access import generate_access  # noqa: E402
from beam_tally.generate.tally import generate_tally  # noqa: E402

COMPARED = {
    "tally": ["tallies.jsonl", "dead_letters.jsonl", "global_tally_final.json"],
    "monitor": ["stats.jsonl", "alerts.jsonl", "dead_letters.jsonl"],
}
TIMEOUT = 1800


def engines(cluster: str | None) -> dict[str, list[str]]:
    runs = {
        "DirectRunner": ["--runner=DirectRunner"],
        "Prism": ["--runner=PrismRunner"],
        "Flink embedded": ["--runner=FlinkRunner"],
    }
    if cluster:
        for parallelism in (1, 2):
            runs[f"Flink cluster p={parallelism}"] = [
                "--runner=FlinkRunner",
                f"--flink_master={cluster}",
                f"--parallelism={parallelism}",
            ]
    return runs


def run(job: str, pattern: str, out: str, extra: list[str]) -> float:
    args = [sys.executable, "-m", "beam_tally", job, "--input", pattern, "--output", out]
    if job == "tally":
        args += ["--print_limit", "0"]
    started = time.perf_counter()
    proc = subprocess.Popen(
        [*args, *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        with contextlib.suppress(ProcessLookupError):  # nothing it started outlives it
            os.killpg(proc.pid, signal.SIGKILL)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{job} {' '.join(extra)} failed: {err.strip().splitlines()[-1:]}")
    return seconds


def outputs(job: str, out: str) -> dict[str, list[str]]:
    result = {}
    for name in COMPARED[job]:
        with open(os.path.join(out, name), encoding="utf-8") as handle:
            lines = handle.read().splitlines()
        if name == "global_tally_final.json":
            lines = [re.sub(r',"after":"[^"]*"', "", line) for line in lines]
        result[name] = sorted(lines)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logs", type=int, default=1_000_000, help="tally logs (100 files)")
    parser.add_argument("--lines", type=int, default=1_000_000, help="monitor lines, about")
    parser.add_argument("--no_cluster", action="store_true", help="skip the standalone cluster")
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="bench-engines-")
    state = os.path.join(work, "flink-cluster")
    script = os.path.join(ROOT, "scripts", "flink_cluster.sh")
    env = {**os.environ, "BEAM_TALLY_FLINK_CLUSTER": state}
    cluster = None
    try:
        data = {
            "tally": (os.path.join(work, "logs"), args.logs),
            "tally tiny": (os.path.join(work, "tiny_logs"), 10),
        }
        generate_tally(data["tally"][0], files=100, logs_per_file=args.logs // 100, emails=5000)
        generate_tally(data["tally tiny"][0], files=1, logs_per_file=10, emails=3)
        rate = 20
        generate_access(
            os.path.join(work, "access.csv"),
            fmt="csv",
            seconds=args.lines // rate,
            rate=rate,
            bursts=[(3600, 600, 40)],
            disorder=10,
            bad_fraction=0.001,
            seed=3,
        )
        generate_access(os.path.join(work, "tiny.csv"), fmt="csv", seconds=10, rate=1, seed=3)
        inputs = {
            "tally": os.path.join(work, "logs", "*.json"),
            "tally tiny": os.path.join(work, "tiny_logs", "*.json"),
            "monitor": os.path.join(work, "access.csv"),
            "monitor tiny": os.path.join(work, "tiny.csv"),
        }
        with open(inputs["monitor"], "rb") as handle:
            lines = sum(1 for _ in handle) - 1
        sizes = {"tally": args.logs, "monitor": lines}
        if not args.no_cluster:
            started = subprocess.run(
                [script, "start"],
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
                check=True,
            )
            cluster = started.stdout.strip().splitlines()[-1]
        print(f"tally: {args.logs:,} logs in 100 files; monitor: {lines:,} CSV lines")
        print(
            f"{'engine':22} {'job':8} {'wall s':>8} {'lines/s':>10} {'vs Direct':>9} {'fixed s':>8}"
        )
        for job in ("tally", "monitor"):
            baseline = reference = None
            for name, extra in engines(cluster).items():
                out = os.path.join(work, "out", job, name.replace(" ", "_"))
                fixed = run(job, inputs[f"{job} tiny"], out + "_tiny", extra)
                seconds = run(job, inputs[job], out, extra)
                got = outputs(job, out)
                if reference is None:
                    baseline, reference = seconds, got
                elif got != reference:
                    raise SystemExit(f"{name}: {job} outputs differ from the DirectRunner's")
                print(
                    f"{name:22} {job:8} {seconds:8.2f} {sizes[job] / seconds:10,.0f} "
                    f"{seconds / baseline:9.2f} {fixed:8.2f}",
                    flush=True,
                )
        print("every engine's outputs equal the DirectRunner's")
    finally:
        if not args.no_cluster:
            subprocess.run([script, "stop"], env=env, capture_output=True, timeout=120, check=False)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
