"""Pure formatting of what the console shows; control characters never reach the terminal raw."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from beam_tally.io.sources import DAMAGED, LINE_TOO_LONG, TOO_LARGE
from beam_tally.terminal import escape_control
from transforms.records import Alert, GlobalTally, TallyEntry, TrafficStats, stats_from_json
from transforms.timefmt import iso_utc, utc_text

UNFINISHED_FILES = (DAMAGED, TOO_LARGE, LINE_TOO_LONG)  # reason codes of files read in part


_PLURALS = {"entry": "entries", "recovery": "recoveries", "email": "emails"}


def plural(count: int, word: str) -> str:
    """``"1 alert"``, ``"2 alerts"``, ``"1 recovery"``, ``"1,000 dead letters"``: the count
    with its noun (the last word of ``word``) in the right number."""
    if count == 1:
        return f"{count:,} {word}"
    head, _, last = word.rpartition(" ")
    many = _PLURALS.get(last, last + "s")
    return f"{count:,} {head + ' ' if head else ''}{many}"


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
    if applied_logs:
        what = f"{plural(applied_logs, 'log')}, {plural(len(update.applied), 'email')}"
        what += f"; {escape_control(update.note)}" if update.note else ""
    else:  # an empty file, a bad file, a document without logs or with only bad ones
        what = f"no logs: {escape_control(update.note)}" if update.note else "no logs"
        what = what.replace("no logs: no logs: ", "no logs: ")
    lines = [
        f"tally message {update.files}: {escape_control(update.after)} ({what})",
        *format_entries(update.applied, limit),
        f"global tally after {plural(update.files, 'file')}: {plural(total_logs, 'log')}, "
        f"{plural(len(update.tally), 'email')}",
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
    bad_files: Mapping[str, int] | None = None,
) -> str:
    summary = (
        f"summary: {plural(counters.get('tally_messages', 0), 'file')}, "
        f"{plural(counters.get('logs', 0), 'log')}, "
        f"{plural(distinct_emails, 'distinct email')}, "
        f"{_dead_letters(counters, reasons)}, {seconds:.2f} s"
    )
    return "\n".join([summary, *format_bad_files(bad_files or {}), *_closing(ended, output)])


def _dead_letters(counters: Mapping[str, int], reasons: Mapping[str, int]) -> str:
    """ "N dead letters (reason n, ...)" for a closing summary."""
    by_reason = ", ".join(f"{escape_control(k)} {v:,}" for k, v in sorted(reasons.items()))
    text = plural(counters.get("dead_letters", 0), "dead letter")
    return f"{text} ({by_reason})" if by_reason else text


def format_bad_files(files: Mapping[str, int], limit: int = 10) -> list[str]:
    """The summary's line for files whose every record is bad (``{source: dead letters}``)."""
    if not files:
        return []
    named = [
        f"{escape_control(source)} ({plural(n, 'dead letter')})"
        for source, n in list(files.items())[:limit]
    ]
    more = [f"... and {len(files) - limit:,} more"] if len(files) > limit else []
    head = "every record bad in " + plural(len(files), "file")
    return [f"{head}: " + ", ".join(named + more)]


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


def _ranked_raw(entries, fmt) -> str:
    """``_ranked`` but the names as they are: for a line escaped whole."""
    return "  ".join([f"{name} {fmt(value)}" for name, value in entries]) or "-"


def format_stats(stats: TrafficStats) -> str:
    """A short, aligned block for one stats window. Each line with names is escaped whole (its
    own text is printable ASCII): one pass a line, not one a name, over 28,512 blocks for a
    3.3M-line run."""
    statuses = "  ".join([f"{name} {value:,}" for name, value in stats.status_classes])
    count = "{:,}".format
    return "\n".join(
        [
            f"{utc_text(stats.start)}-{utc_text(stats.end, with_date=False)} UTC  "
            f"{stats.hits:,} hits  "
            f"{human_bytes(stats.bytes)}  {escape_control(statuses)}  "
            f"errors {stats.error_rate:.1%}",
            escape_control(f"  sections  {_ranked_raw(stats.sections, count)}"),
            escape_control(
                f"  hosts     {_ranked_raw(stats.hosts_by_hits, count)}"
                f"   ({stats.distinct_hosts:,} distinct)"
            ),
            escape_control(f"  bytes     {_ranked_raw(stats.hosts_by_bytes, human_bytes)}"),
            escape_control(
                f"  users     {_ranked_raw(stats.users, count)}"
                f"   ({stats.distinct_users:,} distinct)"
            ),
        ]
    )


def format_alert(alert: Alert) -> str:
    """The alert and recovery lines, verbatim as docs/design.md gives them."""
    if alert.kind == "alert":
        return (
            f"High traffic generated an alert - hits = {alert.hits}, "
            f"triggered at {iso_utc(alert.at)}"
        )
    return (
        f"Recovered from high traffic alert - hits = {alert.hits}, recovered at {iso_utc(alert.at)}"
    )


def in_event_order(stats: Iterable[TrafficStats], alerts: Iterable[Alert]) -> list[str]:
    """The console's stats blocks and alert lines in event-time order, as a live run prints
    them: each at the moment of event time it becomes known, a block at its window's end, an
    alert when its second is complete (``at + 1``); an alert whose second closes a window comes
    before that window's block, as live, where the alert fires as the same watermark passes."""
    keyed = [((s.end, 1, s.start), format_stats(s)) for s in stats]
    keyed += [((a.at + 1, 0, a.at), format_alert(a)) for a in alerts]
    keyed.sort(key=lambda item: item[0])
    return [text for _, text in keyed]


def format_totals(totals: TrafficStats, top: int) -> list[str]:
    """The whole run's totals for the closing summary: requests, bytes, status classes, error
    rate, and the top sections, hosts and users over all input."""
    statuses = "  ".join(f"{s.name} {s.value:,}" for s in totals.status_classes)
    return [
        f"totals {utc_text(totals.start)} - {utc_text(totals.end)} UTC: "
        f"{plural(totals.hits, 'request')}, {human_bytes(totals.bytes)}, {statuses}, "
        f"errors {totals.error_rate:.1%}",
        f"  top sections  {_ranked(totals.sections[:top], '{:,}'.format)}",
        f"  top hosts     {_ranked(totals.hosts_by_hits[:top], '{:,}'.format)}"
        f"   ({plural(totals.distinct_hosts, 'distinct host')})",
        f"  top bytes     {_ranked(totals.hosts_by_bytes[:top], human_bytes)}",
        f"  top users     {_ranked(totals.users[:top], '{:,}'.format)}"
        f"   ({plural(totals.distinct_users, 'distinct user')})",
    ]


def format_changes(alerts: Sequence[Mapping]) -> list[str]:
    """One line per alert and recovery (``alerts.jsonl`` rows, in order): time and hits."""
    return [
        f"  {'alert   ' if a['kind'] == 'alert' else 'recovery'}  {a['time']}  "
        f"hits {a['hits']:,} ({a['average']:.2f}/s)"
        for a in alerts
    ]


def format_monitor_summary(
    counters: Mapping[str, int],
    reasons: Mapping[str, int],
    seconds: float,
    output: str,
    ended: str | None = None,
    outputs: tuple[Sequence[Mapping], Mapping | None] = ((), None),
    bad_files: Mapping[str, int] | None = None,
) -> str:
    """The closing summary: the counts, every alert and recovery with its time and hits, an
    alert still active at the end, and the whole run's totals (``outputs``: the alerts and
    totals the run wrote, ``metrics.monitor_outputs``)."""
    changes, totals = outputs
    alerts, recoveries = counters.get("alerts", 0), counters.get("recoveries", 0)
    lines = [
        f"summary: {plural(counters.get('lines', 0), 'line')} read, "
        f"{plural(counters.get('records', 0), 'request')}, "
        f"{plural(counters.get('stats_windows', 0), 'stats window')}, "
        f"{plural(alerts, 'alert')}, {plural(recoveries, 'recovery')}, "
        f"{_dead_letters(counters, reasons)}, {seconds:.2f} s",
        *format_bad_files(bad_files or {}),
        *format_changes(changes),
    ]
    unfinished = sum(reasons.get(code, 0) for code in UNFINISHED_FILES)
    last = changes[-1] if changes else None
    since = (
        f" (since {last['time']}, hits {last['hits']:,})"
        if last is not None and last["kind"] == "alert"
        else ""
    )
    if alerts > recoveries and unfinished:  # the input's end is not known: only what was read
        lines.append(
            f"alert still active at the end of what was read{since} "
            f"({plural(unfinished, 'file')} not read to the end)"
        )
    elif alerts > recoveries:
        lines.append(f"alert still active at the end of the input{since}")
    if totals is not None:
        lines.extend(format_totals(stats_from_json(totals), len(totals["sections"])))
    return "\n".join([*lines, *_closing(ended, output)])
