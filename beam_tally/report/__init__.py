"""``report.html``: a self-contained visual report of a run, built from its output files.

``data`` reads the outputs, ``charts`` turns them into figures and boxes, ``page`` escapes and
assembles the page around plotly.js (inlined from the installed ``plotly`` package), and this
module writes it: at the end of a batch run (``write_report``), every few seconds while a live
run goes (``refreshing``, on a thread of the launcher: the pipeline never waits for it), and
from a finished run's directory (``beam-tally report DIR``, in ``command``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import orjson

from beam_tally import COMMAND_PROCESS
from beam_tally.report import charts, data
from beam_tally.report.page import DATA_BLOCK, PlotlyMissing, plotly_js, render_page, text
from beam_tally.terminal import escape_control

REPORT = "report.html"
REFRESH_SECONDS = 5.0  # a live page reloads itself this often
REBUILD_SECONDS = 3.0  # and a live run rewrites it at most this often
BUSY_SHARE = 4  # waiting at least 4 times as long as the last rebuild took
JOBS = ("monitor", "tally")

_log = logging.getLogger(__name__)


def _join(output: str, name: str) -> str:
    return f"{output.rstrip('/')}/{name}" if "://" in output else os.path.join(output, name)


def report_path(output: str) -> str:
    return _join(output, REPORT)


def build_html(output: str, job: str, params: dict, live: bool = False, pending=None) -> str:
    """The page of ``job``'s outputs under ``output`` (and of a live run's open rolls,
    ``pending``: see ``data``); ``live`` pages reload themselves."""
    library = plotly_js()
    if job == "monitor":
        stats_window = params.get("stats_window")
        read = data.read_monitor(output, int(stats_window) if stats_window else None, pending)
        subtitle, sections, figures = charts.monitor_report(read, params)
        title = "beam-tally monitor"
    elif job == "tally":
        read = data.read_tally(output, pending)
        subtitle, sections, figures = charts.tally_report(read, params)
        title = "beam-tally tally"
    else:
        raise ValueError(f"job must be one of {JOBS}, not {job!r}")
    source = params.get("source") or params.get("input")
    where = f"{text(source)} \u2192 {text(output)}" if source else text(output)
    state = "live, updated" if live else "written"
    subtitle = (
        f"{subtitle}<br>{where}<br>{state} {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}"
    )
    return render_page(
        title=f"{title} report",
        subtitle=subtitle,
        sections=sections,
        figures=figures,
        library=library,
        refresh=REFRESH_SECONDS if live else None,
        params={"job": job, **params},
    )


def _write_atomically(path: str, content: bytes) -> None:
    """``content`` at ``path`` under a temporary name first, then renamed over it: a browser
    reloading the page reads the old file or the new one, never half of one."""
    directory, name = os.path.split(path)
    temporary = os.path.join(directory, f".{name}.{uuid.uuid4().hex}.tmp")
    if "://" in path:
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.create(temporary) as handle:
            handle.write(content)
        FileSystems.rename([temporary], [path])
        return
    try:
        with open(temporary, "wb") as handle:
            handle.write(content)
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)


def load_params(output: str) -> dict:
    """The job and parameters an earlier ``report.html`` under ``output`` was built with (its
    data block holds them), or ``{}``."""
    try:
        page = data._read_bytes(report_path(output)).decode("utf-8", errors="replace")
    except FileNotFoundError:
        return {}
    found = DATA_BLOCK.search(page)
    try:
        return orjson.loads(found[1]).get("params", {}) if found else {}
    except orjson.JSONDecodeError:
        return {}


def write_report(output: str, job: str, params: dict, live: bool = False, pending=None) -> str:
    """Writes ``report.html`` under ``output``; returns its path. Raises ``PlotlyMissing``."""
    page = build_html(output, job, params, live, pending)
    path = report_path(output)
    _write_atomically(path, page.encode("utf-8"))
    return path


def report_line(output: str, job: str, params: dict) -> str:
    """Writes the report of a finished run; returns the line that says where it is, or why
    there is none (the jobs' outputs do not depend on it)."""
    try:
        return f"report: {escape_control(write_report(output, job, params))}"
    except PlotlyMissing as missing:
        return f"report: not written ({missing})"


REPORT_TIMEOUT = 60  # seconds for a background report before this process writes it itself


def report_line_later(output: str, job: str, params: dict, fork: bool = True) -> Callable[..., str]:
    """``report_line`` started now, its line given by the function returned, which waits for
    it. Where allowed, the report is written by a forked child while this process goes on
    (printing the console: the report reads every output back and draws it, about a second
    for a 3.3M-line monitor run, and the second core is then idle): only in the
    ``beam-tally`` command's own process (``COMMAND_PROCESS``), not in a test's. If the
    fork fails, the child fails, or it takes over ``REPORT_TIMEOUT`` seconds (it is then
    killed), this process writes the report itself. Not with ``fork`` False (a live run,
    whose threads may still be stopping) nor for a remote ``output`` (the child would share
    this process's file-system clients): the report is then written before this returns.
    The caller calls the function returned with ``cancel=True`` if it fails before it wants
    the line, so that no child outlives it."""
    if not (fork and COMMAND_PROCESS["own"] and hasattr(os, "fork")) or "://" in output:
        line = report_line(output, job, params)
        return lambda cancel=False: line
    sys.stdout.flush()
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(read_end)
        os.close(write_end)
        line = report_line(output, job, params)
        return lambda cancel=False: line
    if pid == 0:  # the child: the report, its line down the pipe, and out (no exit handlers)
        code = 1
        try:
            os.close(read_end)
            quiet = os.open(os.devnull, os.O_RDWR)  # never holding the caller's pipes open
            for fd in (0, 1, 2):
                os.dup2(quiet, fd)
            os.write(write_end, report_line(output, job, params).encode("utf-8"))
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)

    def wait(cancel: bool = False) -> str:
        """The report's line; with ``cancel`` (this process failed meanwhile), the child is
        stopped and nothing written here."""
        deadline = time.monotonic() + (0 if cancel else REPORT_TIMEOUT)
        status = None
        while status is None:
            done, code = os.waitpid(pid, os.WNOHANG)
            if done:
                status = code
            elif time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                status = -1
            else:
                time.sleep(0.01)
        with os.fdopen(read_end, "rb") as pipe:
            line = pipe.read().decode("utf-8", errors="replace")
        if cancel:
            return ""
        return line if status == 0 and line else report_line(output, job, params)

    return wait


class LiveReport:
    """Rewrites a live run's report from its outputs, every ``interval`` seconds at most and
    only when a part was added, on a daemon thread of the launcher process. A rebuild reads
    every output so far, so the wait after one is also at least ``BUSY_SHARE`` times as long as
    it took: the thread never takes more than about a fifth of a core from the run."""

    def __init__(self, output: str, job: str, params: dict, interval: float = REBUILD_SECONDS):
        self.output, self.job, self.params, self.interval = output, job, params, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="live-report", daemon=True)
        self._failed: set[str] = set()
        self.written = 0

    def start(self) -> LiveReport:
        self._thread.start()
        return self

    def _loop(self) -> None:
        from beam_tally.io.stream import LiveFiles

        seen, wait = None, self.interval
        while not self._stop.wait(wait):
            try:
                pending = LiveFiles.open_rolls(self.output)  # before the parts are listed
                signature = data.outputs_signature(self.output, pending)
                if signature != seen:
                    started = time.monotonic()
                    write_report(self.output, self.job, self.params, live=True, pending=pending)
                    seen = signature
                    self.written += 1
                    wait = max(self.interval, BUSY_SHARE * (time.monotonic() - started))
            except FileNotFoundError:  # a roll renamed into place while read: next time
                continue
            except Exception as err:  # a report never stops the run: say it once, go on
                message = f"{type(err).__name__}: {err}"
                if message not in self._failed:
                    self._failed.add(message)
                    print(f"report.html not refreshed: {escape_control(message)}", file=sys.stderr)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


@contextlib.contextmanager
def refreshing(output: str, job: str, params: dict) -> Iterator[LiveReport]:
    """While the block runs, ``output``'s report follows its outputs (``LiveReport``)."""
    live = LiveReport(output, job, params).start()
    try:
        yield live
    finally:
        live.stop()
