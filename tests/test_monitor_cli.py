"""The monitor command end to end on generated, shuffled CSV and CLF logs, against an
independent computation (``access_oracle``: its own regexes, datetime and counters, and the
ten-line alert reference)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import Counter
from datetime import datetime

import pytest

from beam_tally.generate.access import generate_access
from tests.access_oracle import read_requests, section, ties_at_the_cut, window_stats
from tests.test_alert_rule import reference_alerts


def independent_parse(path: str):
    """(timestamp, bytes) of every good line, and the number of bad lines."""
    good, bad = read_requests(path)
    return [(r.timestamp, r.bytes) for r in good], bad


def shuffle_lines(path: str, seed: int) -> None:
    """Shuffles every line but a CSV header: batch results must not depend on order."""
    with open(path, "rb") as handle:
        lines = handle.read().splitlines(keepends=True)
    header = lines[:1] if lines and lines[0].startswith(b'"remotehost"') else []
    body = lines[len(header) :]
    random.Random(seed).shuffle(body)
    with open(path, "wb") as handle:
        handle.writelines(header + body)


def read_jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


@pytest.fixture(scope="module", params=["csv", "clf"])
def monitored(request, tmp_path_factory):
    fmt = request.param
    data = tmp_path_factory.mktemp(f"access_{fmt}")
    path = str(data / f"access.{'csv' if fmt == 'csv' else 'log'}")
    written = generate_access(
        path,
        fmt=fmt,
        seconds=700,
        rate=4,
        bursts=[(150, 140, 22), (500, 30, 40)],
        disorder=30,
        bad_fraction=0.02,
        seed=17,
        **({"utc_offset": "-0700"} if fmt == "clf" else {}),
    )
    shuffle_lines(path, seed=3)
    out = str(data / "out")
    result = subprocess.run(
        [sys.executable, "-m", "beam_tally", "monitor", "--input", path, "--output", out],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return path, out, result, written


def test_monitor_exits_cleanly(monitored):
    _, out, result, _ = monitored
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(os.listdir(out)) == [
        "alerts.jsonl",
        "dead_letters.jsonl",
        "report.html",
        "stats.jsonl",
        "totals.jsonl",
    ]


def test_every_field_of_every_stats_window_equals_an_independent_computation(monitored):
    path, out, _, _ = monitored
    good, _ = read_requests(path)
    expected = window_stats(good)
    stats = read_jsonl(os.path.join(out, "stats.jsonl"))
    assert len(stats) == len(expected)  # one row per window
    assert {s["start"]: s for s in stats} == expected
    # The data exercises what the rows hold: ties at the cut of each top list (decided by
    # name), errors, several status classes per window.
    windows: dict[int, list] = {}
    for r in good:
        windows.setdefault(r.timestamp - r.timestamp % 10, []).append(r)
    for key in ("host", "user"):
        counts = [Counter(getattr(r, key) for r in members) for members in windows.values()]
        assert any(ties_at_the_cut(c, 5) for c in counts), key
    sections = [Counter(section(r.target) for r in members) for members in windows.values()]
    assert any(ties_at_the_cut(c, 5) for c in sections)
    assert sum(row["error_rate"] > 0 for row in expected.values()) > len(expected) / 4
    assert max(len(row["status_classes"]) for row in expected.values()) >= 4


def test_alerts_equal_the_reference_rule(monitored):
    path, out, result, _ = monitored
    good, _ = independent_parse(path)
    expected = reference_alerts([t for t, _ in good], 10.0, 120)
    assert [k for k, _, _ in expected][:2] == ["alert", "recover"]  # the data has bursts
    alerts = read_jsonl(os.path.join(out, "alerts.jsonl"))
    assert sorted((a["kind"], a["at"], a["hits"]) for a in alerts) == sorted(expected)
    for alert in alerts:
        assert alert["average"] == pytest.approx(alert["hits"] / 120)
        when = datetime.fromisoformat(alert["time"].replace("Z", "+00:00"))
        assert int(when.timestamp()) == alert["at"]
        verb = "triggered" if alert["kind"] == "alert" else "recovered"
        prefix = (
            "High traffic generated an alert"
            if alert["kind"] == "alert"
            else "Recovered from high traffic alert"
        )
        assert f"{prefix} - hits = {alert['hits']}, {verb} at {alert['time']}" in result.stdout


def test_every_bad_line_is_one_dead_letter(monitored):
    path, out, result, written = monitored
    _, bad = independent_parse(path)
    dead = read_jsonl(os.path.join(out, "dead_letters.jsonl"))
    assert len(dead) == bad == written["bad"]
    assert all(d["source"] == path and isinstance(d["where"], int) for d in dead)
    assert len({d["where"] for d in dead}) == len(dead)  # one per line
    assert f"{bad:,} dead letters" in result.stdout
    assert Counter(d["reason"].split(":")[0] for d in dead)["late"] == 0  # batch: never late


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["monitor", "--output", "o"], "--input is required"),
        (["monitor", "--input", "/nonexistent/*.log", "--output", "o"], "matches no file"),
        (["monitor", "--input", "x", "--output", "o", "--format", "json"], "invalid choice"),
        (["monitor", "--input", "x", "--output", "o", "--stats_window", "0"], "positive"),
        (["monitor", "--input", "x", "--output", "o", "--threshold", "-1"], "--threshold"),
    ],
)
def test_monitor_bad_command_lines(argv, fragment, tmp_path):
    (tmp_path / "x").write_text("")
    result = subprocess.run(
        [sys.executable, "-m", "beam_tally", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert fragment in result.stderr


def test_crlf_bom_leading_blanks_and_no_final_newline(tmp_path, capsys):
    from beam_tally.cli import main

    path = tmp_path / "access.csv"
    path.write_bytes(
        b'\xef\xbb\xbf"remotehost","rfc931","authuser","date","request","status","bytes"\r\n'
        b'"1.2.3.4","-","-",1549573860,"GET /a HTTP/1.0",200,10\r\n'
        b'  "1.2.3.4","-","james",1549573861,"GET /b/c HTTP/1.0",500,5\r\n'
        b"\r\n"
        b'"1.2.3.4","-","-",1549573872,"GET / HTTP/1.0",200,7'
    )
    out = tmp_path / "out"
    assert main(["monitor", "--input", str(path), "--output", str(out)]) == 0
    stats = read_jsonl(str(out / "stats.jsonl"))
    assert sorted((s["start"], s["hits"], s["bytes"]) for s in stats) == [
        (1549573860, 2, 15),
        (1549573870, 1, 7),
    ]
    assert read_jsonl(str(out / "dead_letters.jsonl")) == []
    assert "5 lines read, 3 requests" in capsys.readouterr().out


def test_relative_glob_without_a_directory_matches(tmp_path, monkeypatch, capsys):
    from beam_tally.cli import main

    monkeypatch.chdir(tmp_path)
    for name, fmt, seed in (("two_1.csv", "csv", 1), ("two_2.log", "clf", 2), ("x.csv", "csv", 3)):
        generate_access(name, fmt=fmt, seconds=30, rate=2, bad_fraction=0.1, seed=seed)
    assert main(["monitor", "--input", "two_*", "--output", "out"]) == 0
    # Both matching files are read, and only they: every output against the two files.
    requests, bad = [], 0
    for name in ("two_1.csv", "two_2.log"):
        good, bad_lines = read_requests(name)
        requests += good
        bad += bad_lines
    stats = read_jsonl(str(tmp_path / "out" / "stats.jsonl"))
    assert {s["start"]: s for s in stats} == window_stats(requests) and len(stats) >= 3
    dead = read_jsonl(str(tmp_path / "out" / "dead_letters.jsonl"))
    assert Counter(d["source"] for d in dead) == {
        str(tmp_path / name): read_requests(name)[1] for name in ("two_1.csv", "two_2.log")
    }  # by absolute path
    assert len(dead) == bad > 0
    assert read_jsonl(str(tmp_path / "out" / "alerts.jsonl")) == []  # 4 lines/s: no alert
    capsys.readouterr()


def test_auto_format_is_told_per_file_so_unquoted_csv_is_csv(tmp_path, capsys):
    from beam_tally.cli import main

    path = tmp_path / "unquoted.csv"
    path.write_text(
        "remotehost,rfc931,authuser,date,request,status,bytes\n"
        '10.0.0.1,-,-,1549573860,"GET /api/x HTTP/1.0",200,10\n'
        "10.0.0.2,-,-,1549573861,GET /report HTTP/1.0,404,5\n"
    )
    out = tmp_path / "out"
    assert main(["monitor", "--input", str(path), "--output", str(out)]) == 0
    dead = read_jsonl(str(out / "dead_letters.jsonl"))
    stats = read_jsonl(str(out / "stats.jsonl"))
    assert (dead, [(s["hits"], s["bytes"]) for s in stats]) == ([], [(2, 15)])
    capsys.readouterr()
