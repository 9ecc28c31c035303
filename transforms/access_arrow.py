"""A block of access lines parsed at once with Apache Arrow: the monitor's fast path.

``parse_block(block, fmt)`` takes a reader's block of whole lines (each ending in LF) and
returns the records of its lines of the usual shape as one Arrow table, with the index and
text of each other line, which ``access_log.parse_line`` must parse one by one (a header,
a blank or bad line, or a good but unusual one). Every record is the one ``parse_line`` gives
for its line: the usual shape here is a subset of ``access_log``'s (ASCII request targets that
start with ``/``, no C1 control characters), and each field comes out the same.

The work runs in Arrow's C++ kernels, over the block's bytes without a Python object per line:
lines are cut with NumPy (``line_array``, no copy), told apart with one RE2 pattern (a DFA,
no captures), and the lines of the usual shape are split into fields by Arrow's CSV reader
after the others are blanked out (empty lines, which it skips), so that a bad line never
shifts a field. Per line that is about a fifth of the regular-expression match and tuple
building of ``access_log.parse_columns``.

The table's columns (``COLUMNS``): host, ident, user, timestamp (epoch seconds), request (as
written: ``access_log`` takes method, target and protocol from it), section, status, bytes,
and line (the line's index in the block).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from transforms.access_log import CSV, MAX_BYTES_DIGITS, MAX_TIMESTAMP

COLUMNS = ("host", "ident", "user", "timestamp", "request", "section", "status", "bytes", "line")
FORMATS = (CSV,)  # the formats with a fast path here

# RE2 patterns over bytes (Arrow matches a binary array in Latin-1: one character a byte).
# Raw strings: RE2 reads each \xNN as the byte NN; a Python escape would be encoded to UTF-8.
# A non-ASCII character in strict UTF-8 (as Python decodes it: no overlong form, no surrogate,
# nothing past U+10FFFF), but the C1 controls U+0080..U+009F: so a line of the usual shape is
# always valid UTF-8, whatever the rest of its block holds.
_NON_ASCII = (
    r"\xc2[\xa0-\xbf]|[\xc3-\xdf][\x80-\xbf]|\xe0[\xa0-\xbf][\x80-\xbf]"
    r"|[\xe1-\xec\xee\xef][\x80-\xbf]{2}|\xed[\x80-\x9f][\x80-\xbf]"
    r"|\xf0[\x90-\xbf][\x80-\xbf]{2}|[\xf1-\xf3][\x80-\xbf]{3}|\xf4[\x80-\x8f][\x80-\xbf]{2}"
)
# Quoted CSV text: tab, printable ASCII but '"', and non-ASCII characters but C1 controls.
_TEXT = rf"(?:[\t !#-~]|{_NON_ASCII})*"
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_REQUEST = rf'"{_TOKEN} /[!#-~]*(?: HTTP/[0-9]+(?:\.[0-9]+)?)?"'
_CSV_USUAL = (
    rf'^"{_TEXT}","{_TEXT}","{_TEXT}",[0-9]{{1,12}},{_REQUEST},[1-5][0-9][0-9],'
    rf"[0-9]{{1,{MAX_BYTES_DIGITS}}}\r?\n$"
)
_SECTION = r"^[^ ]+ (?P<section>/[^/?# ]*)"  # a target's section (it starts with '/')

_CSV_NAMES = ("host", "ident", "user", "timestamp", "request", "status", "bytes")
_CSV_TYPES = {
    "host": pa.string(),
    "ident": pa.string(),
    "user": pa.string(),
    "timestamp": pa.int64(),
    "request": pa.string(),
    "status": pa.int64(),
    "bytes": pa.int64(),
}
_LF = 10


def line_offsets(block: bytes) -> np.ndarray:
    """Where each line of ``block`` (whole lines, each ending in LF) starts, and the block's
    end: one more offset than lines."""
    ends = np.flatnonzero(np.frombuffer(block, np.uint8) == _LF)
    offsets = np.empty(len(ends) + 1, np.int64)
    offsets[0] = 0
    offsets[1:] = ends + 1
    return offsets


def line_array(block: bytes) -> tuple[pa.LargeBinaryArray, np.ndarray]:
    """The lines of ``block`` as a binary array over the block's own bytes, each with its LF,
    and their ``line_offsets``."""
    offsets = line_offsets(block)
    lines = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), len(offsets) - 1, [None, pa.py_buffer(offsets), pa.py_buffer(block)]
    )
    return lines, offsets


def parse_block(
    block: bytes, fmt: str, skip: frozenset[int] = frozenset()
) -> tuple[pa.Table, list[tuple[int, str]]]:
    """``(records, others)``: the table (``COLUMNS``) of the lines of ``block`` of the usual
    shape of ``fmt`` (one of ``FORMATS``), and ``(index, text)`` of each other line but those
    of indices ``skip``, in order; its text as the reader gives it (``LineBlock``: without its
    LF, nor the CR of a CRLF; in a block with ``skip``, every CR at its end). Every line but
    those of ``skip`` must be UTF-8."""
    if fmt not in FORMATS:
        raise ValueError(f"no fast path for format {fmt!r}")
    table, others, offsets = _parse(block, fmt)
    if not len(others):
        return table, []
    texts = []
    for index, start, end in zip(
        others.tolist(), offsets[others].tolist(), offsets[others + 1].tolist(), strict=True
    ):
        if index in skip:
            continue
        text = block[start : end - 1].decode("utf-8")
        if skip:  # a block with undecodable lines: CRs stripped from ends, as the reader did
            texts.append((index, text.rstrip("\r")))
        else:
            texts.append((index, text[:-1] if text[-1:] == "\r" else text))
    return table, texts


def _parse(block: bytes, fmt: str) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    lines, offsets = line_array(block)
    usual = pc.match_substring_regex(lines, _CSV_USUAL).to_numpy(zero_copy_only=False)
    others = np.flatnonzero(~usual)
    if len(others) == len(usual):
        return _empty(), others, offsets
    if len(others):  # blank the other lines out: the CSV reader skips empty lines
        data = np.frombuffer(block, np.uint8).copy()
        data[np.repeat(~usual, np.diff(offsets))] = _LF
        content = pa.py_buffer(data)
    else:
        content = pa.py_buffer(block)
    table = pa_csv.read_csv(
        pa.BufferReader(content),
        read_options=pa_csv.ReadOptions(
            column_names=_CSV_NAMES, use_threads=False, block_size=max(len(block), 1 << 20)
        ),
        parse_options=pa_csv.ParseOptions(quote_char='"', double_quote=True, escape_char=False),
        convert_options=pa_csv.ConvertOptions(
            column_types=_CSV_TYPES,
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
            null_values=[],
        ),
    )
    rows = np.flatnonzero(usual)
    future = pc.greater(table["timestamp"], MAX_TIMESTAMP)  # after 9999: parse_line says why
    if pc.any(future).as_py():
        keep = pc.invert(future)
        others = np.union1d(others, rows[future.to_numpy()])
        table, rows = table.filter(keep), rows[keep.to_numpy()]
    section = pc.struct_field(pc.extract_regex(table["request"], _SECTION), [0])
    table = table.add_column(5, "section", section).append_column("line", pa.array(rows))
    return table.select(COLUMNS), others, offsets


def _empty() -> pa.Table:
    types = {**_CSV_TYPES, "section": pa.string(), "line": pa.int64()}
    return pa.table({name: pa.array([], types[name]) for name in COLUMNS})


def records_table(records) -> pa.Table:
    """``AccessRecord``s (of the careful path) as rows of a ``parse_block`` table, the request
    as ``method target [protocol]`` (what ``access_log`` split it from: one space apart)."""
    requests = [
        f"{r.method} {r.path} {r.protocol}" if r.protocol else f"{r.method} {r.path}"
        for r in records
    ]
    columns = {
        "host": [r.host for r in records],
        "ident": [r.ident for r in records],
        "user": [r.user for r in records],
        "timestamp": [r.timestamp for r in records],
        "request": requests,
        "section": [r.section for r in records],
        "status": [r.status for r in records],
        "bytes": [r.bytes for r in records],
        "line": [r.line for r in records],
    }
    return pa.table(columns, schema=_empty().schema)
