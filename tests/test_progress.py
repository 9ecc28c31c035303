"""Progress on a terminal: the line of a batch run under a pseudo-terminal (files, bytes, lines
per second), nothing when not a terminal or with --progress off, and the readers' counts equal
the files' sizes."""

from __future__ import annotations

import contextlib
import os
import pty
import re
import select
import subprocess
import sys
import time

import pytest

from beam_tally import progress
from beam_tally.generate.access import generate_access
from beam_tally.generate.tally import generate_tally

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run_on_a_terminal(*argv: str, timeout: float = 120) -> tuple[int, str]:
    """Runs the CLI with stdout and stderr on a pseudo-terminal; returns its status and what it
    wrote there, escape sequences removed."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "beam_tally", *argv],
        stdout=follower,
        stderr=follower,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "COLUMNS": "200", "TERM": "xterm"},
    )
    os.close(follower)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    data = os.read(leader, 65536)
                except OSError:  # the terminal closed: the process ended
                    break
                if not data:
                    break
                chunks.append(data)
            elif process.poll() is not None:
                break
        code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        os.close(leader)
    return code, ANSI.sub("", b"".join(chunks).decode("utf-8", "replace"))


@pytest.fixture(scope="module")
def access_log(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("progress") / "access.csv")
    generate_access(path, fmt="csv", seconds=3000, rate=20, seed=3)
    return path


def test_a_batch_run_on_a_terminal_shows_files_bytes_and_lines_per_second(access_log, tmp_path):
    code, text = run_on_a_terminal("monitor", "--input", access_log, "--output", str(tmp_path))
    assert code == 0, text
    assert "reading" in text and "/1 files" in text, text[-2000:]
    assert re.search(r"[\d,]+ lines/s", text), text[-2000:]
    assert "summary: " in text


def test_no_progress_with_progress_off_or_when_not_a_terminal(access_log, tmp_path):
    argv = ("monitor", "--input", access_log, "--output", str(tmp_path), "--console", "summary")
    code, text = run_on_a_terminal(*argv, "--progress", "off")
    assert code == 0, text
    assert "reading" not in text and "lines/s" not in text
    piped = subprocess.run(
        [sys.executable, "-m", "beam_tally", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert piped.returncode == 0
    assert piped.stderr == "" and "lines/s" not in piped.stdout


class _Recorder:
    def __init__(self) -> None:
        self.files = self.size = self.lines = 0

    def add(self, files: int, size: int, lines: int) -> None:
        self.files += files
        self.size += size
        self.lines += lines


@contextlib.contextmanager
def recording():
    recorder = _Recorder()
    progress._display = recorder
    try:
        yield recorder
    finally:
        progress._display = None


def test_the_readers_report_every_file_and_byte(tmp_path, access_log, capsys):
    from beam_tally.cli import main

    generate_tally(str(tmp_path / "logs"), files=4, logs_per_file=300, emails=9, bad_files=1)
    files = sorted(os.listdir(tmp_path / "logs"))
    with recording() as seen:
        argv = ["--output", str(tmp_path / "o"), "--console", "summary", "--progress", "off"]
        assert main(["tally", "--input", str(tmp_path / "logs"), *argv]) == 0
    assert seen.files == len(files) == 5
    assert seen.size == sum(os.path.getsize(tmp_path / "logs" / name) for name in files)
    with recording() as seen:
        assert main(["monitor", "--input", access_log, *argv]) == 0
    with open(access_log, "rb") as handle:
        content = handle.read()
    assert (seen.files, seen.size, seen.lines) == (1, len(content), content.count(b"\n"))
    capsys.readouterr()


def test_enabled_follows_the_flag_and_the_terminals():
    class Stream:
        def __init__(self, tty: bool) -> None:
            self.tty = tty

        def isatty(self) -> bool:
            return self.tty

    assert progress.enabled("on", Stream(False), Stream(False))
    assert not progress.enabled("off", Stream(True), Stream(True))
    assert progress.enabled("auto", Stream(True), Stream(True))
    assert not progress.enabled("auto", Stream(True), Stream(False))
    assert not progress.enabled("auto", Stream(False), Stream(True))
