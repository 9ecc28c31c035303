"""Pure parsing of one ``logs_xx.json`` document into a ``LogBatch`` and dead letters.

No Beam here: ``parse_log_document`` is called by ``ParseLogDocuments`` and unit-tested directly.
A document is ``{"logs": [{"id", "email", "message"}, ...]}``. A log needs an ``email`` string;
``id`` and ``message`` are kept when present (a non-string value is kept as its JSON text).
"""

from __future__ import annotations

from typing import Any

import orjson

from beam_tally.records import DeadLetter, truncate_raw
from transforms.log_batch import LogBatch

# Reason codes: the text before the first ':' of a dead letter's reason, used as metric names.
MALFORMED_JSON = "malformed JSON"
UNDECODABLE = "undecodable bytes"
NO_LOGS_LIST = "no 'logs' list"
NOT_AN_OBJECT = "log is not an object"
MISSING_EMAIL = "missing email"
EMAIL_NOT_STRING = "email is not a string"


def reason_code(reason: str) -> str:
    return reason.split(":", 1)[0]


def _optional_text(value: Any) -> str | None:
    if value is None or type(value) is str:
        return value
    return orjson.dumps(value).decode()


def _raw(value: Any) -> str:
    return truncate_raw(orjson.dumps(value).decode())


def _load(source: str, content: bytes) -> tuple[Any, DeadLetter | None]:
    try:
        return orjson.loads(content), None
    except orjson.JSONDecodeError as err:
        try:
            content.decode("utf-8")
        except UnicodeDecodeError as bad:
            reason = f"{UNDECODABLE}: invalid UTF-8 at byte {bad.start}"
            raw = content[max(0, bad.start - 40) : bad.start + 40]
            return None, DeadLetter(source, None, reason, truncate_raw(raw))
        reason = f"{MALFORMED_JSON}: {err.msg} at line {err.lineno} column {err.colno}"
        return None, DeadLetter(source, None, reason, truncate_raw(content))


def parse_log_document(source: str, content: bytes) -> tuple[LogBatch, list[DeadLetter]]:
    """Split a document into its valid logs (as columns) and one dead letter per bad part."""
    doc, dead = _load(source, content)
    if dead is not None:
        return LogBatch([], [], [], [], []), [dead]
    logs = doc.get("logs") if type(doc) is dict else None
    if type(logs) is not list:
        dead = DeadLetter(source, None, f"{NO_LOGS_LIST}: document has no 'logs' list", _raw(doc))
        return LogBatch([], [], [], [], []), [dead]

    # Fast path: every log is an object with a string email (the common case, checked in C).
    try:
        emails = [log["email"] for log in logs]
        valid = set(map(type, emails)) <= {str}
    except (KeyError, TypeError):
        valid = False
    if valid:
        ids = [log.get("id") for log in logs]
        messages = [log.get("message") for log in logs]
        if not set(map(type, ids)) <= {str, type(None)}:
            ids = [_optional_text(value) for value in ids]
        if not set(map(type, messages)) <= {str, type(None)}:
            messages = [_optional_text(value) for value in messages]
        return LogBatch([source] * len(logs), range(len(logs)), emails, ids, messages), []
    return _parse_slowly(source, logs)


def _parse_slowly(source: str, logs: list) -> tuple[LogBatch, list[DeadLetter]]:
    indexes: list[int] = []
    emails: list[str] = []
    ids: list[str | None] = []
    messages: list[str | None] = []
    dead: list[DeadLetter] = []
    for index, log in enumerate(logs):
        if type(log) is not dict:
            reason = f"{NOT_AN_OBJECT}: got {type(log).__name__}"
            dead.append(DeadLetter(source, index, reason, _raw(log)))
            continue
        email = log.get("email")
        if type(email) is not str:
            if "email" not in log:
                reason = f"{MISSING_EMAIL}: log has no 'email' field"
            else:
                reason = f"{EMAIL_NOT_STRING}: got {type(email).__name__}"
            dead.append(DeadLetter(source, index, reason, _raw(log)))
            continue
        indexes.append(index)
        emails.append(email)
        ids.append(_optional_text(log.get("id")))
        messages.append(_optional_text(log.get("message")))
    return LogBatch([source] * len(emails), indexes, emails, ids, messages), dead
