"""The tally job's transforms: parse documents, tally per file, apply tallies to a global tally.

``ParseLogDocuments``: ``SourceFile`` -> ``LogEntry`` (one per valid log), the source of every
parsed document, and ``DeadLetter``.
``TallyPerFile``: (``LogEntry``, document sources) -> ``FileTally``, one per document, even when it
has no valid logs.
``UpdateGlobalTally``: ``FileTally`` -> ``GlobalTally``, one per tally message applied, in batch
and streaming alike (a keyed stateful DoFn; a global-window CombineGlobally would fire only once
in batch), and the final global tally when the input is complete (an event-time timer).
"""

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Iterator, NamedTuple  # noqa: UP035 (Beam's batch inference: typing.Iterator)

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.coders import PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms import window
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer

from transforms.log_batch import LogBatch, LogBatchConverter
from transforms.parse_logs import (
    count_log_document,
    document_note,
    note_of,
    parse_log_document,
    reason_code,
)
from transforms.records import (
    STREAM_ERROR_PREFIX,
    DeadLetter,
    FileTally,
    GlobalTally,
    LogEntry,
    SourceFile,
    TallyEntry,
    sorted_tally,
)

METRICS_NAMESPACE = "beam_tally"
DEAD_LETTER_NAMESPACE = "beam_tally.dead_letters"

LOGS = "logs"
DOCUMENTS = "documents"
DEAD_LETTERS = "dead_letters"
UPDATES = "updates"
TALLIES = "tallies"
FINAL = "final"


FILE_RECORDS = "beam_tally.file_records"  # valid records, one counter per source
FILE_DEAD_LETTERS = "beam_tally.file_dead_letters"  # dead letters, one counter per source


def count_dead_letter(dead: DeadLetter) -> None:
    """Count a dead letter in Beam metrics, in total, by reason code and by source (so that a
    file with dead letters and no valid record can be named: see ``FILE_RECORDS``)."""
    Metrics.counter(METRICS_NAMESPACE, "dead_letters").inc()
    Metrics.counter(DEAD_LETTER_NAMESPACE, reason_code(dead.reason)).inc()
    Metrics.counter(FILE_DEAD_LETTERS, dead.source).inc()


def stream_error_dead_letter(doc: SourceFile) -> pvalue.TaggedOutput:
    """A document the producer could not send (its content ``STREAM_ERROR_PREFIX`` + the
    reason), as the counted dead letter it becomes."""
    reason = doc.content[len(STREAM_ERROR_PREFIX) :].decode("utf-8", "replace")
    dead = DeadLetter(doc.source, None, reason, "")
    count_dead_letter(dead)
    return pvalue.TaggedOutput(DEAD_LETTERS, dead)


class ParseLogDocumentFn(beam.DoFn):
    """Parses one ``SourceFile`` into one ``LogBatch`` (its valid logs, as columns), its source
    and note (tag ``documents``: ``(source, parse_logs.document_note)``) and its dead letters
    (tag ``dead_letters``). Valid logs and dead letters are also counted per file (Beam metrics
    ``FILE_RECORDS`` and ``FILE_DEAD_LETTERS``, by source), once per document."""

    def __init__(self) -> None:
        self.documents = Metrics.counter(METRICS_NAMESPACE, "documents")
        self.logs = Metrics.counter(METRICS_NAMESPACE, "logs")

    def process(self, doc: SourceFile):
        if doc.content.startswith(STREAM_ERROR_PREFIX):  # the producer could not send it
            yield stream_error_dead_letter(doc)
            return
        batch, dead_letters = parse_log_document(doc.source, doc.content)
        self.documents.inc()
        logs = len(batch.emails)
        self.logs.inc(logs)
        if logs:
            Metrics.counter(FILE_RECORDS, doc.source).inc(logs)
        for dead in dead_letters:
            count_dead_letter(dead)
            yield pvalue.TaggedOutput(DEAD_LETTERS, dead)
        note = document_note(doc.content, logs, dead_letters)
        yield pvalue.TaggedOutput(DOCUMENTS, (doc.source, note))
        if batch.emails:
            yield batch


class EmitLogBatchFn(beam.DoFn):
    """Re-emits parsed ``LogBatch``es as a batched ``PCollection[LogEntry]``.

    Batch-aware consumers (``TallyPerFile``) receive the columns as they are; element-wise
    consumers receive one ``LogEntry`` per log. (A batch-producing DoFn cannot also emit
    element-wise tagged outputs, hence this separate step; both fuse into one stage.)
    """

    def infer_output_type(self, input_type):
        return LogEntry

    @beam.DoFn.yields_batches
    def process(self, batch: LogBatch) -> Iterator[LogBatch]:
        yield batch


def _entries(batch: LogBatch) -> Iterator[LogEntry]:
    return LogBatchConverter().explode_batch(batch)


class ParseLogDocuments(beam.PTransform):
    """``PCollection[SourceFile]`` -> outputs ``logs`` (``LogEntry``), ``documents`` (the source
    path and note of every parsed document) and ``dead_letters`` (``DeadLetter``).

    ``batched=False`` emits the logs one by one, for runners without Batched DoFns (the
    DirectRunner's streaming mode)."""

    def __init__(self, batched: bool = True) -> None:
        super().__init__()
        self.batched = batched

    def expand(self, docs):
        parsed = docs | "Parse" >> beam.ParDo(ParseLogDocumentFn()).with_output_types(
            LogBatch, **{DOCUMENTS: tuple[str, str], DEAD_LETTERS: DeadLetter}
        ).with_outputs(DOCUMENTS, DEAD_LETTERS, main="batches")
        if self.batched:
            logs = parsed.batches | "AsLogEntries" >> beam.ParDo(EmitLogBatchFn())
        else:
            logs = parsed.batches | "AsLogEntries" >> beam.FlatMap(_entries).with_output_types(
                LogEntry
            )
        return {
            LOGS: logs,
            DOCUMENTS: parsed[DOCUMENTS],
            DEAD_LETTERS: parsed[DEAD_LETTERS],
        }


class CountEmailsFn(beam.DoFn):
    """Counts a batch of logs per (source, email): one partial tally per source in the batch
    (or one log at a time, on runners without Batched DoFns)."""

    def process(self, entry: LogEntry) -> Iterator[tuple[str, dict[str, int]]]:
        yield entry.source, {entry.email: 1}

    @beam.DoFn.yields_elements
    def process_batch(self, batch: LogBatch) -> Iterator[tuple[str, dict[str, int]]]:
        source = batch.single_source()
        if source is not None:
            yield source, Counter(batch.emails)
            return
        partials: dict[str, Counter] = {}
        for src, email in zip(batch.sources, batch.emails, strict=True):
            partials.setdefault(src, Counter())[email] += 1
        yield from partials.items()


@beam.typehints.with_output_types(list[TallyEntry])
class SumCountsCombineFn(beam.CombineFn):
    """Sums partial ``{email: count}`` mappings; the accumulator is one dict per distinct email.

    The output is the tally sorted by total descending, then email.
    """

    def create_accumulator(self) -> dict[str, int]:
        return {}

    def add_input(self, accumulator: dict[str, int], counts: Mapping[str, int]) -> dict[str, int]:
        get = accumulator.get
        for email, count in counts.items():
            accumulator[email] = get(email, 0) + count
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[dict[str, int]]) -> dict[str, int]:
        merged: dict[str, int] | None = None
        for accumulator in accumulators:
            if merged is None:
                merged = accumulator
            else:
                self.add_input(merged, accumulator)
        return {} if merged is None else merged

    def compact(self, accumulator: dict[str, int]) -> dict[str, int]:
        return accumulator

    def extract_output(self, accumulator: dict[str, int]):
        return sorted_tally(accumulator)


class DocumentNote(NamedTuple):
    """A document's note (``parse_logs.document_note``), as an input of ``FileTallyCombineFn``."""

    note: str


class _FileAccumulator:
    """A file's counts so far (``SumCountsCombineFn``'s dict) and its document's note."""

    __slots__ = ("counts", "note")

    def __init__(self, counts: dict[str, int], note: str) -> None:
        self.counts = counts
        self.note = note

    def __reduce__(self):
        return _FileAccumulator, (self.counts, self.note)


class FileTallyCombineFn(beam.CombineFn):
    """``SumCountsCombineFn`` per file, with the document's note carried beside the counts:
    inputs are ``{email: count}`` partials or one ``DocumentNote``; the output is
    ``(sorted tally, note)``. The note costs one type test per partial, never one per log."""

    def __init__(self) -> None:
        self.counts = SumCountsCombineFn()

    def create_accumulator(self) -> _FileAccumulator:
        return _FileAccumulator({}, "")

    def add_input(self, acc: _FileAccumulator, value) -> _FileAccumulator:
        if type(value) is DocumentNote:
            acc.note = acc.note or value.note
        else:
            self.counts.add_input(acc.counts, value)
        return acc

    def merge_accumulators(self, accumulators: Iterable[_FileAccumulator]) -> _FileAccumulator:
        merged: _FileAccumulator | None = None
        for acc in accumulators:
            if merged is None:
                merged = acc
            else:
                self.counts.add_input(merged.counts, acc.counts)
                merged.note = merged.note or acc.note
        return self.create_accumulator() if merged is None else merged

    def compact(self, acc: _FileAccumulator) -> _FileAccumulator:
        return acc

    def extract_output(self, acc: _FileAccumulator):
        return self.counts.extract_output(acc.counts), acc.note


def _file_tally(source: str, tally_and_note) -> FileTally:
    tally, note = tally_and_note
    return FileTally(source, tally, note)


class TallyPerFile(beam.PTransform):
    """``(PCollection[LogEntry], PCollection[(source, note)] of documents)`` -> ``FileTally``.

    One tally message per document source, including documents without valid logs, with the
    document's note. Logs are counted per batch in the fused stage and the partial counts
    combined per file, so only small per-file accumulators cross the shuffle.
    """

    def expand(self, pcolls):
        logs, documents = pcolls
        partials = logs | "CountEmails" >> beam.ParDo(CountEmailsFn())
        notes = documents | "EveryDocument" >> beam.MapTuple(
            lambda source, note: (source, DocumentNote(note))
        )
        return (
            (partials, notes)
            | "Merge" >> beam.Flatten()
            | "SumPerFile" >> beam.CombinePerKey(FileTallyCombineFn())
            | "ToFileTally" >> beam.MapTuple(_file_tally).with_output_types(FileTally)
        )


class TallyDocumentFn(beam.DoFn):
    """Parses and counts one ``SourceFile`` in one call: its ``FileTally`` (sorted, with the
    document's note) and its dead letters (tag ``dead_letters``), counted in Beam metrics as
    ``ParseLogDocumentFn`` counts them. What ``ParseLogDocuments | TallyPerFile`` computes, with
    one element per file instead of a batch of logs, a combine and a shuffle."""

    def __init__(self) -> None:
        self.documents = Metrics.counter(METRICS_NAMESPACE, "documents")
        self.logs = Metrics.counter(METRICS_NAMESPACE, "logs")

    def process(self, doc: SourceFile):
        if doc.content.startswith(STREAM_ERROR_PREFIX):  # the producer could not send it
            yield stream_error_dead_letter(doc)
            return
        counts, dead_letters = count_log_document(doc.source, doc.content)
        empty = not doc.content.strip()
        yield from tally_outputs(doc.source, counts, dead_letters, empty, self.documents, self.logs)


def tally_outputs(source: str, counts, dead_letters, empty: bool, documents, logs):
    """A counted document's outputs and metrics: its dead letters (tagged), then its
    ``FileTally`` (``empty``: the file held only white space)."""
    total = sum(counts.values())
    documents.inc()
    logs.inc(total)
    if total:
        Metrics.counter(FILE_RECORDS, source).inc(total)
    for dead in dead_letters:
        count_dead_letter(dead)
        yield pvalue.TaggedOutput(DEAD_LETTERS, dead)
    yield FileTally(source, sorted_tally(counts), note_of(empty, total, dead_letters))


class TallyDocuments(beam.PTransform):
    """``PCollection[SourceFile]`` -> ``tallies`` (``FileTally``, one per document, even one
    without valid logs) and ``dead_letters`` (``DeadLetter``): ``ParseLogDocuments`` and
    ``TallyPerFile`` in one step, for jobs that need the tallies only."""

    def expand(self, docs):
        return docs | "CountLogs" >> beam.ParDo(TallyDocumentFn()).with_output_types(
            FileTally, **{DEAD_LETTERS: DeadLetter}
        ).with_outputs(DEAD_LETTERS, main=TALLIES)


class ApplyTallyFn(beam.DoFn):
    """Keyed stateful consumer: applies each tally message to the global tally and emits it.

    An event-time timer at the end of the window emits the final global tally (tag ``final``)
    once the input is complete: at the end of a batch run, or when a stream ends. (The legacy
    streaming DirectRunner fires that timer but does not hold the watermark for its output, so
    a downstream GroupByKey there sees it as late; batch runners are unaffected.)
    """

    TOTALS = ReadModifyWriteStateSpec("totals", PickleCoder())
    END = TimerSpec("end", TimeDomain.WATERMARK)

    def __init__(self) -> None:
        self.applied = Metrics.counter(METRICS_NAMESPACE, "tally_messages")

    def process(
        self,
        keyed: tuple[str, FileTally],
        window=beam.DoFn.WindowParam,
        totals=beam.DoFn.StateParam(TOTALS),
        end=beam.DoFn.TimerParam(END),
    ):
        _, message = keyed
        files, counts, _ = totals.read() or (0, {}, None)
        get = counts.get
        for entry in message.tally:
            counts[entry.email] = get(entry.email, 0) + entry.total
        files += 1
        totals.write((files, counts, message.source))
        end.set(window.max_timestamp())
        self.applied.inc()
        yield GlobalTally(files, message.source, sorted_tally(counts), message.tally, message.note)

    @on_timer(END)
    def emit_final(self, totals=beam.DoFn.StateParam(TOTALS)):
        files, counts, after = totals.read()
        yield pvalue.TaggedOutput(FINAL, GlobalTally(files, after, sorted_tally(counts), []))


class UpdateGlobalTally(beam.PTransform):
    """``PCollection[FileTally]`` -> ``updates`` (``GlobalTally``, one per message applied) and
    ``final`` (the last one, once the input is complete; nothing when there was no message)."""

    def expand(self, tallies):
        if not isinstance(tallies.windowing.windowfn, window.GlobalWindows):
            tallies = tallies | "GlobalWindow" >> beam.WindowInto(window.GlobalWindows())  # live
        return (
            tallies
            | "KeyGlobally"
            >> beam.Map(lambda t: ("global", t)).with_output_types(tuple[str, FileTally])
            | "Apply"
            >> beam.ParDo(ApplyTallyFn())
            .with_output_types(GlobalTally, **{FINAL: GlobalTally})
            .with_outputs(FINAL, main=UPDATES)
        )
