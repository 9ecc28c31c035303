"""The ``beam-tally`` command: dispatches to a job; bad usage is one line and exit status 2.

Exit status: 0 on success (dead letters included), 2 for a bad command line or an input that
matches nothing, 1 for a failure of the run, 130 on Ctrl-C.
"""

from __future__ import annotations

import gc
import logging
import os
import sys

import beam_tally
from beam_tally.errors import FetchError, HelpRequested, UsageError
from beam_tally.gc_settings import tune_gc
from beam_tally.terminal import escape_control

USAGE = """usage: beam-tally COMMAND [options]
       beam-tally --version

commands:
  tally     --input GLOB --output DIR [--print_limit 20] [Beam options]
  monitor   --input GLOB --output DIR [--format auto|csv|clf] [--threshold 10]
            [--stats_window 10] [--alert_window 120] [--max_delay 5] [--top 5] [Beam options]
  produce   tally|access --input GLOB --serve HOST:PORT [--speedup N] [--follow]
            [--max_delay 5]
  tally|monitor --streaming --source HOST:PORT --output DIR [--stop_after S] ...
  generate  tally --out DIR [--files N --logs_per_file M --emails K --bad_fraction F --seed S]
  generate  access --out FILE --format csv|clf --seconds N --rate R [--burst S:D:R ...]
            [--disorder S] [--bad_fraction F] [--seed N]
  report    DIR [--job monitor|tally] [--threshold R] [--alert_window S]
  engines   install flink|prism|flink-cluster|sdk-worker|kafka|kafka-io|all | list

Beam options include --runner=DirectRunner (the default), FlinkRunner or PrismRunner: the
engine is fetched into a cache on first use ('beam-tally engines --help').

'beam-tally COMMAND --help' describes a command's options."""

COMMANDS = ("tally", "monitor", "produce", "generate", "report", "engines")


def version_text() -> str:
    """``beam-tally X.Y.Z (Apache Beam A.B.C, Python P)``, from the installed distributions."""
    from importlib import metadata

    from beam_tally import __version__

    try:
        own = metadata.version("beam-tally")
    except metadata.PackageNotFoundError:  # run from a checkout that is not installed
        own = __version__
    try:
        beam = metadata.version("apache-beam")
    except metadata.PackageNotFoundError:  # pragma: no cover - a dependency
        beam = "not installed"
    python = ".".join(map(str, sys.version_info[:3]))
    return f"beam-tally {own} (Apache Beam {beam}, Python {python})"


def _dispatch(command: str, argv: list[str]) -> int:  # noqa: PLR0911 - a branch per command
    if command == "tally":
        from beam_tally.jobs import tally

        return tally.run(argv)
    if command == "monitor":
        from beam_tally.jobs import monitor

        return monitor.run(argv)
    if command == "produce":
        from beam_tally.live import produce

        return produce.run(argv)
    if command == "report":
        from beam_tally.report import command as report_command

        return report_command.run(argv)
    if command == "engines":
        from beam_tally import engines

        return engines.run(argv)
    if argv and argv[0] == "access":
        from beam_tally.generate import access

        return access.run(argv[1:])
    from beam_tally.generate import tally as generate_tally

    return generate_tally.run(argv)


def entry() -> int:
    """The ``beam-tally`` command: ``main`` with the batch collector settings
    (``gc_settings.tune_gc``) from the start, then a cheaper exit. Importing Beam, and reading
    a run's outputs back for the console and the report (tens of thousands of JSON lines),
    allocate enough for many full collections over a growing heap: with CPython's defaults,
    parsing a 3.3M-line monitor run's stats back took 0.57 s, 0.20 s without collections.
    Python's exit ends with a collection that walks every object left, and Beam's import
    leaves hundreds of thousands (0.13 s of each run here); frozen, they are skipped. Only for
    the command's own process (``COMMAND_PROCESS``): ``main`` called in-process (tests)
    leaves the collector alone."""
    tune_gc()
    beam_tally.COMMAND_PROCESS["own"] = True
    code = main()
    gc.freeze()
    return code


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    if not argv:
        print(
            "beam-tally: say which command to run: tally, monitor, produce, generate, report or "
            "engines "
            "(beam-tally --help)",
            file=sys.stderr,
        )
        return 2
    if argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if argv[0] in ("-V", "--version"):
        print(version_text())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(
            f"beam-tally: unknown command {escape_control(repr(command))}; use one of "
            f"{', '.join(COMMANDS)} (beam-tally --help)",
            file=sys.stderr,
        )
        return 2
    return _run(command, rest)


def _run(command: str, rest: list[str]) -> int:
    try:
        return _dispatch(command, rest)
    except HelpRequested as help_text:
        print(help_text)
        return 0
    except UsageError as err:
        print(
            f"beam-tally {command}: error: {escape_control(str(err))} "
            f"(see 'beam-tally {command} --help')",
            file=sys.stderr,
        )
        return 2
    except FetchError as err:
        print(f"beam-tally {command}: {escape_control(str(err))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"beam-tally {command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if os.environ.get("BEAM_TALLY_DEBUG"):
            raise
        message = escape_control(" ".join(str(err).split())[:500])
        print(
            f"beam-tally {command}: the run failed: {type(err).__name__}: {message} "
            "(set BEAM_TALLY_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
