"""Helpers of the report tests: runs of the CLI on generated data, the page's data block read
back with the standard library, and what each chart should show, worked out in plain Python
from the input files (``access_oracle``, ``independent_tally``), not from the code under test."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter

from beam_tally.generate.access import generate_access
from beam_tally.generate.tally import generate_tally
from tests.access_oracle import Request, section, window_stats
from tests.test_alert_rule import reference_alerts

DEADLINE = 300
PAYLOADS = [
    "<script>window.__pwned=1</script>",
    "</script><script>window.__pwned=1</script>",
    '<img src=x onerror="window.__pwned=1" data-pwned=1>',
    "<b data-pwned=1>bold</b>",
    '<a href="javascript:window.__pwned=1" data-pwned=1>x</a>',
    "\u2028</script>\u2029<!--<script>",
    "&lt;i data-pwned=1&gt;entity&amp;",
]
"""Script injections: each would set ``window.__pwned`` or a ``data-pwned`` attribute if the
page took it for markup (the last one if it decoded entities twice)."""


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "beam_tally", *args],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def page_spec(path: str) -> dict:
    """The JSON of the page's ``report-data`` block, found and parsed independently."""
    with open(path, encoding="utf-8") as handle:
        page = handle.read()
    found = re.search(
        r'<script id="report-data" type="application/json">(.*?)</script>', page, re.S
    )
    assert found, "no data block"
    return json.loads(found[1])


def figure(spec: dict, figure_id: str) -> dict:
    (found,) = [f for f in spec["figures"] if f["id"] == figure_id]
    return found


def expected_periods(requests: list[Request], threshold: float, window: int) -> list[tuple]:
    """``(start, end or None)`` of each alert period of the reference rule."""
    periods: list[list] = []
    for kind, at, _ in reference_alerts([r.timestamp for r in requests], threshold, window):
        if kind == "alert":
            periods.append([at, None])
        else:
            periods[-1][1] = at
    return [tuple(p) for p in periods]


def expected_averages(requests: list[Request], window: int, size: int = 10) -> dict[int, float]:
    """{window end: requests in the alert window ending at the window's last second / window}"""
    per_second = Counter(r.timestamp for r in requests)
    ends = sorted(start + size for start in window_stats(requests, size))
    return {
        end: sum(per_second.get(t, 0) for t in range(end - window, end)) / window for end in ends
    }


def expected_top(requests: list[Request], key: str, n: int = 5) -> list[tuple[str, int]]:
    """The whole run's top ``n`` of a list, largest first, ties by name (the rule)."""
    counts: Counter = Counter()
    for r in requests:
        if key == "sections":
            counts[section(r.target)] += 1
        elif key == "hosts_by_hits":
            counts[r.host] += 1
        elif key == "hosts_by_bytes":
            counts[r.host] += r.bytes
        else:
            counts[r.user] += 1
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:n]


def dead_letter_reasons(out: str) -> Counter:
    reasons: Counter = Counter()
    for name in os.listdir(out):
        if name.startswith("dead_letters") and name.endswith(".jsonl"):
            with open(os.path.join(out, name), encoding="utf-8") as handle:
                for line in handle:
                    if line.strip():
                        reasons[json.loads(line)["reason"].split(":")[0]] += 1
    return reasons


def run_monitor(data) -> tuple[str, str, subprocess.CompletedProcess]:
    """The monitor over ten minutes of generated traffic with two bursts (two alerts)."""
    path = str(data / "access.csv")
    generate_access(
        path,
        fmt="csv",
        seconds=600,
        rate=4,
        bursts=[(120, 140, 22), (420, 60, 30)],
        disorder=10,
        bad_fraction=0.02,
        seed=11,
    )
    out = str(data / "out")
    return path, out, cli("monitor", "--input", path, "--output", out, "--threshold", "9")


def run_tally(data) -> tuple[str, str, subprocess.CompletedProcess]:
    logs = str(data / "logs")
    generate_tally(
        logs, files=6, logs_per_file=300, emails=40, bad_fraction=0.01, bad_files=1, seed=3
    )
    out = str(data / "out")
    pattern = os.path.join(logs, "*.json")
    return pattern, out, cli("tally", "--input", pattern, "--output", out)


def write_access_with_payloads(path: str) -> None:
    """A CSV access log whose host, ident, user and target of every line, and some bad lines,
    hold the payloads (a target has no whitespace)."""
    lines = ['"remotehost","rfc931","authuser","date","request","status","bytes"']
    start = 1549573860
    for n, payload in enumerate(PAYLOADS):
        field = payload.replace('"', '""')
        target = "/" + "".join(payload.replace('"', "").split())
        for i in range(n + 2):  # distinct counts: no tie decides an order
            lines.append(
                f'"{field}","{field}","{field}",{start + n * 7 + i},"GET {target} HTTP/1.0",200,12'
            )
        lines.append(f'"{field}","-","-",{start},"GET / HTTP/1.0",999,12')  # bad status
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        handle.write("\n".join(lines) + "\n")


def write_logs_with_payloads(directory: str) -> None:
    """Tally files named after payloads (without '/'), whose emails and messages are payloads,
    with a bad log each, and a malformed document holding one."""
    os.makedirs(directory, exist_ok=True)
    for n, payload in enumerate(PAYLOADS):
        name = "logs_" + payload.replace("/", "") + f"_{n}.json"
        logs = [{"id": str(i), "email": payload, "message": payload} for i in range(n + 1)]
        logs.append({"id": "bad", "email": None, "message": payload})
        with open(os.path.join(directory, name), "w", encoding="utf-8") as handle:
            json.dump({"logs": logs}, handle)
    with open(os.path.join(directory, "logs_broken.json"), "w", encoding="utf-8") as handle:
        handle.write('{"logs": [' + json.dumps(PAYLOADS[0]))


def run_hostile(data) -> tuple[str, str]:
    """Both jobs over inputs whose every field (and file name) holds the payloads."""
    access = str(data / "access <b data-pwned=1>.csv")
    write_access_with_payloads(access)
    monitor_out = str(data / "monitor")
    cli("monitor", "--input", access, "--output", monitor_out, "--top", "20")
    logs = str(data / "logs")
    write_logs_with_payloads(logs)
    tally_out = str(data / "tally")
    cli("tally", "--input", os.path.join(logs, "*.json"), "--output", tally_out)
    return monitor_out, tally_out
