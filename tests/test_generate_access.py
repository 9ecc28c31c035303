"""beam_tally/generate_access.py, checked against the parser of transforms/access_log.py."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from beam_tally.errors import HelpRequested, UsageError
from beam_tally.generate_access import generate_access, poisson, rate_at, run
from transforms import access_log
from transforms.access_log import BadLine, decode_line, parse_line, reason_code


def parse_file(path: str, fmt: str) -> tuple[list, Counter, int]:
    """(records in file order, reason codes of the bad lines, skipped lines) of one file."""
    with open(path, "rb") as handle:
        content = handle.read()
    assert content.endswith(b"\n")
    records, codes, skipped = [], Counter(), 0
    for raw in content[:-1].split(b"\n"):
        try:
            record = parse_line(decode_line(raw), fmt)
        except BadLine as bad:
            codes[reason_code(bad.args[0])] += 1
            continue
        if record is None:
            skipped += 1
        else:
            records.append(record)
    return records, codes, skipped


@pytest.mark.parametrize("fmt", ["csv", "clf"])
def test_same_seed_same_bytes(tmp_path, fmt):
    paths = [str(tmp_path / f"{name}.log") for name in ("a", "b", "c")]
    kwargs = {"fmt": fmt, "seconds": 60, "rate": 20, "disorder": 2, "bad_fraction": 0.1}
    assert generate_access(paths[0], seed=7, **kwargs) == generate_access(
        paths[1], seed=7, **kwargs
    )
    generate_access(paths[2], seed=8, **kwargs)
    contents = [(tmp_path / f"{name}.log").read_bytes() for name in ("a", "b", "c")]
    assert contents[0] == contents[1]
    assert contents[0] != contents[2]


@pytest.mark.parametrize(
    ("fmt", "utc_offset"), [("csv", "+0000"), ("clf", "+0000"), ("clf", "-0700")]
)
def test_counts_match_what_the_parser_finds(tmp_path, fmt, utc_offset):
    path = str(tmp_path / "access.log")
    start = 1549573860
    counts = generate_access(
        path,
        fmt=fmt,
        seconds=300,
        rate=30,
        start=start,
        disorder=4,
        bad_fraction=0.2,
        seed=3,
        utc_offset=utc_offset,
    )
    records, codes, skipped = parse_file(path, fmt)
    assert skipped == (1 if fmt == "csv" else 0)  # the header
    assert counts["good"] == len(records)
    assert counts["bad"] == sum(codes.values())
    assert counts["lines"] == counts["good"] + counts["bad"]
    assert 0.15 < counts["bad"] / counts["lines"] < 0.25
    timestamps = [record.timestamp for record in records]
    assert counts["first"] == min(timestamps) == start
    assert counts["last"] == max(timestamps) == start + 299
    # Every kind of bad line is there, each with its own reason code.
    assert set(codes) == {
        access_log.WRONG_FIELD_COUNT,
        access_log.BAD_DATE,
        access_log.BAD_STATUS,
        access_log.BAD_BYTES,
        access_log.BAD_REQUEST,
        access_log.CONTROL_CHARACTERS,
        access_log.UNDECODABLE,
        access_log.UNPARSEABLE,
    }


def test_the_csv_header_comes_first_even_with_disorder(tmp_path):
    path = str(tmp_path / "access.csv")
    generate_access(path, fmt="csv", seconds=20, rate=50, disorder=10, seed=1)
    with open(path, "rb") as handle:
        first = handle.readline()
    assert first == b'"remotehost","rfc931","authuser","date","request","status","bytes"\n'


@pytest.mark.parametrize(("fmt", "disorder"), [("csv", 0), ("csv", 5), ("clf", 2.5), ("clf", 30)])
def test_disorder_is_bounded(tmp_path, fmt, disorder):
    path = str(tmp_path / "access.log")
    generate_access(path, fmt=fmt, seconds=400, rate=15, disorder=disorder, seed=11)
    records, _, _ = parse_file(path, fmt)
    newest = records[0].timestamp
    worst = 0
    for record in records:
        newest = max(newest, record.timestamp)
        worst = max(worst, newest - record.timestamp)
    assert worst <= disorder
    if disorder == 0:
        assert worst == 0
    else:
        assert worst >= min(disorder, 5) - 1  # lines really are out of order


def test_bursts_raise_the_rate_and_cross_the_alert_threshold(tmp_path):
    path = str(tmp_path / "access.log")
    start = 1549573860
    generate_access(
        path, fmt="clf", seconds=900, rate=2, start=start, bursts=[(200, 180, 30)], seed=5
    )
    records, _, _ = parse_file(path, "clf")
    per_second = Counter(record.timestamp - start for record in records)
    before = sum(per_second[s] for s in range(0, 200)) / 200
    during = sum(per_second[s] for s in range(200, 380)) / 180
    after = sum(per_second[s] for s in range(380, 900)) / 520
    assert 1.5 < before < 2.5
    assert 27 < during < 33
    assert 1.5 < after < 2.5
    # The default alert rule (average over 120 s above 10 req/s) fires, then recovers.
    averages = [sum(per_second[s] for s in range(t - 119, t + 1)) / 120 for t in range(900)]
    high = [t for t, average in enumerate(averages) if average > 10]
    assert high
    assert 200 < high[0] < 380 < high[-1] < 600
    assert averages[-1] <= 10


def test_rate_at_and_poisson():
    assert rate_at(0, 2.0, [(10, 5, 30.0)]) == 2.0
    assert rate_at(10, 2.0, [(10, 5, 30.0)]) == 30.0
    assert rate_at(15, 2.0, [(10, 5, 30.0)]) == 2.0
    assert rate_at(12, 2.0, [(10, 5, 30.0), (11, 5, 50.0)]) == 50.0
    assert rate_at(12, 40.0, [(10, 5, 30.0)]) == 40.0
    rng = random.Random(0)
    for mean in (0.5, 4, 100):
        draws = [poisson(rng, mean) for _ in range(4000)]
        assert min(draws) >= 0
        assert abs(sum(draws) / len(draws) - mean) < 0.06 * mean + 0.05
    assert poisson(rng, 0) == 0


def test_traffic_looks_real(tmp_path):
    path = str(tmp_path / "access.log")
    generate_access(path, fmt="clf", seconds=600, rate=20, seed=2)
    records, codes, _ = parse_file(path, "clf")
    assert not codes
    n = len(records)
    hosts = Counter(record.host for record in records)
    assert len(hosts) > 100
    assert hosts.most_common(1)[0][1] > 10 * (n / len(hosts))  # a few heavy hosts
    assert any(":" in host for host in hosts)  # some IPv6
    users = Counter(record.user for record in records)
    assert 0.6 < users["-"] / n < 0.95
    assert len(users) > 3
    methods = Counter(record.method for record in records)
    assert methods["GET"] / n > 0.75
    classes = Counter(record.status // 100 for record in records)
    assert classes[2] / n > 0.7
    assert classes[3] and classes[4] and classes[5]
    sections = Counter(record.section for record in records)
    assert {"/api", "/report", "/static", "/login", "/admin"} <= set(sections)
    assert sections.most_common(1)[0][0] in ("/api", "/report")
    assert any(record.bytes == 0 for record in records)
    assert max(record.bytes for record in records) > 50_000


def test_no_seconds_or_no_rate(tmp_path):
    path = str(tmp_path / "empty.csv")
    counts = generate_access(path, fmt="csv", seconds=0, rate=10)
    assert counts == {"lines": 0, "good": 0, "bad": 0, "first": None, "last": None}
    assert parse_file(path, "csv") == ([], Counter(), 1)
    counts = generate_access(str(tmp_path / "empty.log"), fmt="clf", seconds=100, rate=0)
    assert counts["lines"] == 0


def test_bad_arguments_of_the_function(tmp_path):
    out = str(tmp_path / "x")
    with pytest.raises(ValueError, match="fmt"):
        generate_access(out, fmt="json", seconds=1, rate=1)
    with pytest.raises(ValueError):
        generate_access(out, fmt="csv", seconds=1, rate=1, bad_fraction=2)
    with pytest.raises(ValueError, match="utc_offset"):
        generate_access(out, fmt="clf", seconds=1, rate=1, utc_offset="UTC")


# --- The command line ----------------------------------------------------------------------------
def test_run_writes_the_file_and_one_summary_line(tmp_path, capsys):
    out = tmp_path / "sub" / "access.csv"
    argv = ["--out", str(out), "--format", "csv", "--seconds", "30", "--rate", "5"]
    argv += ["--burst", "10:5:40", "--burst", "20:2:60", "--disorder", "2"]
    argv += ["--bad_fraction", "0.1", "--seed", "4", "--start", "1000000000"]
    assert run(["access", *argv]) == 0
    summary = capsys.readouterr().out.strip().splitlines()
    assert len(summary) == 1
    assert summary[0].startswith("wrote ")
    assert str(out) in summary[0]
    assert "2001-09-09T01:46:40Z" in summary[0]
    records, codes, _ = parse_file(str(out), "csv")
    assert f"{len(records):,} good" in summary[0]
    assert f"{sum(codes.values()):,} bad" in summary[0]
    # The same without the leading "access": the same file.
    before = out.read_bytes()
    assert run(argv) == 0
    assert out.read_bytes() == before


def test_run_help():
    with pytest.raises(HelpRequested) as help_text:
        run(["access", "--help"])
    text = str(help_text.value)
    for flag in ("--out", "--format", "--seconds", "--rate", "--burst", "--disorder", "--seed"):
        assert flag in text


@pytest.mark.parametrize(
    "extra",
    [
        [],  # --out missing
        ["--out", "{tmp}/a", "--format", "json", "--seconds", "1", "--rate", "1"],
        ["--out", "{tmp}/a", "--format", "csv", "--seconds", "1"],
        ["--out", "{tmp}/a", "--format", "csv", "--seconds", "x", "--rate", "1"],
        ["--out", "{tmp}/a", "--format", "csv", "--seconds", "-1", "--rate", "1"],
        ["--out", "{tmp}/a", "--format", "csv", "--seconds", "1", "--rate", "-1"],
        ["--out", "{tmp}/a", "--format", "csv", "--seconds", "1", "--rate", "inf"],
        ["--out", "{tmp}/a", "--format", "csv", "--seconds", "1", "--rate", "1", "--burst", "5"],
        [
            "--out",
            "{tmp}/a",
            "--format",
            "csv",
            "--seconds",
            "1",
            "--rate",
            "1",
            "--burst",
            "a:b:c",
        ],
        [
            "--out",
            "{tmp}/a",
            "--format",
            "csv",
            "--seconds",
            "1",
            "--rate",
            "1",
            "--burst",
            "-1:2:3",
        ],
        [
            "--out",
            "{tmp}/a",
            "--format",
            "csv",
            "--seconds",
            "1",
            "--rate",
            "1",
            "--disorder",
            "-1",
        ],
        [
            "--out",
            "{tmp}/a",
            "--format",
            "csv",
            "--seconds",
            "1",
            "--rate",
            "1",
            "--bad_fraction",
            "2",
        ],
        ["--out", "{tmp}/a", "--format", "csv", "--seconds", "1", "--rate", "1", "--start", "-5"],
        [
            "--out",
            "{tmp}/a",
            "--format",
            "clf",
            "--seconds",
            "1",
            "--rate",
            "1",
            "--utc_offset",
            "Z",
        ],
        ["--out", "{tmp}", "--format", "csv", "--seconds", "1", "--rate", "1"],
        ["--out", "{tmp}/a", "--format", "csv", "--seconds", "1", "--rate", "1", "--nope"],
    ],
)
def test_run_usage_errors(tmp_path, extra):
    with pytest.raises(UsageError):
        run(["access", *(arg.replace("{tmp}", str(tmp_path)) for arg in extra)])
