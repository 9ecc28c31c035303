"""Console formatting: limits, alignment, and no raw control characters."""

from __future__ import annotations

from beam_tally.console import escape_control, format_entries, format_update
from transforms.records import GlobalTally, TallyEntry


def test_escape_control_characters():
    assert escape_control("evil\x1b[31m@x.com") == "evil\\x1b[31m@x.com"
    assert escape_control("a\nb\tc\x00") == "a\\nb\\tc\\x00"
    assert escape_control("rtl\u202eoverride") == "rtl\\u202eoverride"
    assert escape_control("zoë.müller@exämple.de 李") == "zoë.müller@exämple.de 李"


def test_format_entries_limits_and_says_how_many_more():
    entries = [TallyEntry(f"user{i}@x", 10 - i) for i in range(5)]
    lines = format_entries(entries, 2)
    assert len(lines) == 3
    assert lines[-1].strip() == "... and 3 more"
    assert format_entries(entries, 0) == ["  ... and 5 more"]
    assert len(format_entries(entries, 20)) == 5


def test_format_update_shows_the_message_and_the_global_tally():
    update = GlobalTally(
        2,
        "logs_01.json",
        (TallyEntry("a@x", 5), TallyEntry("b\x1b@x", 3)),
        (TallyEntry("b\x1b@x", 3),),
    )
    text = format_update(update, 10)
    assert "\x1b" not in text
    assert "tally message 2: logs_01.json (3 logs, 1 email)" in text
    assert "global tally after 2 files: 8 logs, 2 emails" in text
    assert "b\\x1b@x" in text
