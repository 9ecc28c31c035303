"""How big report.html is and how fast it opens, on a day of traffic (8,640 stats windows).

    .venv/bin/python benchmarks/bench_report.py [--loads 3] [--rate 1.5]

Generates a day of access-log traffic (``--rate`` lines/s, a burst every two hours that raises
an alert and recovers) under ``bench_data/report/``, runs ``beam-tally monitor`` over it, then
measures: the page's size (and plotly.js's share of it), the time ``beam-tally report DIR``
takes to rebuild it (the whole process) and a live run's rebuild takes (in process), and in
headless Chromium (``beam_tally.report.browser``)
the time from navigation to every chart drawn, for the first load in a new browser and for
``--loads`` more, and the time a zoom to one hour of the traffic chart takes to redraw.
In the browser: no console error, and a point per window in the traffic chart.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from beam_tally.generate.access import generate_access  # noqa: E402
from beam_tally.report import build_html  # noqa: E402
from beam_tally.report.browser import chromium, open_report  # noqa: E402
from beam_tally.report.page import plotly_js  # noqa: E402

DAY = 86_400


def beam_tally(*args: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "beam_tally", *args], check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loads", type=int, default=3)
    parser.add_argument("--rate", type=float, default=1.5)
    args = parser.parse_args()
    data = os.path.join(ROOT, "bench_data", "report")
    os.makedirs(data, exist_ok=True)
    access = os.path.join(data, f"day-{args.rate:g}.csv")
    if not os.path.exists(access):
        bursts = [(start, 300, 25.0) for start in range(3600, DAY, 7200)]
        written = generate_access(
            access, fmt="csv", seconds=DAY, rate=args.rate, bursts=bursts, seed=5
        )
        print(f"generated {access}: {written}")
    out = os.path.join(data, "out")
    run = beam_tally("monitor", "--input", access, "--output", out)
    page = os.path.join(out, "report.html")
    rebuild = beam_tally("report", out)
    builds = []  # what a live run's refresher thread does each time: read the outputs, render
    for _ in range(3):
        started = time.perf_counter()
        build_html(out, "monitor", {"threshold": 10.0, "alert_window": 120}, live=True)
        builds.append(time.perf_counter() - started)
    size = os.path.getsize(page)
    library = len(plotly_js().source.encode("utf-8"))
    with chromium() as browser:
        loads, starts = [], []
        for _ in range(1 + args.loads):
            opened = open_report(browser, page)
            assert opened.errors == [], opened.errors
            points = opened.page.evaluate(  # the points plotly.js computed and drew
                "document.getElementById('chart-traffic').calcdata[0].length"
            )
            loads.append(opened.ready_ms)
            starts.append(opened.started_ms)
            if len(loads) == 1 + args.loads:
                zoom = opened.page.evaluate(
                    "() => { const gd = document.getElementById('chart-traffic');"
                    " const x = gd.data[0].x, t0 = performance.now();"
                    " return window.Plotly.relayout(gd, {'xaxis.range': [x[0], x[0] + 3600e3]})"
                    ".then(() => performance.now() - t0); }"
                )
            opened.page.close()
    print(
        f"monitor over a day ({access}): {run:.1f} s, {points:,} points drawn"
        " (every window, and the last one's end)"
    )
    print(f"report.html: {size / 1e6:.2f} MB, of which plotly.js {library / 1e6:.2f} MB")
    print(f"beam-tally report DIR (whole process): {rebuild:.2f} s")
    print(f"one live rebuild in process (median of 3): {statistics.median(builds):.2f} s")
    print(f"first load in a new Chromium: {loads[0]:.0f} ms to every chart drawn")
    print(
        f"next {args.loads} loads: median {statistics.median(loads[1:]):.0f} ms, of which "
        f"{statistics.median(starts[1:]):.0f} ms reading the HTML and plotly.js"
    )
    print(f"zoom to one hour (relayout of the traffic chart): {zoom:.0f} ms")
    print(
        f"load average: {' '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} cores"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
