"""Peak RSS of whole ``beam-tally`` processes against the number of files and a file's size.

    .venv/bin/python benchmarks/bench_memory.py [--sizes_mib 32,128,512,2048] [--files 10,100,1000]
        [--monitor_lines 1000000,4000000] [--skip_monitor]

* tally, number of files: 1,000,000 logs spread over each of ``--files`` file counts;
* tally, a file's size: one file of each of ``--sizes_mib`` MiB (documents over 64 MiB are
  counted as a stream; ``--max_file_bytes`` is raised above the largest, whose default of 1 GiB
  would make a larger file a dead letter);
* monitor, a file's size: one CSV access log of each of ``--monitor_lines`` lines.

Each run is a fresh child; its peak RSS is ``ru_maxrss`` from ``os.wait4`` (the largest process
of its tree that was waited for: with several workers, the largest of them). Every run's summary
line is checked for the number of logs or lines the generator wrote. Data under ``bench_data/``
(reused when their manifest matches). Exit status 1 if a run fails.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import sys
import tempfile
import time

import harness
from harness import MANIFEST, BenchError

SCRIPT = os.path.abspath(__file__)
LOG_BYTES = 168  # about, per generated log (pretty-printed)
LINE_BYTES = 100  # about, per generated CSV access line


def generate_worker(data: str, params: str) -> None:
    params = json.loads(params)
    if params.pop("job") == "tally":
        from beam_tally.generate.tally import generate_tally

        print(json.dumps(generate_tally(data, **params)))
    else:
        from beam_tally.generate.access import generate_access

        os.makedirs(data, exist_ok=True)
        params["bursts"] = [tuple(burst) for burst in params["bursts"]]
        print(json.dumps(generate_access(os.path.join(data, "access.csv"), **params)))


def prepare(root: str, name: str, params: dict, timeout: float) -> tuple[str, dict, str]:
    """Generates a data set in a child (this process stays small), or reuses it."""
    path = os.path.join(root, "memory", name)
    manifest_path = os.path.join(path, MANIFEST)
    with contextlib.suppress(OSError, ValueError, KeyError):
        with open(manifest_path) as handle:
            manifest = json.load(handle)
        if manifest["params"] == params:
            return path, manifest["written"], "reused"
    for stale in glob.glob(os.path.join(path, "*")):
        os.remove(stale)
    cmd = harness.worker_cmd(SCRIPT, "generate", "--data", path, "--params", json.dumps(params))
    run = harness.run_child(cmd, timeout)
    written = run.result()
    with open(manifest_path, "w") as handle:
        json.dump({"params": params, "written": written}, handle)
    return path, written, f"generated in {run.seconds:.0f} s"


def run_cli(args, argv: list[str], out: str, expect: str) -> harness.Run:
    cmd = [harness.cli(), *argv, "--output", out, "--console", "summary", "--progress", "off"]
    run = harness.run_child(cmd, args.timeout)
    summary = next((line for line in run.stdout.splitlines() if line.startswith("summary")), "")
    if expect not in summary:
        raise BenchError(f"expected {expect!r} in the summary, got {summary!r}")
    return run


def tally_sets(args, root: str) -> None:
    print("\ntally, peak RSS against the number of files (1,000,000 logs in all):")
    for files in args.files:
        params = {
            "job": "tally",
            "files": files,
            "logs_per_file": 1_000_000 // files,
            "emails": 1000,
            "bad_fraction": 0.001,
            "seed": 11,
        }
        path, written, note = prepare(root, f"tally_files{files}", params, args.timeout)
        with tempfile.TemporaryDirectory(prefix="bench_memory_") as out:
            pattern = os.path.join(path, "logs_*.json")
            run = run_cli(args, ["tally", "--input", pattern], out, f"{written['logs']:,} logs")
        print(
            f"  {files:>6,} files  {run.seconds:7.2f} s  peak RSS {harness.mib(run.rss_mib)}"
            f"  ({note})"
        )
    print("\ntally, peak RSS against a file's size (one file):")
    for size in args.sizes_mib:
        params = {
            "job": "tally",
            "files": 1,
            "logs_per_file": size * 2**20 // LOG_BYTES,
            "emails": 1000,
            "bad_fraction": 0.001,
            "seed": 12,
        }
        path, written, note = prepare(root, f"tally_{size}mib", params, args.timeout)
        (name,) = glob.glob(os.path.join(path, "logs_*.json"))
        actual = os.path.getsize(name) / 2**20
        limit = str(max(2**30, 2 * os.path.getsize(name)))
        argv = ["tally", "--input", name, "--max_file_bytes", limit]
        with tempfile.TemporaryDirectory(prefix="bench_memory_") as out:
            run = run_cli(args, argv, out, f"{written['logs']:,} logs")
        how = "streamed" if actual > 64 else "read whole"
        print(
            f"  {actual:>8,.0f} MiB ({written['logs']:>11,} logs, {how:<10})  {run.seconds:7.2f} s"
            f"  peak RSS {harness.mib(run.rss_mib)}  ({note})"
        )


def monitor_sets(args, root: str) -> None:
    print("\nmonitor, peak RSS against a file's size (one CSV file):")
    for lines in args.monitor_lines:
        rate = 10
        params = {
            "job": "access",
            "fmt": "csv",
            "seconds": lines // rate,
            "rate": rate,
            "bursts": [],
            "disorder": 20,
            "bad_fraction": 0.001,
            "seed": 13,
        }
        path, written, note = prepare(root, f"access_{lines}", params, args.timeout)
        name = os.path.join(path, "access.csv")
        size = os.path.getsize(name) / 2**20
        with tempfile.TemporaryDirectory(prefix="bench_memory_") as out:
            argv = ["monitor", "--input", name, "--max_file_bytes", str(2**33)]
            run = run_cli(args, argv, out, "summary")
        print(
            f"  {size:>8,.0f} MiB ({written.get('lines', lines):>11,} lines)  {run.seconds:7.2f} s"
            f"  peak RSS {harness.mib(run.rss_mib)}  ({note})"
        )


def bench(args) -> int:
    started = time.perf_counter()
    print(f"beam-tally memory benchmark: {harness.machine(SCRIPT, args.timeout)}")
    root = harness.data_root(args.data_root)
    tally_sets(args, root)
    if not args.skip_monitor:
        monitor_sets(args, root)
    harness.print_totals(started)
    return 0


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench_memory.py", description=__doc__.split("\n")[0], allow_abbrev=False
    )
    parser.add_argument("--files", type=_ints, default=[10, 100, 1000], help="file counts")
    parser.add_argument(
        "--sizes_mib", type=_ints, default=[32, 128, 512, 2048], help="one file's sizes, MiB"
    )
    parser.add_argument(
        "--monitor_lines", type=_ints, default=[1_000_000, 4_000_000], help="access log lines"
    )
    parser.add_argument("--skip_monitor", action="store_true", help="tally only")
    harness.add_common_args(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker == "versions":
        harness.versions_worker()
        return 0
    if args.worker == "generate":
        generate_worker(args.data, args.params)
        return 0
    try:
        return bench(args)
    except BenchError as err:
        print(f"\nFAILED: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
