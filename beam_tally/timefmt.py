"""Event-time formatting shared by records, the console and the generators (no Beam import)."""

from datetime import UTC, datetime


def iso_utc(epoch_seconds: int) -> str:
    """``2019-02-07T21:11:00Z``: ISO-8601 UTC, to the second."""
    return datetime.fromtimestamp(epoch_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
