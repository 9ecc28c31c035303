"""The monitor job in plain Python (no Beam): the benchmark's baseline for ``beam-tally monitor``.

    python benchmarks/plain_monitor.py --input FILE --output DIR [--format auto|csv|clf]
        [--threshold 10] [--stats_window 10] [--alert_window 120] [--top 5]

Does the same job as ``beam-tally monitor`` on a bounded input and writes the same files under
DIR: ``stats.jsonl`` (one line per stats window with traffic, in window order), ``alerts.jsonl``
(each change of the high-traffic state) and ``dead_letters.jsonl`` (undecodable and unparseable
lines, with the pipeline's reasons). It prints a block per stats window and the alert and
recovery lines of DESIGN.md on stdout, then a summary.

What it shares with the pipeline, and what it does itself:

* Parsing is the same work, so it reuses the project's pure parsers ``parse_csv_line`` and
  ``parse_clf_line`` (``transforms/access_log.py``, unchanged). That module imports
  ``AccessRecord`` from ``beam_tally.records``, which imports Apache Beam (about a second of
  start-up); ``_load_parsers`` loads it under a private name with a Beam-free stand-in for that
  one class, so that this script's start-up stays Python's and orjson's.
* Lines are read as bytes, decoded as UTF-8 and stripped of CR/LF as ``ReadLinesFn`` does; the
  format ``auto`` is decided per line by the leading quote of a CSV line, as the pipeline does.
* The stats per ``--stats_window`` window (aligned to epoch multiples) are computed here, with
  the definitions of ``transforms/traffic.py``'s ``TrafficStatsCombineFn``: hits, bytes, top
  sections, status classes, error rate (4xx and 5xx over hits), top hosts by hits and by bytes,
  top users, distinct hosts and users; top lists by count descending, ties by name.
* The alert rule is DESIGN.md's, written here: at every whole second ``t`` from the first to the
  last event second, ``hits(t)`` counts the requests in ``[t - window + 1, t]``; an average
  ``hits(t) / window`` above ``--threshold`` raises an alert, at or below it an active alert
  recovers. A bounded input is complete before the rule runs, so no line is late (the
  pipeline's batch run evaluates each second after all input too).
* The JSON lines are those of ``beam_tally.records`` (``stats_json``, ``alert_json``,
  ``dead_letter_json``), rewritten with orjson for the reason above.

Files are processed in sorted path order. (Unlike the pipeline it does not decompress ``.gz``.)
``monitor_files`` is the entry point for in-process timing.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import re
import sys
import time
import types
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import NamedTuple, TextIO

import orjson

RAW_LIMIT = 200
UNDECODABLE = "undecodable bytes"
_STATUS_CLASSES = {n: f"{n}xx" for n in range(1, 6)}
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


class AccessRecord(NamedTuple):
    """The fields of ``beam_tally.records.AccessRecord`` (the stand-in the parsers build)."""

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


def _load_parsers() -> types.ModuleType:
    """``transforms/access_log.py`` as a private module whose ``AccessRecord`` is the one above.

    If Beam's records module is already imported (a process that runs the pipeline too), the
    real module is used as it is.
    """
    if "beam_tally.records" in sys.modules:
        from transforms import access_log

        return access_log
    spec = importlib.util.find_spec("transforms.access_log")
    if spec is None or spec.origin is None:
        raise ImportError("transforms.access_log not found: install the project (pip install -e .)")
    private = importlib.util.spec_from_file_location("_plain_monitor_access_log", spec.origin)
    module = importlib.util.module_from_spec(private)
    stand_in = types.ModuleType("beam_tally.records")
    stand_in.AccessRecord = AccessRecord
    sys.modules["beam_tally.records"] = stand_in
    try:
        private.loader.exec_module(module)
    finally:
        del sys.modules["beam_tally.records"]
        package = sys.modules.get("beam_tally")
        if package is not None and getattr(package, "records", None) is stand_in:
            del package.records
    return module


access_log = _load_parsers()


# --- JSON lines and console text, as beam_tally.records and beam_tally.console write them --------
def truncate_raw(raw: bytes | str, limit: int = RAW_LIMIT) -> str:
    if isinstance(raw, bytes):
        raw = raw[: limit * 4].decode("utf-8", errors="backslashreplace")
    return raw if len(raw) <= limit else raw[:limit] + "..."


def _iso(epoch_seconds: int) -> str:
    return datetime.fromtimestamp(epoch_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def dead_letter_json(source: str, where: int | None, reason: str, raw: str) -> bytes:
    return orjson.dumps({"source": source, "where": where, "reason": reason, "raw": raw})


def alert_json(kind: str, at: int, hits: int, average: float) -> bytes:
    return orjson.dumps(
        {"kind": kind, "at": at, "time": _iso(at), "hits": hits, "average": average}
    )


def _ranked(entries: list[tuple[str, int]], key: str, value: str) -> list[dict]:
    return [{key: name, value: count} for name, count in entries]


def stats_json(stats: tuple) -> bytes:
    start, end, hits, size, sections, statuses, error_rate = stats[:7]
    hosts_by_hits, hosts_by_bytes, users, distinct_hosts, distinct_users = stats[7:]
    return orjson.dumps(
        {
            "start": start,
            "end": end,
            "time": _iso(start),
            "hits": hits,
            "bytes": size,
            "sections": _ranked(sections, "section", "hits"),
            "status_classes": dict(statuses),
            "error_rate": error_rate,
            "hosts_by_hits": _ranked(hosts_by_hits, "host", "hits"),
            "hosts_by_bytes": _ranked(hosts_by_bytes, "host", "bytes"),
            "users": _ranked(users, "user", "hits"),
            "distinct_hosts": distinct_hosts,
            "distinct_users": distinct_users,
        }
    )


def _escape(text: str) -> str:
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def _human_bytes(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{size:,.1f} TB"  # pragma: no cover - the loop always returns


def _shown(entries: list[tuple[str, int]], fmt=str) -> str:
    return "  ".join(f"{_escape(name)} {fmt(value)}" for name, value in entries) or "-"


def format_stats(stats: tuple) -> str:
    start, end, hits, size, sections, statuses, error_rate = stats[:7]
    hosts_by_hits, hosts_by_bytes, users, distinct_hosts, distinct_users = stats[7:]
    begin, finish = datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC)
    classes = "  ".join(f"{name} {value:,}" for name, value in statuses)
    return "\n".join(
        [
            f"{begin:%Y-%m-%d %H:%M:%S}-{finish:%H:%M:%S} UTC  {hits:,} hits  "
            f"{_human_bytes(size)}  {classes}  errors {error_rate:.1%}",
            f"  sections  {_shown(sections, '{:,}'.format)}",
            f"  hosts     {_shown(hosts_by_hits, '{:,}'.format)}   ({distinct_hosts:,} distinct)",
            f"  bytes     {_shown(hosts_by_bytes, _human_bytes)}",
            f"  users     {_shown(users, '{:,}'.format)}   ({distinct_users:,} distinct)",
        ]
    )


def format_alert(kind: str, at: int, hits: int) -> str:
    if kind == "alert":
        return f"High traffic generated an alert - hits = {hits}, triggered at {_iso(at)}"
    return f"Recovered from high traffic alert - hits = {hits}, recovered at {_iso(at)}"


# --- The job -------------------------------------------------------------------------------------
def _top(counts: dict[str, int], n: int) -> list[tuple[str, int]]:
    """The ``n`` largest counts, ties broken by name (as ``transforms.traffic._top``)."""
    ranked = sorted(counts.items())
    ranked.sort(key=lambda item: item[1], reverse=True)
    return ranked[:n]


def window_stats(start: int, size: int, acc: list, top: int) -> tuple:
    """``(start, end, hits, bytes, sections, status classes, error rate, hosts by hits, hosts by
    bytes, users, distinct hosts, distinct users)`` of one window's accumulator."""
    hits, total_bytes, sections, statuses, host_hits, host_bytes, users = acc
    errors = statuses.get("4xx", 0) + statuses.get("5xx", 0)
    return (
        start,
        start + size,
        hits,
        total_bytes,
        _top(sections, top),
        sorted(statuses.items()),
        errors / hits if hits else 0.0,
        _top(host_hits, top),
        _top(host_bytes, top),
        _top(users, top),
        len(host_hits),
        len(users),
    )


def alert_changes(
    per_second: dict[int, int], threshold: float, window: int
) -> list[tuple[str, int, int, float]]:
    """DESIGN.md's rule at every second from the first to the last event second:
    ``(kind, at, hits, average)`` for each change of state."""
    if not per_second:
        return []
    changes = []
    running, active = 0, False
    get = per_second.get
    for t in range(min(per_second), max(per_second) + 1):
        running += get(t, 0) - get(t - window, 0)
        average = running / window
        if not active and average > threshold:
            active = True
            changes.append(("alert", t, running, average))
        elif active and average <= threshold:
            active = False
            changes.append(("recover", t, running, average))
    return changes


def _scan(
    path: str, fmt: str, stats_window: int, windows: dict, per_second: dict, dead_out
) -> tuple[int, int, int]:
    """Reads one file into the window accumulators and per-second counts, writing its dead
    letters; returns its (lines, records, dead letters)."""
    parse_csv, parse_clf = access_log.parse_csv_line, access_log.parse_clf_line
    bad_line = access_log.BadLine
    parse = parse_csv if fmt == "csv" else parse_clf
    classes = _STATUS_CLASSES
    number = records = dead_letters = 0
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as bad:
                reason = f"{UNDECODABLE}: invalid UTF-8 at byte {bad.start}"
                raw_text = truncate_raw(raw.rstrip(b"\r\n"))
                dead_out.write(dead_letter_json(path, number, reason, raw_text) + b"\n")
                dead_letters += 1
                continue
            if fmt == "auto":
                parse = parse_csv if text.lstrip().startswith('"') else parse_clf
            try:
                record = parse(text)
            except bad_line as bad:
                reason, raw_text = str(bad.args[0]), truncate_raw(text)
                dead_out.write(dead_letter_json(path, number, reason, raw_text) + b"\n")
                dead_letters += 1
                continue
            if record is None:
                continue
            records += 1
            host, _, user, second, _, _, section, _, status, size = record[:10]
            per_second[second] = per_second.get(second, 0) + 1
            start = second - second % stats_window
            acc = windows.get(start)
            if acc is None:
                acc = windows[start] = [0, 0, {}, {}, {}, {}, {}]
            acc[0] += 1
            acc[1] += size
            sections, statuses, host_hits, host_bytes, users = acc[2:]
            sections[section] = sections.get(section, 0) + 1
            status_class = classes.get(status // 100) or f"{status // 100}xx"
            statuses[status_class] = statuses.get(status_class, 0) + 1
            host_hits[host] = host_hits.get(host, 0) + 1
            host_bytes[host] = host_bytes.get(host, 0) + size
            users[user] = users.get(user, 0) + 1
    return number, records, dead_letters


def monitor_files(
    paths: Iterable[str],
    output_dir: str,
    *,
    fmt: str = "auto",
    threshold: float = 10.0,
    stats_window: int = 10,
    alert_window: int = 120,
    top: int = 5,
    out: TextIO | None = None,
) -> dict[str, int]:
    """Monitors ``paths`` (in order): writes the three output files under ``output_dir``, prints
    the stats blocks and alert lines on ``out`` (stdout by default); returns the counts."""
    if fmt not in ("auto", "csv", "clf"):
        raise ValueError(f"format must be auto, csv or clf, not {fmt!r}")
    out = sys.stdout if out is None else out
    os.makedirs(output_dir, exist_ok=True)
    windows: dict[int, list] = {}
    per_second: dict[int, int] = {}
    lines = records = dead_letters = 0
    with open(os.path.join(output_dir, "dead_letters.jsonl"), "wb") as dead_out:
        for path in paths:
            counts = _scan(path, fmt, stats_window, windows, per_second, dead_out)
            lines += counts[0]
            records += counts[1]
            dead_letters += counts[2]

    with open(os.path.join(output_dir, "stats.jsonl"), "wb") as stats_out:
        for start in sorted(windows):
            stats = window_stats(start, stats_window, windows[start], top)
            stats_out.write(stats_json(stats) + b"\n")
            print(format_stats(stats), file=out)
    changes = alert_changes(per_second, threshold, alert_window)
    with open(os.path.join(output_dir, "alerts.jsonl"), "wb") as alerts_out:
        for kind, at, hits, average in changes:
            alerts_out.write(alert_json(kind, at, hits, average) + b"\n")
            print(format_alert(kind, at, hits), file=out)
    alerts = sum(kind == "alert" for kind, *_ in changes)
    return {
        "lines": lines,
        "records": records,
        "stats_windows": len(windows),
        "alerts": alerts,
        "recoveries": len(changes) - alerts,
        "dead_letters": dead_letters,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="plain_monitor.py", description=__doc__.split("\n")[0])
    parser.add_argument("--input", required=True, help="the access log(s): a path or a glob")
    parser.add_argument("--output", required=True, help="directory for the outputs")
    parser.add_argument("--format", default="auto", choices=("auto", "csv", "clf"))
    parser.add_argument("--threshold", type=float, default=10.0)
    parser.add_argument("--stats_window", type=int, default=10)
    parser.add_argument("--alert_window", type=int, default=120)
    parser.add_argument("--top", type=int, default=5)
    args = parser.parse_args(argv)
    for flag in ("stats_window", "alert_window", "top"):
        if getattr(args, flag) <= 0:
            parser.error(f"--{flag} must be positive")
    paths = sorted(glob.glob(args.input))
    if not paths:
        print(f"plain_monitor.py: --input {args.input!r} matches no file", file=sys.stderr)
        return 2
    started = time.perf_counter()
    counts = monitor_files(
        paths,
        args.output,
        fmt=args.format,
        threshold=args.threshold,
        stats_window=args.stats_window,
        alert_window=args.alert_window,
        top=args.top,
    )
    seconds = time.perf_counter() - started
    print(
        f"summary: {counts['lines']:,} lines read, {counts['records']:,} requests, "
        f"{counts['stats_windows']:,} stats windows, {counts['alerts']:,} alerts, "
        f"{counts['recoveries']:,} recoveries, {counts['dead_letters']:,} dead letters, "
        f"{seconds:.2f} s; outputs: {args.output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
