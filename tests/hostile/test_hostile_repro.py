"""Reproductions of issue 11, one test each: values at the edge of what the parsers accept, and
paths a shell or a glob would misread. Each failed on main before its fix."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from beam_tally.cli import main

CSV_HEADER = '"remotehost","rfc931","authuser","date","request","status","bytes"\n'


def read_jsonl(path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def csv_line(date: int, size: int, host: str = "10.0.0.1", path: str = "/api/user") -> str:
    return f'"{host}","-","apache",{date},"GET {path} HTTP/1.0",200,{size}\n'


def test_the_last_second_of_9999_reaches_every_sink(tmp_path, capsys):
    last = 253402300799  # 9999-12-31T23:59:59Z: its 10-second window ends in year 10000
    path = tmp_path / "y10k.csv"
    path.write_text(CSV_HEADER + csv_line(last, 1234))
    out = tmp_path / "out"
    assert main(["monitor", "--input", str(path), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "9999-12-31 23:59:50-00:00:00 UTC  1 hits" in printed
    assert "0 dead letters" in printed
    [stats] = read_jsonl(out / "stats.jsonl")
    start = last - last % 10
    assert (stats["start"], stats["end"], stats["hits"]) == (start, start + 10, 1)
    assert stats["time"] == datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_iso_utc_agrees_with_datetime_and_goes_past_9999():
    from transforms.timefmt import iso_utc, utc_text

    for epoch in (0, 59, 86_399, 951_782_400, 1_549_573_860, 4_102_444_800, 253402300799):
        expected = datetime.fromtimestamp(epoch, UTC)
        assert iso_utc(epoch) == expected.strftime("%Y-%m-%dT%H:%M:%SZ")
        assert utc_text(epoch) == expected.strftime("%Y-%m-%d %H:%M:%S")
    # 10000-01-01 is 2,932,897 days after 1970-01-01 (by the rule: 8030 years of 365 days and
    # 1947 leap days), one day past 9999-12-31.
    assert iso_utc(253402300800 + 3_661) == "10000-01-01T01:01:01Z"
    assert iso_utc(-1) == "1969-12-31T23:59:59Z"


def test_byte_sums_past_64_bits_saturate_in_every_sink(tmp_path, capsys):
    big = 999_999_999_999_999_999  # the largest byte count a line may hold (below 10**18)
    path = tmp_path / "big.csv"
    path.write_text(CSV_HEADER + "".join(csv_line(1549573860 + i, big) for i in range(10)))
    out = tmp_path / "out"
    assert main(["monitor", "--input", str(path), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    [stats] = read_jsonl(out / "stats.jsonl")
    bound = 2**63 - 1  # 10 * big is past it: the sum saturates there
    assert 10 * big > bound
    assert (stats["hits"], stats["bytes"]) == (10, bound)
    assert stats["hosts_by_bytes"] == [{"host": "10.0.0.1", "bytes": bound}]
    assert "10 hits" in printed and "0 dead letters" in printed


def test_sums_below_64_bits_stay_exact(tmp_path, capsys):
    size = 900_000_000_000_000_000
    path = tmp_path / "exact.csv"
    path.write_text(CSV_HEADER + "".join(csv_line(1549573860 + i, size) for i in range(10)))
    path2 = tmp_path / "other.csv"  # another window: each sum is exact below the bound
    path2.write_text(CSV_HEADER + csv_line(1549573900, size) + csv_line(1549573901, size))
    out = tmp_path / "out"
    assert main(["monitor", "--input", str(tmp_path / "*.csv"), "--output", str(out)]) == 0
    by_start = {s["start"]: s["bytes"] for s in read_jsonl(out / "stats.jsonl")}
    assert 10 * size < 2**63 - 1
    assert by_start == {1549573860: 10 * size, 1549573900: 2 * size}
    capsys.readouterr()


def test_output_and_input_with_glob_characters_are_taken_literally(tmp_path, capsys):
    folder = tmp_path / "o[1]*?"
    folder.mkdir()
    literal = folder / "a[1].csv"
    literal.write_text(CSV_HEADER + csv_line(1549573860, 7, host="10.0.0.7"))
    # What '[1]' would match as a glob: must not be read.
    (folder / "a1.csv").write_text(CSV_HEADER + csv_line(1549573860, 5, host="10.0.0.5"))
    out = folder / "out[x]"
    assert main(["monitor", "--input", str(literal), "--output", str(out)]) == 0
    [stats] = read_jsonl(out / "stats.jsonl")
    assert [h["host"] for h in stats["hosts_by_hits"]] == ["10.0.0.7"]
    assert sorted(p.name for p in out.iterdir()) == [
        "alerts.jsonl",
        "dead_letters.jsonl",
        "report.html",
        "stats.jsonl",
        "totals.jsonl",
    ]  # no temporary folder left behind
    doc = folder / "logs[1].json"
    doc.write_text('{"logs": [{"email": "a@x"}, {"email": "a@x"}]}')
    tally_out = folder / "tally*"
    assert main(["tally", "--input", str(doc), "--output", str(tally_out)]) == 0
    [tally] = read_jsonl(tally_out / "tallies.jsonl")
    assert tally["tally"] == [{"email": "a@x", "total": 2}]
    assert not [p for p in tally_out.iterdir() if p.name.startswith(".")]
    capsys.readouterr()
