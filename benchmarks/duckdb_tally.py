"""The tally's final global tally with DuckDB: a benchmark's other baseline (no Beam).

    python benchmarks/duckdb_tally.py --input GLOB --output DIR

Writes ``global_tally_final.json`` under DIR (the form ``beam-tally tally`` writes; ``after`` is
null), with DuckDB's default options (every core). One SQL query over all files: each document
as a JSON value (``read_json_objects``, malformed ones skipped), its ``logs`` unnested, and
every log that is an object with a string ``email`` counted, which is the tally's rule. Needs
``pip install 'beam-tally[bench]'``.
"""

from __future__ import annotations

import sys

import baseline_cli
import duckdb

QUERY = """
SELECT json_extract_string(log, '$.email') AS email, count(*) AS total
FROM (
    SELECT unnest(json_extract(json, '$.logs[*]')) AS log
    FROM read_json_objects($paths, format = 'auto', ignore_errors = true,
                           maximum_object_size = 2147483647)
)
WHERE json_type(log, '$.email') = 'VARCHAR'
GROUP BY ALL
ORDER BY total DESC, email
"""


def tally(paths: list[str]) -> list[dict]:
    rows = duckdb.execute(QUERY, {"paths": paths}).fetchall()
    return [{"email": email, "total": total} for email, total in rows]


def main(argv: list[str] | None = None) -> int:
    return baseline_cli.main("duckdb_tally.py", __doc__, tally, argv)


if __name__ == "__main__":
    sys.exit(main())
