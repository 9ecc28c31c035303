"""Live streaming end to end: ``beam-tally produce`` and a ``--streaming`` consumer as
subprocesses on loopback, against the batch job on the same inputs.

Every process has a timeout and is stopped in a ``finally``.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest

from beam_tally.generate.access import DEFAULT_START as START
from beam_tally.generate.access import generate_access
from beam_tally.generate.tally import generate_tally
from tests.access_oracle import Request, read_requests, window_stats
from tests.conftest import independent_tally
from tests.test_alert_rule import reference_alerts

DEADLINE = 120  # seconds any one process may take


class Proc:
    """A ``python -m beam_tally`` subprocess whose output lines are collected with the time
    each arrived."""

    def __init__(self, *args: str) -> None:
        self.started = time.monotonic()
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "beam_tally", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: list[tuple[float, str]] = []
        self.errors: list[str] = []
        self._threads = [
            threading.Thread(target=self._pump, args=(self.popen.stdout, self.lines), daemon=True),
            threading.Thread(target=self._pump, args=(self.popen.stderr, None), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _pump(self, stream, into) -> None:
        for line in stream:
            if into is None:
                self.errors.append(line.rstrip("\n"))
            else:
                into.append((time.monotonic(), line.rstrip("\n")))

    def wait_for_line(self, pattern: str, timeout: float = DEADLINE) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for _, line in list(self.lines):
                match = re.search(pattern, line)
                if match:
                    return match
            if self.popen.poll() is not None and not any(t.is_alive() for t in self._threads):
                break
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r}; stderr: {self.errors[-5:]}")

    def first_time(self, pattern: str) -> float:
        return next(t for t, line in self.lines if re.search(pattern, line))

    def wait(self, timeout: float = DEADLINE) -> int:
        code = self.popen.wait(timeout=timeout)
        for thread in self._threads:
            thread.join(timeout=5)
        return code

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=10)


def start_producer(*args: str) -> tuple[Proc, str]:
    producer = Proc("produce", *args, "--serve", "127.0.0.1:0")
    try:
        port = producer.wait_for_line(r"on 127\.0\.0\.1:(\d+)", timeout=60)[1]
    except BaseException:
        producer.stop()
        raise
    return producer, f"127.0.0.1:{port}"


@contextlib.contextmanager
def live(producer_args: tuple[str, ...], job: str, out, *consumer_args: str):
    """``beam-tally produce PRODUCER_ARGS`` on a free loopback port and ``beam-tally JOB
    --streaming`` reading it into ``out``; both are stopped when the block ends."""
    procs: list[Proc] = []
    try:
        producer, source = start_producer(*producer_args)
        procs.append(producer)
        procs.append(
            Proc(job, "--streaming", "--source", source, "--output", str(out), *consumer_args)
        )
        yield producer, procs[1]
    finally:
        for proc in reversed(procs):
            proc.stop()


def read_outputs(out: str, name: str) -> list[dict]:
    rows = []
    for path in sorted(glob.glob(os.path.join(out, f"{name}*.jsonl"))):
        with open(path, encoding="utf-8") as handle:
            rows += [json.loads(line) for line in handle if line.strip()]
    return rows


def batch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "beam_tally", *args],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=True,
    )


@pytest.fixture(scope="module")
def live_monitor(tmp_path_factory):
    """Two access logs (CSV and CLF) with bursts and lines displaced within the reorder budget,
    replayed at 200x to a live monitor, and the batch monitor over the same files."""
    data = tmp_path_factory.mktemp("live_access")
    logs = data / "logs"
    logs.mkdir()
    common = {"seconds": 900, "disorder": 4, "bad_fraction": 0.01}
    generate_access(
        str(logs / "a.csv"), fmt="csv", rate=4, bursts=[(200, 150, 12)], seed=5, **common
    )
    generate_access(
        str(logs / "b.log"), fmt="clf", rate=2, bursts=[(600, 100, 14)], seed=6, **common
    )
    pattern = str(logs / "*")
    batch("monitor", "--input", pattern, "--output", str(data / "batch"))
    producer_args = ("access", "--input", pattern, "--speedup", "200")
    with live(producer_args, "monitor", data / "live") as (producer, consumer):
        code = consumer.wait()
        producer.wait_for_line("replay finished", timeout=30)
    return data, producer, consumer, code


def test_live_monitor_ends_cleanly_with_its_summary(live_monitor):
    data, _, consumer, code = live_monitor
    assert code == 0, consumer.errors[-10:]
    # Every line of both files, the CSV header included, as a batch run counts them.
    lines = sum((data / "logs" / name).read_bytes().count(b"\n") for name in ("a.csv", "b.log"))
    consumer.wait_for_line(rf"^summary: {lines:,} lines read, ", timeout=1)
    consumer.wait_for_line(r"^live run: the stream ended$", timeout=1)


def test_live_alerts_equal_the_batch_alerts(live_monitor):
    data, _, _, _ = live_monitor
    live = [(a["kind"], a["at"], a["hits"]) for a in read_outputs(str(data / "live"), "alerts")]
    batch_alerts = [
        (a["kind"], a["at"], a["hits"]) for a in read_outputs(str(data / "batch"), "alerts")
    ]
    assert [kind for kind, _, _ in batch_alerts] == ["alert", "recover", "alert", "recover"]
    assert len(live) == len(batch_alerts)
    for (kind, at, _), (batch_kind, batch_at, _) in zip(
        sorted(live, key=lambda a: a[1]), batch_alerts, strict=True
    ):
        assert kind == batch_kind and abs(at - batch_at) <= 1
    assert sorted(live) == sorted(batch_alerts)  # lines within the budget: exact, in fact


def test_live_stats_and_dead_letters_equal_the_batch_ones(live_monitor):
    data, _, _, _ = live_monitor
    live, batch_stats = (
        {s["start"]: s for s in read_outputs(str(data / d), "stats")} for d in ("live", "batch")
    )
    assert live == batch_stats  # every field of every window
    requests = [
        r for path in sorted(glob.glob(str(data / "logs" / "*"))) for r in read_requests(path)[0]
    ]
    assert batch_stats == window_stats(requests)
    live_dead, batch_dead = (
        Counter((d["source"], d["where"]) for d in read_outputs(str(data / d), "dead_letters"))
        for d in ("live", "batch")
    )
    assert live_dead == batch_dead and sum(batch_dead.values()) > 0


def test_live_outputs_are_a_few_rolled_files_and_the_totals_equal_the_batch_ones(live_monitor):
    data, _, consumer, _ = live_monitor
    names = os.listdir(data / "live")
    elapsed = consumer.lines[-1][0] - consumer.started  # the run, start to summary
    for name in ("stats", "alerts", "totals", "dead_letters"):
        files = [n for n in names if n.startswith(f"{name}-") and n.endswith(".jsonl")]
        # One file per minute of wall time (default --roll_seconds 60), not one per bundle.
        assert 1 <= len(files) <= int(elapsed // 60) + 2, (name, files)
    assert not [n for n in names if n.endswith(".tmp")]  # every roll renamed into place
    (batch_totals,) = read_outputs(str(data / "batch"), "totals")
    live_totals = max(read_outputs(str(data / "live"), "totals"), key=lambda t: t["hits"])
    assert live_totals == batch_totals
    # The live summary lists the alerts and the totals, as the batch one does.
    summary = [line for _, line in consumer.lines]
    for alert in read_outputs(str(data / "batch"), "alerts"):
        word = "alert   " if alert["kind"] == "alert" else "recovery"
        assert any(line.startswith(f"  {word}  {alert['time']}  hits ") for line in summary)
    assert any(
        line.startswith("totals ") and f"{batch_totals['hits']:,} requests" in line
        for line in summary
    )


def test_roll_seconds_starts_a_new_complete_file_of_each_output_every_s_seconds(
    live_monitor, tmp_path
):
    data = live_monitor[0]
    pattern = str(data / "logs" / "*")
    producer_args = ("access", "--input", pattern, "--speedup", "150")  # 6 s of wall time
    out = tmp_path / "live"
    with live(producer_args, "monitor", out, "--roll_seconds", "1", "--console", "summary") as (
        _,
        consumer,
    ):
        assert consumer.wait() == 0, consumer.errors[-10:]
        elapsed = time.monotonic() - consumer.started
    stats_files = sorted(glob.glob(str(out / "stats-*.jsonl")))
    assert 3 <= len(stats_files) <= elapsed + 2, stats_files
    stamps = [re.search(r"-(\d{8}T\d{6})-", path)[1] for path in stats_files]
    assert len(set(stamps)) == len(stamps)  # one file per roll
    rows = []
    for path in stats_files:  # each one complete: every line a whole JSON row
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        assert text.endswith("\n")
        rows += [json.loads(line) for line in text.splitlines()]
    batch_stats = {s["start"]: s for s in read_outputs(str(data / "batch"), "stats")}
    assert {s["start"]: s for s in rows} == batch_stats and len(rows) == len(batch_stats)


def test_first_alert_is_printed_before_the_stream_ends(live_monitor):
    _, producer, consumer, _ = live_monitor
    alerted = consumer.first_time(r"^High traffic generated an alert - hits = \d+, triggered at")
    finished = producer.first_time("replay finished")
    assert alerted < finished


def good_lines(path: str) -> dict[tuple[str, int], Request]:
    """{(source, line number): request} of every good line of an access log, in file order,
    read by the test's own oracle."""
    return {(r.source, r.line): r for r in read_requests(path)[0]}


def test_lines_beyond_the_reorder_budget_are_late_once_and_nowhere_else(tmp_path):
    """Lines up to 7 s out of order against a 5 s budget: each line more than 5 s older than a
    line before it in its file is one 'late' dead letter, and stats and alerts both count
    exactly the other lines."""
    path = str(tmp_path / "access.csv")
    generate_access(
        path, fmt="csv", seconds=600, rate=5, bursts=[(150, 150, 20)], disorder=7, seed=8
    )
    out = tmp_path / "live"
    with live(("access", "--input", path, "--max_delay", "5"), "monitor", out) as (_, consumer):
        code = consumer.wait()
    assert code == 0, consumer.errors[-10:]
    good = good_lines(path)
    dead = read_outputs(str(out), "dead_letters")
    late = [(d["source"], d["where"]) for d in dead if d["reason"].startswith("late:")]
    expected_late, newest = set(), -1
    for key, request in good.items():  # in file order
        if request.timestamp < newest - 5:
            expected_late.add(key)
        newest = max(newest, request.timestamp)
    assert len(late) == len(set(late)) and set(late) == expected_late and len(late) > 20
    on_time = [good[key] for key in good if key not in set(late)]
    stats = read_outputs(str(out), "stats")
    assert {s["start"]: s for s in stats} == window_stats(on_time)  # every field
    assert len(stats) == len(window_stats(on_time))  # one row per window: no late panes
    alerts = read_outputs(str(out), "alerts")
    reference = reference_alerts([r.timestamp for r in on_time], 10.0, 120)
    assert sorted((a["kind"], a["at"], a["hits"]) for a in alerts) == sorted(reference)
    assert reference  # the burst alerts


def write_long_lines(path, first: int, seconds: int, rate: int, seed: int) -> list[int]:
    """A CSV access log of ``rate`` lines a second over ``[first, first + seconds)``, each about
    1 KB long (a padded query string), shuffled within 3 s; returns the event times in file
    order."""
    rng = random.Random(seed)
    times = sorted((t for t in range(first, first + seconds) for _ in range(rate)),
                   key=lambda t: t + rng.uniform(0, 3))  # fmt: skip
    hosts = [f"10.0.{rng.randrange(4)}.{rng.randrange(256)}" for _ in range(40)]
    with open(path, "w", encoding="utf-8") as handle:
        handle.write('"remotehost","rfc931","authuser","date","request","status","bytes"\n')
        for t in times:
            section = rng.choice(["/api", "/report", "/static", "/login", "/admin", ""])
            target = f"{section}/{rng.randrange(30)}?pad={'x' * rng.randrange(900, 1000)}"
            handle.write(
                f'"{rng.choice(hosts)}","-","{rng.choice(["-", "-", "mary", "wei"])}",{t},'
                f'"GET {target} HTTP/1.1",{rng.choice([200, 200, 200, 304, 404, 500])},'
                f"{rng.randrange(5000)}\n"
            )
    return times


def test_a_file_that_lags_another_holds_the_stream_watermark_so_none_of_it_is_late(tmp_path):
    """Two files of more than one read block each, one lagging the other by 60 s of event
    time: the stream's watermark is the minimum over the files still read, so after the first
    block of each the lagging file's next lines are still ahead of it. (Under the maximum, the
    watermark follows the leading file and the lagging file's second block comes behind it:
    about 800 lines would be late.) Every output equals the test's own computation."""
    from beam_tally.live.produce import FIRST_BLOCK

    logs, out, delay = tmp_path / "logs", tmp_path / "live", 5
    logs.mkdir()
    lead = write_long_lines(logs / "lead.csv", START, 250, 20, seed=21)
    lag = write_long_lines(logs / "lag.csv", START - 60, 250, 20, seed=22)
    # The scenario: under the maximum, the lagging file's second block would be late.
    newest_in_first_block = {}
    for name, times in (("lead.csv", lead), ("lag.csv", lag)):
        with open(logs / name, "rb") as handle:
            first_block = handle.read(FIRST_BLOCK)
        lines = first_block.count(b"\n") - 1  # complete lines after the header
        assert lines < len(times)
        newest_in_first_block[name] = (max(times[:lines]), min(times[lines:]))
    assert newest_in_first_block["lag.csv"][1] < newest_in_first_block["lead.csv"][0] - delay
    producer_args = ("access", "--input", str(logs / "*.csv"), "--max_delay", str(delay))
    with live(producer_args, "monitor", out) as (producer, consumer):
        code = consumer.wait()
        finished = producer.wait_for_line(
            r"replay finished: [\d,]+ elements served \(([\d,]+) late\)", timeout=30
        )
    assert code == 0, consumer.errors[-10:]
    requests = [r for name in ("lead.csv", "lag.csv") for r in read_requests(str(logs / name))[0]]
    assert len(requests) == len(lead) + len(lag)
    dead = read_outputs(str(out), "dead_letters")
    assert (len(dead), finished[1]) == (0, "0"), dead[:1]
    stats = read_outputs(str(out), "stats")
    assert {s["start"]: s for s in stats} == window_stats(requests) and len(stats) == 31
    alerts = read_outputs(str(out), "alerts")
    expected = reference_alerts([r.timestamp for r in requests], 10.0, 120)
    assert sorted((a["kind"], a["at"], a["hits"]) for a in alerts) == sorted(expected)
    assert [kind for kind, _, _ in expected] == ["alert"]  # 40/s to the end: no recovery


def test_live_monitor_follows_growing_files(tmp_path):
    """A file written in pieces (lines split mid-way) and a second file, with the next two
    minutes, that appears later: once both are quiet, event time passes with the clock, so the
    last window closes too, and every stats window equals the batch one over the final files,
    with nothing late."""
    logs, out = tmp_path / "logs", tmp_path / "live"
    logs.mkdir()
    whole = tmp_path / "whole.csv"
    generate_access(str(whole), fmt="csv", seconds=120, rate=5, seed=9)
    data = whole.read_bytes()
    pieces = [data[: len(data) // 3], data[len(data) // 3 : 2 * len(data) // 3]]
    pieces.append(data[2 * len(data) // 3 :])
    with live(("access", "--input", str(logs), "--follow"), "monitor", out) as (_, consumer):
        target = logs / "access.csv"
        for piece in pieces:
            with open(target, "ab") as handle:
                handle.write(piece)
            time.sleep(1.0)
        generate_access(
            str(logs / "next.csv"), fmt="csv", seconds=120, rate=5, seed=10, start=START + 120
        )
        newest = max(r.timestamp for r in good_lines(str(logs / "next.csv")).values())
        last_window = newest - newest % 10  # the window of the newest line
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            starts = {s["start"] for s in read_outputs(str(out), "stats")}
            if last_window in starts:
                break
            time.sleep(0.2)
        consumer.popen.send_signal(signal.SIGINT)
        code = consumer.wait(timeout=60)
    assert code == 0, consumer.errors[-10:]
    batch("monitor", "--input", str(logs / "*.csv"), "--output", str(tmp_path / "batch"))
    expected = {s["start"]: s for s in read_outputs(str(tmp_path / "batch"), "stats")}
    live_stats = {s["start"]: s for s in read_outputs(str(out), "stats")}
    assert last_window in expected
    assert live_stats == expected  # every field, the last window included
    assert len(live_stats) >= 20 and not read_outputs(str(out), "dead_letters")


def test_live_tally_over_a_followed_folder_ends_with_the_batch_global_tally(tmp_path):
    source_dir, followed, out = tmp_path / "generated", tmp_path / "incoming", tmp_path / "live"
    followed.mkdir()
    generate_tally(
        str(source_dir), files=6, logs_per_file=150, emails=12, bad_fraction=0.05, seed=11
    )
    names = sorted(os.listdir(source_dir))
    with live(("tally", "--input", str(followed), "--follow"), "tally", out) as (_, consumer):
        for start in (0, 3):  # files arrive while the consumer runs, written then renamed
            for name in names[start : start + 3]:
                shutil.copy(source_dir / name, followed / f".{name}.part")
                os.rename(followed / f".{name}.part", followed / name)
            consumer.wait_for_line(rf"^global tally after {start + 3:,} files", timeout=60)
        consumer.popen.send_signal(signal.SIGINT)
        code = consumer.wait(timeout=60)
    assert code == 0, consumer.errors[-10:]
    consumer.wait_for_line(r"^live run: stopped by Ctrl-C$", timeout=1)
    updates = read_outputs(str(out), "global_tally")
    assert sorted(u["files"] for u in updates) == list(range(1, len(names) + 1))
    final = max(updates, key=lambda u: u["files"])
    per_file, bad = independent_tally(str(followed / "*"))
    expected = sum(per_file.values(), Counter())
    assert {e["email"]: e["total"] for e in final["global_tally"]} == dict(expected)
    assert len(read_outputs(str(out), "dead_letters")) == bad > 0
    assert sorted(t["source"] for t in read_outputs(str(out), "tallies")) == sorted(
        str(followed / name) for name in names
    )


def test_stop_after_ends_a_live_run_cleanly(tmp_path):
    followed = tmp_path / "empty"
    followed.mkdir()
    producer_args = ("tally", "--input", str(followed), "--follow")
    with live(producer_args, "tally", tmp_path / "out", "--stop_after", "3") as (_, consumer):
        code = consumer.wait(timeout=60)
    assert code == 0, consumer.errors[-10:]
    consumer.wait_for_line(r"^summary: 0 files", timeout=1)
    consumer.wait_for_line(r"^live run: stopped after --stop_after 3 s$", timeout=1)


def test_a_missing_producer_is_one_line_and_exit_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "beam_tally", "monitor", "--streaming", "--source",
         "127.0.0.1:9", "--connect_timeout", "1", "--output", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=DEADLINE, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "no producer answers" in result.stderr


def test_a_producer_that_cannot_bind_is_one_line_and_exit_2(tmp_path):
    logs = tmp_path / "a.csv"
    generate_access(str(logs), fmt="csv", seconds=10, rate=1, seed=1)
    producer = None
    try:
        producer, source = start_producer("access", "--input", str(logs), "--follow")
        result = subprocess.run(
            [sys.executable, "-m", "beam_tally", "produce", "access", "--input", str(logs),
             "--serve", source],
            capture_output=True, text=True, timeout=DEADLINE, check=False,
        )  # fmt: skip
    finally:
        if producer is not None:
            producer.stop()
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "cannot serve on" in result.stderr


def test_a_stream_that_breaks_off_is_a_failed_run_not_a_clean_end(tmp_path):
    logs = tmp_path / "a.csv"
    generate_access(str(logs), fmt="csv", seconds=900, rate=5, seed=12)
    out = tmp_path / "live"
    producer_args = ("access", "--input", str(logs), "--speedup", "10")
    with live(producer_args, "monitor", out) as (producer, consumer):
        consumer.wait_for_line(r"^\d{4}-\d\d-\d\d .* hits", timeout=60)  # a first stats block
        producer.popen.kill()  # the producer dies mid-replay
        code = consumer.wait(timeout=60)
    assert code == 1
    assert any("broke off before its end" in line for line in consumer.errors)
    # What had arrived was written: the first windows of the file, each whole but the last,
    # which holds the lines that had arrived when the stream broke off (the exit status says
    # the run failed).
    expected = window_stats(read_requests(str(logs))[0])
    stats = {s["start"]: s for s in read_outputs(str(out), "stats")}
    starts = sorted(stats)
    assert starts and starts == sorted(expected)[: len(starts)]
    assert stats[starts[0]] == expected[starts[0]]  # the block printed before the kill
    for start in starts[:-1]:
        assert stats[start] == expected[start]
    last, whole = stats[starts[-1]], expected[starts[-1]]
    assert last["hits"] <= whole["hits"] and last["bytes"] <= whole["bytes"]


def test_a_consumer_past_the_producers_maximum_is_refused_in_one_line(tmp_path):
    """A producer that takes one consumer, serving one: the next consumer gets one line that
    says why, exit 2 at once (not a reader thread's traceback and a 'broke off' 30 s later),
    and the consumer being served goes on to the end of the stream."""
    logs = tmp_path / "a.csv"
    generate_access(str(logs), fmt="csv", seconds=300, rate=2, seed=4)
    first_out = tmp_path / "first"
    procs: list[Proc] = []
    try:
        producer, source = start_producer(
            "access", "--input", str(logs), "--speedup", "100", "--max_consumers", "1"
        )
        procs.append(producer)
        first = Proc("monitor", "--streaming", "--source", source, "--output", str(first_out))
        procs.append(first)
        first.wait_for_line(r"^20\d\d-", timeout=60)  # the first consumer is being served
        started = time.monotonic()
        second = subprocess.run(
            [sys.executable, "-m", "beam_tally", "monitor", "--streaming", "--source", source,
             "--output", str(tmp_path / "second")],
            capture_output=True, text=True, timeout=DEADLINE, check=False,
        )  # fmt: skip
        refused_in = time.monotonic() - started
        assert second.returncode == 2, second.stderr
        assert second.stderr.count("\n") == 1 and "Traceback" not in second.stderr
        assert "--max_consumers" in second.stderr
        assert refused_in < 20  # refused when it asked, not after the reader's 30 s wait
        assert first.wait(timeout=DEADLINE) == 0, first.errors[-5:]
    finally:
        for proc in reversed(procs):
            proc.stop()
    batch("monitor", "--input", str(logs), "--output", str(tmp_path / "batch"))

    def by_start(out):
        return sorted(read_outputs(str(out), "stats"), key=lambda stats: stats["start"])

    assert by_start(first_out) == by_start(tmp_path / "batch")  # every window, every field
