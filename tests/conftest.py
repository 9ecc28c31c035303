"""Shared test helpers: a DirectRunner TestPipeline and an independent plain-Python tally."""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

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


ROOT = Path(__file__).resolve().parent.parent


def need_tools(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if not missing:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI runs the engine tests: install {', '.join(missing)}")
    pytest.skip(f"engine tests need {', '.join(missing)} on PATH (CI installs them)")


@pytest.fixture(scope="session")
def flink_cluster(tmp_path_factory):
    """``scripts/flink_cluster.sh start`` with its state in a temporary folder (a user's own
    cluster is never touched); stopped when the session ends, whatever happened."""
    need_tools("java", "mvn")
    env = {**os.environ, "BEAM_TALLY_FLINK_CLUSTER": str(tmp_path_factory.mktemp("flink"))}
    script = str(ROOT / "scripts" / "flink_cluster.sh")
    try:
        started = subprocess.run(
            [script, "start"], env=env, capture_output=True, text=True, timeout=900, check=False
        )
        assert started.returncode == 0, started.stderr[-3000:]
        address = started.stdout.strip().splitlines()[-1]
        assert re.fullmatch(r"127\.0\.0\.1:\d+", address)
        again = subprocess.run(
            [script, "start"], env=env, capture_output=True, text=True, timeout=120, check=True
        )
        assert again.stdout.strip().splitlines()[-1] == address  # idempotent: same cluster
        yield address
    finally:
        subprocess.run([script, "stop"], env=env, capture_output=True, timeout=120, check=False)
        subprocess.run([script, "stop"], env=env, capture_output=True, timeout=120, check=False)
    status = subprocess.run(
        [script, "status"], env=env, capture_output=True, timeout=120, check=False
    )
    assert status.returncode == 1  # stopped, and a second stop was harmless
