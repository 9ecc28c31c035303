"""Records as columns (``RecordColumns``): the parser's batch path and the aggregators' column
path against the line-by-line parser and ``TrafficStatsCombineFn.add_input``."""

from __future__ import annotations

import random
from array import array

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from tests.conftest import direct_pipeline
from transforms import access_log
from transforms.list_batches import LineColumns, RecordColumns
from transforms.records import AccessLine, AccessRecord, DeadLetter, truncate_raw
from transforms.tally import DEAD_LETTERS
from transforms.traffic import (
    RECORDS,
    CountPerSecondFn,
    ParseAccessLineFn,
    ParseAccessLines,
    PartialStatsFn,
    SecondCounts,
    TrafficStatsCombineFn,
)

CSV_LINES = [
    '"remotehost","rfc931","authuser","date","request","status","bytes"',
    '"10.0.0.1","-","apache",1549573860,"GET /api/user HTTP/1.0",200,1234',
    '"10.0.0.2","-","-",1549573861,"POST /report?x=1 HTTP/1.1",503,0',
    '"10.0.0.3","-","-",1549573861,"GET /",404,12',  # HTTP/0.9: no protocol
    ' "10.0.0.4" , "-" , "bob" , 1549573862 , "GET /static/a.css HTTP/1.1" , 200 , 7 ',
    "",
    '"10.0.0.5","-","-",1549573863,"GET /api HTTP/1.1",200',  # six fields
    '"10.0.0.6","-","-",1549573863,"GET /api HTTP/1.1",700,1',  # bad status
    '"10.0.0.7","-","-",1549573864,"GET /api HTTP/1.1",200,-',  # bad bytes in CSV
    '"10.0.0.8","-","-",1549573864,"GET /a\x01 HTTP/1.1",200,1',  # a control character
]
CLF_LINES = [
    '10.0.0.1 - apache [07/Feb/2019:21:11:00 +0000] "GET /api/user HTTP/1.0" 200 1234',
    '10.0.0.2 - - [07/Feb/2019:23:11:01 +0200] "GET /report HTTP/1.1" 304 -',
    '10.0.0.3 - - [07/Feb/2019:21:11:01 +0000] "GET /" 404 12 "-" "curl/8"',
    '10.0.0.4 - - [31/Feb/2019:21:11:01 +0000] "GET / HTTP/1.1" 200 1',  # no such day
    "",
    "not a log line at all",
]


def line_by_line(lines: list[AccessLine], fmt: str):
    """The reference: ``access_log.parse_line`` on each line, as docs/design.md's rules say."""
    records, dead = [], []
    for line in lines:
        try:
            record = access_log.parse_line(line.text, fmt, line.source, line.line)
        except access_log.BadLine as bad:
            dead.append(DeadLetter(line.source, line.line, bad.args[0], truncate_raw(line.text)))
            continue
        if record is not None:
            records.append(record)
    return records, dead


def numbered(texts: list[str], fmt: str, source: str = "access.log") -> LineColumns:
    return LineColumns.numbered(source, range(1, len(texts) + 1), list(texts), fmt)


@pytest.mark.parametrize(
    ("fmt", "texts"),
    [("csv", CSV_LINES), ("clf", CLF_LINES), ("clf", CLF_LINES[:3] + CLF_LINES[4:])],
    ids=["csv", "clf", "clf-usual-dates"],
)
@pytest.mark.parametrize("parser_format", ["auto", "given"])
def test_a_batch_parses_as_its_lines_do_one_by_one(fmt, texts, parser_format):
    lines = numbered(texts * 3, fmt)
    fn = ParseAccessLineFn("auto" if parser_format == "auto" else fmt)
    columns, dead = fn._parse_columns(lines)
    expected_records, expected_dead = line_by_line(lines, fmt)
    assert isinstance(columns, RecordColumns)
    assert sorted(columns) == sorted(expected_records)
    assert dead == expected_dead


def test_a_date_past_9999_sends_the_whole_batch_line_by_line_with_the_same_result():
    texts = [*CSV_LINES[1:3], '"h","-","-",999999999999,"GET / HTTP/1.1",200,1']
    lines = numbered(texts, "csv")
    columns, dead = ParseAccessLineFn("csv")._parse_columns(lines)
    records, expected_dead = line_by_line(lines, "csv")
    assert sorted(columns) == sorted(records) and dead == expected_dead
    assert [d.reason.split(":")[0] for d in dead] == [access_log.BAD_DATE]


def test_a_batch_of_mixed_or_unknown_formats_parses_line_by_line():
    lines = [*numbered(CSV_LINES[1:3], "csv"), *numbered(CLF_LINES[:1], "clf", "b.log")]
    columns, dead = ParseAccessLineFn("auto")._parse_columns(LineColumns.of(lines))
    expected = line_by_line(lines[:2], "csv")[0] + line_by_line(lines[2:], "clf")[0]
    assert sorted(columns) == sorted(expected) and dead == []
    unknown = LineColumns.of(line._replace(fmt="") for line in lines)
    assert sorted(ParseAccessLineFn("auto")._parse_columns(unknown)[0]) == sorted(expected)


def test_parse_access_lines_in_a_pipeline_gives_each_record_and_dead_letter():
    lines = list(numbered(CSV_LINES * 50, "csv"))
    records, dead = line_by_line(lines, "csv")
    with direct_pipeline() as p:
        parsed = p | beam.Create(lines) | ParseAccessLines("auto", event_time=False)
        assert_that(parsed[RECORDS], equal_to(records), label="records")
        assert_that(parsed[DEAD_LETTERS], equal_to(dead), label="dead letters")


def test_record_columns_round_trip():
    records = line_by_line(numbered(CSV_LINES, "csv"), "csv")[0]
    columns = RecordColumns.of(records)
    assert list(columns) == records and len(columns) == len(records)
    assert columns.timestamp == [r.timestamp for r in records]
    assert list(RecordColumns.of([])) == [] and len(RecordColumns.of([])) == 0
    with pytest.raises(ValueError):
        RecordColumns([[1]])
    lines = numbered(["a", "b"], "clf", "f.log")
    assert list(lines) == [AccessLine("f.log", 1, "a", "clf"), AccessLine("f.log", 2, "b", "clf")]
    assert LineColumns.of(lines) == lines and lines.text == ["a", "b"]


def random_records(rng: random.Random, n: int, sources=("a.log",)) -> list[AccessRecord]:
    hosts = [f"10.0.0.{i}" for i in range(12)]
    return [
        AccessRecord(
            rng.choice(hosts),
            "-",
            rng.choice(["-", "alice", "bob"]),
            1_000 + rng.randrange(300),
            "GET",
            "/x",
            rng.choice(["/api", "/report", "/"]),
            "HTTP/1.1",
            rng.choice([200, 200, 302, 404, 503, 999]),  # 999: a class outside 1xx..5xx
            rng.randrange(10**6),
            rng.choice(sources),
            i,
        )
        for i in range(n)
    ]


def test_partial_stats_of_columns_equal_add_input_record_by_record():
    rng = random.Random(11)
    records = random_records(rng, 3_000)
    combine_fn = TrafficStatsCombineFn(top=3)
    expected: dict[int, list] = {}
    for r in records:  # the reference: one add_input per record into its window's accumulator
        start = r.timestamp - r.timestamp % 10
        combine_fn.add_input(expected.setdefault(start, combine_fn.create_accumulator()), r)
    fn = PartialStatsFn(10, combine_fn)
    fn.start_bundle()
    for i in range(0, len(records), 700):  # several batches, windows spread over them
        fn.process_batch(RecordColumns.of(records[i : i + 700]))
    alone = records[0]._replace(timestamp=5_000)
    fn.process(alone)  # one element-wise, in a window of its own
    combine_fn.add_input(expected.setdefault(5_000, combine_fn.create_accumulator()), alone)
    got = {start: combine_fn.extract_output(acc) for start, acc in fn.partials.items()}
    assert got == {start: combine_fn.extract_output(acc) for start, acc in expected.items()}


def test_count_per_second_keeps_each_records_origin_for_late_seconds():
    rng = random.Random(2)
    records = random_records(rng, 500, sources=("a.log", "b.log"))
    fn = CountPerSecondFn()
    fn.start_bundle()
    fn.process_batch(RecordColumns.of(records[:200]))
    fn.process_batch(RecordColumns.of([r for r in records[200:] if r.source == "a.log"]))
    fn.process_batch(RecordColumns.of([r for r in records[200:] if r.source == "b.log"]))
    (emitted,) = list(fn.finish_bundle())
    key, counted = emitted.value
    assert key == "all" and isinstance(counted, SecondCounts)
    expected_counts: dict[int, int] = {}
    for r in records:
        expected_counts[r.timestamp] = expected_counts.get(r.timestamp, 0) + 1
    assert counted.counts == expected_counts
    late = {1_000, 1_150, 1_299}
    expected: dict[int, dict[str, list[int]]] = {}
    ordered = records[:200] + [r for r in records[200:] if r.source == "a.log"]
    ordered += [r for r in records[200:] if r.source == "b.log"]
    for source in ("a.log", "b.log"):
        for r in ordered:
            if r.source == source and r.timestamp in late:
                expected.setdefault(r.timestamp, {}).setdefault(source, []).append(r.line)
    assert counted.lines_of(late) == expected


def test_second_counts_pickle_as_arrays():
    import pickle

    lines = array("q", [3, 4])
    counted = SecondCounts({7: 2}, {"f": (array("q", [7, 7]), lines)})
    again = pickle.loads(pickle.dumps(counted))
    assert again.counts == {7: 2} and again.lines_of({7}) == {7: {"f": [3, 4]}}
