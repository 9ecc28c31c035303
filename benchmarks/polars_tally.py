"""The tally's final global tally with Polars: a benchmark's other baseline (no Beam).

    python benchmarks/polars_tally.py --input GLOB --output DIR

Writes ``global_tally_final.json`` under DIR (the form ``beam-tally tally`` writes; ``after`` is
null), with Polars' default options (every core). Each document is read with
``polars.read_ndjson`` and a schema ``{"logs": [{"email": str}]}``: a pretty-printed document
has its line ends turned into spaces first (outside strings JSON has no raw line end, so the
value is the same), and ``ignore_errors`` reads a log that is not an object as a null email.
Polars reads a number, list or object email as its JSON text (``42`` as ``"42"``), which the
tally must not count, so keys that are such JSON text are dropped from the result (a string
email that looks like JSON, ``"42"``, would be dropped too: the benchmark's data has none). A
file that Polars cannot read at all adds nothing. Needs ``pip install 'beam-tally[bench]'``.
"""

from __future__ import annotations

import sys

import baseline_cli
import orjson
import polars as pl

SCHEMA = {"logs": pl.List(pl.Struct({"email": pl.String}))}


def _json_text_of_non_string(key: str) -> bool:
    try:
        return type(orjson.loads(key)) is not str
    except orjson.JSONDecodeError:
        return False


def tally(paths: list[str]) -> list[dict]:
    frames = []
    for path in paths:
        with open(path, "rb") as handle:
            content = handle.read().replace(b"\n", b" ").replace(b"\r", b" ")
        try:
            frame = pl.read_ndjson(content, schema=SCHEMA, ignore_errors=True)
        except pl.exceptions.PolarsError:
            continue
        frames.append(frame.lazy().select(pl.col("logs").explode().struct.field("email")))
    if not frames:
        return []
    counts = (
        pl.concat(frames)
        .drop_nulls()
        .group_by("email")
        .len("total")
        .sort(["total", "email"], descending=[True, False])
        .collect()
    )
    return [
        {"email": email, "total": total}
        for email, total in counts.iter_rows()
        if not _json_text_of_non_string(email)
    ]


def main(argv: list[str] | None = None) -> int:
    return baseline_cli.main("polars_tally.py", __doc__, tally, argv)


if __name__ == "__main__":
    sys.exit(main())
