"""Records, their coders and their JSON form; the columnar LogBatch converter."""

from __future__ import annotations

import pickle

import orjson
import pytest
from apache_beam.coders import registry

from transforms.log_batch import LogBatch, LogBatchCoder, LogBatchConverter
from transforms.parse_logs import parse_log_document
from transforms.records import (
    DeadLetter,
    FileTally,
    GlobalTally,
    LogEntry,
    TallyEntry,
    dead_letter_json,
    file_tally_json,
    global_tally_json,
    sorted_tally,
    truncate_raw,
)


def test_sorted_tally_orders_by_total_then_email():
    assert sorted_tally({"b@x": 2, "a@x": 2, "c@x": 5, "d@x": 1}) == [
        TallyEntry("c@x", 5),
        TallyEntry("a@x", 2),
        TallyEntry("b@x", 2),
        TallyEntry("d@x", 1),
    ]
    assert sorted_tally({}) == []


def test_json_lines_follow_the_contract():
    tally = (TallyEntry("first.user@domain.com", 2), TallyEntry("another.user@example.com", 1))
    assert orjson.loads(file_tally_json(FileTally("logs_01.json", tally))) == {
        "tally": [
            {"email": "first.user@domain.com", "total": 2},
            {"email": "another.user@example.com", "total": 1},
        ],
        "source": "logs_01.json",
    }
    assert orjson.loads(global_tally_json(GlobalTally(3, "logs_02.json", tally, ()))) == {
        "global_tally": [
            {"email": "first.user@domain.com", "total": 2},
            {"email": "another.user@example.com", "total": 1},
        ],
        "files": 3,
        "after": "logs_02.json",
    }
    assert orjson.loads(global_tally_json(None)) == {"global_tally": [], "files": 0, "after": None}
    assert orjson.loads(dead_letter_json(DeadLetter("f", 3, "missing email", "{}"))) == {
        "source": "f",
        "where": 3,
        "reason": "missing email",
        "raw": "{}",
    }


def test_json_lines_escape_any_email():
    emails = ['quote"d@x', "back\\slash@x", "ctrl\x1b\x00@x", "zoë@exämple.de", "李@例子", ""]
    tally = sorted_tally({email: i + 1 for i, email in enumerate(emails)})
    line = orjson.loads(file_tally_json(FileTally('path "with" quotes', tally)))
    assert line["source"] == 'path "with" quotes'
    assert [(e["email"], e["total"]) for e in line["tally"]] == [tuple(e) for e in tally]
    update = orjson.loads(global_tally_json(GlobalTally(1, "a", tally, [])))
    assert [(e["email"], e["total"]) for e in update["global_tally"]] == [tuple(e) for e in tally]


def test_truncate_raw_bounds_and_escapes_bytes():
    assert truncate_raw("x" * 500).endswith("...")
    assert len(truncate_raw("x" * 500)) == 203
    assert truncate_raw(b"ab\xffcd") == "ab\\xffcd"


def test_records_have_deterministic_row_coders():
    entry = LogEntry("f", 1, "zoë@exämple.de", None, "m")
    tally = FileTally("f", [TallyEntry("a", 2), TallyEntry("b", 1)])
    for value in (entry, tally, DeadLetter("f", None, "r", "raw")):
        coder = registry.get_coder(type(value))
        assert coder.is_deterministic()
        assert coder.decode(coder.encode(value)) == value


def test_log_batch_converter_round_trips_elements():
    converter = LogBatchConverter()
    entries = [LogEntry("a", 0, "x@y", "1", "m"), LogEntry("b", 4, "z@y", None, None)]
    batch = converter.produce_batch(entries)
    assert converter.get_length(batch) == 2
    assert list(converter.explode_batch(batch)) == entries
    assert batch.single_source() is None
    combined = converter.combine_batches([batch, converter.produce_batch(entries[:1])])
    assert list(converter.explode_batch(combined)) == [*entries, entries[0]]
    empty = converter.produce_batch([])
    assert converter.get_length(empty) == 0
    assert empty.single_source() is None
    same = LogBatch(["a", "a"], [0, 1], ["x", "y"], [None, None], [None, None])
    assert same.single_source() == "a"


def test_a_parsed_batch_round_trips_through_its_coder_and_is_sized_from_its_length():
    content = orjson.dumps({"logs": [{"id": 7, "email": "a@x", "message": "m"}, {"email": "b@x"}]})
    batch, _ = parse_log_document("f.json", content)
    coder = registry.get_coder(LogBatch)
    assert isinstance(coder, LogBatchCoder)
    decoded = coder.decode(coder.encode(batch))
    assert list(LogBatchConverter().explode_batch(decoded)) == [
        LogEntry("f.json", 0, "a@x", "7", "m"),
        LogEntry("f.json", 1, "b@x", None, None),
    ]
    # The lazy text columns travel as plain lists.
    assert type(pickle.loads(pickle.dumps(batch.ids))) is list


def test_a_batch_is_sized_from_its_length_without_encoding_it():
    """Beam samples the size of elements and batches it passes on: the estimate must not
    encode the batch (the default would pickle thousands of logs per sample), must grow with
    its length and stay near what the encoding really takes."""
    coder, converter = registry.get_coder(LogBatch).get_impl(), LogBatchConverter()

    def logs(count, message):
        return [
            {"id": i, "email": f"user{i % 50}@example.com", "message": message}
            for i in range(count)
        ]

    typical, _ = parse_log_document(
        "f.json", orjson.dumps({"logs": logs(1000, "login from 10.0.0.1")})
    )
    encoded = len(coder.encode(typical))
    for estimate in (coder.estimate_size, converter.estimate_byte_size):
        # Near the encoded size (within a factor of two either way) ...
        assert encoded / 2 <= estimate(typical) <= encoded * 2
        # ... proportional to the length, ...
        sizes = {
            n: estimate(
                converter.produce_batch([LogEntry("f", i, "a@x", None, None) for i in range(n)])
            )
            for n in (0, 1, 2, 1000)
        }
        assert (
            sizes[0] == 0 < sizes[1] and sizes[2] == 2 * sizes[1] and sizes[1000] == 1000 * sizes[1]
        )
        # ... and never from encoding: a batch whose columns cannot be pickled is sized.
        unpicklable = LogBatch(["f"], [0], ["a@x"], [None], [lambda: None])
        with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
            coder.encode(unpicklable)
        assert estimate(unpicklable) == sizes[1]
