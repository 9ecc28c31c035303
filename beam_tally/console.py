"""Pure formatting of what the console shows; control characters never reach the terminal raw."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from beam_tally.records import Alert, GlobalTally, TallyEntry, TrafficStats
from beam_tally.sources import DAMAGED, LINE_TOO_LONG, TOO_LARGE
from beam_tally.terminal import escape_control
from beam_tally.timefmt import iso_utc, utc_text

UNFINISHED_FILES = (DAMAGED, TOO_LARGE, LINE_TOO_LONG)  # reason codes of files read in part


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
    ended: str | None = None,
) -> str:
    summary = (
        f"summary: {counters.get('tally_messages', 0):,} files, {counters.get('logs', 0):,} "
        f"logs, {distinct_emails:,} distinct emails, "
        f"{_dead_letters(counters, reasons)}, {seconds:.2f} s"
    )
    return "\n".join([summary, *_closing(ended, output)])


def _dead_letters(counters: Mapping[str, int], reasons: Mapping[str, int]) -> str:
    """ "N dead letters (reason n, ...)" for a closing summary."""
    by_reason = ", ".join(f"{escape_control(k)} {v:,}" for k, v in sorted(reasons.items()))
    text = f"{counters.get('dead_letters', 0):,} dead letters"
    return f"{text} ({by_reason})" if by_reason else text


def _closing(ended: str | None, output: str) -> list[str]:
    """The last lines of a closing summary: how a live run ended, where the outputs are."""
    return [*([f"live run: {ended}"] if ended else []), f"outputs: {escape_control(output)}"]


def human_bytes(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if size < 1024 or unit == "PB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{size:,.1f} PB"  # pragma: no cover - the loop always returns


def _ranked(entries, fmt=str) -> str:
    return "  ".join(f"{escape_control(e.name)} {fmt(e.value)}" for e in entries) or "-"


def format_stats(stats: TrafficStats) -> str:
    """A short, aligned block for one stats window."""
    statuses = "  ".join(f"{s.name} {s.value:,}" for s in stats.status_classes)
    return "\n".join(
        [
            f"{utc_text(stats.start)}-{utc_text(stats.end, with_date=False)} UTC  "
            f"{stats.hits:,} hits  "
            f"{human_bytes(stats.bytes)}  {statuses}  errors {stats.error_rate:.1%}",
            f"  sections  {_ranked(stats.sections, '{:,}'.format)}",
            f"  hosts     {_ranked(stats.hosts_by_hits, '{:,}'.format)}"
            f"   ({stats.distinct_hosts:,} distinct)",
            f"  bytes     {_ranked(stats.hosts_by_bytes, human_bytes)}",
            f"  users     {_ranked(stats.users, '{:,}'.format)}"
            f"   ({stats.distinct_users:,} distinct)",
        ]
    )


def format_alert(alert: Alert) -> str:
    """The alert and recovery lines, verbatim as DESIGN.md gives them."""
    if alert.kind == "alert":
        return (
            f"High traffic generated an alert - hits = {alert.hits}, "
            f"triggered at {iso_utc(alert.at)}"
        )
    return (
        f"Recovered from high traffic alert - hits = {alert.hits}, recovered at {iso_utc(alert.at)}"
    )


def format_monitor_summary(
    counters: Mapping[str, int],
    reasons: Mapping[str, int],
    seconds: float,
    output: str,
    ended: str | None = None,
) -> str:
    alerts, recoveries = counters.get("alerts", 0), counters.get("recoveries", 0)
    lines = [
        f"summary: {counters.get('lines', 0):,} lines read, {counters.get('records', 0):,} "
        f"requests, {counters.get('stats_windows', 0):,} stats windows, {alerts:,} alerts, "
        f"{recoveries:,} recoveries, {_dead_letters(counters, reasons)}, {seconds:.2f} s"
    ]
    unfinished = sum(reasons.get(code, 0) for code in UNFINISHED_FILES)
    if alerts > recoveries and unfinished:  # the input's end is not known: only what was read
        lines.append(
            f"alert still active at the end of what was read ({unfinished:,} files were not "
            "read to their end)"
        )
    elif alerts > recoveries:
        lines.append("alert still active at the end of the input")
    return "\n".join([*lines, *_closing(ended, output)])
