"""The command line of the tally baselines that write only the final global tally
(``polars_tally.py``, ``duckdb_tally.py``): ``--input GLOB --output DIR``, and
``global_tally_final.json`` under DIR in the form ``beam-tally tally`` writes (``after`` null)."""

from __future__ import annotations

import argparse
import glob
import os
import sys
from collections.abc import Callable

import orjson


def main(prog: str, doc: str, tally: Callable[[list[str]], list[dict]], argv=None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n", maxsplit=1)[0])
    parser.add_argument("--input", required=True, help="files to read (quote the glob)")
    parser.add_argument("--output", required=True, help="directory for the output")
    args = parser.parse_args(argv)
    paths = sorted(glob.glob(args.input))
    if not paths:
        print(f"{prog}: --input {args.input!r} matches no file", file=sys.stderr)
        return 2
    entries = tally(paths)
    os.makedirs(args.output, exist_ok=True)
    final = {"global_tally": entries, "files": len(paths), "after": None}
    with open(os.path.join(args.output, "global_tally_final.json"), "wb") as handle:
        handle.write(orjson.dumps(final) + b"\n")
    return 0
