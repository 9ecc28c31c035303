"""The typed messages that flow between stages, and their JSON form in the output contract.

Every record is a ``typing.NamedTuple`` registered with Beam's ``RowCoder``, so keys and values
have deterministic, compact coders on every runner. Fields use ``typing.Optional``: Beam's
schema inference does not read ``X | None`` and would fall back to pickled, non-deterministic
fields. Sequences are lists, as ``RowCoder`` decodes them. The ``*_json`` helpers are pure and
produce exactly the lines docs/design.md specifies.
"""

from collections.abc import Sequence
from itertools import starmap
from operator import itemgetter
from typing import NamedTuple, Optional

import apache_beam as beam
import orjson

from transforms.timefmt import iso_utc

RAW_LIMIT = 200
"""Dead letters keep at most this many characters of the offending input."""


class SourceFile(NamedTuple):
    """One input file as read by the producer stage: its path and raw bytes."""

    source: str
    content: bytes


class LogEntry(NamedTuple):
    """One valid log of a ``logs_xx.json`` document."""

    source: str
    index: int
    email: str
    id: Optional[str]
    message: Optional[str]


class TallyEntry(NamedTuple):
    email: str
    total: int


class FileTally(NamedTuple):
    """The tally message of one file: entries sorted by total descending, then email.

    ``note`` says, for the console, why a file's tally is empty or short (an empty file, a bad
    one, bad logs: ``parse_logs.document_note``); it is not part of ``tallies.jsonl``."""

    source: str
    tally: Sequence[TallyEntry]
    note: str = ""


class GlobalTally(NamedTuple):
    """The global tally after ``files`` tally messages, the last one from ``after``.

    ``applied`` is the tally message that produced this update, and ``note`` that message's
    note; both are shown on the console and are not part of ``global_tally.jsonl``.
    """

    files: int
    after: str
    tally: Sequence[TallyEntry]
    applied: Sequence[TallyEntry]
    note: str = ""


class DeadLetter(NamedTuple):
    """Input that could not be used: where it came from and why."""

    source: str
    where: Optional[int]
    reason: str
    raw: str


class AccessRecord(NamedTuple):
    """One HTTP access-log line. ``timestamp`` is the event time in whole epoch seconds; the
    ``section`` is the path up to its second ``/`` (``/api/user`` -> ``/api``). ``source`` and
    ``line`` (beyond docs/design.md's fields) say where it came from, so that a stage far downstream
    (the alert detector, for a late line) can still dead-letter it with its origin."""

    host: str
    ident: str
    user: str
    timestamp: int
    method: str
    path: str
    section: str
    protocol: str
    status: int
    bytes: int
    source: str = ""
    line: int = 0


class RankedCount(NamedTuple):
    name: str
    value: int


class TrafficStats(NamedTuple):
    """Stats of one stats window ``[start, end)`` of event time (epoch seconds)."""

    start: int
    end: int
    hits: int
    bytes: int
    sections: Sequence[RankedCount]
    status_classes: Sequence[RankedCount]
    error_rate: float
    hosts_by_hits: Sequence[RankedCount]
    hosts_by_bytes: Sequence[RankedCount]
    users: Sequence[RankedCount]
    distinct_hosts: int
    distinct_users: int


class Alert(NamedTuple):
    """A change of the high-traffic state at event second ``at``: kind "alert" or "recover"."""

    kind: str
    at: int
    hits: int
    average: float


class AccessLine(NamedTuple):
    """One raw line of an access log, with where it came from (1-based line number) and, when
    the reader could tell, its file's format ("csv" or "clf"; "" when unknown)."""

    source: str
    line: int
    text: str
    fmt: str = ""


# On a live stream, what the producer could not send as data travels as data too, and becomes a
# dead letter in the consumer: an access line with format ``STREAM_ERROR`` whose text is the
# reason, or a tally document whose content is ``STREAM_ERROR_PREFIX`` followed by the reason.
STREAM_ERROR = "error"
STREAM_ERROR_PREFIX = b"\x00beam-tally-error\x00"
# The last element of a stream that ended (rather than broke off): an access line with format
# ``STREAM_END``, or a tally document with this content and no source.
STREAM_END = "end"
STREAM_END_DOCUMENT = b"\x00beam-tally-end\x00"


for _record in (
    SourceFile,
    LogEntry,
    TallyEntry,
    FileTally,
    GlobalTally,
    DeadLetter,
    AccessRecord,
    AccessLine,
    RankedCount,
    TrafficStats,
    Alert,
):
    beam.coders.registry.register_coder(_record, beam.coders.RowCoder)


def sorted_tally(counts: dict[str, int]) -> list[TallyEntry]:
    """Entries sorted by total descending, then email ascending (a list, as RowCoder decodes).

    Two stable C-level sorts (by email, then by total descending) instead of a Python key.
    """
    items = sorted(counts.items())
    items.sort(key=itemgetter(1), reverse=True)
    return list(starmap(TallyEntry, items))


def _entries_json(tally: Sequence[TallyEntry]) -> str:
    # Entries are formatted as text: one dict per entry would cost more than the encoding itself
    # (dicts are tracked by the garbage collector; strings are not).
    dumps = orjson.dumps
    return ",".join(
        [f'{{"email":{dumps(email).decode()},"total":{total}}}' for email, total in tally]
    )


def file_tally_json(record: FileTally) -> str:
    """The seed's tally message, ``{"tally":[{"email","total"}, ...]}``, plus its source."""
    source = orjson.dumps(record.source).decode()
    return f'{{"tally":[{_entries_json(record.tally)}],"source":{source}}}'


def global_tally_json(record: Optional[GlobalTally]) -> str:
    if record is None:
        return '{"global_tally":[],"files":0,"after":null}'
    after = orjson.dumps(record.after).decode()
    return (
        f'{{"global_tally":[{_entries_json(record.tally)}],"files":{record.files},"after":{after}}}'
    )


def dead_letter_json(record: DeadLetter) -> str:
    return orjson.dumps(record._asdict()).decode()


def truncate_raw(raw: bytes | str, limit: int = RAW_LIMIT) -> str:
    """A printable, bounded excerpt of bad input for a dead letter."""
    if isinstance(raw, bytes):
        raw = raw[: limit * 4].decode("utf-8", errors="backslashreplace")
    return raw if len(raw) <= limit else raw[:limit] + "..."


def alert_json(alert: Alert) -> str:
    """``{"kind","at","time","hits","average"}``, as ``alerts.jsonl`` holds them."""
    return orjson.dumps(
        {
            "kind": alert.kind,
            "at": alert.at,
            "time": iso_utc(alert.at),
            "hits": alert.hits,
            "average": alert.average,
        }
    ).decode()


def stats_json(stats: TrafficStats) -> str:
    def ranked(entries: Sequence[RankedCount], key: str, value: str) -> list[dict]:
        return [{key: e.name, value: e.value} for e in entries]

    return orjson.dumps(
        {
            "start": stats.start,
            "end": stats.end,
            "time": iso_utc(stats.start),
            "hits": stats.hits,
            "bytes": stats.bytes,
            "sections": ranked(stats.sections, "section", "hits"),
            "status_classes": {e.name: e.value for e in stats.status_classes},
            "error_rate": stats.error_rate,
            "hosts_by_hits": ranked(stats.hosts_by_hits, "host", "hits"),
            "hosts_by_bytes": ranked(stats.hosts_by_bytes, "host", "bytes"),
            "users": ranked(stats.users, "user", "hits"),
            "distinct_hosts": stats.distinct_hosts,
            "distinct_users": stats.distinct_users,
        }
    ).decode()


_new = tuple.__new__  # a named tuple from a tuple, without its Python-level __new__


def stats_from_json(row: dict) -> TrafficStats:
    """The ``TrafficStats`` of a ``stats_json`` line (read back for the console)."""

    def ranked(entries: list[dict], key: str, value: str) -> list[RankedCount]:
        return [_new(RankedCount, (e[key], e[value])) for e in entries]

    return TrafficStats(
        row["start"],
        row["end"],
        row["hits"],
        row["bytes"],
        ranked(row["sections"], "section", "hits"),
        sorted(map(RankedCount._make, row["status_classes"].items())),
        row["error_rate"],
        ranked(row["hosts_by_hits"], "host", "hits"),
        ranked(row["hosts_by_bytes"], "host", "bytes"),
        ranked(row["users"], "user", "hits"),
        row["distinct_hosts"],
        row["distinct_users"],
    )


def alert_from_json(row: dict) -> Alert:
    """The ``Alert`` of an ``alert_json`` line."""
    return Alert(row["kind"], row["at"], row["hits"], row["average"])
