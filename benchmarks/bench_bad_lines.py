"""Timing of the access-log parser on long bad lines built to make a backtracking regular
expression slow (the lines of tests/test_access_log.py's shape test).

    .venv/bin/python benchmarks/bench_bad_lines.py [--size 200000] [--repeats 3]

For each kind of line, ``parse_line`` in both formats and ``detect_format`` at ``--size``
characters and at four times that (best of ``--repeats``); a linear parser takes about four
times as long on the longer line, a quadratic one sixteen. Exit status 1 if any ratio is above 8
or any line takes more than a second.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from transforms.access_log import BadLine, detect_format, parse_line

CLF_HEAD = "a b c [09/May/2018:16:00:39 +0000] "
# name -> the line of about n characters
LINES = {
    "spaces between two words": lambda n: "a" + " " * n + "b",
    "csv field of spaces, stray quote": lambda n: "a," + " " * n + 'x"',
    "quoted csv field of escapes": lambda n: '"' + 'a""' * (n // 3),
    "open brackets": lambda n: "[" * n,
    "repeated clf date and quote": lambda n: '[x] "y' * (n // 6),
    "words and spaces": lambda n: "a " * (n // 2),
    "clf request of quotes": lambda n: CLF_HEAD + '"' + '"x' * (n // 2),
    "clf tail ending in a control": lambda n: (
        CLF_HEAD + '"GET / HTTP/1.1" 200 1 ' + "x" * n + "\x00"
    ),
}


def parse_all(line: str) -> None:
    for fmt in ("csv", "clf"):
        with contextlib.suppress(BadLine):
            parse_line(line, fmt)
    with contextlib.suppress(ValueError):
        detect_format([line])


def best_of(line: str, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        parse_all(line)
        times.append(time.perf_counter() - started)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    failed = False
    print(f"{'line':36} {'n (ms)':>9} {'4n (ms)':>9} {'ratio':>6}")
    for name, make in LINES.items():
        short = best_of(make(args.size), args.repeats)
        long = best_of(make(4 * args.size), args.repeats)
        ratio = long / short if short else float("inf")
        bad = ratio > 8 or long > 1.0
        failed = failed or bad
        flag = "  <- not linear" if bad else ""
        print(f"{name:36} {short * 1e3:9.2f} {long * 1e3:9.2f} {ratio:6.1f}{flag}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
