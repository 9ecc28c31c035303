"""Pure parsing of one ``logs_xx.json`` document into a ``LogBatch`` and dead letters.

No Beam here: ``parse_log_document`` is called by ``ParseLogDocuments`` and unit-tested directly.
A document is ``{"logs": [{"id", "email", "message"}, ...]}``. A log needs an ``email`` string;
``id`` and ``message`` are kept when present (a non-string value is kept as its JSON text).
"""

from __future__ import annotations

import codecs
import contextlib
import json
import re
import struct
from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import compress, count, pairwise, repeat
from operator import is_, is_not
from typing import Any

import ijson
import msgspec
import orjson
import pyarrow as pa

from transforms.log_batch import LogBatch
from transforms.records import DeadLetter, truncate_raw

# Reason codes: the text before the first ':' of a dead letter's reason, used as metric names.
MALFORMED_JSON = "malformed JSON"
UNDECODABLE = "undecodable bytes"
NO_LOGS_LIST = "no 'logs' list"
NOT_AN_OBJECT = "log is not an object"
MISSING_EMAIL = "missing email"
EMAIL_NOT_STRING = "email is not a string"
NESTED_TOO_DEEP = "nested too deep"


_NOT_AN_OBJECT = object()
_TEXT_OR_NONE = {str, type(None)}


def reason_code(reason: str) -> str:
    return reason.split(":", 1)[0]


def _json_text(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:  # nested deeper than orjson writes, or not valid Unicode
        try:
            return truncate_raw(repr(value))
        except RecursionError:  # deeper than repr goes too
            return f"<a {type(value).__name__} nested too deep to show>"


def _optional_text(value: Any) -> str | None:
    if value is None or type(value) is str:
        return value
    return _json_text(value)


def _raw(value: Any) -> str:
    return truncate_raw(_json_text(value))


def _valid_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate escape such as "\\udc80"
        return False
    return True


class _TooDeep:
    """A log nested deeper than the JSON readers go: a dead letter of its own."""

    __slots__ = ("text",)

    def __init__(self, text: bytes) -> None:
        self.text = text


# A JSON string, or one structural character (numbers and literals need no tracking here).
_JSON_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*+"|[][{},:]')


def _logs_span(content: bytes) -> tuple[int, list[int], int] | None:
    """Where the ``logs`` list of a JSON object lies: ``(after its "[", the offsets of the
    commas between its logs, its "]")``; None if the document is not an object with one."""
    depth, expect_key, key, start, span = 0, False, None, None, None
    cuts: list[int] = []
    for token in _JSON_TOKEN.finditer(content):
        char = token.group()[:1]
        if char in b"[{":
            if depth == 1 and key == b'"logs"' and char == b"[":
                start, cuts = token.end(), []
            depth += 1
            expect_key = depth == 1 and char == b"{"
        elif char in b"]}":
            depth -= 1
            if depth == 1 and start is not None:
                span, start = (start, cuts, token.start()), None
        elif char == b",":
            if depth == 2 and start is not None:
                cuts.append(token.start())
            expect_key = depth == 1
        elif depth == 1 and char in b'":':
            key, expect_key = (token.group() if expect_key else key), False
        if depth < 0:
            return None
    return span if depth == 0 and content.lstrip()[:1] == b"{" else None


def _logs_one_by_one(content: bytes) -> dict | None:
    """``{"logs": [...]}`` of a document too deep for the JSON readers, each log read on its
    own: a log too deep is a ``_TooDeep``. None if the document is not an object whose
    ``logs`` list splits into logs that each read or are too deep."""
    span = _logs_span(content)
    if span is None:
        return None
    logs_start, cuts, end = span
    if not content[logs_start:end].strip():
        return {"logs": []}
    logs = []
    for left, right in pairwise([logs_start - 1, *cuts, end]):
        text = content[left + 1 : right]
        try:
            logs.append(orjson.loads(text))
        except orjson.JSONDecodeError as err:
            if "depth" not in err.msg:
                return None
            logs.append(_TooDeep(text))
    return {"logs": logs}


def _load(source: str, content: bytes) -> tuple[Any, DeadLetter | None, bool]:
    """The document, or a dead letter; the flag says the lenient standard library read it."""
    content = content.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte order mark
    try:
        return orjson.loads(content), None, False
    except orjson.JSONDecodeError as err:
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError as bad:
            reason = f"{UNDECODABLE}: invalid UTF-8 at byte {bad.start}"
            raw = content[max(0, bad.start - 40) : bad.start + 40]
            return None, DeadLetter(source, None, reason, truncate_raw(raw)), False
        if "depth" in err.msg:  # valid JSON perhaps, too deep somewhere: logs one by one
            doc = _logs_one_by_one(content)
            if doc is not None:
                return doc, None, False
        try:
            # orjson rejects some valid JSON (lone surrogate escapes, numbers out of float range)
            # that the standard library reads; such documents keep their valid logs.
            return json.loads(text), None, True
        except (ValueError, RecursionError):
            reason = f"{MALFORMED_JSON}: {err.msg} at line {err.lineno} column {err.colno}"
            return None, DeadLetter(source, None, reason, truncate_raw(content)), False


def parse_log_document(source: str, content: bytes) -> tuple[LogBatch, list[DeadLetter]]:
    """Split a document into its valid logs (as columns) and one dead letter per bad part."""
    doc, dead, lenient = _load(source, content)
    if dead is not None:
        return LogBatch([], [], [], [], []), [dead]
    logs = doc.get("logs") if type(doc) is dict else None
    if type(logs) is not list:
        dead = DeadLetter(source, None, f"{NO_LOGS_LIST}: document has no 'logs' list", _raw(doc))
        return LogBatch([], [], [], [], []), [dead]

    emails, bad = _email_column(logs, lenient)
    if not bad:
        valid, indexes, dead = logs, range(len(logs)), []
    else:
        dead = _dead_letters(source, logs, emails, bad)
        good = sorted(set(range(len(logs))).difference(bad))
        valid, indexes = list(map(logs.__getitem__, good)), good
        emails = list(map(emails.__getitem__, good))
    ids, messages = TextColumn(valid, "id", lenient), TextColumn(valid, "message", lenient)
    return LogBatch([source] * len(emails), indexes, emails, ids, messages), dead


def _email_column(logs: list, lenient: bool) -> tuple[list, list[int]]:
    """Every log's ``email`` (``_NOT_AN_OBJECT`` for a log that is not an object) and the
    indexes, ascending, of the logs that are bad: not an object, or without a string email
    (in a leniently read document, also an email that is not valid Unicode).

    Whole-column operations run in C (map, compress); Python runs only at bad positions."""
    try:  # dict.get refuses a log that is not a dict: then the slow path
        emails = list(map(dict.get, logs, repeat("email")))
    except TypeError:
        emails = [_NOT_AN_OBJECT] * len(logs)
        for i in compress(count(), map(is_, map(type, logs), repeat(dict))):
            emails[i] = logs[i].get("email")
    bad = list(compress(count(), map(is_not, map(type, emails), repeat(str))))
    if lenient:
        invalid = (i for i, email in enumerate(emails) if type(email) is str)
        bad = sorted({*bad, *(i for i in invalid if not _valid_unicode(emails[i]))})
    return emails, bad


class _Log(msgspec.Struct, gc=False):
    """A log object as the typed reader sees it: only its email (any JSON value; ``None`` when
    missing too); its other fields are skipped, not built."""

    email: Any = None


class _Document(msgspec.Struct, gc=False):
    logs: list[_Log | list | str | int | float | bool | None]


class _RawDocument(msgspec.Struct, gc=False):
    logs: list[msgspec.Raw]


_TYPED = msgspec.json.Decoder(_Document)
_RAW_LOGS = msgspec.json.Decoder(_RawDocument)
_TYPED_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, RecursionError)


def valid_utf8(content: bytes) -> bool:
    """Whether ``content`` is UTF-8 as Python's strict codec reads it (no overlong forms, no
    encoded surrogates), checked without decoding it: Arrow's validator over the bytes as they
    are (a 16 MiB document in about 1 ms, against 20 ms to decode it)."""
    if content.isascii():
        return True
    offsets = pa.py_buffer(struct.pack("<qq", 0, len(content)))
    text = pa.Array.from_buffers(pa.large_string(), 1, [None, offsets, pa.py_buffer(content)])
    try:
        text.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def _count_typed(source: str, content: bytes) -> tuple[dict[str, int], list[DeadLetter]] | None:
    """``count_log_document`` by a typed read that builds no dict per log and no id or message
    string (a third of orjson's time here); ``None`` when that read refuses the document, which
    then takes the general path (orjson, and the lenient and too-deep readers after it).

    The readers agree where both accept: strict UTF-8 without lone surrogates, the last of
    duplicate keys. The rare bad logs are read again on their own, from the document's exact
    bytes, so that their dead letters are the general path's. The typed read checks UTF-8 only
    in what it decodes, so the whole document is checked first: a bad byte in a skipped field
    makes the general path's dead letter for the file."""
    if not valid_utf8(content):
        return None
    try:
        logs = _TYPED.decode(content).logs
    except _TYPED_ERRORS:
        return None
    emails = [
        log.email if type(log) is _Log and type(log.email) is str else _NOT_AN_OBJECT
        for log in logs
    ]
    counts = Counter(emails)
    if _NOT_AN_OBJECT not in counts:
        return counts, []
    del counts[_NOT_AN_OBJECT]
    bad = _positions(emails, _NOT_AN_OBJECT)
    try:
        raws = _RAW_LOGS.decode(content).logs
        values = {i: orjson.loads(memoryview(raws[i])) for i in bad}
    except (*_TYPED_ERRORS, orjson.JSONDecodeError):
        return None
    dead = [
        _dead_letter(source, i, log, log.get("email") if type(log) is dict else _NOT_AN_OBJECT)
        for i, log in values.items()
    ]
    return counts, dead


def _positions(values: list, marker: object) -> list[int]:
    """The indexes of ``marker`` in ``values``, ascending (``list.index`` scans in C)."""
    found, at = [], -1
    with contextlib.suppress(ValueError):
        while True:
            at = values.index(marker, at + 1)
            found.append(at)
    return found


def count_log_document(source: str, content: bytes) -> tuple[dict[str, int], list[DeadLetter]]:
    """The tally of one document: ``{email: valid logs}`` and the same dead letters as
    ``parse_log_document``, without building columns of the valid logs."""
    counted = _count_typed(source, content.removeprefix(b"\xef\xbb\xbf"))
    if counted is not None:
        return counted
    doc, dead, lenient = _load(source, content)
    if dead is not None:
        return {}, [dead]
    return count_logs(source, doc, lenient)


def count_logs(
    source: str, doc: Any, lenient: bool = False
) -> tuple[dict[str, int], list[DeadLetter]]:
    """``count_log_document`` of a document already read (``doc``, the JSON value)."""
    logs = doc.get("logs") if type(doc) is dict else None
    if type(logs) is not list:
        dead = DeadLetter(source, None, f"{NO_LOGS_LIST}: document has no 'logs' list", _raw(doc))
        return {}, [dead]
    emails, bad = _email_column(logs, lenient)
    if not bad:
        return Counter(emails), []
    dead = _dead_letters(source, logs, emails, bad)
    for i in bad:  # out of the count: a bad email may not even be hashable
        emails[i] = _NOT_AN_OBJECT
    counts = Counter(emails)
    del counts[_NOT_AN_OBJECT]
    return counts, dead


def document_note(content: bytes, logs: int, dead_letters: Sequence[DeadLetter]) -> str:
    """Why a document's tally is what it is, in a few words, for the console ("" when every
    log is valid): an empty file, a file that is not a document (and why), a document without
    logs, one whose every log is bad, or how many of its logs are bad."""
    return note_of(not content.strip(), logs, dead_letters)


def note_of(empty: bool, logs: int, dead_letters: Sequence[DeadLetter]) -> str:
    """``document_note`` of a document told empty (only white space) or not."""
    if empty:
        return "empty file"
    whole = [dead for dead in dead_letters if dead.where is None]
    if whole:
        return f"bad file: {reason_code(whole[0].reason)}"
    if not dead_letters:
        return "" if logs else "no logs: the 'logs' list is empty"
    reasons: dict[str, int] = {}
    for dead in dead_letters:
        code = reason_code(dead.reason)
        reasons[code] = reasons.get(code, 0) + 1
    by_reason = ", ".join(f"{code} {n:,}" for code, n in sorted(reasons.items()))
    bad = len(dead_letters)
    if not logs:
        return f"every log bad: {by_reason}"
    return f"{bad:,} bad log{'s' if bad != 1 else ''}: {by_reason}"


class TextColumn(Sequence):
    """The ``id`` or ``message`` column of a batch's valid logs, worked out when first read.

    Counting emails never reads these columns, so a tally does not pay for them; an element-wise
    consumer of the ``LogEntry`` does, once. A value that is not a string (or None) is kept as
    its JSON text; a lone surrogate is escaped. It pickles as a plain list.
    """

    __slots__ = ("_key", "_lenient", "_logs", "_values")

    def __init__(self, logs: list[dict], key: str, lenient: bool) -> None:
        self._logs, self._key, self._lenient = logs, key, lenient
        self._values: list | None = None

    def _column(self) -> list:
        if self._values is None:
            values = list(map(dict.get, self._logs, repeat(self._key)))
            if not set(map(type, values)) <= _TEXT_OR_NONE or (
                self._lenient and not all(map(_valid_text, values))
            ):
                values = [_clean_text(value) for value in values]
            self._values, self._logs = values, None
        return self._values

    def __getitem__(self, index):
        return self._column()[index]

    def __len__(self) -> int:
        return len(self._column())

    def __iter__(self):
        return iter(self._column())

    def __eq__(self, other) -> bool:
        if isinstance(other, (list, TextColumn)):
            return self._column() == list(other)
        return NotImplemented

    __hash__ = None  # a column compares by value, like a list

    def __repr__(self) -> str:
        return repr(self._column())

    def __reduce__(self):
        return list, (self._column(),)


def _valid_text(value: str | None) -> bool:
    return value is None or _valid_unicode(value)


def _clean_text(value: Any) -> str | None:
    text = _optional_text(value)
    if text is None or _valid_unicode(text):
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _dead_letters(source: str, logs: list, emails: list, bad: list[int]) -> list[DeadLetter]:
    return [_dead_letter(source, index, logs[index], emails[index]) for index in bad]


def _dead_letter(source: str, index: int, log: Any, email: Any) -> DeadLetter:
    """The dead letter of a bad log (``email`` is ``_NOT_AN_OBJECT`` for one not an object)."""
    if type(log) is _TooDeep:
        reason = f"{NESTED_TOO_DEEP}: log nested deeper than the JSON reader's 1024 levels"
        return DeadLetter(source, index, reason, truncate_raw(log.text))
    if email is _NOT_AN_OBJECT:
        reason = f"{NOT_AN_OBJECT}: got {type(log).__name__}"
    elif "email" not in log:
        reason = f"{MISSING_EMAIL}: log has no 'email' field"
    elif type(log["email"]) is str:
        reason = f"{EMAIL_NOT_STRING}: not valid Unicode (a lone surrogate)"
    else:
        reason = f"{EMAIL_NOT_STRING}: got {type(log['email']).__name__}"
    return DeadLetter(source, index, reason, _raw(log))


# --- Streaming a document too large to hold: the tally's counts from pieces of its bytes --------


class _Pieces:
    """A file-like ``read`` over pieces of a document's bytes (its byte order mark dropped) that
    checks, as the bytes go by, that they are UTF-8 (the first bad byte's offset and the bytes
    around it are kept) and whether they are only white space."""

    def __init__(self, pieces: Iterable[bytes]) -> None:
        self._pieces = iter(pieces)
        self._buffer = b""
        self._at = 0  # where the next read starts in _buffer
        self._started = False
        self.head = b""  # the first bytes, for a dead letter's raw
        self._pending = b""  # the start of a character split between pieces
        self._before = b""  # the 40 bytes before the next byte to check
        self.offset = 0  # bytes checked so far
        self.bad_at: int | None = None
        self.bad_raw = b""
        self._after = 0
        self.empty = True

    def _check(self, piece: bytes) -> None:
        if self.empty and piece.strip():
            self.empty = False
        if self.bad_at is not None:
            if self._after:  # the bytes after a bad byte, up to 40, for its raw
                self.bad_raw += piece[: self._after]
                self._after -= len(piece[: self._after])
            return
        data = self._pending + piece
        try:
            _, used = codecs.utf_8_decode(data, "strict", False)
        except UnicodeDecodeError as bad:
            self.bad_at = self.offset + bad.start
            window = self._before + data
            at = len(self._before) + bad.start
            self.bad_raw = window[max(0, at - 40) : at + 40]
            self._after = at + 40 - min(len(window), at + 40)
            return
        self._before = (self._before + data[:used])[-40:]
        self.offset += used
        self._pending = data[used:]

    def finish(self) -> None:
        """At the end of the bytes: a character left unfinished is a bad byte too."""
        if self.bad_at is None and self._pending:
            self.bad_at = self.offset
            self.bad_raw = (self._before + self._pending)[-80:]

    def read(self, size: int = -1) -> bytes:
        while self._at >= len(self._buffer):
            piece = next(self._pieces, None)
            if piece is None:
                return b""
            if not self._started:  # the first three bytes, to drop a byte order mark
                while len(piece) < 3:
                    more = next(self._pieces, None)
                    if more is None:
                        break
                    piece += more
                if piece.startswith(b"\xef\xbb\xbf"):  # not white space, as document_note says
                    piece, self.empty = piece[3:], False
                self._started = True
            if len(self.head) < _HEAD:
                self.head += piece[: _HEAD - len(self.head)]
            self._check(piece)
            self._buffer, self._at = piece, 0
        start = self._at
        self._at = len(self._buffer) if size < 0 else min(len(self._buffer), start + size)
        return self._buffer[start : self._at]

    def drain(self) -> None:
        """Reads (and checks) the rest of the bytes."""
        while self.read(1 << 22):
            pass
        self.finish()


_HEAD = 800  # bytes: truncate_raw keeps at most 200 characters of four bytes

_SCALARS = {"string", "number", "boolean", "null"}
_OPENS = {"start_map", "start_array"}
_CLOSES = {"end_map", "end_array"}


def _first_line(err: Exception) -> str:
    """The streaming reader's message, first line (it goes on to draw where the error is)."""
    message = err.args[0] if err.args else ""
    if isinstance(message, bytes):
        message = message.decode("utf-8", "backslashreplace")
    lines = str(message).strip().splitlines()
    return lines[0].strip() if lines else type(err).__name__


def _built(events: list) -> Any:
    builder = ijson.ObjectBuilder()
    for event, value in events:
        builder.event(event, value)
    return builder.value


def count_log_stream(
    source: str, pieces: Iterable[bytes]
) -> tuple[dict[str, int], list[DeadLetter], bool]:
    """``count_log_document`` of a document given as pieces of its bytes, which is never held
    whole: the logs are read one at a time (``ijson``), so memory stays bounded whatever the
    document's size. Returns the counts, the dead letters and whether the bytes were only
    white space. The same counts and dead letters as ``count_log_document`` for a document
    that is an object with a ``logs`` list, and for undecodable bytes; a malformed document's
    reason carries the streaming reader's message, and ``raw`` of a document without a
    ``logs`` list is its first bytes."""
    reader = _Pieces(pieces)
    counts: Counter = Counter()
    dead: list[DeadLetter] = []
    is_object = None  # the top-level value is an object
    logs_is_list = False  # the last "logs" key of the top-level object holds a list
    key = None  # the top-level key being read
    depth = 0
    index = -1  # of the log being read
    log_events: list = []
    error = None
    try:
        for _, event, value in ijson.parse(reader, use_float=True):
            if depth == 0 and is_object is None:
                is_object = event == "start_map"
            if depth == 1 and event == "map_key":
                key = value
            elif depth == 1 and key == "logs" and (event in _OPENS or event in _SCALARS):
                logs_is_list = event == "start_array"
                if logs_is_list:  # a later "logs" key replaces an earlier one, as in a dict
                    counts, dead, index = Counter(), [], -1
            elif depth == 2 and logs_is_list and key == "logs" and event not in _CLOSES:
                index += 1  # a log starts (the list's own end is the close at this depth)
                log_events = [(event, value)]
                if event in _SCALARS:
                    _count_log(source, index, log_events, counts, dead)
            elif depth > 2 and logs_is_list and key == "logs":
                log_events.append((event, value))
                if depth == 3 and event in _CLOSES:
                    _count_log(source, index, log_events, counts, dead)
            if event in _OPENS:
                depth += 1
            elif event in _CLOSES:
                depth -= 1
    except (ijson.JSONError, ValueError) as err:  # ValueError: bytes that are not UTF-8
        error = _first_line(err)
    reader.drain()
    whole = _whole_document_problem(source, reader, error, is_object, logs_is_list)
    return ({}, [whole], reader.empty) if whole else (counts, dead, reader.empty)


def _whole_document_problem(
    source: str, reader: _Pieces, error: str | None, is_object: bool | None, logs_list: bool
) -> DeadLetter | None:
    """The dead letter of a streamed document that is not one to count, or None."""
    if reader.bad_at is not None:
        reason = f"{UNDECODABLE}: invalid UTF-8 at byte {reader.bad_at}"
        return DeadLetter(source, None, reason, truncate_raw(reader.bad_raw))
    if error is not None or is_object is None:
        reason = f"{MALFORMED_JSON}: {error or 'no JSON value'}"
        return DeadLetter(source, None, reason, truncate_raw(reader.head))
    if not (is_object and logs_list):
        reason = f"{NO_LOGS_LIST}: document has no 'logs' list"
        return DeadLetter(source, None, reason, truncate_raw(reader.head))
    return None


def _count_log(source: str, index: int, events: list, counts: Counter, dead: list) -> None:
    """One log of a streamed document, given as its parse events: counted, or a dead letter."""
    first = events[0][0]
    if first == "start_map":
        email, depth, key = _NOT_AN_OBJECT, 0, None
        missing = True
        for event, value in events:
            if depth == 1 and event == "map_key":
                key = value
            elif depth == 1 and key == "email":
                missing = False
                email = value if event in _SCALARS else _NOT_AN_OBJECT
                key = None
            if event in _OPENS:
                depth += 1
            elif event in _CLOSES:
                depth -= 1
        if not missing and type(email) is str:
            counts[email] += 1
            return
        log = _built(events)
        dead.append(_dead_letter(source, index, log, log.get("email")))
        return
    log = _built(events) if first in _OPENS else events[0][1]
    dead.append(_dead_letter(source, index, log, _NOT_AN_OBJECT))
