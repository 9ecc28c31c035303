"""The access-log reader on its own: lines, line numbers and dead letters of raw bytes."""

from __future__ import annotations

import random

import pytest
from apache_beam import pvalue

from beam_tally.io.files import ReadLinesFn


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
