"""The README's screenshots of both reports: run_local.sh's sample data, each job, Chromium.

    .venv/bin/python scripts/report_screenshots.py [--out docs/img]

Generates the same samples as run_local.sh (into a temporary folder), runs ``beam-tally tally``
and ``beam-tally monitor`` over them, opens each report in headless Chromium
(``beam_tally.report.browser``), checks it loaded cleanly and is not blank, and saves the top
of each page as a small palette PNG.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from beam_tally.report.browser import chromium, drawn_fraction, open_report  # noqa: E402

HEIGHT = 1500  # the top of each page: its totals and first charts


def beam_tally(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "beam_tally", *args], check=True, capture_output=True)


def small_png(png: bytes) -> bytes:
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=128)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "img"))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        logs, access = os.path.join(work, "logs"), os.path.join(work, "access.csv")
        beam_tally(
            *("generate", "tally", "--out", logs, "--files", "12", "--logs_per_file", "2000"),
            *("--emails", "300", "--bad_fraction", "0.002", "--bad_files", "2"),
            *("--empty_files", "1", "--seed", "7"),
        )
        beam_tally(
            *("generate", "access", "--out", access, "--format", "csv", "--seconds", "900"),
            *("--rate", "6", "--burst", "200:150:25", "--disorder", "20"),
            *("--bad_fraction", "0.01", "--seed", "1"),
        )
        tally, monitor = os.path.join(work, "tally"), os.path.join(work, "monitor")
        beam_tally("tally", "--input", os.path.join(logs, "logs_*.json"), "--output", tally)
        beam_tally("monitor", "--input", access, "--output", monitor)
        with chromium() as browser:
            for name, out in (("tally_report.png", tally), ("monitor_report.png", monitor)):
                opened = open_report(browser, os.path.join(out, "report.html"))
                if opened.errors or opened.requests:
                    raise SystemExit(f"{name}: {opened.errors or opened.requests}")
                shot = opened.page.screenshot(
                    full_page=True, clip={"x": 0, "y": 0, "width": 1280, "height": HEIGHT}
                )
                drawn, colours = drawn_fraction(shot)
                if drawn < 0.05 or colours < 50:
                    raise SystemExit(f"{name}: the screenshot looks blank")
                path = os.path.join(args.out, name)
                with open(path, "wb") as handle:
                    handle.write(small_png(shot))
                print(f"{path}: {os.path.getsize(path) / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
