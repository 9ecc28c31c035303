"""The command line a newcomer meets first: --version, every --help with each flag's default and
meaning, --input as a folder in every command, and produce --follow on a missing folder."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from importlib import metadata

import pytest

from beam_tally.cli import main
from beam_tally.generate.access import _access_parser
from beam_tally.generate.tally import _tally_parser
from beam_tally.live.produce import _parser as produce_parser
from beam_tally.options import (
    ConsoleOptions,
    IOOptions,
    MonitorOptions,
    StreamOptions,
    TallyOptions,
)


def cli(*argv: str, timeout: float = 120, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "beam_tally", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
    )


def test_version_names_the_installed_distributions():
    result = cli("--version")
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert line.startswith(f"beam-tally {metadata.version('beam-tally')} ")
    assert f"Apache Beam {metadata.version('apache-beam')}" in line


def _flags_of(*classes) -> list[argparse.Action]:
    parser = argparse.ArgumentParser(add_help=False)
    for cls in classes:
        cls._add_argparse_args(parser)
    return [a for a in parser._actions if a.help != argparse.SUPPRESS]


def _parser_flags(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and a.help != argparse.SUPPRESS]


def _entry(text: str, flag: str) -> str:
    """The help entry of ``flag``: its line and the indented lines that continue it."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"\s+{re.escape(flag)}\b", line))
    entry = [lines[start]]
    for line in lines[start + 1 :]:
        if not line.startswith(" " * 10) or line.strip().startswith("--"):
            break
        entry.append(line)
    return " ".join(" ".join(entry).split())


JOB_FLAGS = {
    "tally": (IOOptions, TallyOptions, ConsoleOptions, StreamOptions),
    "monitor": (IOOptions, MonitorOptions, ConsoleOptions, StreamOptions),
}


@pytest.mark.parametrize(
    ("argv", "actions"),
    [
        (["tally", "--help"], _flags_of(*JOB_FLAGS["tally"])),
        (["monitor", "--help"], _flags_of(*JOB_FLAGS["monitor"])),
        (["produce", "--help"], _parser_flags(produce_parser())),
        (["generate", "tally", "--help"], _parser_flags(_tally_parser())),
        (["generate", "access", "--help"], _parser_flags(_access_parser())),
    ],
    ids=["tally", "monitor", "produce", "generate-tally", "generate-access"],
)
def test_every_flag_is_listed_with_its_meaning_and_default(argv, actions, capsys):
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert actions
    for action in actions:
        flag = action.option_strings[0]
        entry = _entry(text, flag)
        meaning = entry.split(None, 2)[-1]
        assert len(meaning) > 10, (flag, entry)  # says what it does, not only its name
        if action.required:
            assert "(required)" in entry, entry
        elif isinstance(action, argparse._StoreTrueAction) or action.default in (None, []):
            pass  # a switch, or a flag whose absence its meaning states
        elif "(default: 1 GiB)" not in entry:  # --max_file_bytes says it in words
            assert f"(default: {action.default})" in entry, entry


def test_defaults_read_by_hand():
    texts = {}
    for argv in (["monitor", "--help"], ["tally", "--help"], ["generate", "tally", "--help"]):
        texts[argv[0] + argv[1]] = " ".join(cli(*argv).stdout.split())  # wrapping aside
    assert "seconds of event time per stats block (default: 10)" in texts["monitor--help"]
    assert "above R requests per second (default: 10.0)" in texts["monitor--help"]
    assert "on the console (default: 20)" in texts["tally--help"]
    assert "--roll_seconds S" in texts["tally--help"]
    assert "--files N good files (default: 10)" in texts["generatetally"]
    assert "--logs_per_file N logs in each good file (default: 1000)" in texts["generatetally"]


@pytest.mark.parametrize("argv", [["generate", "--help"], ["generate", "-h"]])
def test_generate_help_lists_what_it_generates(argv):
    result = cli(*argv)
    assert result.returncode == 0 and result.stderr == ""
    text = result.stdout
    assert "say what to generate" not in text
    assert re.search(r"^\s+tally\s+logs_xx\.json files for 'beam-tally tally'", text, re.M)
    assert re.search(r"^\s+access\s+one HTTP access log for 'beam-tally monitor'", text, re.M)
    assert "beam-tally generate tally --help" in text


def test_produce_follow_on_a_missing_folder_says_so_and_exits_2(tmp_path):
    cases = {
        "incoming/": "incoming",
        "incoming/*.json": "incoming",
        "incoming/sub/logs_*.json": "incoming/sub",
    }
    for given, folder in cases.items():
        result = cli(
            "produce", "tally", "--input", given, "--follow", "--serve", "127.0.0.1:0",
            timeout=60,
            cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 2, (given, result)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert f"the folder {str(tmp_path / folder)!r} does not exist" in lines[0], given


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_contract_is_in_the_repository_and_readme_points_only_inside_it():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        readme = handle.read()
    assert "../shared" not in readme and "shared/DESIGN" not in readme
    assert "(docs/design.md)" in readme
    with open(os.path.join(ROOT, "docs", "design.md"), encoding="utf-8") as handle:
        design = handle.read()
    for card in (
        "ReadFromText",
        "JSON parse",
        "FlatMap per log",
        "per-file CombinePerKey tally",
        "global CombineGlobally tally",
        "fixed windows for the stats",
        "sliding windows for the alert average",
        "producer and consumer stages as composable PTransforms",
    ):
        assert re.search(rf"^\| {re.escape(card)}", design, re.M), card
    for heading in ("## Architecture", "## Command line", "## Files", "## Messages"):
        assert heading in design
    assert "### The alert rule" in design
    # Every output the jobs write is in the contract.
    from beam_tally.jobs import monitor, tally

    for name in (*tally.OUTPUTS, *monitor.OUTPUTS):
        assert f"`{name}`" in design, name
