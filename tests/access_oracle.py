"""An independent reading of access logs and of the monitor's stats, for end-to-end tests.

Plain Python written from the rules of README and docs/design.md (its own regular expressions,
``datetime`` for CLF times, ``collections.Counter`` for the stats): it imports nothing of the
project, so a bug in the parser, the section rule or the stats shows as a difference.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime
from typing import NamedTuple

CSV_LINE = re.compile(r'^"([^"]*)","([^"]*)","([^"]*)",(\d+),"(\S+) (\S+) (\S+)",(\d{3}),(\d+)$')
CLF_LINE = re.compile(
    r'^(\S+) (\S+) (\S+) \[([^\]]+)\] "(\S+) (\S+) (\S+)" (\d{3}) (\d+|-)( "[^"]*" "[^"]*")?$'
)
CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*")


class Request(NamedTuple):
    source: str
    line: int  # 1-based line number in its file
    timestamp: int
    host: str
    user: str
    method: str
    target: str
    status: int
    bytes: int


def read_requests(path: str) -> tuple[list[Request], int]:
    """Every good line of a CSV or CLF access log as a ``Request``, in file order, and the
    number of bad lines (the CSV header and blank lines are neither)."""
    good, bad = [], 0
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                bad += 1
                continue
            if not text.strip() or text.startswith('"remotehost"'):
                continue
            csv_match, clf_match = CSV_LINE.match(text), CLF_LINE.match(text)
            match = csv_match or clf_match
            if CONTROL.search(text) or match is None or not 100 <= int(match[8]) <= 599:
                bad += 1
                continue
            if csv_match:
                timestamp = int(match[4])
            else:
                try:
                    when = datetime.strptime(match[4], "%d/%b/%Y:%H:%M:%S %z")
                except ValueError:  # e.g. 31/Feb
                    bad += 1
                    continue
                timestamp = int(when.timestamp())
            size = 0 if match[9] == "-" else int(match[9])
            good.append(
                Request(
                    path,
                    number,
                    timestamp,
                    match[1],
                    match[3],
                    match[5],
                    match[6],
                    int(match[8]),
                    size,
                )
            )
    return good, bad


def section(target: str) -> str:
    """The section of a request target, from the rule: a path up to its second ``/``, without
    its query string or fragment; an absolute URL's path (``/`` if none); any other target up
    to its first ``/``, ``?`` or ``#`` (``/`` if that leaves nothing)."""
    scheme = _SCHEME.match(target)
    if scheme is not None:
        target = target[scheme.end() :]
        if not target.startswith("/"):
            return "/"
    if target.startswith("/"):
        path = re.split("[?#]", target, maxsplit=1)[0]
        return "/" + path.split("/")[1]
    return re.split("[/?#]", target, maxsplit=1)[0] or "/"


def top(counts: Counter, n: int, name: str, value: str) -> list[dict]:
    """The ``n`` largest counts, largest first, ties by name in code-point order."""
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:n]
    return [{name: key, value: count} for key, count in ranked]


def window_stats(requests: list[Request], size: int = 10, n: int = 5) -> dict[int, dict]:
    """``{window start: the stats.jsonl row of that window}`` for every window with traffic."""
    windows: dict[int, list[Request]] = {}
    for request in requests:
        windows.setdefault(request.timestamp - request.timestamp % size, []).append(request)
    rows = {}
    for start, members in sorted(windows.items()):
        hits = len(members)
        classes = Counter(f"{r.status // 100}xx" for r in members)
        host_hits = Counter(r.host for r in members)
        host_bytes: Counter = Counter()
        for r in members:
            host_bytes[r.host] += r.bytes
        users = Counter(r.user for r in members)
        rows[start] = {
            "start": start,
            "end": start + size,
            "time": datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "hits": hits,
            "bytes": sum(r.bytes for r in members),
            "sections": top(Counter(section(r.target) for r in members), n, "section", "hits"),
            "status_classes": dict(sorted(classes.items())),
            "error_rate": (classes["4xx"] + classes["5xx"]) / hits,
            "hosts_by_hits": top(host_hits, n, "host", "hits"),
            "hosts_by_bytes": top(host_bytes, n, "host", "bytes"),
            "users": top(users, n, "user", "hits"),
            "distinct_hosts": len(host_hits),
            "distinct_users": len(users),
        }
    return rows


def ties_at_the_cut(counts: Counter, n: int) -> bool:
    """Whether the ``n``-th and the next largest count are equal (the tie-break decides)."""
    values = sorted(counts.values(), reverse=True)
    return len(values) > n and values[n - 1] == values[n]
