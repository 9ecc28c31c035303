"""The monitor job in plain Python (no Beam): the benchmark's baseline for ``beam-tally monitor``.

    python benchmarks/plain_monitor.py --input FILE --output DIR [--format auto|csv|clf]
        [--threshold 10] [--stats_window 10] [--alert_window 120] [--top 5]

Does the same job as ``beam-tally monitor`` on a bounded input and writes the same files under
DIR: ``stats.jsonl`` (one line per stats window with traffic, in window order), ``alerts.jsonl``
(each change of the high-traffic state) and ``dead_letters.jsonl`` (undecodable and unparseable
lines, with the pipeline's reasons). It prints a block per stats window and the alert and
recovery lines of docs/design.md on stdout, then a summary.

What it shares with the pipeline, and what it does itself:

* Parsing is its own (``LineParser``, below), written from the format rules of
  ``transforms/access_log.py``'s docstring without its code: one regular expression for the
  usual shape of each format, and for any other line a field-by-field check that names the
  reason (the reason codes are the pipeline's). So the benchmark's comparison of outputs also
  checks the project's parser, and this script's start-up stays Python's and orjson's.
* Lines are read as bytes, decoded as UTF-8 and stripped of CR/LF as ``ReadLinesFn`` does; the
  format ``auto`` is decided per line by the leading quote of a CSV line, as the pipeline does.
* The stats per ``--stats_window`` window (aligned to epoch multiples) are computed here, with
  the definitions of ``transforms/traffic.py``'s ``TrafficStatsCombineFn``: hits, bytes, top
  sections, status classes, error rate (4xx and 5xx over hits), top hosts by hits and by bytes,
  top users, distinct hosts and users; top lists by count descending, ties by name.
* The alert rule is docs/design.md's, written here: at every whole second ``t`` from the first
  to the last event second, ``hits(t)`` counts the requests in ``[t - window + 1, t]``; an average
  ``hits(t) / window`` above ``--threshold`` raises an alert, at or below it an active alert
  recovers. A bounded input is complete before the rule runs, so no line is late (the
  pipeline's batch run evaluates each second after all input too).
* The JSON lines are those of ``transforms.records`` (``stats_json``, ``alert_json``,
  ``dead_letter_json``), rewritten with orjson for the reason above.

Files are processed in sorted path order. (Unlike the pipeline it does not decompress ``.gz``.)
``monitor_files`` is the entry point for in-process timing.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import sys
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TextIO

import orjson

RAW_LIMIT = 200
UNDECODABLE = "undecodable bytes"
_STATUS_CLASSES = {n: f"{n}xx" for n in range(1, 6)}
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


class BadLine(Exception):
    """A line that does not parse; ``args[0]`` is its reason code."""


_CTRL = "\x00-\x08\x0a-\x1f\x7f-\x9f"  # C0 but tab, DEL, C1
_CONTROL_CHARS = re.compile(f"[{_CTRL}]")
_NAME = f"[^\\s{_CTRL}\ufeff]+"
_QUOTED = f'[^"{_CTRL}]*'
_METHOD = r"[A-Za-z0-9!#$%&'*+.^_`|~-]+"
_PROTOCOL = r"HTTP/[0-9]+(?:\.[0-9]+)?"
_REQUEST = f'"({_METHOD}) ([^\\s"{_CTRL}]+)(?: ({_PROTOCOL}))?"'
_CLF_DATE = r"[0-9]{2}/[A-Za-z]{3}/[0-9]{4}:[0-9]{2}:[0-9]{2}:[0-9]{2} [+-][0-9]{4}"
CSV_USUAL = re.compile(
    f'"({_QUOTED})","{_QUOTED}","({_QUOTED})",([0-9]{{1,12}}),{_REQUEST},([1-5][0-9][0-9]),'
    r"([0-9]{1,18})"
)
CLF_USUAL = re.compile(
    f"({_NAME}) {_NAME} ({_NAME}) \\[({_CLF_DATE})\\] {_REQUEST} ([1-5][0-9][0-9]) "
    f"([0-9]{{1,18}}|-)(?:[ \\t][^{_CTRL}]*)?"
)
# The other lines, split by the rules: CSV fields quoted ("" for a quote) or bare, with blanks
# around; CLF's request runs to the first quote followed by a blank or the end.
_CSV_FIELD = re.compile(r'(?:[ \t]*"((?:[^"]|"")*)"[ \t]*|([^",]*))(,|\Z)')
_CLF_SHAPE = re.compile(r'(\S+) (\S+) (\S+) \[([^\[\]]*)\] "(.*?)"(?:[ \t](.*))?')
_CLF_LIKE = re.compile(r'[^\[]*\[[^\[\]]*\] "')
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*")
MAX_TIMESTAMP = 253402300799  # 9999-12-31T23:59:59Z
HEADER = ["remotehost", "rfc931", "authuser", "date", "request", "status", "bytes"]


def section_of(target: str) -> str:
    """A path up to its second ``/``, without query or fragment; an absolute URL's path (``/``
    if none); another target up to its first ``/``, ``?`` or ``#`` (``/`` if nothing)."""
    scheme = _SCHEME.match(target)
    if scheme is not None:
        target = target[scheme.end() :]
        if not target.startswith("/"):
            return "/"
    if target.startswith("/"):
        return "/" + re.split("[?#]", target, maxsplit=1)[0].split("/")[1]
    return re.split("[/?#]", target, maxsplit=1)[0] or "/"


class LineParser:
    """``parse(text)``: ``(host, user, timestamp, section, status, bytes)`` of one line,
    ``None`` for a blank line or the CSV header, ``BadLine(reason code)`` otherwise."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self.sections: dict[str, str] = {}
        self.times: dict[str, int] = {}

    def section(self, target: str) -> str:
        section = self.sections.get(target)
        if section is None:
            section = self.sections[target] = section_of(target)
        return section

    def clf_time(self, text: str) -> int:
        epoch = self.times.get(text)
        if epoch is None:
            if re.fullmatch(_CLF_DATE, text) is None:
                raise BadLine("bad date")
            try:
                when = datetime.strptime(text, "%d/%b/%Y:%H:%M:%S %z")
            except ValueError:
                raise BadLine("bad date") from None
            epoch = int(when.timestamp())
            if not 0 <= epoch <= MAX_TIMESTAMP:
                raise BadLine("bad date")
            self.times[text] = epoch
        return epoch

    def parse(self, text: str, fmt: str | None = None):
        if text.startswith("\ufeff"):
            text = text[1:]
        if (fmt or self.fmt) == "csv":
            usual = CSV_USUAL.fullmatch(text)
            if usual is None:
                return self._csv(text)
            host, user, date, _, target, _, status, size = usual.groups()
            timestamp = int(date)
            if timestamp > MAX_TIMESTAMP:
                raise BadLine("bad date")
        else:
            usual = CLF_USUAL.fullmatch(text)
            if usual is None:
                return self._clf(text)
            host, user, date, _, target, _, status, size = usual.groups()
            timestamp = self.clf_time(date)
        bytes_ = 0 if size == "-" else int(size)
        return host, user, timestamp, self.section(target), int(status), bytes_

    @staticmethod
    def _clean(text: str) -> str:
        text = text.strip(" \t\r\n")
        if text.startswith("\ufeff"):
            text = text[1:].strip(" \t\r\n")
        if _CONTROL_CHARS.search(text):
            raise BadLine("control characters")
        return text

    def _csv(self, text: str):
        text = self._clean(text)
        if not text:
            return None
        fields, position = [], 0
        while True:
            field = _CSV_FIELD.match(text, position)
            if field is None:
                raise BadLine("unparseable line")
            quoted, bare, comma = field.groups()
            fields.append(quoted.replace('""', '"') if quoted is not None else bare.strip(" \t"))
            if not comma:
                break
            position = field.end()
        if len(fields) != 7:
            raise BadLine("wrong field count")
        if [field.strip(" \t").lower() for field in fields] == HEADER:
            return None
        host, _, user, date, request, status, size = fields
        date = date.strip(" \t")
        if not date.isdigit() or not date.isascii() or int(date) > MAX_TIMESTAMP:
            raise BadLine("bad date")
        return self._rest(host, user, int(date), request, status, size)

    def _clf(self, text: str):
        text = self._clean(text)
        if not text:
            return None
        shape = _CLF_SHAPE.fullmatch(text)
        if shape is None:
            like = _CLF_LIKE.match(text) is not None
            raise BadLine(
                "wrong field count"
                if like and len(text.partition("[")[0].split()) != 3
                else "unparseable line"
            )
        host, _, user, date, request, tail = shape.groups()
        rest = (tail or "").split()
        if len(rest) < 2:
            raise BadLine("wrong field count")
        return self._rest(host, user, self.clf_time(date), request, rest[0], rest[1])

    def _rest(self, host, user, timestamp, request, status, size):
        parts = request.split(" ")
        if len(parts) not in (2, 3) or (
            len(parts) == 3 and re.fullmatch(_PROTOCOL, parts[2]) is None
        ):
            raise BadLine("bad request")
        if re.fullmatch(_METHOD, parts[0]) is None or re.fullmatch(r"\S+", parts[1]) is None:
            raise BadLine("bad request")
        status = status.strip(" \t")
        if re.fullmatch("[1-5][0-9][0-9]", status) is None:
            raise BadLine("bad status")
        size = size.strip(" \t")
        if size != "-" and (re.fullmatch("[0-9]{1,18}", size) is None):
            raise BadLine("bad bytes")
        bytes_ = 0 if size == "-" else int(size)
        return host, user, timestamp, self.section(parts[1]), int(status), bytes_


# --- JSON lines and console text, as transforms.records and beam_tally.console write them --------
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
    """docs/design.md's rule at every second from the first to the last event second:
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
    parser = LineParser("csv" if fmt == "csv" else "clf")
    parse = parser.parse
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
            line_fmt = None
            if fmt == "auto":
                line_fmt = "csv" if text.lstrip(" \t\ufeff").startswith('"') else "clf"
            try:
                record = parse(text, line_fmt)
            except BadLine as bad:
                reason, raw_text = str(bad.args[0]), truncate_raw(text)
                dead_out.write(dead_letter_json(path, number, reason, raw_text) + b"\n")
                dead_letters += 1
                continue
            if record is None:
                continue
            records += 1
            host, user, second, section, status, size = record
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
