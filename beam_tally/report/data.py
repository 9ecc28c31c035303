"""What a report shows, read back from a run's output files.

A batch run leaves ``NAME.jsonl`` and a live run rolled parts ``NAME-<time>-<id>.jsonl``; both
are read through the same ``NAME*.jsonl`` glob as the closing summary's (``metrics``). Every
figure here is worked out from those lines alone, so ``beam-tally report DIR`` rebuilds the page
of a finished run, and a live run's page shows exactly what its files hold so far.

A live run renames a part into place only when its roll is over (``--roll_seconds``), so its
refresher also reads the roll still being written: ``pending`` maps an output's file name
(``stats.jsonl``) to that roll's temporary path (``io.stream.LiveFiles.open_rolls``), taken
before the parts are listed, so that no line is read twice (a roll renamed in between is then
missing: ``FileNotFoundError``, and the refresher tries again).
"""

from __future__ import annotations

import glob
import os
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import orjson

from transforms.parse_logs import reason_code

FINAL_TALLY = "global_tally_final.json"


def _remote(output: str) -> bool:
    return "://" in output


def output_files(output: str, name: str) -> list[str]:
    """The files of output ``name`` under ``output``: ``name.jsonl`` and its live parts."""
    pattern = f"{name}*.jsonl"
    if _remote(output):  # gs://, s3://: through Beam's filesystems
        from apache_beam.io.filesystems import FileSystems

        joined = FileSystems.join(glob.escape(output), pattern)
        return sorted(m.path for m in FileSystems.match([joined])[0].metadata_list)
    return sorted(glob.glob(os.path.join(glob.escape(output), pattern)))


def _read_bytes(path: str) -> bytes:
    if "://" in path:
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.open(path) as handle:
            return handle.read()
    with open(path, "rb") as handle:
        return handle.read()


def _lines_of(path: str) -> Iterator[bytes]:
    """The lines of a file; a local one read line by line, not held whole."""
    if "://" in path:
        yield from _read_bytes(path).splitlines()
        return
    with open(path, "rb") as handle:
        yield from handle


def read_lines(output: str, name: str, pending: Mapping[str, str] | None = None) -> Iterator[dict]:
    """Every JSON line of output ``name``, parsed, and of its open roll in ``pending``."""
    for path in output_files(output, name):
        for line in _lines_of(path):
            if line.strip():
                yield orjson.loads(line)
    open_roll = (pending or {}).get(f"{name}.jsonl")
    if open_roll:
        complete = _read_bytes(open_roll)  # raises FileNotFoundError once renamed
        for line in complete[: complete.rfind(b"\n") + 1].splitlines():  # whole lines only
            if line.strip():
                yield orjson.loads(line)


def outputs_signature(output: str, pending: Mapping[str, str] | None = None) -> tuple:
    """Names, sizes and modification times of the ``*.jsonl`` files under ``output`` and of
    the open rolls in ``pending``: it changes whenever a live run writes."""
    if _remote(output):
        from apache_beam.io.filesystems import FileSystems

        listing = FileSystems.match([FileSystems.join(glob.escape(output), "*.jsonl")])[0]
        return tuple(
            sorted(
                (m.path, m.size_in_bytes, m.last_updated_in_seconds) for m in listing.metadata_list
            )
        )
    signature = []
    paths = sorted(glob.glob(os.path.join(glob.escape(output), "*.jsonl")))
    for path in [*paths, *sorted((pending or {}).values())]:
        try:
            status = os.stat(path)
        except FileNotFoundError:  # replaced between the listing and the stat
            continue
        signature.append((path, status.st_size, status.st_mtime_ns))
    return tuple(signature)


@dataclass
class DeadLetters:
    """Dead letters by reason code and by source, and the first ``keep`` of them, in order."""

    by_reason: Counter = field(default_factory=Counter)
    by_source: Counter = field(default_factory=Counter)
    first: list[dict] = field(default_factory=list)
    total: int = 0


def read_dead_letters(output: str, keep: int = 100, pending=None) -> DeadLetters:
    dead = DeadLetters()
    for letter in read_lines(output, "dead_letters", pending):
        dead.total += 1
        dead.by_reason[reason_code(letter["reason"])] += 1
        dead.by_source[letter["source"]] += 1
        if len(dead.first) < keep:
            dead.first.append(letter)
    return dead


# The monitor ---------------------------------------------------------------------------------


@dataclass
class AlertPeriod:
    """High traffic from ``start`` until ``end`` (epoch seconds); ``end`` is None while the alert
    is still active at the end of what was read. ``hits`` and ``average`` are the alert's."""

    start: int
    end: int | None
    hits: int
    average: float


@dataclass
class MonitorData:
    windows: list[dict]  # stats rows, by window start
    alerts: list[dict]  # alert and recovery rows, by second
    dead: DeadLetters
    stats_window: int
    totals: dict | None = None  # the whole run's stats row (totals.jsonl), when there is one


# What the page draws of each stats window; its top lists are kept only for a run without
# totals.jsonl (the page then sums them, ``ranked_totals``).
WINDOW_FIELDS = ("start", "end", "hits", "bytes", "status_classes")
TOP_LISTS = ("sections", "hosts_by_hits", "hosts_by_bytes", "users")


def read_monitor(output: str, stats_window: int | None = None, pending=None) -> MonitorData:
    """The monitor's outputs; ``stats_window`` is read off the windows when not given. A live
    run writes its totals after each update: the line with the most hits is the latest.

    Each window keeps only the fields the page draws (``WINDOW_FIELDS``), read a line at a
    time: a row's top lists are nine tenths of it in memory (a 14-day run's 120,000 windows
    took 1.2 GiB whole)."""
    totals = max(read_lines(output, "totals", pending), key=lambda row: row["hits"], default=None)
    fields = WINDOW_FIELDS if totals else WINDOW_FIELDS + TOP_LISTS
    windows = sorted(
        ({name: row[name] for name in fields} for row in read_lines(output, "stats", pending)),
        key=lambda row: row["start"],
    )
    alerts = sorted(read_lines(output, "alerts", pending), key=lambda row: row["at"])
    if stats_window is None:
        stats_window = windows[0]["end"] - windows[0]["start"] if windows else 10
    dead = read_dead_letters(output, pending=pending)
    return MonitorData(windows, alerts, dead, stats_window, totals)


def alert_periods(alerts: list[dict]) -> list[AlertPeriod]:
    """Each alert paired with the recovery after it (the detector alternates the two)."""
    periods: list[AlertPeriod] = []
    for row in alerts:
        if row["kind"] == "alert":
            periods.append(AlertPeriod(row["at"], None, row["hits"], row["average"]))
        elif periods and periods[-1].end is None:
            periods[-1].end = row["at"]
    return periods


def rolling_average(windows: list[dict], alert_window: int) -> list[float]:
    """The alert rule's average (requests per second over the last ``alert_window`` seconds) at
    the last second of each stats window: the hits of the windows inside ``[end - alert_window,
    end)``, over ``alert_window``. Exact when ``alert_window`` is a multiple of ``stats_window``
    (the default 120 s over 10 s windows); otherwise the windows that start inside the span."""
    averages, in_span, total, first = [], [], 0, 0
    for row in windows:
        in_span.append(row)
        total += row["hits"]
        while first < len(in_span) and in_span[first]["start"] < row["end"] - alert_window:
            total -= in_span[first]["hits"]
            first += 1
        averages.append(total / alert_window)
    return averages


def every_window(windows: list[dict], size: int, limit: int = 100_000) -> list[dict]:
    """Every stats window from the first to the last, those without traffic (which the monitor
    does not write) as rows of zero hits; ``windows`` as they are when that would be more than
    ``limit`` windows (a line from a far-off time: the gaps are then drawn joined)."""
    if not windows or (windows[-1]["start"] - windows[0]["start"]) // size >= limit:
        return windows
    by_start = {row["start"]: row for row in windows}
    empty = {"hits": 0, "bytes": 0, "status_classes": {}}
    return [
        by_start.get(start) or {"start": start, "end": start + size, **empty}
        for start in range(windows[0]["start"], windows[-1]["start"] + 1, size)
    ]


def ranked_totals(windows: list[dict], key: str, name: str, value: str, n: int) -> list:
    """``(name, sum of value)`` over every window's top list ``key``, largest first: a lower
    bound of the whole run's counts (a window lists only its top entries)."""
    totals: Counter = Counter()
    for row in windows:
        for entry in row[key]:
            totals[entry[name]] += entry[value]
    return sorted(totals.items(), key=lambda item: (-item[1], item[0]))[:n]


def status_totals(windows: list[dict]) -> Counter:
    totals: Counter = Counter()
    for row in windows:
        totals.update(row["status_classes"])
    return totals


# The tally -----------------------------------------------------------------------------------


@dataclass
class TallyData:
    files: list[tuple[str, int, int]]  # (source, logs, distinct emails), in source order
    growth: list[tuple[int, str, int, int]]  # (files, after, logs, distinct emails) per update
    final: list[tuple[str, int]]  # the final global tally: (email, total), largest first
    dead: DeadLetters


def _final_tally(output: str, last: dict | None) -> list:
    """``global_tally_final.json`` of a batch run, else ``last``, the update after the most
    files."""
    path = os.path.join(output, FINAL_TALLY) if not _remote(output) else f"{output}/{FINAL_TALLY}"
    try:
        final = orjson.loads(_read_bytes(path))
    except FileNotFoundError:
        final = last or {"global_tally": []}
    return [(entry["email"], entry["total"]) for entry in final["global_tally"]]


def read_tally(output: str, pending=None) -> TallyData:
    files = sorted(
        (
            row["source"],
            sum(entry["total"] for entry in row["tally"]),
            len(row["tally"]),
        )
        for row in read_lines(output, "tallies", pending)
    )
    # One update at a time: global_tally.jsonl grows as files x emails, and only each update's
    # sums (and the one after the most files) are kept.
    growth, last = [], None
    for row in read_lines(output, "global_tally", pending):
        entries = row["global_tally"]
        growth.append((row["files"], row["after"], sum(e["total"] for e in entries), len(entries)))
        if last is None or row["files"] > last["files"]:
            last = row
    growth.sort(key=lambda update: update[0])
    final = _final_tally(output, last)
    return TallyData(files, growth, final, read_dead_letters(output, pending=pending))


def job_of(output: str) -> str | None:
    """Which job wrote ``output``: "monitor", "tally", or None when it holds neither's files."""
    if output_files(output, "stats") or output_files(output, "alerts"):
        return "monitor"
    if output_files(output, "tallies") or output_files(output, "global_tally"):
        return "tally"
    return None
