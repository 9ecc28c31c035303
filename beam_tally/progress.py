"""The progress line of a batch run on a terminal: files and bytes read, lines per second.

The readers (``io.ReadFileFn``, ``io.ReadLinesFn``) call ``report`` once per block of 4 MiB
and once per file, never per line, so the hot path pays one global lookup per block. ``report``
is a no-op unless the launcher in the same process opened a ``display`` (a batch run on the
DirectRunner's in-process engine); on worker processes or a cluster it stays a no-op and the
line shows the elapsed time only. The line is drawn by ``rich`` on stderr; rich also moves what
the run prints on stdout (the tally's updates) above the line.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time

from beam_tally.io.sources import compression_of, match_input

_display: _Display | None = None  # the open display of this process, if any


def report(files: int = 0, size: int = 0, lines: int = 0) -> None:
    """Counts ``files`` finished, ``size`` bytes of content and ``lines`` read."""
    display = _display
    if display is not None:
        display.add(files, size, lines)


def enabled(mode: str, stdout=None, stderr=None) -> bool:
    """``--progress on``, or ``auto`` with stdout and stderr both terminals."""
    if mode == "on":
        return True
    if mode == "off":
        return False
    out, err = stdout or sys.stdout, stderr or sys.stderr
    return bool(out.isatty() and err.isatty())


class _Display:
    def __init__(self, progress, task, files: int) -> None:
        self.progress = progress
        self.task = task
        self.files_total = files
        self.lock = threading.Lock()
        self.files = self.size = self.lines = 0
        self.started = time.monotonic()

    def add(self, files: int, size: int, lines: int) -> None:
        with self.lock:
            self.files += files
            self.size += size
            self.lines += lines
            elapsed = max(time.monotonic() - self.started, 1e-6)
            self.progress.update(
                self.task,
                completed=self.size,
                files=f"{self.files:,}/{self.files_total:,} files",
                rate=f"{self.lines / elapsed:,.0f} lines/s" if self.lines else "",
            )


def _inputs(pattern: str | None) -> tuple[int, int | None]:
    """The number of files ``pattern`` matches and their bytes (None when one is compressed:
    the content read is then larger than the files)."""
    if not pattern or "://" in pattern:
        return 0, None
    files = match_input(pattern)[0]
    if any(compression_of(path) for path in files):
        return len(files), None
    total = 0
    for path in files:
        with contextlib.suppress(OSError):
            total += os.path.getsize(path)
    return len(files), total


@contextlib.contextmanager
def display(mode: str, pattern: str | None):
    """Shows the progress line on stderr while the block runs, when ``enabled(mode)``."""
    global _display  # noqa: PLW0603 - the one display of this process, opened by its launcher
    if not enabled(mode):
        yield
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TransferSpeedColumn,
    )

    files, total = _inputs(pattern)
    progress = Progress(
        TextColumn("reading"),
        BarColumn(),
        TextColumn("{task.fields[files]}"),
        DownloadColumn(),
        TransferSpeedColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=Console(file=sys.stderr),
        transient=True,
        refresh_per_second=4,
    )
    task = progress.add_task("read", total=total, files=f"0/{files:,} files", rate="")
    _display = _Display(progress, task, files)
    try:
        with progress:
            yield
    finally:
        _display = None
