"""Documents too large to hold are counted as a stream: the same tallies and dead letters as the
documents read whole (``ReadLogFiles``' ``large`` paths -> ``TallyLargeDocuments``)."""

from __future__ import annotations

import glob
import gzip
import os

import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to

from beam_tally.generate.tally import generate_tally
from beam_tally.io.files import LARGE, ReadLogFiles, TallyLargeDocuments
from tests.conftest import direct_pipeline, independent_tally
from transforms.parse_logs import count_log_document, document_note, reason_code
from transforms.records import DeadLetter, FileTally, sorted_tally
from transforms.tally import DEAD_LETTERS, TALLIES, TallyDocuments


def _inputs(tmp_path, bom: bool = True) -> str:
    """Generated documents (bad logs, bad files, empty ones), a gzipped one and (``bom``) one
    with a byte order mark, which the standard library does not read; returns their glob."""
    folder = tmp_path / "logs"
    generate_tally(
        str(folder), files=6, logs_per_file=300, emails=20, bad_fraction=0.05,
        bad_files=4, empty_files=1, seed=5,
    )  # fmt: skip
    first = sorted(glob.glob(str(folder / "*.json")))[0]
    with open(first, "rb") as handle:
        content = handle.read()
    (folder / "zipped.json.gz").write_bytes(gzip.compress(content))
    if bom:
        (folder / "bom.json").write_bytes(b"\xef\xbb\xbf" + content)
    (folder / "blank.json").write_bytes(b" \n\t\n")
    return str(folder / "*")


def _tally_everything(p, pattern: str, stream_above: int):
    read = p | "Read" >> ReadLogFiles(pattern, stream_above=stream_above)
    whole = read["files"] | "Whole" >> TallyDocuments()
    streamed = read[LARGE] | "Streamed" >> TallyLargeDocuments()
    tallies = (whole[TALLIES], streamed[TALLIES]) | "Tallies" >> beam.Flatten()
    dead = (read[DEAD_LETTERS], whole[DEAD_LETTERS], streamed[DEAD_LETTERS]) | (
        "Dead" >> beam.Flatten()
    )
    return read[LARGE], tallies, dead


def test_streamed_documents_tally_as_the_standard_library_counts(tmp_path):
    pattern = _inputs(tmp_path, bom=False)
    per_file, bad = independent_tally(pattern)
    expected = [(path, dict(counts)) for path, counts in per_file.items()]
    big = [path for path in per_file if os.path.getsize(path) > 100]
    with direct_pipeline() as p:
        large, tallies, dead = _tally_everything(p, pattern, stream_above=100)
        assert_that(large, equal_to(big), label="streamed")
        assert_that(
            tallies | beam.Map(lambda t: (t.source, {e.email: e.total for e in t.tally})),
            equal_to(expected),
            label="tallies",
        )
        assert_that(dead | beam.combiners.Count.Globally(), equal_to([bad]), label="dead letters")


def test_streamed_tallies_notes_and_dead_letters_are_the_whole_reads(tmp_path):
    """Each bad log keeps its index, reason and raw, each tally its note; a bad document keeps
    its reason's kind (a malformed one's message is the streaming reader's)."""
    pattern = _inputs(tmp_path)
    tallies_expected, dead_expected = [], []
    for path in independent_tally(pattern)[0]:
        with open(path, "rb") as handle:
            content = handle.read()
        if path.endswith(".gz"):
            content = gzip.decompress(content)
        counts, dead = count_log_document(path, content)
        note = document_note(content, sum(counts.values()), dead)
        tallies_expected.append(FileTally(path, sorted_tally(counts), note))
        dead_expected += [_comparable(d) for d in dead]
    with direct_pipeline() as p:
        large, tallies, dead = _tally_everything(p, pattern, stream_above=1)
        assert_that(
            large | beam.combiners.Count.Globally(),
            equal_to([len(tallies_expected)]),
            label="all streamed",
        )
        assert_that(tallies, equal_to(tallies_expected), label="tallies")
        assert_that(dead | beam.Map(_comparable), equal_to(dead_expected), label="dead letters")


def _comparable(dead: DeadLetter) -> tuple:
    if dead.where is None:
        return dead.source, None, reason_code(dead.reason)
    return dead
