"""The producer's readers, and what the consumer makes of data the producer could not send."""

from __future__ import annotations

import os

import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import given, settings
from hypothesis import strategies as st

from beam_tally.live.produce import access_poll, tally_poll
from tests.conftest import direct_pipeline
from tests.test_replay import FakeClock
from transforms.records import STREAM_ERROR, STREAM_ERROR_PREFIX, AccessLine, SourceFile
from transforms.tally import DEAD_LETTERS, DOCUMENTS, LOGS, ParseLogDocuments
from transforms.traffic import RECORDS, ParseAccessLines

CSV_HEADER = b'"remotehost","rfc931","authuser","date","request","status","bytes"\n'


def csv_line(ts: int) -> bytes:
    return f'"10.0.0.1","-","-",{ts},"GET /api/x HTTP/1.1",200,10\n'.encode()


def test_access_reader_times_lines_keeps_bad_ones_and_waits_for_a_whole_line(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes(CSV_HEADER + csv_line(100) + b"\xff\xfe broken\n" + csv_line(99)[:20])
    poll = access_poll(str(tmp_path / "*.csv"), "auto", follow=True)
    (update,) = poll()
    assert [(ts, line.line, line.fmt) for ts, line in update.items] == [
        (None, 1, "csv"),  # the header: no event time, skipped by the consumer's parser
        (100, 2, "csv"),
        (None, 3, STREAM_ERROR),  # undecodable: travels on, to become a dead letter
    ]
    assert update.items[2][1].text.startswith("undecodable bytes")
    assert not update.done  # followed: the half-written last line waits for its newline
    with open(path, "ab") as handle:
        handle.write(csv_line(99)[20:])
    (update,) = poll()
    assert [(ts, line.line) for ts, line in update.items] == [(99, 4)]


def test_access_replay_reads_an_unterminated_last_line_and_ends(tmp_path):
    (tmp_path / "a.csv").write_bytes(CSV_HEADER + csv_line(5).rstrip(b"\n"))
    (update,) = access_poll(str(tmp_path / "a.csv"), "csv", follow=False)()
    assert [ts for ts, _ in update.items] == [None, 5] and update.done


def test_tally_follow_serves_a_file_once_when_it_stopped_changing(tmp_path):
    clock = FakeClock()
    poll = tally_poll(str(tmp_path / "*.json"), follow=True, clock=clock)
    (tmp_path / "logs_01.json").write_text('{"logs": []}')
    assert poll()[0].items == []  # first seen: wait one poll to know it is complete
    (update,) = poll()
    assert [doc.source for _, doc in update.items] == [str(tmp_path / "logs_01.json")]
    assert poll()[0].items == []  # never twice


def test_tally_replay_stamps_documents_in_increasing_time(tmp_path):
    for n in range(3):
        (tmp_path / f"logs_{n:02d}.json").write_text('{"logs": []}')
    (update,) = tally_poll(str(tmp_path / "*.json"), follow=False, clock=FakeClock())()
    stamps = [ts for ts, _ in update.items]
    assert stamps == sorted(set(stamps)) and len(stamps) == 3 and update.done


def test_what_the_producer_could_not_send_becomes_a_dead_letter():
    reason = "unreadable file: PermissionError: denied"
    with direct_pipeline() as p:
        lines = p | "Lines" >> beam.Create([AccessLine("a.log", 7, reason, STREAM_ERROR)])
        parsed = lines | ParseAccessLines("auto")
        docs = p | "Docs" >> beam.Create(
            [SourceFile("b.json", STREAM_ERROR_PREFIX + reason.encode())]
        )
        tally = docs | ParseLogDocuments(batched=False)
        assert_that(parsed[RECORDS], equal_to([]), label="no records")
        assert_that(
            parsed[DEAD_LETTERS] | beam.Map(lambda d: (d.source, d.where, d.reason)),
            equal_to([("a.log", 7, reason)]),
            label="access dead letter",
        )
        assert_that(tally[LOGS], equal_to([]), label="no logs")
        assert_that(tally[DOCUMENTS], equal_to([]), label="no tally message")
        assert_that(
            tally[DEAD_LETTERS] | beam.Map(lambda d: (d.source, d.where, d.reason)),
            equal_to([("b.json", None, reason)]),
            label="tally dead letter",
        )


def test_unbatched_parse_gives_the_same_logs_as_batched():
    doc = SourceFile("c.json", b'{"logs":[{"id":"1","email":"a@x","message":"m"},{"id":"2"}]}')
    with direct_pipeline() as p:
        docs = p | beam.Create([doc])
        batched = docs | "Batched" >> ParseLogDocuments()
        unbatched = docs | "Unbatched" >> ParseLogDocuments(batched=False)
        for label, parsed in (("batched", batched), ("unbatched", unbatched)):
            assert_that(
                parsed[LOGS] | f"Emails {label}" >> beam.Map(lambda e: (e.source, e.email)),
                equal_to([("c.json", "a@x")]),
                label=f"logs {label}",
            )


def test_a_truncated_followed_file_is_read_again_from_its_start(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes(CSV_HEADER + csv_line(100) + csv_line(101))
    poll = access_poll(str(path), "csv", follow=True)
    assert [ts for ts, _ in poll()[0].items] == [None, 100, 101]
    path.write_bytes(csv_line(200))  # rotated by copytruncate, then written again
    (update,) = poll()
    assert [(ts, line.line) for ts, line in update.items] == [(200, 1)]


def test_a_line_too_long_to_stream_is_a_dead_letter_and_the_rest_goes_on(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes(csv_line(1) + b"x" * (3 << 20) + b"\n" + csv_line(2))
    poll = access_poll(str(path), "csv", follow=True)
    items = []
    for _ in range(6):  # the long line spans reads (FIRST_BLOCK, then twice as much each)
        for update in poll():
            items += update.items
    assert [(ts, line.line, line.fmt) for ts, line in items] == [
        (1, 1, "csv"),
        (None, 2, STREAM_ERROR),
        (2, 3, "csv"),
    ]
    assert items[1][1].text.startswith("line too long to stream")


def test_a_rotated_followed_file_is_drained_then_the_new_one_read(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes(csv_line(1))
    poll = access_poll(str(path), "csv", follow=True)
    assert [ts for ts, _ in poll()[0].items] == [1]
    with open(path, "ab") as handle:
        handle.write(csv_line(2))  # appended just before the rotation
    os.rename(path, tmp_path / "a.csv.1")
    path.write_bytes(csv_line(3) + csv_line(4))
    items = [item for _ in range(2) for update in poll() for item in update.items]
    assert [(ts, line.line) for ts, line in items] == [(2, 2), (3, 1), (4, 2)]


def test_a_deleted_followed_file_ends_its_reader(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes(csv_line(1))
    poll = access_poll(str(path), "csv", follow=True)
    poll()
    path.unlink()
    (update,) = poll()
    assert update.items == [] and update.done
    assert poll() == []  # not polled again, no dead letter for a file that went away


def test_a_rotated_file_whose_new_name_matches_the_glob_is_not_read_twice(tmp_path):
    path = tmp_path / "access.log"
    path.write_bytes(csv_line(1) + csv_line(2)[:10])  # the writer is mid-line
    poll = access_poll(str(tmp_path / "access.log*"), "csv", follow=True)
    items = [item for update in poll() for item in update.items]
    with open(path, "ab") as handle:
        handle.write(csv_line(2)[10:].rstrip(b"\n"))  # its last line, never terminated
    os.rename(path, tmp_path / "access.log.1")
    path.write_bytes(csv_line(3))
    for _ in range(3):
        items += [item for update in poll() for item in update.items]
    assert sorted(ts for ts, _ in items) == [1, 2, 3]  # each once, the unterminated 2 too


def test_an_unreadable_followed_file_is_one_dead_letter_until_it_changes(tmp_path, monkeypatch):
    from beam_tally.live import produce

    path = tmp_path / "a.csv"
    path.write_bytes(csv_line(1))

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(produce, "open_input", refuse)
    poll = access_poll(str(path), "csv", follow=True)
    first = [item for update in poll() for item in update.items]
    assert len(first) == 1 and first[0][1].text.startswith("unreadable file: PermissionError")
    assert all(update.items == [] for _ in range(5) for update in poll())  # not again
    monkeypatch.undo()
    path.write_bytes(csv_line(1) + csv_line(2))  # changed: read again
    assert [ts for update in poll() for ts, _ in update.items] == [1, 2]


def served_times(poll, polls: int = 3) -> list:
    return sorted(ts for _ in range(polls) for update in poll() for ts, _ in update.items)


def test_rotation_noticed_between_polls_reads_nothing_twice(tmp_path):
    """Renamed, polled, then the new file created: the renamed file is the same file."""
    path = tmp_path / "access.log"
    path.write_bytes(csv_line(1) + csv_line(2))
    poll = access_poll(str(tmp_path / "access.log*"), "csv", follow=True)
    first = served_times(poll, 1)
    os.rename(path, tmp_path / "access.log.1")
    more = served_times(poll, 1)
    path.write_bytes(csv_line(3))
    assert first + more + served_times(poll) == [1, 2, 3]


def test_a_second_rotation_over_old_rotated_files_reads_nothing_twice(tmp_path):
    (tmp_path / "access.log.1").write_bytes(csv_line(1))
    path = tmp_path / "access.log"
    path.write_bytes(csv_line(2))
    poll = access_poll(str(tmp_path / "access.log*"), "csv", follow=True)
    first = served_times(poll, 1)
    os.rename(tmp_path / "access.log.1", tmp_path / "access.log.2")
    os.rename(path, tmp_path / "access.log.1")
    path.write_bytes(csv_line(3))
    assert first + served_times(poll) == [1, 2, 3]


def test_long_lines_never_make_a_stream_message_larger_than_grpc_takes():
    """Chunks of lines close by size as well as by count: five lines of 1 MiB (the longest a
    producer sends) and a thousand of 9 kB each travel in messages under gRPC's 4 MiB."""
    from beam_tally.io.stream import elements_events, stream_coder, stream_items
    from transforms.records import AccessLine

    coder = stream_coder("access")
    # (lines, characters a line, the character): 1 MiB lines, 9 kB lines, and 1 MiB lines of
    # three-byte characters (a chunk is measured in characters)
    for count, length, char in ((5, 1 << 20, "x"), (1_000, 9_000, "x"), (8, 349_525, "語")):
        items = [(float(i), AccessLine("f.log", i + 1, char * length, "clf")) for i in range(count)]
        chunks = stream_items("access", items)
        assert [line for _, chunk in chunks for line in chunk] == [line for _, line in items]
        events = list(elements_events(chunks, coder, "tag"))
        assert max(event.ByteSize() for event in events) < 4 << 20
        assert all(ts == min(t for t, _ in items if _ in chunk) for ts, chunk in chunks)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a.log", "b/c.csv", "é.log"]),
            st.integers(0, 10**9),
            st.text(st.characters(blacklist_categories=("Cs",))),
            st.sampled_from(["", "csv", "clf", "error", "end"]),
        ),
        max_size=40,
    ),
    st.booleans(),
)
def test_a_chunk_of_lines_decodes_to_the_same_lines_whatever_they_hold(rows, one_file):
    """Columns for the usual chunk (one file's lines: source and format once), rows for text
    JSON would escape into more bytes than UTF-8 takes; either way the same lines come back."""
    from beam_tally.io.stream import stream_coder
    from transforms.list_batches import LineList

    if one_file:
        rows = [("a.log", number, text, "csv") for _, number, text, _ in rows]
    chunk = LineList(AccessLine(*row) for row in rows)
    coder = stream_coder("access")
    encoded = coder.encode(chunk)
    decoded = coder.decode(encoded)
    assert decoded == chunk and type(decoded) is LineList
    assert all(type(line) is AccessLine for line in decoded)
    characters = sum(len(line.text) for line in chunk)
    assert len(encoded) <= 3 * characters + 64 * len(chunk) + 64 or encoded[:1] == b"r"


def test_a_chunk_of_control_characters_is_no_larger_than_utf8_would_be():
    from beam_tally.io.stream import stream_coder
    from transforms.list_batches import LineList

    chunk = LineList([AccessLine("f.log", 1, "\x01" * 100_000, "clf")])
    encoded = stream_coder("access").encode(chunk)
    assert len(encoded) < 100_000 + 100
    assert stream_coder("access").decode(encoded) == chunk


def test_a_replay_reads_a_small_first_block_then_twice_as_much_each_poll_up_to_block(tmp_path):
    """The first lines leave soon after a consumer connects, and later polls are large: the
    lines of each poll fit in that poll's block (FIRST_BLOCK, doubled each time, BLOCK at
    most) with the line the block before cut, and together they are the file's lines."""
    from beam_tally.live import produce

    path = tmp_path / "a.csv"
    lines = [csv_line(1_000_000 + n // 50) for n in range(60_000)]
    path.write_bytes(CSV_HEADER + b"".join(lines))
    assert len(CSV_HEADER) + sum(map(len, lines)) > 4 * produce.FIRST_BLOCK
    poll = access_poll(str(path), "csv", follow=False)
    per_poll, done, block = [], False, produce.FIRST_BLOCK
    while not done:
        (update,) = poll()
        per_poll.append(update.items)
        size = sum(len(line.text) + 1 for _, line in update.items)
        assert size <= block + len(lines[0])  # and the line the last block cut
        block, done = min(2 * block, produce.BLOCK), update.done
    assert [len(items) for items in per_poll[:3]] != [0, 0, 0]
    assert sum(len(line.text) + 1 for _, line in per_poll[0]) > produce.FIRST_BLOCK // 2
    texts = [line.text for items in per_poll for _, line in items]
    assert texts == [CSV_HEADER.decode().rstrip("\n")] + [x.decode().rstrip("\n") for x in lines]
    polls, read, block = 0, 0, produce.FIRST_BLOCK  # the reads the file takes at that pace
    while read <= path.stat().st_size:
        polls, read, block = polls + 1, read + block, min(2 * block, produce.BLOCK)
    assert len(per_poll) <= polls
