"""The tally transforms in TestPipeline (batch) and TestStream (streaming)."""

from __future__ import annotations

import itertools
import random
from collections import Counter

import apache_beam as beam
import orjson
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import window
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import direct_pipeline, streaming_pipeline
from transforms.parse_logs import reason_code
from transforms.records import (
    FileTally,
    GlobalTally,
    LogEntry,
    SourceFile,
    TallyEntry,
    sorted_tally,
)
from transforms.tally import (
    DEAD_LETTERS,
    DOCUMENTS,
    FINAL,
    LOGS,
    TALLIES,
    UPDATES,
    ParseLogDocuments,
    SumCountsCombineFn,
    TallyDocuments,
    TallyPerFile,
    UpdateGlobalTally,
)


def document(*logs) -> bytes:
    return orjson.dumps({"logs": list(logs)})


DOCS = [
    SourceFile(
        "a.json",
        document(
            {"id": "1", "email": "x@a", "message": "ok"},
            {"id": "2", "email": 5},
            "not a log",
            {"id": "4", "email": "y@a"},
            {"id": "5", "email": "x@a"},
        ),
    ),
    SourceFile("b.json", document()),
    SourceFile("c.json", b'{"logs": ['),
    SourceFile("d.json", b'{"logs": [{"email": "\xff"}]}'),
    SourceFile("e.json", b'{"other": 1}'),
    SourceFile("f.json", document({"id": "6"}, {"email": "x@a"})),
]


def test_parse_log_documents_emits_one_entry_per_valid_log_and_tags_the_rest():
    with direct_pipeline() as p:
        parsed = p | beam.Create(DOCS) | ParseLogDocuments()
        assert_that(
            parsed[LOGS],
            equal_to(
                [
                    LogEntry("a.json", 0, "x@a", "1", "ok"),
                    LogEntry("a.json", 3, "y@a", "4", None),
                    LogEntry("a.json", 4, "x@a", "5", None),
                    LogEntry("f.json", 1, "x@a", None, None),
                ]
            ),
            label="Logs",
        )
        assert_that(
            parsed[DOCUMENTS],
            equal_to(
                [  # each document's note, written by hand from document_note's rule
                    ("a.json", "2 bad logs: email is not a string 1, log is not an object 1"),
                    ("b.json", "no logs: the 'logs' list is empty"),
                    ("c.json", "bad file: malformed JSON"),
                    ("d.json", "bad file: undecodable bytes"),
                    ("e.json", "bad file: no 'logs' list"),
                    ("f.json", "1 bad log: missing email 1"),
                ]
            ),
            label="Documents",
        )
        assert_that(
            parsed[DEAD_LETTERS] | beam.Map(lambda d: (d.source, d.where, reason_code(d.reason))),
            equal_to(
                [
                    ("a.json", 1, "email is not a string"),
                    ("a.json", 2, "log is not an object"),
                    ("c.json", None, "malformed JSON"),
                    ("d.json", None, "undecodable bytes"),
                    ("e.json", None, "no 'logs' list"),
                    ("f.json", 0, "missing email"),
                ]
            ),
            label="DeadLetters",
        )


def test_dead_letters_and_logs_are_counted_in_metrics():
    p = direct_pipeline()
    _ = p | beam.Create(DOCS) | ParseLogDocuments()
    result = p.run()
    result.wait_until_finish()
    counters = {
        (m.key.metric.namespace, m.key.metric.name): m.committed
        for m in result.metrics().query(MetricsFilter())["counters"]
    }
    assert counters[("beam_tally", "logs")] == 4
    assert counters[("beam_tally", "documents")] == 6
    assert counters[("beam_tally", "dead_letters")] == 6
    assert counters[("beam_tally.dead_letters", "missing email")] == 1


def test_tally_per_file_over_parsed_batches_includes_files_without_logs():
    with direct_pipeline() as p:
        parsed = p | beam.Create(DOCS) | ParseLogDocuments()
        tallies = (parsed[LOGS], parsed[DOCUMENTS]) | TallyPerFile()
        assert_that(
            tallies,
            equal_to(
                [
                    FileTally(
                        "a.json",
                        [TallyEntry("x@a", 2), TallyEntry("y@a", 1)],
                        "2 bad logs: email is not a string 1, log is not an object 1",
                    ),
                    FileTally("b.json", [], "no logs: the 'logs' list is empty"),
                    FileTally("c.json", [], "bad file: malformed JSON"),
                    FileTally("d.json", [], "bad file: undecodable bytes"),
                    FileTally("e.json", [], "bad file: no 'logs' list"),
                    FileTally("f.json", [TallyEntry("x@a", 1)], "1 bad log: missing email 1"),
                ]
            ),
        )


def test_tally_per_file_over_plain_elements_from_several_files():
    rng = random.Random(3)
    entries = [
        LogEntry(f"f{rng.randrange(3)}", i, f"user{rng.randrange(4)}@x", None, None)
        for i in range(200)
    ]
    expected = {}
    for entry in entries:
        expected.setdefault(entry.source, Counter())[entry.email] += 1
    with direct_pipeline() as p:
        logs = p | "Logs" >> beam.Create(entries)
        documents = p | "Docs" >> beam.Create([("f0", ""), ("f1", ""), ("f2", ""), ("empty", "")])
        tallies = (logs, documents) | TallyPerFile()
        assert_that(
            tallies | beam.Map(lambda t: (t.source, {e.email: e.total for e in t.tally})),
            equal_to([(s, dict(c)) for s, c in expected.items()] + [("empty", {})]),
        )


# SumCountsCombineFn: all four methods, directly.


def test_sum_counts_combine_fn_methods():
    fn = SumCountsCombineFn()
    acc = fn.create_accumulator()
    assert fn.extract_output(acc) == []
    acc = fn.add_input(acc, {"a@x": 2, "b@x": 1})
    acc = fn.add_input(acc, Counter({"a@x": 1, "c@x": 3}))
    other = fn.add_input(fn.create_accumulator(), {"b@x": 4})
    merged = fn.merge_accumulators([acc, other, fn.create_accumulator()])
    assert fn.extract_output(merged) == [
        TallyEntry("b@x", 5),
        TallyEntry("a@x", 3),
        TallyEntry("c@x", 3),
    ]
    assert fn.merge_accumulators([]) == {}
    assert fn.extract_output(fn.merge_accumulators(iter([{}]))) == []


partials = st.lists(
    st.dictionaries(st.sampled_from(["a@x", "b@x", "c@x", "zoë@x"]), st.integers(1, 50)),
    max_size=12,
)


@given(partials, st.randoms(use_true_random=False))
@settings(max_examples=60)
def test_sum_counts_merging_partial_accumulators_in_any_order(inputs, rng):
    fn = SumCountsCombineFn()
    expected = Counter()
    for counts in inputs:
        expected.update(counts)
    # Split the inputs into partial accumulators, then merge them in a shuffled order.
    cuts = sorted(rng.sample(range(len(inputs) + 1), k=min(3, len(inputs) + 1)))
    groups = [inputs[i:j] for i, j in itertools.pairwise([0, *cuts, len(inputs)])]
    accumulators = []
    for group in groups:
        acc = fn.create_accumulator()
        for counts in group:
            acc = fn.add_input(acc, counts)
        accumulators.append(acc)
    rng.shuffle(accumulators)
    result = fn.extract_output(fn.merge_accumulators(accumulators))
    assert {e.email: e.total for e in result} == dict(expected)
    assert result == sorted(result, key=lambda e: (-e.total, e.email))


# UpdateGlobalTally: one update per message, each the sum of the messages applied so far.

MESSAGES = [
    FileTally("f1", [TallyEntry("a@x", 3), TallyEntry("b@x", 1)]),
    FileTally("f2", []),
    FileTally("f3", [TallyEntry("b@x", 5), TallyEntry("c@x", 2)]),
    FileTally("f4", [TallyEntry("a@x", 1)]),
]


def check_updates(messages):
    """Checks each update against the messages it says were applied (order is the runner's)."""
    by_source = {m.source: m for m in messages}

    def _check(updates):
        updates = sorted(updates, key=lambda u: u.files)
        assert [u.files for u in updates] == list(range(1, len(messages) + 1))
        assert sorted(u.after for u in updates) == sorted(by_source)
        running = Counter()
        for update in updates:
            for entry in by_source[update.after].tally:
                running[entry.email] += entry.total
            assert {e.email: e.total for e in update.tally} == dict(running)
            assert list(update.applied) == list(by_source[update.after].tally)
            assert list(update.tally) == sorted(update.tally, key=lambda e: (-e.total, e.email))

    return _check


def expected_final(messages):
    total = Counter()
    for message in messages:
        total.update({e.email: e.total for e in message.tally})
    return {e.email: e.total for e in sorted_tally(dict(total))}, len(messages)


def check_final(messages):
    def _check(finals):
        assert len(finals) == 1
        (final,) = finals
        assert ({e.email: e.total for e in final.tally}, final.files) == expected_final(messages)
        assert final.after in {m.source for m in messages}
        assert list(final.tally) == sorted(final.tally, key=lambda e: (-e.total, e.email))

    return _check


def test_update_global_tally_emits_after_every_message_in_batch():
    with direct_pipeline() as p:
        result = p | beam.Create(MESSAGES) | UpdateGlobalTally()
        assert_that(result[UPDATES], check_updates(MESSAGES))
        assert_that(result[FINAL], check_final(MESSAGES), label="Final")


def test_update_global_tally_without_messages_emits_nothing():
    with direct_pipeline() as p:
        result = p | beam.Create([]).with_output_types(FileTally) | UpdateGlobalTally()
        assert_that(result[UPDATES], equal_to([]))
        assert_that(result[FINAL], equal_to([]), label="NoFinal")


def test_update_global_tally_emits_as_messages_arrive_in_streaming():
    stream = (
        TestStream()
        .advance_watermark_to(0)
        .add_elements([window.TimestampedValue(MESSAGES[0], 1)])
        .advance_watermark_to(5)
        .add_elements([window.TimestampedValue(m, 6) for m in MESSAGES[1:3]])
        .advance_watermark_to(10)
        .add_elements([window.TimestampedValue(MESSAGES[3], 11)])
        .advance_watermark_to_infinity()
    )
    with streaming_pipeline() as p:
        result = p | stream | UpdateGlobalTally()
        updates = result[UPDATES]
        assert_that(updates, check_updates(MESSAGES))
        # The final tally (tag FINAL) is not asserted here: the legacy streaming DirectRunner
        # fires the end-of-window timer, but does not hold the watermark for its output, so
        # assert_that's GroupByKey has already closed the global window when it arrives.
        # The first update is emitted from the first message alone, before the others arrive.
        first = updates | beam.Filter(lambda u: u.files == 1)
        assert_that(
            first,
            equal_to([GlobalTally(1, "f1", list(MESSAGES[0].tally), list(MESSAGES[0].tally))]),
            label="FirstUpdate",
        )


@pytest.mark.parametrize("files", [1, 7])
def test_update_global_tally_final_equals_the_sum(files):
    rng = random.Random(files)
    messages = [
        FileTally(
            f"f{i}",
            sorted(
                (TallyEntry(f"u{j}@x", rng.randint(1, 9)) for j in rng.sample(range(6), 3)),
                key=lambda e: (-e.total, e.email),
            ),
        )
        for i in range(files)
    ]
    with direct_pipeline() as p:
        result = p | beam.Create(messages) | UpdateGlobalTally()
        assert_that(result[UPDATES], check_updates(messages))
        assert_that(result[FINAL], check_final(messages), label="Final")


def test_write_json_lines_writes_every_file_even_when_all_inputs_are_empty(tmp_path):
    from beam_tally.io.files import WriteJsonLines

    out = tmp_path / "out"
    out.mkdir()
    lines = [f'{{"n":{i}}}' for i in range(50)]
    with direct_pipeline() as p:
        empty = p | "Empty" >> beam.Create([]).with_output_types(str)
        full = p | "Full" >> beam.Create(lines)
        {"a.jsonl": empty, "b.jsonl": full} | WriteJsonLines(str(out))
    assert sorted(path.name for path in out.iterdir()) == ["a.jsonl", "b.jsonl"]
    assert (out / "a.jsonl").read_text() == ""
    assert sorted((out / "b.jsonl").read_text().splitlines()) == sorted(lines)

    only_empty = tmp_path / "only_empty"
    only_empty.mkdir()
    with direct_pipeline() as p:
        {"c.jsonl": p | beam.Create([]).with_output_types(str)} | WriteJsonLines(str(only_empty))
    assert [path.name for path in only_empty.iterdir()] == ["c.jsonl"]


def test_tally_documents_counts_each_file_in_one_step_as_parse_and_tally_do():
    expected = [
        FileTally(
            "a.json",
            [TallyEntry("x@a", 2), TallyEntry("y@a", 1)],
            "2 bad logs: email is not a string 1, log is not an object 1",
        ),
        FileTally("b.json", [], "no logs: the 'logs' list is empty"),
        FileTally("c.json", [], "bad file: malformed JSON"),
        FileTally("d.json", [], "bad file: undecodable bytes"),
        FileTally("e.json", [], "bad file: no 'logs' list"),
        FileTally("f.json", [TallyEntry("x@a", 1)], "1 bad log: missing email 1"),
    ]
    p = direct_pipeline()
    counted = p | beam.Create(DOCS) | TallyDocuments()
    assert_that(counted[TALLIES], equal_to(expected), label="tallies")
    assert_that(
        counted[DEAD_LETTERS] | beam.Map(lambda d: (d.source, d.where, reason_code(d.reason))),
        equal_to(
            [
                ("a.json", 1, "email is not a string"),
                ("a.json", 2, "log is not an object"),
                ("c.json", None, "malformed JSON"),
                ("d.json", None, "undecodable bytes"),
                ("e.json", None, "no 'logs' list"),
                ("f.json", 0, "missing email"),
            ]
        ),
        label="dead letters",
    )
    result = p.run()
    result.wait_until_finish()
    counters = {
        (r.key.metric.namespace, r.key.metric.name): r.committed
        for r in result.metrics().query(MetricsFilter())["counters"]
    }
    assert counters[("beam_tally", "documents")] == 6
    assert counters[("beam_tally", "logs")] == 4
    assert counters[("beam_tally", "dead_letters")] == 6
    assert counters[("beam_tally.file_records", "a.json")] == 3
