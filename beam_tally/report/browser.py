"""A report opened in a real browser: headless Chromium driven by Playwright.

For the browser tests, the report benchmark and the README's screenshots. The browser is the
system's (Debian's ``chromium``, or ``$BEAM_TALLY_CHROMIUM``), never one Playwright downloads;
it starts with a new, empty profile, every step has a timeout, and it is closed in a
``finally``. Playwright is a test dependency (``beam-tally[test]``), imported here only.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = os.environ.get("BEAM_TALLY_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",  # root here, in a container: Chromium's sandbox needs user namespaces
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STEP_TIMEOUT_MS = 30_000  # launch, navigation, waits, screenshots: each step at most this
VIEWPORT = {"width": 1280, "height": 900}


def chromium_path() -> str | None:
    return CHROMIUM if os.access(CHROMIUM, os.X_OK) else None


@contextlib.contextmanager
def chromium() -> Iterator[object]:
    """A Playwright ``BrowserContext`` of a fresh headless Chromium, closed at the end."""
    from playwright.sync_api import sync_playwright

    if chromium_path() is None:
        raise FileNotFoundError(f"no Chromium at {CHROMIUM}: apt-get install chromium")
    with (
        tempfile.TemporaryDirectory(prefix="beam-tally-chromium-") as profile,
        sync_playwright() as playwright,
    ):
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=FLAGS,
            timeout=STEP_TIMEOUT_MS,
            viewport=VIEWPORT,
            device_scale_factor=1,
        )
        try:
            context.set_default_timeout(STEP_TIMEOUT_MS)
            yield context
        finally:
            context.close()


@dataclass
class OpenedReport:
    """A report loaded in a page, with everything the page said while it loaded."""

    page: object
    errors: list[str] = field(default_factory=list)  # console errors and uncaught exceptions
    dialogs: list[str] = field(default_factory=list)  # alert(), confirm(), prompt()
    requests: list[str] = field(default_factory=list)  # anything but the file itself
    ready_ms: float = 0.0  # from navigation to every chart drawn (performance.now())
    started_ms: float = 0.0  # to the page's script starting: the HTML and plotly.js read


def open_report(context, path: str) -> OpenedReport:
    """Loads ``path`` in a new page of ``context`` and waits until every chart is drawn."""
    page = context.new_page()
    opened = OpenedReport(page)
    uri = Path(path).resolve().as_uri()

    def on_console(message) -> None:
        if message.type == "error":
            opened.errors.append(f"console: {message.text}")

    def on_dialog(dialog) -> None:
        opened.dialogs.append(dialog.message)
        dialog.dismiss()

    def on_request(request) -> None:
        if request.url != uri:
            opened.requests.append(request.url)

    page.on("console", on_console)
    page.on("pageerror", lambda error: opened.errors.append(f"uncaught: {error}"))
    page.on("dialog", on_dialog)
    page.on("request", on_request)
    page.goto(uri, wait_until="load")
    page.wait_for_function("window.__reportReady !== undefined")
    opened.ready_ms = page.evaluate("window.__reportReady")
    opened.started_ms = page.evaluate("window.__reportStarted")
    return opened


def drawn_fraction(png: bytes) -> tuple[float, int]:
    """The share of a screenshot's pixels unlike its most common colour (the background), and
    its number of distinct colours: a blank or unstyled page has almost none of either."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    colours = image.getcolors(maxcolors=image.width * image.height)
    total = image.width * image.height
    return 1 - max(count for count, _ in colours) / total, len(colours)
