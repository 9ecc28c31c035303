"""Pure parsing of one HTTP access-log line into an ``AccessRecord`` (no Beam here).

Two formats (docs/design.md, "The monitor job"):

- ``csv``: ``"remotehost","rfc931","authuser","date","request","status","bytes"``, a header row
  and unix-epoch ``date``. Any field may be quoted or not, with spaces around it; ``""`` in a
  quoted field is one ``"``. Quoted text is kept verbatim; unquoted text and numbers are stripped.
- ``clf``: Common Log Format ``host ident user [dd/Mon/yyyy:HH:MM:SS +zzzz] "request" status
  bytes``, as written by Apache and nginx. Whatever follows the bytes after a space (the
  combined format's ``"referer" "user-agent"``, or further fields) is ignored. The time is
  converted to UTC with its offset (``+0200`` is two hours ahead of UTC).

``parse_csv_line`` and ``parse_clf_line`` return ``None`` for a blank line (and the CSV header)
and raise ``BadLine("CODE: detail")`` for any other line that does not parse. The rules:

- ``request`` is ``METHOD TARGET PROTOCOL`` separated by single spaces: METHOD an HTTP token,
  TARGET any run of non-space characters (kept verbatim, query string included, not
  percent-decoded), PROTOCOL ``HTTP/n`` or ``HTTP/n.n``. ``METHOD TARGET`` alone (an HTTP/0.9
  request line, which Apache logs that way) is accepted with protocol ``""``. nginx's ``"-"`` for
  a request it could not read is a bad request.
- ``date``: whole seconds within 1970-01-01 .. 9999-12-31 UTC (CSV: digits only, no fraction or
  sign; CLF: a valid calendar time with a ``+hhmm``/``-hhmm`` offset).
- ``status``: three digits in 100..599. ``bytes``: digits (below 10**18) or ``-`` for 0.
- No field may hold a control character: C0 other than tab, DEL, C1. (CR/LF ending the line are
  line ends, not content.) A lone surrogate (text decoded with ``surrogateescape``) is
  ``undecodable bytes``, as is any line given to ``decode_line`` that is not UTF-8.
- A leading UTF-8 byte order mark and surrounding spaces, tabs, CR and LF are ignored.

Each parser tries one precompiled regular expression for the usual shape first and only falls
back to the field-by-field checks (which name the reason) when it does not match. CLF times are
parsed once per distinct time text (``_clf_time`` is cached: consecutive lines mostly share one),
and sections once per distinct path (``_section``).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache

from transforms.records import AccessRecord

# Reason codes: the text before the first ':' of a BadLine's reason, used as metric names.
WRONG_FIELD_COUNT = "wrong field count"
BAD_DATE = "bad date"
BAD_STATUS = "bad status"
BAD_BYTES = "bad bytes"
BAD_REQUEST = "bad request"
CONTROL_CHARACTERS = "control characters"
UNDECODABLE = "undecodable bytes"
UNPARSEABLE = "unparseable line"

CSV = "csv"
CLF = "clf"
FORMATS = (CSV, CLF)

CSV_HEADER = ("remotehost", "rfc931", "authuser", "date", "request", "status", "bytes")
MAX_TIMESTAMP = 253402300799
"""9999-12-31T23:59:59Z: later (or negative) times are bad dates."""
MAX_BYTES_DIGITS = 18
"""Byte counts stay below 10**18, within the 64-bit integers of Beam's coders."""


class BadLine(Exception):
    """A line that does not parse; ``args[0]`` is the reason, ``"CODE: detail"``."""


def reason_code(reason: str) -> str:
    return reason.split(":", 1)[0]


# --- Character classes shared by the fast and the careful path -----------------------------------
_CONTROLS = "\x00-\x08\x0a-\x1f\x7f-\x9f"  # C0 except tab, DEL, C1
_SURROGATES = "\ud800-\udfff"
_CONTROL_RE = re.compile(f"[{_CONTROLS}]")
_SURROGATE_RE = re.compile(f"[{_SURROGATES}]")
# Neither space nor control (nor a byte order mark, which may start a file's first line).
_VISIBLE = f"[^\\s\\x00-\\x20\\x7f-\\x9f\\ufeff{_SURROGATES}]"
_TEXT = f'[^"{_CONTROLS}{_SURROGATES}]'  # quoted CSV text without escapes
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"  # an HTTP method (RFC 9110 token)
_TARGET_FAST = f'[^\\s"{_CONTROLS}{_SURROGATES}]+'
_PROTOCOL = r"HTTP/[0-9]+(?:\.[0-9]+)?"
_BLANK = " \t\r\n"

_METHOD_RE = re.compile(_TOKEN)
_TARGET_RE = re.compile(r"\S+")
_PROTOCOL_RE = re.compile(_PROTOCOL)
_STATUS_RE = re.compile(r"[1-5][0-9][0-9]")
_DIGITS_RE = re.compile(r"[0-9]+")
_QUERY_RE = re.compile(r"[?#]")
_ABSOLUTE_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*")
_OTHER_END_RE = re.compile(r"[/?#]")

_REQUEST_FAST = f'"({_TOKEN}) ({_TARGET_FAST})(?: ({_PROTOCOL}))?"'
_CSV_FAST = re.compile(
    f'"({_TEXT}*)","({_TEXT}*)","({_TEXT}*)",([0-9]{{1,12}}),{_REQUEST_FAST},'
    f"([1-5][0-9][0-9]),([0-9]{{1,{MAX_BYTES_DIGITS}}})\\r?\\n?"
)
_CLF_FAST = re.compile(
    f"({_VISIBLE}+) ({_VISIBLE}+) ({_VISIBLE}+) \\[([^\\[\\]{_CONTROLS}{_SURROGATES}]*)\\] "
    f"{_REQUEST_FAST} ([1-5][0-9][0-9]) ([0-9]{{1,{MAX_BYTES_DIGITS}}}|-)"
    f"(?:[ \\t][^{_CONTROLS}{_SURROGATES}]*)?\\r?\\n?"
)
# The careful path: structure first, then each field on its own.
# Possessive quantifiers: no backtracking, so a long bad line costs linear time.
_CSV_FIELD = re.compile(r'[ \t]*+(?:"((?:[^"]|"")*+)"|([^,"]*+))[ \t]*+(,|$)')
# The request ends at the first quote followed by a space or the end of the line, so that an
# Apache-escaped quote inside it (``\\"``) is part of it.
_CLF_SHAPE = re.compile(r'(\S+) (\S+) (\S+) \[([^\[\]]*)\] "(.*?)"(?:[ \t](.*))?')
# A CLF-shaped line, for telling formats apart: "... [date] "..." (one pass, no backtracking).
_CLF_HINT = re.compile(r'[^\[]*+\[[^\[\]]*+\] "')
_CLF_DATE = re.compile(
    r"([0-9]{2})/([A-Za-z]{3})/([0-9]{4}):([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r" ([+-])([0-9]{2})([0-9]{2})"
)
_MONTHS = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)


def _show(value: str, limit: int = 40) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "...")


# --- Sections ------------------------------------------------------------------------------------
def section_of(path: str) -> str:
    """The path up to its second ``/``, without a query string or fragment.

    ``/api/user`` -> ``/api``, ``/api/`` -> ``/api``, ``/report`` -> ``/report``, ``/`` -> ``/``,
    ``/api?x=1`` -> ``/api``, ``/?x`` -> ``/``. Other request targets:

    - absolute form (``http://host/a/b``): the section of its path (``/a``); no path -> ``/``;
    - anything else (``*`` of ``OPTIONS *``, ``host:443`` of ``CONNECT``, a relative path): the
      target up to its first ``/``, ``?`` or ``#`` (``*``, ``host:443``, ``a/b`` -> ``a``), or
      ``/`` if that is empty.
    """
    if path[:1] == "/":
        end = path.find("/", 1)
        section = path if end < 0 else path[:end]
        if "?" in section or "#" in section:
            section = _QUERY_RE.split(section, 1)[0] or "/"
        return section
    absolute = _ABSOLUTE_RE.match(path)
    if absolute is not None:
        rest = path[absolute.end() :]
        return section_of(rest) if rest[:1] == "/" else "/"
    return _OTHER_END_RE.split(path, 1)[0] or "/"


_section = lru_cache(maxsize=8192)(section_of)
"""``section_of`` for the parsers: popular paths repeat, and a cache hit costs a third."""


# --- Fields --------------------------------------------------------------------------------------
def decode_line(raw: bytes) -> str:
    """A line read as bytes, as text; ``BadLine(undecodable bytes)`` if it is not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BadLine(f"{UNDECODABLE}: invalid UTF-8 at byte {err.start}") from None


def _check_characters(text: str) -> None:
    control = _CONTROL_RE.search(text)
    if control is not None:
        raise BadLine(f"{CONTROL_CHARACTERS}: {control.group()!r} at character {control.start()}")
    surrogate = _SURROGATE_RE.search(text)
    if surrogate is not None:
        raise BadLine(f"{UNDECODABLE}: not valid Unicode at character {surrogate.start()}")


def _request(request: str) -> tuple[str, str, str]:
    parts = request.split(" ")
    if len(parts) == 3:
        method, target, protocol = parts
        if _PROTOCOL_RE.fullmatch(protocol) is None:
            raise BadLine(f"{BAD_REQUEST}: protocol {_show(protocol)} is not HTTP/n.n")
    elif len(parts) == 2:
        (method, target), protocol = parts, ""
    else:
        raise BadLine(f"{BAD_REQUEST}: {_show(request)} is not 'METHOD TARGET PROTOCOL'")
    if _METHOD_RE.fullmatch(method) is None:
        raise BadLine(f"{BAD_REQUEST}: method {_show(method)} is not a token")
    if _TARGET_RE.fullmatch(target) is None:
        raise BadLine(f"{BAD_REQUEST}: {_show(request)} is not 'METHOD TARGET PROTOCOL'")
    return method, target, protocol


def _status(text: str) -> int:
    text = text.strip(_BLANK)
    if _STATUS_RE.fullmatch(text) is None:
        raise BadLine(f"{BAD_STATUS}: {_show(text)} is not a status in 100..599")
    return int(text)


def _bytes(text: str) -> int:
    text = text.strip(_BLANK)
    if text == "-":
        return 0
    if _DIGITS_RE.fullmatch(text) is None:
        raise BadLine(f"{BAD_BYTES}: {_show(text)} is not a count of bytes (digits or '-')")
    if len(text) > MAX_BYTES_DIGITS:
        raise BadLine(f"{BAD_BYTES}: {_show(text)} is too large")
    return int(text)


def _epoch(text: str) -> int:
    text = text.strip(_BLANK)
    if _DIGITS_RE.fullmatch(text) is None:
        raise BadLine(f"{BAD_DATE}: {_show(text)} is not whole unix-epoch seconds")
    if len(text) > 12 or int(text) > MAX_TIMESTAMP:
        raise BadLine(f"{BAD_DATE}: {_show(text)} is after 9999-12-31")
    return int(text)


@lru_cache(maxsize=4096)
def _clf_time(text: str) -> int:
    """Epoch seconds of ``09/May/2018:16:00:39 +0000`` (BadLine is raised, never cached)."""
    match = _CLF_DATE.fullmatch(text)
    month = _MONTHS.get(match.group(2).lower()) if match is not None else None
    if month is None:
        raise BadLine(f"{BAD_DATE}: {_show(text)} is not dd/Mon/yyyy:HH:MM:SS +hhmm")
    day, _, year, hour, minute, second, sign, off_h, off_m = match.groups()
    if off_m >= "60":  # two digits: timedelta would carry 90 minutes into the hours
        raise BadLine(f"{BAD_DATE}: {_show(text)}: offset minutes must be 00..59")
    try:
        offset = timedelta(hours=int(off_h), minutes=int(off_m))
        zone = timezone(-offset if sign == "-" else offset)
        moment = datetime(
            int(year), month, int(day), int(hour), int(minute), int(second), tzinfo=zone
        )
    except ValueError as err:
        raise BadLine(f"{BAD_DATE}: {_show(text)}: {err}") from None
    epoch = (moment - _EPOCH) // _SECOND
    if not 0 <= epoch <= MAX_TIMESTAMP:
        raise BadLine(f"{BAD_DATE}: {_show(text)} is outside 1970..9999")
    return epoch


def _normalised(text: str) -> str:
    return text.strip(_BLANK).removeprefix("\ufeff").strip(_BLANK)


# --- CSV -----------------------------------------------------------------------------------------
def _split_csv(text: str) -> list[str]:
    """The fields of a CSV line: quoted text unescaped verbatim, unquoted text stripped."""
    fields = []
    position, end = 0, len(text)
    while True:
        field = _CSV_FIELD.match(text, position)
        if field is None:
            raise BadLine(f"{UNPARSEABLE}: stray quote after character {position}")
        quoted, bare, separator = field.groups()
        fields.append(quoted.replace('""', '"') if quoted is not None else bare.rstrip(" \t"))
        if not separator:
            if field.end() != end:  # pragma: no cover - '$' only matches at the end
                raise BadLine(f"{UNPARSEABLE}: unexpected text after character {field.end()}")
            return fields
        position = field.end()


def _record(
    host: str,
    ident: str,
    user: str,
    timestamp: int,
    request: str,
    status: str,
    size: str,
    source: str,
    line: int,
) -> AccessRecord:
    """The record of a line the careful parsers split: its request, status and bytes checked
    (a ``BadLine`` otherwise), the same way for both formats."""
    method, target, protocol = _request(request)
    return AccessRecord(
        host,
        ident,
        user,
        timestamp,
        method,
        target,
        section_of(target),
        protocol,
        _status(status),
        _bytes(size),
        source,
        line,
    )


def _parse_csv_careful(text: str, source: str = "", line: int = 0) -> AccessRecord | None:
    text = _normalised(text)
    if not text:
        return None
    _check_characters(text)
    fields = _split_csv(text)
    if len(fields) != len(CSV_HEADER):
        raise BadLine(f"{WRONG_FIELD_COUNT}: {len(fields)} fields, expected {len(CSV_HEADER)}")
    if tuple(field.strip(_BLANK).lower() for field in fields) == CSV_HEADER:
        return None
    host, ident, user, date, request, status, size = fields
    return _record(host, ident, user, _epoch(date), request, status, size, source, line)


def parse_csv_line(text: str, source: str = "", line: int = 0) -> AccessRecord | None:
    """One line of the exercise's CSV; ``None`` for a blank line or the header row."""
    match = _CSV_FAST.fullmatch(text)
    if match is None:
        return _parse_csv_careful(text, source, line)
    host, ident, user, date, method, target, protocol, status, size = match.groups()
    timestamp = int(date)
    if timestamp > MAX_TIMESTAMP:
        raise BadLine(f"{BAD_DATE}: {_show(date)} is after 9999-12-31")
    return AccessRecord(
        host,
        ident,
        user,
        timestamp,
        method,
        target,
        _section(target),
        protocol or "",
        int(status),
        int(size),
        source,
        line,
    )


# --- CLF -----------------------------------------------------------------------------------------
def _parse_clf_careful(text: str, source: str = "", line: int = 0) -> AccessRecord | None:
    text = _normalised(text)
    if not text:
        return None
    _check_characters(text)
    shape = _CLF_SHAPE.fullmatch(text)
    if shape is None:
        head = text.partition("[")[0]
        if _CLF_HINT.match(text) is not None and len(head.split()) != 3:
            raise BadLine(f"{WRONG_FIELD_COUNT}: {_show(head)} is not 'host ident user'")
        raise BadLine(
            f"{UNPARSEABLE}: not 'host ident user [date] \"request\" status bytes': {_show(text)}"
        )
    *names, date, request, tail = shape.groups()
    rest = tail.split(None, 2) if tail else []
    if len(rest) < 2:
        raise BadLine(f"{WRONG_FIELD_COUNT}: {_show(tail or '')} is not 'status bytes'")
    host, ident, user = names
    return _record(host, ident, user, _clf_time(date), request, rest[0], rest[1], source, line)


def parse_clf_line(text: str, source: str = "", line: int = 0) -> AccessRecord | None:
    """One Common (or Combined) Log Format line; ``None`` for a blank line."""
    match = _CLF_FAST.fullmatch(text)
    if match is None:
        return _parse_clf_careful(text, source, line)
    host, ident, user, date, method, target, protocol, status, size = match.groups()
    return AccessRecord(
        host,
        ident,
        user,
        _clf_time(date),
        method,
        target,
        _section(target),
        protocol or "",
        int(status),
        0 if size == "-" else int(size),
        source,
        line,
    )


# --- Many lines at once --------------------------------------------------------------------------
_GROUPS = re.Match.groups
_FAST = {CSV: _CSV_FAST, CLF: _CLF_FAST}


def _clf_bytes(size: str) -> int:
    return 0 if size == "-" else int(size)


def parse_columns(texts: list[str], fmt: str) -> tuple[list[list], list] | None:
    """The lines of ``texts`` (all of format ``fmt``) that have the usual shape, parsed at
    once: ``(columns, matches)``. ``columns`` are the fields of ``AccessRecord`` from ``host``
    to ``bytes``, one list each, for the lines whose ``matches[i]`` is a match, in order;
    ``matches[i]`` is None for every other line, which ``parse_line`` must parse on its own
    (it may be a header, blank, bad, or good but unusual). Each record is the one
    ``parse_line`` gives. None when a line of the usual shape is still bad (a date past
    9999, an impossible CLF time): then every line is to be parsed on its own.

    The loops run in C (``map`` over the compiled pattern's ``fullmatch``, ``zip`` to
    columns); only the cached section and CLF time are Python calls, on cache misses."""
    matches = list(map(_FAST[fmt].fullmatch, texts))
    rows = list(map(_GROUPS, filter(None, matches)))
    if not rows:
        return [[] for _ in range(10)], matches
    columns = map(list, zip(*rows, strict=True))
    host, ident, user, date, method, target, protocol, status, size = columns
    if fmt == CSV:
        timestamp = list(map(int, date))
        if max(timestamp) > MAX_TIMESTAMP:
            return None
        sizes = list(map(int, size))
    else:
        try:
            timestamp = list(map(_clf_time, date))
        except BadLine:
            return None
        sizes = list(map(int, size)) if "-" not in size else list(map(_clf_bytes, size))
    if None in protocol:
        protocol = [p or "" for p in protocol]
    section = list(map(_section, target))
    columns = [host, ident, user, timestamp, method, target, section, protocol]
    return [*columns, list(map(int, status)), sizes], matches


# --- Formats -------------------------------------------------------------------------------------
_PARSERS = {CSV: parse_csv_line, CLF: parse_clf_line}


def parse_line(text: str, fmt: str, source: str = "", line: int = 0) -> AccessRecord | None:
    """``parse_csv_line`` or ``parse_clf_line`` by ``fmt`` (``"csv"`` or ``"clf"``); ``source``
    and ``line`` are recorded in the record."""
    try:
        parser = _PARSERS[fmt]
    except KeyError:
        raise ValueError(f"format must be one of {FORMATS}, not {fmt!r}") from None
    return parser(text, source, line)


def event_time(text: str, fmt: str) -> int | None:
    """The event time ``parse_line(text, fmt)`` gives the line's record, or ``None`` when it
    gives none (a blank line, the CSV header) or raises ``BadLine``. Only the time is taken
    from a line of the usual shape, without building its record: the producer needs nothing
    else of each line it serves (the consumer parses it)."""
    fast = _CSV_FAST if fmt == CSV else _CLF_FAST if fmt == CLF else None
    match = fast.fullmatch(text) if fast is not None else None
    try:
        if match is None:
            record = parse_line(text, fmt)
            return None if record is None else record.timestamp
        if fmt == CSV:
            timestamp = int(match.group(4))
            return timestamp if timestamp <= MAX_TIMESTAMP else None
        return _clf_time(match.group(4))
    except BadLine:
        return None


def _csv_shaped(text: str) -> bool:
    try:
        return len(_split_csv(text)) == len(CSV_HEADER)
    except BadLine:
        return False


def format_of_line(text: str) -> str:
    """A single line's format when its file cannot tell: "csv" if it starts with a quote
    (after blanks or a byte order mark), else "clf"."""
    first = text[:1]
    if first in "\ufeff \t":
        first = text.lstrip("\ufeff \t")[:1]
    return CSV if first == '"' else CLF


def detect_format(first_lines: list[str]) -> str:
    """``"csv"`` or ``"clf"`` from the first lines of a file.

    The first non-blank line that parses in either format decides (the CSV header counts as
    CSV); if none parses, the first that has the shape of one (seven CSV fields; CLF's
    ``... [date] "request" ...``) decides. ``ValueError`` if no line looks like either.
    """
    lines = [_normalised(line) for line in first_lines]
    lines = [line for line in lines if line]
    for line in lines:
        for fmt in FORMATS:
            try:
                _PARSERS[fmt](line)
            except BadLine:
                continue
            return fmt
    for line in lines:
        if _csv_shaped(line):
            return CSV
        if _CLF_HINT.match(line) is not None:
            return CLF
    raise ValueError(
        "cannot tell the format: no line is CSV (with the header "
        '"remotehost","rfc931",...) or Common/Combined Log Format'
    )
