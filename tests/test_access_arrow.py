"""The monitor's Arrow path (``access_arrow``, ``LineBlock``, ``RecordTable``) against the
line-by-line parser and ``TrafficStatsCombineFn.add_input``: same records, same dead letters,
same partials, whatever the block holds."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest
from apache_beam import pvalue
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_record_columns import line_by_line, random_records
from transforms import access_arrow, access_log, traffic
from transforms.alert_rule import TrafficAlertRule
from transforms.list_batches import LineBlock, LineList, RecordColumns, RecordTable
from transforms.records import AccessLine
from transforms.traffic import (
    CountPerSecondFn,
    CountSecondsFn,
    DetectFromCountsFn,
    ParseAccessLineFn,
    PartialStatsFn,
    TrafficStatsCombineFn,
)

HEADER = '"remotehost","rfc931","authuser","date","request","status","bytes"'
NAMES = ["10.0.0.1", "-", "apache", "zoë", "名前", "a b", 'q"q', "tab\there", "c1\x85", "\u2028"]
TARGETS = ["/", "/api/user", "/api?x=1/b", "/?x", "/#f", "/é", "http://h/a/b", "*", "/a%20b"]
REQUESTS = [
    *(f"GET {t} HTTP/1.1" for t in TARGETS),
    "GET /api",  # HTTP/0.9
    "POST /report HTTP/2",
    "GET /a b HTTP/1.1",
    "G@T /a HTTP/1.1",
    "GET /a HTTP/x",
    "",
]
STAMPS = ["1549573860", "0", "253402300799", "253402300800", "999999999999", "12x", "-1"]
STATUSES = ["200", "404", "599", "600", "99", "2000"]
SIZES = ["0", "1234", "999999999999999999", "1000000000000000000", "-", ""]


def csv_line(host, ident, user, stamp, request, status, size) -> str:
    return f'"{host}","{ident}","{user}",{stamp},"{request}",{status},{size}'


lines_strategy = st.lists(
    st.one_of(
        st.builds(
            csv_line,
            *(st.sampled_from(NAMES) for _ in range(3)),
            st.sampled_from(STAMPS),
            st.sampled_from(REQUESTS),
            st.sampled_from(STATUSES),
            st.sampled_from(SIZES),
        ),
        st.sampled_from([HEADER, "", " ", "not,a,log", '"unterminated', "\ufeff" + HEADER]),
    ),
    max_size=40,
)


def block_of(texts: list[str], ending: str) -> bytes:
    return "".join(text + ending for text in texts).encode("utf-8")


def arrow_parse(block: bytes, skip=frozenset(), before: int = 0):
    lines = LineBlock("f.log", before, block, "csv", block.count(b"\n"), skip)
    parsed = ParseAccessLineFn("auto")._parse_block(lines)
    assert parsed is not None
    records, dead_letters = parsed
    assert isinstance(records, RecordTable)
    return lines, sorted(records, key=lambda r: r.line), dead_letters


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=lines_strategy, ending=st.sampled_from(["\n", "\r\n", "\r\r\n"]))
def test_a_block_parses_as_its_lines_do_one_by_one(texts, ending):
    block = block_of(texts, ending)
    lines, records, dead_letters = arrow_parse(block, before=10)
    expected_records, expected_dead = line_by_line(list(lines), "csv")
    assert records == expected_records
    assert dead_letters == expected_dead
    assert len(lines) == len(texts) and [line.line for line in lines] == list(
        range(11, 11 + len(texts))
    )


def chunk_parse(chunk):
    """``ParseAccessLineFn.process`` of a live chunk: its records and dead letters."""
    records, dead_letters = [], []
    for out in ParseAccessLineFn("auto").process(chunk):
        if isinstance(out, pvalue.TaggedOutput):
            dead_letters.append(out.value)
        else:
            records.extend(out)
    return sorted(records, key=lambda r: r.line), dead_letters


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    texts=lines_strategy,
    numbers=st.randoms(use_true_random=False),
    oddity=st.sampled_from(["", "cr", "source", "fmt", "surrogate"]),
)
def test_a_live_chunk_parses_as_its_lines_do_one_by_one(texts, numbers, oddity):
    """A chunk of the stream (lines of one file, in the order served, so their numbers out of
    order) through the Arrow path, or one by one when it cannot take it, gives what each line
    gives on its own."""
    order = list(range(1, len(texts) + 1))
    numbers.shuffle(order)
    lines = [AccessLine("f.log", n, text, "csv") for n, text in zip(order, texts, strict=True)]
    if lines and oddity:
        source, line, text, fmt = lines[-1]
        lines[-1] = AccessLine(
            "g.log" if oddity == "source" else source,
            line,
            text + ("\r" if oddity == "cr" else "\udcff" if oddity == "surrogate" else ""),
            "" if oddity == "fmt" else fmt,
        )
    expected_records, expected_dead = [], []
    for line in lines:  # a line of no told format is told apart by its own shape
        found = line_by_line([line], line.fmt or access_log.format_of_line(line.text))
        expected_records += found[0]
        expected_dead += found[1]
    records, dead_letters = chunk_parse(LineList(lines))
    assert records == sorted(expected_records, key=lambda r: r.line)
    assert sorted(dead_letters, key=lambda d: d.where) == sorted(
        expected_dead, key=lambda d: d.where
    )


def test_a_live_chunk_of_stream_errors_stays_dead_letters_with_their_reasons():
    from transforms.records import STREAM_ERROR, DeadLetter

    chunk = LineList([AccessLine("a.log", 7, "line too long to stream", STREAM_ERROR)])
    for fmt in ("auto", "csv"):
        (out,) = ParseAccessLineFn(fmt).process(chunk)
        assert out.value == DeadLetter("a.log", 7, "line too long to stream", "")


def test_a_live_chunk_of_usual_lines_leaves_as_one_record_table():
    texts = [csv_line("h", "-", "-", 1549573860 + i, "GET /a HTTP/1.1", 200, i) for i in range(5)]
    chunk = LineList(AccessLine("f.log", 9 - i, text, "csv") for i, text in enumerate(texts))
    (out,) = ParseAccessLineFn("auto").process(chunk)
    assert isinstance(out, RecordTable) and out.file == "f.log"
    assert out.table["line"].to_pylist() == [9, 8, 7, 6, 5]


def test_the_usual_lines_take_the_fast_path():
    """Not one of these falls back line by line: the fast path is not a silent no-op."""
    pairs = [(h, t) for h in ["10.0.0.1", "zoë"] for t in ["/", "/a/b", "/a?x"]]
    texts = [csv_line(h, "-", "-", 1549573860 + i, f"GET {t} HTTP/1.1", 200, i)
             for i, (h, t) in enumerate(pairs)]  # fmt: skip
    table, others = access_arrow.parse_block(block_of(texts, "\n"), "csv")
    assert others == [] and table.num_rows == len(texts)
    assert table["section"].to_pylist() == ["/", "/a", "/a"] * 2


def test_others_are_the_unusual_lines_with_their_text():
    texts = [HEADER, csv_line("a", "-", "-", 1, "GET * HTTP/1.1", 200, 1), "", "x"]
    table, others = access_arrow.parse_block(block_of(texts, "\r\n"), "csv")
    assert table.num_rows == 0
    assert others == list(enumerate(texts))


def test_undecodable_lines_are_skipped_not_parsed():
    good = csv_line("10.0.0.1", "-", "-", 1549573860, "GET /a HTTP/1.1", 200, 5)
    block = b"\n".join([good.encode(), b'"\xff\xfe",bad', good.encode(), b""])
    lines, records, dead_letters = arrow_parse(block, skip=frozenset({1}))
    assert [r.line for r in records] == [1, 3] and dead_letters == []
    assert [line.line for line in lines] == [1, 3] and len(lines) == 2


def test_a_block_with_undecodable_lines_strips_crs_as_the_reader_did():
    good = csv_line("10.0.0.1", "-", "-", 1549573860, "GET /a HTTP/1.1", 200, 5)
    block = good.encode() + b"\n\xff\nx\r\r\n" + good.encode() + b"\r\n"
    lines, records, dead_letters = arrow_parse(block, skip=frozenset({1}))
    expected_records, expected_dead = line_by_line(list(lines), "csv")
    assert [line.text for line in lines][1] == "x"
    assert records == expected_records and dead_letters == expected_dead


def test_a_line_block_pickles_and_splits_like_the_reader():
    block = b"a\r\nb\r\r\nc\n"
    lines = LineBlock("f.log", 4, block, "clf", 3)
    import pickle

    again = pickle.loads(pickle.dumps(lines))
    expected = [AccessLine("f.log", 5, "a", "clf"), AccessLine("f.log", 6, "b\r", "clf"),
                AccessLine("f.log", 7, "c", "clf")]  # fmt: skip
    assert list(lines) == list(again) == expected


def test_a_record_table_materialises_its_records():
    block = block_of([csv_line("h", "i", "u", 7, "GET /a/b HTTP/1.1", 302, 9),
                      csv_line("h", "i", "u", 8, "GET /", 200, 0)], "\n")  # fmt: skip
    _, records, _ = arrow_parse(block)
    assert [tuple(r) for r in records] == [
        ("h", "i", "u", 7, "GET", "/a/b", "/a", "HTTP/1.1", 302, 9, "f.log", 1),
        ("h", "i", "u", 8, "GET", "/", "/", "", 200, 0, "f.log", 2),
    ]


def table_of(records) -> RecordTable:
    table = access_arrow.records_table(records)
    return RecordTable(table, records[0].source)


def reference_partials(records, size: int = 10):
    combine_fn = TrafficStatsCombineFn(top=3)
    expected: dict[int, list] = {}
    for r in records:
        start = r.timestamp - r.timestamp % size
        combine_fn.add_input(expected.setdefault(start, combine_fn.create_accumulator()), r)
    return {start: combine_fn.extract_output(acc) for start, acc in expected.items()}


@pytest.mark.parametrize("open_windows", [2048, 3])
def test_partial_stats_of_tables_equal_add_input_record_by_record(monkeypatch, open_windows):
    """With a bound of 3 open windows, partials leave early; merged, they are the same."""
    monkeypatch.setattr(traffic, "MAX_OPEN_WINDOWS", open_windows)
    records = random_records(random.Random(5), 3_000, sources=("a.log",))
    combine_fn = TrafficStatsCombineFn(top=3)
    fn = PartialStatsFn(10, combine_fn, totals=True)
    fn.start_bundle()
    emitted = []
    for i in range(0, len(records), 700):
        emitted.extend(fn.process_batch(table_of(records[i : i + 700])))
    emitted.extend(fn.finish_bundle())
    merged: dict[int, list] = {}
    totals = []
    for value in emitted:
        if hasattr(value, "tag"):
            totals.append(value.value.value)
            continue
        _key, acc = value.value
        start = value.timestamp.micros // 1_000_000
        merged[start] = combine_fn.merge_accumulators(
            [merged.get(start) or combine_fn.create_accumulator(), acc]
        )
    assert (len(emitted) - 1 > len(merged)) == (open_windows == 3)  # early partials
    got = {start: combine_fn.extract_output(acc) for start, acc in merged.items()}
    assert got == reference_partials(records)
    ((first, last, total),) = totals
    assert (first, last) == (min(merged), max(merged))
    whole = reference_partials([r._replace(timestamp=0) for r in records])[0]
    assert combine_fn.extract_output(total) == whole


def test_partial_stats_of_a_table_with_huge_byte_counts_stay_exact():
    records = [
        r._replace(bytes=10**18 - 1, timestamp=100)
        for r in random_records(random.Random(1), 20, sources=("a.log",))
    ]
    combine_fn = TrafficStatsCombineFn(top=3)
    fn = PartialStatsFn(10, combine_fn)
    fn.start_bundle()
    list(fn.process_batch(table_of(records)))
    assert fn.partials[100][1] == 20 * (10**18 - 1)  # past int64: Python integers
    assert combine_fn.extract_output(fn.partials[100]) == reference_partials(records)[100]


def test_counts_per_second_of_tables_and_lists_alike_streaming_with_origins_batch_as_arrays():
    records = random_records(random.Random(3), 500, sources=("a.log",))
    expected = Counter(r.timestamp for r in records)
    fn = CountPerSecondFn()
    fn.start_bundle()
    list(fn.process_batch(table_of(records[:250])))
    list(fn.process_batch(RecordColumns.of(records[250:])))
    ((_, counted),) = [v.value for v in fn.finish_bundle()]
    assert counted.counts == expected
    late = {records[0].timestamp}
    lines = [r.line for r in records if r.timestamp in late]
    assert counted.lines_of(late) == {late.pop(): {"a.log": lines}}

    batch = CountSecondsFn()
    batch.MAX_PARTS = 3  # summed along the way too
    batch.start_bundle()
    for i in range(0, 500, 50):
        part = records[i : i + 50]
        list(batch.process_batch(table_of(part) if i % 100 else RecordColumns.of(part)))
    ((key, (seconds, counts)),) = [v.value for v in batch.finish_bundle()]
    assert key == "all" and len(batch.parts) == 0
    assert dict(zip(seconds.tolist(), counts.tolist(), strict=True)) == expected
    assert seconds.tolist() == sorted(expected)
    empty = np.array([], np.int64)
    assert [a.tolist() for a in traffic.sum_per_second([(empty, empty)])] == [[], []]


def test_batch_detector_over_every_bundles_counts_gives_the_rules_changes():
    rng = random.Random(11)
    seconds = [1_000 + rng.randrange(600) for _ in range(3_000)]
    bundles = [Counter(seconds[i : i + 700]) for i in range(0, len(seconds), 700)]
    parts = [(np.array(list(c), np.int64), np.array(list(c.values()), np.int64)) for c in bundles]
    rule = TrafficAlertRule(5.0, 20)
    for second, count in sorted(Counter(seconds).items()):
        rule.add(second, count)
    expected = rule.evaluate_until(max(seconds))
    assert expected  # the data alert and recover
    out = list(DetectFromCountsFn(5.0, 20).process(("all", parts)))
    assert [o.value for o in out] == expected
    assert [o.timestamp.micros for o in out] == [c.at * 1_000_000 for c in expected]


def test_records_table_schema_matches_the_fast_path():
    texts = [csv_line("h", "-", "-", 1, "GET /a HTTP/1.1", 200, 1)]
    table, _ = access_arrow.parse_block(block_of(texts, "\n"), "csv")
    records = random_records(random.Random(0), 3)
    assert access_arrow.records_table(records).schema == table.schema
    assert pa.concat_tables([table, access_arrow.records_table(records)]).num_rows == 4
