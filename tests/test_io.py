"""The access-log reader on its own: lines, line numbers and dead letters of raw bytes, read
whole or as ranges."""

from __future__ import annotations

import gzip
import os
import random

import apache_beam as beam
import pytest
from apache_beam import pvalue

from beam_tally.io.files import ReadLinesFn, SplitFileFn


def read(path: str, block: int) -> tuple[list[tuple[int, str]], list[tuple[int, str, str]]]:
    """(line number, text) of every line ReadLinesFn emits, and its dead letters."""
    fn = ReadLinesFn()
    fn.BLOCK = block  # small blocks: lines and bad bytes fall across block edges
    lines, dead = [], []
    for out in fn.process(path):
        if isinstance(out, pvalue.TaggedOutput):
            dead += [(d.where, d.reason, d.raw) for d in out.value]
        else:
            lines += [(line.line, line.text) for line in out]
    return lines, dead


def reference(raw: bytes) -> tuple[list[tuple[int, str]], list[tuple[int, str, str]]]:
    """Line by line: a line that does not decode is a dead letter; CR/LF endings stripped."""
    pieces = raw.split(b"\n")
    if pieces[-1] == b"":
        pieces.pop()
    lines, dead = [], []
    for number, piece in enumerate(pieces, start=1):
        line = piece.removesuffix(b"\r")
        try:
            lines.append((number, line.decode("utf-8")))
        except UnicodeDecodeError as bad:
            reason = f"undecodable bytes: invalid UTF-8 at byte {bad.start}"
            dead.append((number, reason, line.decode("utf-8", "backslashreplace")))
    return lines, dead


@pytest.mark.parametrize("block", [16, 64, 1 << 22])
def test_lines_around_undecodable_bytes_keep_their_numbers(tmp_path, block):
    raw = (
        b"first line\n"
        b"bad \xff here\n"  # a bad line after a good one
        b"\xc3 truncated\n"  # and another right after it
        b"caf\xc3\xa9 au lait\r\n"  # CRLF, a two-byte character
        b"ok again\r\n"
        b"\xe2\x82 cut before the newline\n"
        b"last line is bad and has no newline \xfe"
    )
    path = tmp_path / "access.log"
    path.write_bytes(raw)
    assert read(str(path), block) == reference(raw)


def test_random_bytes_read_as_line_by_line(tmp_path):
    rng = random.Random(3)
    alphabet = [b"a", b"b", b" ", b"\n", b"\r\n", "\u00e9".encode(), b"\xff", b"\xc3", b"\xe2\x82"]
    for case in range(40):
        raw = b"".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 120)))
        raw = raw.replace(b"\r\r", b"\r")  # a lone CR before a CRLF is kept by whole blocks
        path = tmp_path / f"case{case}.log"
        path.write_bytes(raw)
        for block in (8, 1 << 22):
            assert read(str(path), block) == reference(raw), (raw, block)


def read_split(path: str, split: int, block: int):
    """``read`` over the ``FileRange``s ``SplitFileFn`` cuts the file into."""
    fn = ReadLinesFn()
    fn.BLOCK = block
    lines, dead = [], []
    parts = list(SplitFileFn(split_bytes=split, block=block).process(path))
    for part in parts:
        for out in fn.process(part):
            if isinstance(out, pvalue.TaggedOutput):
                dead += [(d.where, d.reason, d.raw) for d in out.value]
            else:
                lines += [(line.line, line.text) for line in out]
    return sorted(lines), sorted(dead, key=repr), parts


@pytest.mark.parametrize("seed", range(6))
def test_ranges_of_a_file_read_as_the_whole_file(tmp_path, seed):
    """Lines, line numbers and dead letters (undecodable lines, CRLF endings, a last line
    without its end) are the whole file's, however the file is cut."""
    rng = random.Random(seed)
    pieces = [
        rng.choice([b"ok line", b"caf\xc3\xa9", b"bad \xff", b"", b"x" * 50]) for _ in range(300)
    ]
    raw = b"head\n" + b"".join(p + rng.choice([b"\n", b"\r\n"]) for p in pieces) + b"no end"
    path = tmp_path / "access.log"
    path.write_bytes(raw)
    lines, dead = read(str(path), 1 << 22)
    for split, block in ((64, 16), (200, 4096), (1000, 37)):
        got_lines, got_dead, parts = read_split(str(path), split, block)
        assert len(parts) > 2  # cut, so the ranges are what is tested
        assert (got_lines, got_dead) == (sorted(lines), sorted(dead, key=repr))


def test_files_that_are_not_cut(tmp_path):
    """Small, compressed and CR-only files are read whole (their paths pass on)."""
    small = tmp_path / "small.log"
    small.write_bytes(b"a\nb\n")
    cr_only = tmp_path / "mac.log"
    cr_only.write_bytes(b"line\r" * 100)
    zipped = tmp_path / "big.log.gz"
    zipped.write_bytes(gzip.compress(b"line\n" * 1000))
    fn = SplitFileFn(split_bytes=16, block=64)
    for path in (small, cr_only, zipped):
        assert list(fn.process(str(path))) == [str(path)]


def test_split_reading_in_a_pipeline_gives_the_same_lines_and_dead_letters(tmp_path):
    from apache_beam.testing.util import assert_that, equal_to

    from beam_tally.generate.access import generate_access
    from beam_tally.io.files import ReadAccessLogs
    from tests.conftest import direct_pipeline

    for fmt in ("csv", "clf"):
        generate_access(
            str(tmp_path / f"a.{fmt}"), fmt=fmt, seconds=400, rate=5, bad_fraction=0.05, seed=2
        )
    pattern = str(tmp_path / "a.*")
    whole_lines, whole_dead = [], []
    for name in sorted(os.listdir(tmp_path)):
        lines, dead = read(str(tmp_path / name), 1 << 22)
        whole_lines += [(str(tmp_path / name), *line) for line in lines]
        whole_dead += [(str(tmp_path / name), *d) for d in dead]
    with direct_pipeline() as p:
        read_all = p | ReadAccessLogs(pattern, split_bytes=500)
        assert_that(
            read_all["lines"] | beam.Map(lambda line: (line.source, line.line, line.text)),
            equal_to(whole_lines),
            label="lines",
        )
        assert_that(
            read_all["dead_letters"] | beam.Map(lambda d: (d.source, d.where, d.reason, d.raw)),
            equal_to(whole_dead),
            label="dead letters",
        )


def test_line_list_coder_round_trips_chunks_as_access_lines():
    """A chunk of one file (columns with its source and format once), and one of several files
    and formats, decode to equal ``AccessLine``s, in a ``LineList``."""
    from beam_tally.io.stream import LineListCoder
    from transforms.list_batches import LineList
    from transforms.records import AccessLine

    coder = LineListCoder()
    one_file = LineList(AccessLine("a.csv", n, f"line {n}", "csv") for n in range(1, 600))
    mixed = LineList(
        [
            AccessLine("a.csv", 1, "x", "csv"),
            AccessLine("b.log", 7, "y", "clf"),
            AccessLine("c", 2, ""),
        ]
    )
    for chunk in (one_file, mixed, LineList()):
        decoded = coder.decode(coder.encode(chunk))
        assert type(decoded) is LineList and decoded == chunk
        assert all(type(line) is AccessLine for line in decoded)
        assert [line.fmt for line in decoded] == [line.fmt for line in chunk]
    assert coder.encode(one_file)[:1] == b"c"
