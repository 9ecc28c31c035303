"""Deterministic generators of realistic sample inputs (``beam-tally generate``).

``generate tally``: ``logs_xx.json`` files with Zipf-distributed users (a few heavy users, a long
tail), some unicode addresses, and optionally bad logs and whole bad files, for demos, tests and
benchmarks. The same ``--seed`` always writes the same bytes.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import uuid

import orjson

from beam_tally.errors import HelpRequested, UsageError, UsageParser, flags_help
from beam_tally.terminal import escape_control

FIRST = [
    "james",
    "mary",
    "john",
    "patricia",
    "robert",
    "jennifer",
    "michael",
    "linda",
    "david",
    "elizabeth",
    "william",
    "barbara",
    "richard",
    "susan",
    "joseph",
    "jessica",
    "thomas",
    "sarah",
    "charles",
    "karen",
    "wei",
    "aiko",
    "olu",
    "priya",
    "mateo",
    "ines",
]
LAST = [
    "smith",
    "johnson",
    "williams",
    "brown",
    "jones",
    "garcia",
    "miller",
    "davis",
    "rodriguez",
    "martinez",
    "hernandez",
    "lopez",
    "gonzalez",
    "wilson",
    "anderson",
    "thomas",
    "taylor",
    "moore",
    "jackson",
    "martin",
    "lee",
    "perez",
    "thompson",
    "white",
]
UNICODE_LOCAL = [
    "zoë.müller",
    "josé.núñez",
    "łukasz.wiśniewski",
    "søren.kierkegård",
    "ana.ñandú",
    "françois.lefèvre",
    "李.伟",
    "ゆき.たなか",
]
DOMAINS = ["domain.com", "example.com", "mail.example.org", "corp.example.net", "exämple.de"]
MESSAGES = [
    "successfully completed processing after {n} milliseconds",
    "failed to process due to datastore exception",
    "retrying request after timeout of {n} ms",
    "user session refreshed",
    "cache miss for key {n}",
]
BAD_LOG_KINDS = ("missing_email", "email_not_string", "not_an_object")
BAD_FILE_KINDS = ("truncated_json", "invalid_utf8", "no_logs_list", "top_level_list")


def make_emails(rng: random.Random, count: int) -> list[str]:
    emails: list[str] = []
    seen: set[str] = set()
    for i in itertools.count():
        if len(emails) == count:
            break
        if rng.random() < 0.03:
            local = rng.choice(UNICODE_LOCAL)
        else:
            local = f"{rng.choice(FIRST)}.{rng.choice(LAST)}"
        email = f"{local}{'' if i < count // 2 else i}@{rng.choice(DOMAINS)}"
        if email not in seen:
            seen.add(email)
            emails.append(email)
    return emails


def _bad_log(rng: random.Random, log: dict) -> object:
    kind = rng.choice(BAD_LOG_KINDS)
    if kind == "missing_email":
        return {k: v for k, v in log.items() if k != "email"}
    if kind == "email_not_string":
        return {**log, "email": rng.choice([None, 42, ["a@b.c"], {"address": "x@y.z"}])}
    return rng.choice(["not a log", 7, None, [log["email"]]])


def _bad_file(kind: str, good: bytes) -> bytes:
    if kind == "truncated_json":
        return good[: max(1, len(good) // 2)]
    if kind == "invalid_utf8":
        return good[:20] + b"\xff\xfe" + good[20:]
    if kind == "no_logs_list":
        return b'{"log": []}'
    return b"[]"


def generate_tally(
    out: str,
    *,
    files: int,
    logs_per_file: int,
    emails: int,
    bad_fraction: float = 0.0,
    bad_files: int = 0,
    empty_files: int = 0,
    seed: int = 0,
) -> dict[str, int]:
    """Writes the files; returns counts of what was written (for the caller's message)."""
    rng = random.Random(seed)
    os.makedirs(out, exist_ok=True)
    pool = make_emails(rng, emails)
    cum_weights = list(itertools.accumulate(1.0 / (rank + 1) for rank in range(len(pool))))
    total = files + bad_files + empty_files
    width = max(2, len(str(total - 1)))
    written = {"files": 0, "logs": 0, "bad_logs": 0, "bad_files": 0, "empty_files": 0}
    for number in range(total):
        path = os.path.join(out, f"logs_{number:0{width}d}.json")
        logs: list[object] = []
        bad_here = 0
        if number < files + bad_files:
            for email in rng.choices(pool, cum_weights=cum_weights, k=logs_per_file):
                log = {
                    "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                    "email": email,
                    "message": rng.choice(MESSAGES).format(n=rng.randint(1, 5000)),
                }
                if bad_fraction and rng.random() < bad_fraction:
                    logs.append(_bad_log(rng, log))
                    bad_here += 1
                else:
                    logs.append(log)
        content = orjson.dumps({"logs": logs}, option=orjson.OPT_INDENT_2)
        if files <= number < files + bad_files:
            content = _bad_file(BAD_FILE_KINDS[(number - files) % len(BAD_FILE_KINDS)], content)
            written["bad_files"] += 1
        elif number >= files + bad_files:
            written["empty_files"] += 1
        else:
            written["logs"] += len(logs) - bad_here
            written["bad_logs"] += bad_here
        with open(path, "wb") as handle:
            handle.write(content)
        written["files"] += 1
    return written


GENERATE_HELP = """usage: beam-tally generate tally|access --out PATH [options]

Writes deterministic sample inputs (the same --seed always writes the same bytes):
  tally    logs_xx.json files for 'beam-tally tally': Zipf-distributed emails (a few heavy users,
           a long tail, some Unicode), optionally bad logs, whole bad files and empty files
  access   one HTTP access log for 'beam-tally monitor', in the exercise's CSV or Common Log
           Format: steady traffic with bursts, lines out of order, bad lines

'beam-tally generate tally --help' and 'beam-tally generate access --help' give their flags."""


def _tally_parser() -> argparse.ArgumentParser:
    parser = UsageParser(prog="beam-tally generate tally", allow_abbrev=False, add_help=False)
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="folder to write logs_xx.json into"
    )
    parser.add_argument("--files", type=int, default=10, metavar="N", help="good files")
    parser.add_argument(
        "--logs_per_file", type=int, default=1000, metavar="N", help="logs in each good file"
    )
    parser.add_argument(
        "--emails", type=int, default=200, metavar="N", help="distinct emails drawn from"
    )
    parser.add_argument(
        "--bad_fraction",
        type=float,
        default=0.0,
        metavar="F",
        help="fraction of logs replaced by bad ones (0..1)",
    )
    parser.add_argument(
        "--bad_files",
        type=int,
        default=0,
        metavar="N",
        help="extra files that are not valid documents",
    )
    parser.add_argument(
        "--empty_files", type=int, default=0, metavar="N", help='extra files with {"logs": []}'
    )
    parser.add_argument(
        "--seed", type=int, default=0, metavar="S", help="random seed: same seed, same bytes"
    )
    return parser


TALLY_INTRO = """usage: beam-tally generate tally --out DIR [options]

Writes logs_xx.json files for 'beam-tally tally', each {"logs":[{"id","email","message"}, ...]}."""


def run(argv: list[str]) -> int:
    if argv[:1] and argv[0] in ("-h", "--help"):
        raise HelpRequested(GENERATE_HELP)
    if not argv or argv[0] not in ("tally",):
        raise UsageError(
            "say what to generate: 'beam-tally generate tally --out DIR ...' or "
            "'beam-tally generate access --out FILE ...'"
        )
    if any(arg in ("-h", "--help") for arg in argv[1:]):
        raise HelpRequested(f"{TALLY_INTRO}\n\n{flags_help(_tally_parser())}")
    args = _tally_parser().parse_args(argv[1:])
    if not 0.0 <= args.bad_fraction <= 1.0:
        raise UsageError("--bad_fraction must be between 0 and 1")
    for flag in ("files", "logs_per_file", "emails", "bad_files", "empty_files"):
        if getattr(args, flag) < 0:
            raise UsageError(f"--{flag} must be 0 or more")
    if args.emails == 0 and args.files and args.logs_per_file:
        raise UsageError("--emails must be at least 1 when there are logs to write")
    written = generate_tally(
        args.out,
        files=args.files,
        logs_per_file=args.logs_per_file,
        emails=args.emails,
        bad_fraction=args.bad_fraction,
        bad_files=args.bad_files,
        empty_files=args.empty_files,
        seed=args.seed,
    )
    print(
        f"wrote {written['files']:,} files to {escape_control(args.out)}: "
        f"{written['logs']:,} valid logs and "
        f"{written['bad_logs']:,} bad logs in good files, {written['bad_files']:,} bad files, "
        f"{written['empty_files']:,} empty files"
    )
    return 0
