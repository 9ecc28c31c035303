"""Pure formatting of what the console shows; control characters never reach the terminal raw."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from beam_tally.records import GlobalTally, TallyEntry

# C0 and C1 controls, DEL, and the Unicode bidirectional controls that can reorder a line.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def escape_control(text: str) -> str:
    """``text`` with every control character shown as an escape (``\\x1b``, ``\\u202e``)."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def format_entries(entries: Sequence[TallyEntry], limit: int, indent: str = "  ") -> list[str]:
    shown = entries[:limit]
    width = max((len(escape_control(e.email)) for e in shown), default=0)
    lines = [f"{indent}{escape_control(e.email):<{width}}  {e.total:>9,}" for e in shown]
    if len(entries) > limit:
        lines.append(f"{indent}... and {len(entries) - limit:,} more")
    return lines


def format_update(update: GlobalTally, limit: int) -> str:
    """A tally message and the global tally it produced, as printed after each update."""
    applied_logs = sum(e.total for e in update.applied)
    total_logs = sum(e.total for e in update.tally)
    lines = [
        f"tally message {update.files}: {escape_control(update.after)} "
        f"({applied_logs:,} logs, {len(update.applied):,} emails)",
        *format_entries(update.applied, limit),
        f"global tally after {update.files:,} files: {total_logs:,} logs, "
        f"{len(update.tally):,} emails",
        *format_entries(update.tally, limit),
        "",
    ]
    return "\n".join(lines)


def format_tally_summary(
    counters: Mapping[str, int],
    reasons: Mapping[str, int],
    seconds: float,
    distinct_emails: int,
    output: str,
) -> str:
    dead = counters.get("dead_letters", 0)
    by_reason = ", ".join(f"{escape_control(k)} {v:,}" for k, v in sorted(reasons.items()))
    lines = [
        "summary: "
        f"{counters.get('tally_messages', 0):,} files, {counters.get('logs', 0):,} logs, "
        f"{distinct_emails:,} distinct emails, {dead:,} dead letters"
        + (f" ({by_reason})" if by_reason else "")
        + f", {seconds:.2f} s",
        f"outputs: {output}",
    ]
    return "\n".join(lines)
