"""A columnar batch of ``LogEntry`` for Beam's Batched DoFns.

A ``PCollection[LogEntry]`` holds one element per log. Producing a Python object per log and
pushing it through Beam's per-element machinery costs more than parsing and counting the log, so
``ParseLogDocuments`` yields one ``LogBatch`` per document (columns of emails, indexes, ids and
messages) and ``TallyPerFile`` consumes batches directly: the fused stage never materialises a
``LogEntry``. Any element-wise consumer (a ``Map``, ``assert_that``, a sink) still sees one
``LogEntry`` per log: Beam explodes the batch through ``LogBatchConverter``. Input that arrives as
elements (``beam.Create`` in a test, a shuffle) is rebatched with ``produce_batch``.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator, Sequence
from itertools import chain
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.typehints import typehints
from apache_beam.typehints.batch import BatchConverter

from transforms.records import LogEntry


class LogBatch(NamedTuple):
    """Columns of ``LogEntry``; all lists have the same length."""

    sources: Sequence[str]
    indexes: Sequence[int]
    emails: Sequence[str]
    ids: Sequence[str | None]
    messages: Sequence[str | None]

    def single_source(self) -> str | None:
        """The one source of every row, or None when rows come from several files."""
        sources = self.sources
        if sources and sources.count(sources[0]) == len(sources):
            return sources[0]
        return None


def _estimated_size(batch: LogBatch) -> int:
    return 96 * len(batch.emails)


class LogBatchCoder(beam.coders.Coder):
    """A ``LogBatch`` as an element (the parser's output, before Beam sees it as a batch):
    pickled, with a size estimate from its length. Beam samples the size of elements it passes
    between steps; the default estimate would pickle each sampled batch of thousands of logs."""

    def encode(self, batch: LogBatch) -> bytes:
        return pickle.dumps(batch, pickle.HIGHEST_PROTOCOL)

    def decode(self, encoded: bytes) -> LogBatch:
        return pickle.loads(encoded)

    def estimate_size(self, batch: LogBatch) -> int:
        return _estimated_size(batch)

    def is_deterministic(self) -> bool:
        return False

    def to_type_hint(self):
        return LogBatch

    def __eq__(self, other) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(type(self))


beam.coders.registry.register_coder(LogBatch, LogBatchCoder)


@BatchConverter.register(name="beam_tally_log_batch")
def _make_log_batch_converter(element_type, batch_type) -> LogBatchConverter:
    if batch_type is not LogBatch:
        raise TypeError("batch type must be LogBatch")
    if element_type not in (LogEntry, typehints.Any, Any):
        raise TypeError(f"element type must be LogEntry, not {element_type!r}")
    return LogBatchConverter()


class LogBatchConverter(BatchConverter):
    """Converts between ``LogEntry`` elements and ``LogBatch`` columns."""

    def __init__(self) -> None:
        super().__init__(LogBatch, LogEntry)

    def produce_batch(self, elements: Sequence[LogEntry]) -> LogBatch:
        columns = list(zip(*elements, strict=True)) or [(), (), (), (), ()]
        return LogBatch(*(list(column) for column in columns))

    def explode_batch(self, batch: LogBatch) -> Iterator[LogEntry]:
        return map(LogEntry, batch.sources, batch.indexes, batch.emails, batch.ids, batch.messages)

    def combine_batches(self, batches: Sequence[LogBatch]) -> LogBatch:
        return LogBatch(*(list(chain.from_iterable(cols)) for cols in zip(*batches, strict=True)))

    def get_length(self, batch: LogBatch) -> int:
        return len(batch.emails)

    def estimate_byte_size(self, batch: LogBatch) -> int:
        return _estimated_size(batch)
