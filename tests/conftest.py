"""Shared test helpers: a DirectRunner TestPipeline and an independent plain-Python tally."""

from __future__ import annotations

import glob
import json
import os
from collections import Counter

import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline

from beam_tally.runtime import batch_runner


def direct_pipeline(*extra: str) -> TestPipeline:
    """A batch TestPipeline on the engine a batch run of the CLI uses: the DirectRunner's
    FnApiRunner, without its Prism attempt (``runtime.batch_runner``)."""
    options = PipelineOptions(["--runner=DirectRunner", *extra])
    return TestPipeline(runner=batch_runner(options), options=options)


def beam_direct_pipeline(*extra: str) -> TestPipeline:
    """A TestPipeline on the DirectRunner choosing its engine itself (as it does for a
    TestStream without --streaming: its streaming mode)."""
    return TestPipeline(options=PipelineOptions(["--runner=DirectRunner", *extra]))


def streaming_pipeline() -> TestPipeline:
    return beam_direct_pipeline("--streaming")


def independent_tally(pattern: str) -> tuple[dict[str, Counter], int]:
    """Counts per file with the standard library only (not the code under test).

    Returns ({path: Counter(email -> logs)} for every readable, parseable-or-not file, and the
    number of bad records: unreadable/undecodable/malformed documents, documents without a
    'logs' list, logs that are not objects, and logs without a string email).
    """
    per_file: dict[str, Counter] = {}
    bad = 0
    for path in sorted(glob.glob(pattern)):
        if not os.path.isfile(path):
            continue
        counts: Counter = Counter()
        try:
            with open(path, "rb") as handle:
                raw = handle.read()
            if path.endswith(".gz"):
                import gzip

                raw = gzip.decompress(raw)
        except OSError:
            bad += 1
            continue
        per_file[path] = counts
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            bad += 1
            continue
        if not isinstance(doc, dict) or not isinstance(doc.get("logs"), list):
            bad += 1
            continue
        for log in doc["logs"]:
            if isinstance(log, dict) and isinstance(log.get("email"), str):
                counts[log["email"]] += 1
            else:
                bad += 1
    return per_file, bad


@pytest.fixture
def tmp_out(tmp_path):
    out = tmp_path / "out"
    return str(out)
