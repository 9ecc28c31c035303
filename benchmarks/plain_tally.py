"""The tally job in plain Python (orjson + Counter, no Beam): the benchmark's baseline.

    python benchmarks/plain_tally.py --input GLOB --output DIR

Does the same job as ``beam-tally tally`` and writes the same files under DIR: ``tallies.jsonl``
(one line per readable file), ``global_tally.jsonl`` (one line per update),
``global_tally_final.json`` and ``dead_letters.jsonl``, with the same validity rules and dead
letter reasons as ``transforms/parse_logs.py``. Files are processed one at a time in sorted path
order. It imports nothing from the project, so that its start-up cost is only Python's and
orjson's. (Unlike the pipeline it does not decompress ``.gz`` inputs.)
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

import orjson

RAW_LIMIT = 200

# The reasons of transforms/parse_logs.py and beam_tally/io/files.py, verbatim.
MALFORMED_JSON = "malformed JSON"
UNDECODABLE = "undecodable bytes"
NO_LOGS_LIST = "no 'logs' list"
NOT_AN_OBJECT = "log is not an object"
MISSING_EMAIL = "missing email"
EMAIL_NOT_STRING = "email is not a string"
UNREADABLE = "unreadable file"


def truncate_raw(raw: bytes | str, limit: int = RAW_LIMIT) -> str:
    if isinstance(raw, bytes):
        raw = raw[: limit * 4].decode("utf-8", errors="backslashreplace")
    return raw if len(raw) <= limit else raw[:limit] + "..."


def _raw(value: Any) -> str:
    return truncate_raw(orjson.dumps(value).decode())


def _dead(source: str, where: int | None, reason: str, raw: str) -> bytes:
    return orjson.dumps({"source": source, "where": where, "reason": reason, "raw": raw})


def _load(source: str, content: bytes) -> tuple[Any, bytes | None]:
    try:
        return orjson.loads(content), None
    except orjson.JSONDecodeError as err:
        try:
            content.decode("utf-8")
        except UnicodeDecodeError as bad:
            reason = f"{UNDECODABLE}: invalid UTF-8 at byte {bad.start}"
            raw = content[max(0, bad.start - 40) : bad.start + 40]
            return None, _dead(source, None, reason, truncate_raw(raw))
        reason = f"{MALFORMED_JSON}: {err.msg} at line {err.lineno} column {err.colno}"
        return None, _dead(source, None, reason, truncate_raw(content))


def count_document(source: str, content: bytes) -> tuple[Counter, list[bytes]]:
    """The email counts of one document's valid logs, and its dead letters as JSON lines."""
    doc, dead = _load(source, content)
    if dead is not None:
        return Counter(), [dead]
    logs = doc.get("logs") if type(doc) is dict else None
    if type(logs) is not list:
        reason = f"{NO_LOGS_LIST}: document has no 'logs' list"
        return Counter(), [_dead(source, None, reason, _raw(doc))]
    # Fast path, as in the pipeline: every log is an object with a string email.
    try:
        emails = [log["email"] for log in logs]
        valid = set(map(type, emails)) <= {str}
    except (KeyError, TypeError):
        valid = False
    if valid:
        return Counter(emails), []
    counts: Counter = Counter()
    dead_letters: list[bytes] = []
    for index, log in enumerate(logs):
        if type(log) is not dict:
            reason = f"{NOT_AN_OBJECT}: got {type(log).__name__}"
            dead_letters.append(_dead(source, index, reason, _raw(log)))
            continue
        email = log.get("email")
        if type(email) is not str:
            if "email" not in log:
                reason = f"{MISSING_EMAIL}: log has no 'email' field"
            else:
                reason = f"{EMAIL_NOT_STRING}: got {type(email).__name__}"
            dead_letters.append(_dead(source, index, reason, _raw(log)))
            continue
        counts[email] += 1
    return counts, dead_letters


def _entries(counts: Counter) -> list[dict]:
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [{"email": email, "total": total} for email, total in ordered]


def _global_line(entries: list[dict], files: int, after: str | None) -> bytes:
    return orjson.dumps({"global_tally": entries, "files": files, "after": after}) + b"\n"


def tally_files(paths: Iterable[str], output_dir: str) -> Counter:
    """Tallies ``paths`` in order and writes the four output files; returns the global tally."""
    return _tally(paths, output_dir)[0]


def _tally(paths: Iterable[str], output_dir: str) -> tuple[Counter, dict[str, int]]:
    os.makedirs(output_dir, exist_ok=True)
    total: Counter = Counter()
    files = logs = dead_letters = 0
    final = _global_line([], 0, None)
    with (
        open(os.path.join(output_dir, "tallies.jsonl"), "wb") as tallies,
        open(os.path.join(output_dir, "global_tally.jsonl"), "wb") as updates,
        open(os.path.join(output_dir, "dead_letters.jsonl"), "wb") as dead_out,
    ):
        for path in paths:
            try:
                with open(path, "rb") as handle:
                    content = handle.read()
            except OSError as err:
                reason = f"{UNREADABLE}: {type(err).__name__}: {err}"
                dead_out.write(_dead(path, None, reason, "") + b"\n")
                dead_letters += 1
                continue
            counts, dead = count_document(path, content)
            for line in dead:
                dead_out.write(line + b"\n")
            dead_letters += len(dead)
            logs += counts.total()
            tallies.write(orjson.dumps({"tally": _entries(counts), "source": path}) + b"\n")
            total.update(counts)
            files += 1
            final = _global_line(_entries(total), files, path)
            updates.write(final)
    with open(os.path.join(output_dir, "global_tally_final.json"), "wb") as handle:
        handle.write(final)
    return total, {"files": files, "logs": logs, "dead_letters": dead_letters}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="plain_tally.py", description=__doc__.split("\n")[0])
    parser.add_argument("--input", required=True, help="files to read (quote the glob)")
    parser.add_argument("--output", required=True, help="directory for the outputs")
    args = parser.parse_args(argv)
    paths = sorted(glob.glob(args.input))
    if not paths:
        print(f"plain_tally.py: --input {args.input!r} matches no file", file=sys.stderr)
        return 2
    started = time.perf_counter()
    total, stats = _tally(paths, args.output)
    seconds = time.perf_counter() - started
    print(
        f"summary: {stats['files']:,} files, {stats['logs']:,} logs, {len(total):,} distinct "
        f"emails, {stats['dead_letters']:,} dead letters, {seconds:.2f} s; outputs: {args.output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
