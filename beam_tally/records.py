"""The typed messages that flow between stages, and their JSON form in the output contract.

Every record is a ``typing.NamedTuple`` registered with Beam's ``RowCoder``, so keys and values
have deterministic, compact coders on every runner. Fields use ``typing.Optional``: Beam's
schema inference does not read ``X | None`` and would fall back to pickled, non-deterministic
fields. Sequences are lists, as ``RowCoder`` decodes them. The ``*_json`` helpers are pure and
produce exactly the lines DESIGN.md specifies.
"""

from collections.abc import Sequence
from typing import NamedTuple, Optional

import apache_beam as beam
import orjson

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
    """The tally message of one file: entries sorted by total descending, then email."""

    source: str
    tally: Sequence[TallyEntry]


class GlobalTally(NamedTuple):
    """The global tally after ``files`` tally messages, the last one from ``after``.

    ``applied`` is the tally message that produced this update; it is shown on the console and
    is not part of ``global_tally.jsonl``.
    """

    files: int
    after: str
    tally: Sequence[TallyEntry]
    applied: Sequence[TallyEntry]


class DeadLetter(NamedTuple):
    """Input that could not be used: where it came from and why."""

    source: str
    where: Optional[int]
    reason: str
    raw: str


for _record in (SourceFile, LogEntry, TallyEntry, FileTally, GlobalTally, DeadLetter):
    beam.coders.registry.register_coder(_record, beam.coders.RowCoder)


def sorted_tally(counts: dict[str, int]) -> list[TallyEntry]:
    """Entries sorted by total descending, then email ascending (a list, as RowCoder decodes)."""
    return [
        TallyEntry(email, total)
        for email, total in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    ]


def _entries(tally: Sequence[TallyEntry]) -> list[dict]:
    return [{"email": e.email, "total": e.total} for e in tally]


def tally_message(tally: Sequence[TallyEntry]) -> dict:
    """The seed's tally message: ``{"tally":[{"email","total"}, ...]}``."""
    return {"tally": _entries(tally)}


def file_tally_json(record: FileTally) -> str:
    return orjson.dumps({**tally_message(record.tally), "source": record.source}).decode()


def global_tally_json(record: GlobalTally | None) -> str:
    if record is None:
        return orjson.dumps({"global_tally": [], "files": 0, "after": None}).decode()
    return orjson.dumps(
        {"global_tally": _entries(record.tally), "files": record.files, "after": record.after}
    ).decode()


def dead_letter_json(record: DeadLetter) -> str:
    return orjson.dumps(record._asdict()).decode()


def truncate_raw(raw: bytes | str, limit: int = RAW_LIMIT) -> str:
    """A printable, bounded excerpt of bad input for a dead letter."""
    if isinstance(raw, bytes):
        raw = raw[: limit * 4].decode("utf-8", errors="backslashreplace")
    return raw if len(raw) <= limit else raw[:limit] + "..."
