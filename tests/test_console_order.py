"""The monitor's console end to end: stats blocks and alert lines in event-time order in batch
(on one worker and on two worker processes), --console all|alerts|summary, and a closing
summary with every alert and recovery, an alert still active at the end, and the whole run's
totals; all against the independent oracle (``access_oracle``) and the reference alert rule."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from beam_tally.cli import main
from beam_tally.console import plural
from beam_tally.generate.access import generate_access
from tests.access_oracle import read_requests, window_stats
from tests.test_alert_rule import reference_alerts
from tests.test_monitor_cli import shuffle_lines

BLOCK = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)-\d\d:\d\d:\d\d UTC  ")
ALERT = re.compile(r"^High traffic generated an alert - hits = (\d+), triggered at (\S+)$")
RECOVER = re.compile(r"^Recovered from high traffic alert - hits = (\d+), recovered at (\S+)$")


def epoch(text: str) -> int:
    fmt = "%Y-%m-%d %H:%M:%S" if " " in text else "%Y-%m-%dT%H:%M:%SZ"
    return int(datetime.strptime(text, fmt).replace(tzinfo=UTC).timestamp())


def iso(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def printed_events(stdout: str) -> list[tuple]:
    """What the console printed before the summary: ("stats", start) and (kind, at, hits)."""
    events = []
    for line in stdout.split("\nsummary: ", maxsplit=1)[0].splitlines():
        if match := BLOCK.match(line):
            events.append(("stats", epoch(match[1])))
        elif match := ALERT.match(line):
            events.append(("alert", epoch(match[2]), int(match[1])))
        elif match := RECOVER.match(line):
            events.append(("recover", epoch(match[2]), int(match[1])))
    return events


def expected_events(path: str, size: int = 10) -> list[tuple]:
    """The order a live run prints, by hand from its rule: a window's block once event time
    reaches its end, an alert once its second is complete (at + 1); an alert closing a window
    before that window's block (the same watermark fires both)."""
    good, _ = read_requests(path)
    keyed = [((start + size, 1), ("stats", start)) for start in window_stats(good, size)]
    for kind, at, hits in reference_alerts([r.timestamp for r in good], 10.0, 120):
        keyed.append(((at + 1, 0), (kind, at, hits)))
    return [event for _, event in sorted(keyed)]


@pytest.fixture(scope="module")
def traffic(tmp_path_factory):
    """Two bursts (two alerts, two recoveries), out of order, with bad lines."""
    data = tmp_path_factory.mktemp("console")
    path = str(data / "access.csv")
    generate_access(
        path,
        fmt="csv",
        seconds=600,
        rate=4,
        bursts=[(100, 120, 24), (380, 90, 30)],
        disorder=25,
        bad_fraction=0.01,
        seed=23,
    )
    shuffle_lines(path, seed=5)
    return path


def run_cli(path: str, out: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "beam_tally", "monitor", "--input", path, "--output", out, *extra],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize(
    "extra",
    [(), ("--direct_num_workers=2", "--direct_running_mode=multi_processing")],
    ids=["one-worker", "two-worker-processes"],
)
def test_batch_prints_blocks_and_alerts_in_event_time_order(traffic, tmp_path, extra):
    result = run_cli(traffic, str(tmp_path / "out"), *extra)
    assert result.returncode == 0, result.stderr
    expected = expected_events(traffic)
    assert [e[0] for e in expected].count("alert") == 2  # the data has its two bursts
    assert printed_events(result.stdout) == expected


def test_console_alerts_shows_only_the_alert_lines_and_summary_only_the_summary(
    traffic, tmp_path, capsys
):
    expected_alerts = [e for e in expected_events(traffic) if e[0] != "stats"]
    argv = ["monitor", "--input", traffic, "--console"]
    assert main([*argv, "alerts", "--output", str(tmp_path / "a")]) == 0
    text = capsys.readouterr().out
    before_summary = text.split("summary: ")[0].splitlines()
    assert printed_events(text) == expected_alerts
    assert len(before_summary) == len(expected_alerts)  # nothing else
    assert main([*argv, "summary", "--output", str(tmp_path / "s")]) == 0
    assert capsys.readouterr().out.startswith("summary: ")


def test_summary_lists_every_alert_and_the_totals_over_all_input(traffic, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["monitor", "--input", traffic, "--output", str(out), "--console", "summary"]) == 0
    text = capsys.readouterr().out
    good, bad = read_requests(traffic)
    changes = reference_alerts([r.timestamp for r in good], 10.0, 120)
    summary = text.splitlines()
    assert summary[0].startswith(
        f"summary: {len(good) + bad + 1:,} lines read, {len(good):,} requests, "
    )  # + 1: the CSV header
    assert f", {len(changes) // 2} alerts, {len(changes) // 2} recoveries, " in summary[0]
    listed = [line.split() for line in summary[1 : 1 + len(changes)]]
    assert [(w[0], w[1], w[3]) for w in listed] == [
        ("alert" if kind == "alert" else "recovery", iso(at), f"{hits:,}")
        for kind, at, hits in changes
    ]
    assert "still active" not in text
    # Totals: the oracle's stats over one window holding everything.
    (everything,) = window_stats(good, size=10**12).values()
    with open(out / "totals.jsonl", encoding="utf-8") as handle:
        (totals,) = [json.loads(line) for line in handle]
    first, last = min(r.timestamp for r in good), max(r.timestamp for r in good)
    assert (totals["start"], totals["end"]) == (first - first % 10, last - last % 10 + 10)
    skip = ("start", "end", "time")
    assert {k: v for k, v in totals.items() if k not in skip} == {
        k: v for k, v in everything.items() if k not in skip
    }
    sections = "  ".join(f"{s['section']} {s['hits']:,}" for s in everything["sections"])
    assert f"  top sections  {sections}" in summary
    assert f"{len(good):,} requests, " in next(s for s in summary if s.startswith("totals "))


def test_an_alert_still_active_at_the_end_is_named_with_its_time_and_hits(tmp_path, capsys):
    path = str(tmp_path / "access.log")
    generate_access(path, fmt="clf", seconds=300, rate=3, bursts=[(200, 100, 30)], seed=4)
    assert main(["monitor", "--input", path, "--output", str(tmp_path / "o")]) == 0
    text = capsys.readouterr().out
    good, _ = read_requests(path)
    changes = reference_alerts([r.timestamp for r in good], 10.0, 120)
    kind, at, hits = changes[-1]
    assert kind == "alert" and len(changes) == 1
    assert ", 1 alert, 0 recoveries, " in text
    assert f"alert still active at the end of the input (since {iso(at)}, hits {hits:,})" in text


def test_plurals():
    assert plural(1, "alert") == "1 alert"
    assert plural(2, "alert") == "2 alerts"
    assert plural(0, "recovery") == "0 recoveries"
    assert plural(1, "recovery") == "1 recovery"
    assert plural(1_000, "dead letter") == "1,000 dead letters"
    assert plural(1, "distinct email") == "1 distinct email"


def test_the_tally_console_can_be_quiet_and_refuses_alerts(tmp_path, capsys):
    from beam_tally.generate.tally import generate_tally

    generate_tally(str(tmp_path / "logs"), files=2, logs_per_file=5, emails=3, seed=1)
    pattern = str(tmp_path / "logs" / "*.json")
    assert main(["tally", "--input", pattern, "--output", str(tmp_path / "o")]) == 0
    assert "tally message 2" in capsys.readouterr().out
    argv = ["tally", "--input", pattern, "--output", str(tmp_path / "o"), "--console"]
    assert main([*argv, "summary"]) == 0
    assert capsys.readouterr().out.startswith("summary: 2 files, 10 logs, ")
    assert main([*argv, "alerts"]) == 2
    assert "the tally job has no alerts" in capsys.readouterr().err
    assert os.path.isdir(tmp_path / "o")
