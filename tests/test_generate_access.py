"""beam_tally/generate/access.py, read back by the tests' own oracle (``access_oracle``), and the
parser's reason codes for the bad lines it writes."""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest

from beam_tally.errors import HelpRequested, UsageError
from beam_tally.generate.access import generate_access, poisson, rate_at, run
from tests.access_oracle import read_requests, section
from transforms import access_log
from transforms.access_log import BadLine, decode_line, parse_line, reason_code


def parse_file(path: str) -> tuple[list, int]:
    """(requests in file order, number of bad lines) of one file, read by the oracle."""
    with open(path, "rb") as handle:
        assert handle.read().endswith(b"\n")
    return read_requests(path)


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
def test_counts_match_an_independent_reading(tmp_path, fmt, utc_offset):
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
    records, bad = parse_file(path)
    assert counts["good"] == len(records)
    assert counts["bad"] == bad
    assert counts["lines"] == counts["good"] + counts["bad"]
    assert 0.15 < counts["bad"] / counts["lines"] < 0.25
    timestamps = [record.timestamp for record in records]
    assert counts["first"] == min(timestamps) == start
    assert counts["last"] == max(timestamps) == start + 299


@pytest.mark.parametrize("fmt", ["csv", "clf"])
def test_the_parser_takes_the_good_lines_and_names_every_kind_of_bad_line(tmp_path, fmt):
    """The generator's lines through the parser: it accepts exactly the lines the oracle reads
    as requests, with the same fields, and gives the others a reason code of each kind."""
    path = str(tmp_path / "access.log")
    generate_access(path, fmt=fmt, seconds=300, rate=30, bad_fraction=0.2, seed=3)
    good = {r.line: r for r in read_requests(path)[0]}
    with open(path, "rb") as handle:
        lines = handle.read()[:-1].split(b"\n")
    parsed, codes = {}, Counter()
    for number, raw in enumerate(lines, start=1):
        try:
            record = parse_line(decode_line(raw), fmt)
        except BadLine as bad:
            codes[reason_code(bad.args[0])] += 1
            continue
        if record is not None:
            parsed[number] = record
    assert sorted(parsed) == sorted(good)
    for number, record in parsed.items():
        expected = good[number]
        assert (record.timestamp, record.host, record.user, record.method, record.path) == (
            expected.timestamp,
            expected.host,
            expected.user,
            expected.method,
            expected.target,
        )
        assert (record.section, record.status, record.bytes) == (
            section(expected.target),
            expected.status,
            expected.bytes,
        )
    assert sum(codes.values()) == len(lines) - len(good) - (fmt == "csv")  # the header
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
    records, _ = parse_file(path)
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
    records, _ = parse_file(path)
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
    records, bad = parse_file(path)
    assert bad == 0
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
    sections = Counter(section(record.target) for record in records)
    assert {"/api", "/report", "/static", "/login", "/admin"} <= set(sections)
    assert sections.most_common(1)[0][0] in ("/api", "/report")
    assert any(record.bytes == 0 for record in records)
    assert max(record.bytes for record in records) > 50_000


def test_no_seconds_or_no_rate(tmp_path):
    path = str(tmp_path / "empty.csv")
    counts = generate_access(path, fmt="csv", seconds=0, rate=10)
    assert counts == {"lines": 0, "good": 0, "bad": 0, "first": None, "last": None}
    with open(path, encoding="utf-8") as handle:
        assert (
            handle.read() == '"remotehost","rfc931","authuser","date","request","status","bytes"\n'
        )
    assert read_requests(path) == ([], 0)
    counts = generate_access(str(tmp_path / "empty.log"), fmt="clf", seconds=100, rate=0)
    assert counts["lines"] == 0


def test_bad_arguments_of_the_function(tmp_path):
    out = str(tmp_path / "x")
    with pytest.raises(ValueError, match="fmt"):
        generate_access(out, fmt="json", seconds=1, rate=1)
    with pytest.raises(ValueError, match=r"bad_fraction in 0\.\.1"):
        generate_access(out, fmt="csv", seconds=1, rate=1, bad_fraction=2)
    with pytest.raises(ValueError, match="must be >= 0"):
        generate_access(out, fmt="csv", seconds=-1, rate=1)
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
    records, bad = parse_file(str(out))
    assert f"{len(records):,} good" in summary[0]
    assert f"{bad:,} bad" in summary[0]
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


OK = "--out {tmp}/a --format csv --seconds 1 --rate 1"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ("", "the following arguments are required: --out, --format, --seconds, --rate"),
        ("--out {tmp}/a --format json --seconds 1 --rate 1", "--format: invalid choice: 'json'"),
        ("--out {tmp}/a --format csv --seconds 1", "the following arguments are required: --rate"),
        ("--out {tmp}/a --format csv --seconds x --rate 1", "--seconds: invalid int value: 'x'"),
        ("--out {tmp}/a --format csv --seconds -1 --rate 1", "--seconds must be 0 or more"),
        ("--out {tmp}/a --format csv --seconds 1 --rate -1", "--rate must be 0 or more"),
        ("--out {tmp}/a --format csv --seconds 1 --rate inf", "--rate must be 0 or more"),
        (OK + " --burst 5", "--burst: '5' is not START:DURATION:RATE"),
        (OK + " --burst a:b:c", "--burst: 'a:b:c' is not START:DURATION:RATE"),
        (OK + " --burst=-1:2:3", "--burst: '-1:2:3': START, DURATION and RATE must be >= 0"),
        (OK + " --burst=1:-2:3", "--burst: '1:-2:3': START, DURATION and RATE must be >= 0"),
        (OK + " --burst=1:2:inf", "--burst: '1:2:inf': START, DURATION and RATE must be >= 0"),
        (OK + " --burst -1:2:3", "--burst: expected one argument"),  # argparse: an option
        (OK + " --disorder -1", "--disorder must be 0 or more"),
        (OK + " --bad_fraction 2", "--bad_fraction must be between 0 and 1"),
        (OK + " --start -5", "--start must be an epoch second between 1970 and 9999"),
        (
            "--out {tmp}/a --format clf --seconds 1 --rate 1 --utc_offset Z",
            "--utc_offset must be +hhmm or -hhmm",
        ),
        ("--out {tmp} --format csv --seconds 1 --rate 1", "--out '{tmp}' is a directory"),
        (OK + " --nope", "unrecognized arguments: --nope"),
    ],
)
def test_run_usage_errors(tmp_path, argv, message):
    argv, message = (text.replace("{tmp}", str(tmp_path)) for text in (argv, message))
    with pytest.raises(UsageError, match=re.escape(message)):
        run(["access", *argv.split()])
    assert not (tmp_path / "a").exists()  # nothing written
