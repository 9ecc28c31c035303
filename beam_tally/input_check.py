"""Input that a job cannot use: which files gave only dead letters, what a file looks like, and
the one line that says which job (or ``--format``) reads it.

A batch run counts valid records and dead letters per file in Beam metrics
(``transforms.tally.FILE_RECORDS`` and ``FILE_DEAD_LETTERS``); ``bad_files`` reads them back.
When no file gave a single valid record, ``wrong_input`` looks at the start of the first such
file (``looks_like``) and says what it is, so that the monitor on a tally file, the tally on an
access log, or ``--format clf`` on a CSV file ends with exit status 1 and a hint, not 0.
"""

from __future__ import annotations

import os
import re

import orjson

from beam_tally.console import plural
from beam_tally.io.sources import FileProblem, read_pieces
from beam_tally.metrics import counters
from beam_tally.terminal import escape_control
from transforms import access_log
from transforms.tally import FILE_DEAD_LETTERS, FILE_RECORDS

SNIFF_BYTES = 1 << 16

JSON_LOGS = "tally JSON"  # a {"logs": [...]} document
JSON = "JSON"
CSV = "csv"
CLF = "clf"
EMPTY = "empty"
BINARY = "binary"
TEXT = "text"
UNREADABLE = "unreadable"

_DESCRIPTIONS = {
    JSON_LOGS: "JSON with a 'logs' list",
    JSON: "JSON without a 'logs' list",
    CSV: "an access log in CSV",
    CLF: "an access log in Common Log Format",
    EMPTY: "empty",
    BINARY: "not UTF-8 text (binary, or another encoding)",
    TEXT: "text that is neither JSON nor an access log",
    UNREADABLE: "a file that cannot be read",
}


def bad_files(result) -> dict[str, int]:
    """``{source: dead letters}`` of every file (or name) that gave dead letters and no valid
    record in a finished batch run, sorted by source."""
    valid = counters(result, FILE_RECORDS)
    dead = counters(result, FILE_DEAD_LETTERS)
    return {source: n for source, n in sorted(dead.items()) if n and not valid.get(source)}


_NOT_TEXT = re.compile("[\x00-\x08\x0e-\x1f\ufffd]")


def _start_of(path: str) -> bytes | None:
    """Up to ``SNIFF_BYTES`` of the content of ``path`` (decompressed); None if unreadable."""
    start = b""
    try:
        for piece in read_pieces(path, SNIFF_BYTES, SNIFF_BYTES):
            start += piece
            if len(start) >= SNIFF_BYTES:
                break
    except (FileProblem, OSError):
        if not start:
            return None
    return start[:SNIFF_BYTES].removeprefix(b"\xef\xbb\xbf")


def _json_kind(start: bytes, text: str) -> str:
    try:
        doc = orjson.loads(start)
    except orjson.JSONDecodeError:
        doc = None  # cut at 64 KiB, or malformed: tell it by its start
    if isinstance(doc, dict):
        return JSON_LOGS if isinstance(doc.get("logs"), list) else JSON
    return JSON_LOGS if '"logs"' in text[:4096] else JSON


def looks_like(path: str) -> str:
    """What the first 64 KiB of ``path`` (decompressed) look like: one of ``JSON_LOGS``,
    ``JSON``, ``CSV``, ``CLF``, ``EMPTY``, ``BINARY``, ``TEXT`` or ``UNREADABLE``."""
    start = _start_of(path)
    if start is None:
        return UNREADABLE
    text = start.decode("utf-8", "replace")  # a log with a few bad bytes is still text
    if not text.strip():
        kind = EMPTY
    elif len(_NOT_TEXT.findall(text)) > len(text) / 20:
        kind = BINARY
    elif text.lstrip()[:1] in ("{", "["):
        kind = _json_kind(start, text.lstrip())
    else:
        try:
            kind = access_log.detect_format(text.splitlines()[:20])
        except ValueError:
            kind = TEXT
    return kind


def _reader(kind: str, job: str) -> str:
    """Which job or ``--format`` reads a file that looks like ``kind``."""
    if kind == JSON_LOGS:
        return "which 'beam-tally tally' reads"
    if kind in (CSV, CLF):
        if job == "monitor":
            return f"which --format {kind} (or auto) reads"
        return "which 'beam-tally monitor' reads"
    return "which neither job reads"


def _is_what_it_reads(kind: str, job: str, fmt: str) -> bool:
    if job == "tally":
        return kind == JSON_LOGS
    return kind == fmt or (fmt == "auto" and kind in (CSV, CLF))


def wrong_input(job: str, files: dict[str, int], fmt: str = "auto") -> str:
    """The one line for a run whose every file gave only dead letters (``files``, from
    ``bad_files``): what the first file looks like and which job or ``--format`` reads it."""
    # The first file that can be read says most (the others may be folders, links, FIFOs).
    kinds = ((source, looks_like(source)) for source in files)
    first, kind = next(
        ((source, kind) for source, kind in kinds if kind != UNREADABLE),
        (next(iter(files)), UNREADABLE),
    )
    name = escape_control(os.path.basename(first) or first)
    others = len(files) - 1
    more = f" (nor of the {plural(others, 'other file')})" if others else ""
    if job == "monitor":
        wanted = "an access log" + ("" if fmt == "auto" else f" in {fmt.upper()}")
        head, unit = f"no line of {name}{more} is {wanted}", "line"
    else:
        head, unit = f"no log of {name}{more} is a valid log", "log"
    if _is_what_it_reads(kind, job, fmt):  # the right kind of file, with nothing valid in it
        hint = f"it looks like {_DESCRIPTIONS[kind]}, but every {unit} is bad (see dead_letters)"
    else:
        hint = f"it is {_DESCRIPTIONS[kind]}, {_reader(kind, job)}"
    return f"{head}; {hint}"
