"""Benchmark of the live path: ``beam-tally produce`` -> ``beam-tally monitor --streaming``.

    .venv/bin/python benchmarks/bench_streaming.py [--seconds 14400] [--latency_seconds 3000]
        [--speedup 60] [--repeat 3] [--timeout 900]

Two checks, every process with a timeout and stopped in a ``finally``:

* throughput: ``--seconds`` of generated traffic (CSV, bursts that alert and recover, lines up
  to 4 s out of order) served unpaced by the producer to a live monitor; lines/s over the
  consumer's whole process (and its CPU seconds, which a loaded machine inflates less than
  wall time), against the batch monitor (``--input``) over the same lines, and the live
  alerts checked equal to the batch ones. ``--repeat`` pairs, batch and live alternating;
  the best and the median of each are printed, with the load average before and after;
* latency: ``--latency_seconds`` of traffic paced at ``--speedup``; for each alert, the time
  from when the lines of its second were due to be served (the producer prints its pacing
  origin) to when the consumer printed the alert. A second is complete only once a line of the
  next one is served, so an alert cannot print before ``1 / speedup`` s; the producer sends
  lines due within 0.2 s together, up to 0.2 s late.

Data is generated under ``bench_data/streaming`` and reused. Exit status 1 on a failure or if
the live alerts differ from the batch ones.
"""

from __future__ import annotations

import argparse
import calendar
import glob
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import harness

from beam_tally.generate.access import generate_access

TARGET_LINES = 60_000  # issue 15: live lines/s through produce -> monitor --streaming
TARGET_LATENCY = 0.2  # seconds, the median from a line served to its alert printed


class Child:
    """A ``beam-tally`` subprocess whose stdout lines are kept with the wall time they came."""

    def __init__(self, *args: str) -> None:
        self.started = time.time()
        self.popen = subprocess.Popen(
            [harness.cli(), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: list[tuple[float, str]] = []
        self.errors: list[str] = []
        self.threads = [
            threading.Thread(target=self._pump, args=(self.popen.stdout, True), daemon=True),
            threading.Thread(target=self._pump, args=(self.popen.stderr, False), daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    def _pump(self, stream, keep: bool) -> None:
        for line in stream:
            if keep:
                self.lines.append((time.time(), line.rstrip("\n")))
            else:
                self.errors.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for _, line in list(self.lines):
                match = re.search(pattern, line)
                if match:
                    return match
            if self.popen.poll() is not None:
                break
            time.sleep(0.02)
        raise harness.BenchError(f"no line {pattern!r}: {self.errors[-5:]}")

    def wait(self, timeout: float) -> float:
        """Waits for the exit; the wall seconds since the start (``cpu``: the child's CPU
        seconds, as the children's usage grew when it was reaped)."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        try:
            code = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired as err:
            raise harness.BenchError(f"timed out after {timeout:.0f} s") from err
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        for thread in self.threads:
            thread.join(timeout=5)
        if code != 0:
            raise harness.BenchError(f"exit status {code}: {self.errors[-10:]}")
        return time.time() - self.started

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=10)


def traffic(path: str, seconds: int) -> int:
    """Generates (or reuses) the traffic; returns its number of lines."""
    params = {"seconds": seconds, "rate": 8, "burst": [130, 16], "every": 400, "seed": 3}
    manifest = path + ".json"
    if os.path.exists(path) and os.path.exists(manifest):
        with open(manifest) as handle:
            saved = json.load(handle)
        if saved.get("params") == params:
            return saved["lines"]
    bursts = [(s, 130, 16) for s in range(100, seconds - 130, 400)]
    written = generate_access(
        path, fmt="csv", seconds=seconds, rate=8, bursts=bursts, disorder=4, seed=3
    )
    with open(manifest, "w") as handle:
        json.dump({"params": params, "lines": written["lines"]}, handle)
    return written["lines"]


def alerts(out: str) -> list[tuple[str, int, int]]:
    rows = []
    for path in glob.glob(os.path.join(out, "alerts*.jsonl")):
        with open(path) as handle:
            rows += [json.loads(line) for line in handle if line.strip()]
    return sorted((a["kind"], a["at"], a["hits"]) for a in rows)


def live_run(path: str, out: str, timeout: float, *extra: str) -> tuple[Child, Child]:
    producer = consumer = None
    try:
        producer = Child("produce", "access", "--input", path, "--serve", "127.0.0.1:0", *extra)
        port = producer.wait_for(r"on 127\.0\.0\.1:(\d+)", 60)[1]
        consumer = Child("monitor", "--streaming", "--source", f"127.0.0.1:{port}", "--output", out)
        consumer.seconds = consumer.wait(timeout)
        return producer, consumer
    finally:
        for child in (consumer, producer):
            if child is not None:
                child.stop()


def batch_run(path: str, out: str, timeout: float) -> Child:
    batch = Child("monitor", "--input", path, "--output", out)
    try:
        batch.seconds = batch.wait(timeout)
    finally:
        batch.stop()
    return batch


def _load() -> str:
    return "load average " + ", ".join(f"{n:.2f}" for n in os.getloadavg())


def throughput(args, root: str, tmp: str) -> float:
    """Prints the runs; returns the best live lines/s."""
    path = os.path.join(root, f"access_{args.seconds}s.csv")
    lines = traffic(path, args.seconds)
    print(f"throughput: {lines:,} CSV lines ({args.seconds:,} s of traffic), unpaced")
    print(f"  {_load()} before")
    runs: dict[str, list[Child]] = {"batch": [], "live": []}
    for attempt in range(args.repeat):
        batch_out, live_out = (os.path.join(tmp, f"{k}{attempt}") for k in ("batch", "live"))
        runs["batch"].append(batch_run(path, batch_out, args.timeout))
        runs["live"].append(live_run(path, live_out, args.timeout)[1])
        batch_alerts, live_alerts = alerts(batch_out), alerts(live_out)
        if batch_alerts != live_alerts:
            raise harness.BenchError(f"live alerts differ: {live_alerts[:4]} vs {batch_alerts[:4]}")
        batch, live = runs["batch"][-1], runs["live"][-1]
        print(
            f"  run {attempt + 1}: batch {batch.seconds:6.2f} s ({batch.cpu:5.2f} s CPU) "
            f"{lines / batch.seconds:>8,.0f} lines/s;  live {live.seconds:6.2f} s "
            f"({live.cpu:5.2f} s CPU) {lines / live.seconds:>8,.0f} lines/s"
        )
    print(f"  {_load()} after")
    medians = {}
    for label, kind in (
        ("batch  monitor process   ", "batch"),
        ("live   produce -> monitor", "live"),
    ):
        seconds = sorted(child.seconds for child in runs[kind])
        cpu = statistics.median(child.cpu for child in runs[kind])
        medians[kind] = statistics.median(seconds)
        print(
            f"  {label}   best {seconds[0]:6.2f} s {lines / seconds[0]:>9,.0f} lines/s;  "
            f"median {medians[kind]:6.2f} s {lines / medians[kind]:>9,.0f} lines/s "
            f"({cpu:.2f} s CPU)"
        )
    print(
        f"  live / batch time (medians)  {medians['live'] / medians['batch']:7.2f}x   "
        f"({len(live_alerts)} alerts and recoveries, equal to batch in every run)"
    )
    return lines / min(child.seconds for child in runs["live"])


ALERT = re.compile(r"(?:triggered|recovered) at (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)")


def alert_delays(producer: Child, consumer: Child, speedup: float) -> list[float]:
    """For each alert and recovery the consumer printed: the seconds from when the lines of its
    second were due (the producer's pacing origin plus event time over ``speedup``) to when it
    was printed."""
    origin = producer.wait_for(r"first element: event time (\d+) due at ([\d.]+)", 1)
    first_ts, served_at = int(origin[1]), float(origin[2])
    delays = []
    for printed, line in consumer.lines:
        match = ALERT.search(line)
        if match:
            at = calendar.timegm(time.strptime(match[1], "%Y-%m-%dT%H:%M:%SZ"))
            delays.append(printed - (served_at + (at - first_ts) / speedup))
    if not delays:
        raise harness.BenchError("no alert printed")
    return delays


def latency(args, root: str, tmp: str) -> None:
    path = os.path.join(root, f"access_{args.latency_seconds}s.csv")
    lines = traffic(path, args.latency_seconds)
    print(
        f"\nlatency: {lines:,} lines ({args.latency_seconds:,} s of traffic) paced at "
        f"speedup {args.speedup:g} ({args.latency_seconds / args.speedup:.0f} s)"
    )
    out = os.path.join(tmp, "latency")
    producer, consumer = live_run(path, out, args.timeout, "--speedup", str(args.speedup))
    delays = alert_delays(producer, consumer, args.speedup)
    floor = 1 / args.speedup
    median = statistics.median(delays)
    print(
        f"  line served -> alert printed: median {median:.3f} s, "
        f"min {min(delays):.3f} s, max {max(delays):.3f} s over {len(delays)} alerts and "
        f"recoveries (floor {floor:.3f} s)"
    )
    batch_first = None
    started = time.time()
    batch = Child("monitor", "--input", path, "--output", os.path.join(tmp, "latency_batch"))
    try:
        batch.wait(args.timeout)
    finally:
        batch.stop()
    batch_first = next(t for t, line in batch.lines if ALERT.search(line)) - started
    print(f"  batch monitor over the same file prints its first alert after {batch_first:.2f} s")
    return median


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=14_400)
    parser.add_argument("--latency_seconds", type=int, default=3_000)
    parser.add_argument("--speedup", type=float, default=60)
    parser.add_argument("--repeat", type=int, default=3, help="throughput runs of each")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--data_root", default="bench_data")
    parser.add_argument(
        "--kafka", action="store_true", help="also through Kafka and Flink (kafka_path.py)"
    )
    parser.add_argument("--worker", choices=["versions"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        harness.versions_worker()
        return 0
    root = os.path.join(harness.data_root(args.data_root), "streaming")
    os.makedirs(root, exist_ok=True)
    print(harness.machine(os.path.abspath(__file__), args.timeout))
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            best = throughput(args, root, tmp)
            median = latency(args, root, tmp)
            if args.kafka:
                import kafka_path

                path = os.path.join(root, f"access_{args.seconds}s.csv")
                kafka_path.run(
                    args,
                    path,
                    traffic(path, args.seconds),
                    alerts(os.path.join(tmp, "batch0")),
                    os.path.join(root, f"access_{args.latency_seconds}s.csv"),
                    tmp,
                )
        met = best >= TARGET_LINES and median <= TARGET_LATENCY
        print(
            f"\ntarget (live >= {TARGET_LINES:,} lines/s, latency median <= {TARGET_LATENCY} s): "
            f"{'met' if met else 'NOT met'} (best live {best:,.0f} lines/s, median {median:.3f} s)"
        )
    except harness.BenchError as err:
        print(f"\nFAILED: {err}", file=sys.stderr)
        return 1
    harness.print_totals(started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
