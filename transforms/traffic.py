"""The monitor job's transforms: parse access lines, stats per window, the high-traffic alert.

``ParseAccessLines``: ``AccessLine`` -> ``records`` (``AccessRecord``, timestamped with its event
time unless ``event_time=False``) and ``dead_letters``.
``ComputeTrafficStats``: ``AccessRecord`` -> ``TrafficStats``, one per fixed event-time window with
traffic (``TrafficStatsCombineFn``: counters per key, never the records; partials per bundle).
``DetectHighTraffic``: ``AccessRecord`` -> ``alerts`` (``Alert``) and ``late`` (``DeadLetter``).
Per-second counts feed one keyed stateful DoFn that evaluates the rule of ``alert_rule`` second
by second as the watermark passes (an event-time timer), the same way in batch and streaming.
Both consumers take event time from ``AccessRecord.timestamp``, not from element timestamps.

The per-line DoFns are Batched DoFns over ``LineColumns``/``RecordColumns`` (``list_batches``),
lines and records as one list per field, so that parsing and counting run in C loops; each
with an element-wise ``process`` too, for runners without batch support (the streaming
DirectRunner).
"""

import pickle
from array import array
from collections import Counter
from collections.abc import Iterable
from functools import lru_cache
from itertools import compress
from typing import Iterator

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import zstandard
from apache_beam import pvalue
from apache_beam.coders import BytesCoder, PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.transforms import window
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from transforms import access_arrow, access_log
from transforms.alert_rule import ALERT, TrafficAlertRule, changes_of_counts, sum_by_key
from transforms.list_batches import LineBlock, LineColumns, RecordColumns, RecordList, RecordTable
from transforms.records import (
    STREAM_ERROR,
    AccessLine,
    AccessRecord,
    Alert,
    DeadLetter,
    RankedCount,
    TrafficStats,
    truncate_raw,
)
from transforms.tally import DEAD_LETTERS, FILE_RECORDS, METRICS_NAMESPACE, count_dead_letter

RECORDS = "records"
ALERTS = "alerts"
LATE = "late"
FORMATS = ("auto", "csv", "clf")
_STATUS_CLASSES = {n: f"{n}xx" for n in range(1, 6)}
MAX_INT64 = (1 << 63) - 1
"""The largest count Beam's integer coders carry. Each line's bytes stay below 10**18
(``access_log``), but ten such lines in one window add up past it: byte sums saturate here, in
``extract_output`` (accumulators are Python integers, exact until then). A window that moves
8 EiB is hostile input, not traffic; saturating keeps every sink's number an honest lower
bound without a check in the per-record loop."""


class ParseAccessLineFn(beam.DoFn):
    """Parses lines (``csv`` or ``clf``; ``auto`` uses the format the reader told from the
    line's file, or else tells the line apart by a CSV line's leading quote). Header and blank
    lines are skipped; every other bad line is a dead letter.

    Lines are parsed a batch at a time (Beam's Batched DoFns): records leave as
    ``RecordColumns``, and dead letters as lists on their own tag, so no per-line element
    crosses Beam's machinery between here and the batch-aware consumers; element-wise
    consumers still see one element per line.
    """

    def __init__(self, fmt: str = "auto") -> None:
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, not {fmt!r}")
        self.fmt = fmt
        self.records = Metrics.counter(METRICS_NAMESPACE, "records")

    def infer_output_type(self, input_type):
        return AccessRecord

    def _parse(self, lines) -> tuple[list[AccessRecord], list[DeadLetter]]:
        records: list[AccessRecord] = []
        dead_letters: list[DeadLetter] = []
        auto = self.fmt == "auto"
        parse = access_log.parse_line
        for source, number, text, file_fmt in lines:
            if file_fmt == STREAM_ERROR:  # the producer could not read it: text is the reason
                dead = DeadLetter(source, number or None, text, "")
                count_dead_letter(dead)
                dead_letters.append(dead)
                continue
            fmt = self.fmt
            if auto:
                fmt = file_fmt  # told by the reader from the file's first lines
                if not fmt:  # unknown: tell the line apart by a CSV line's leading quote
                    fmt = access_log.format_of_line(text)
            try:
                record = parse(text, fmt, source, number)
            except access_log.BadLine as bad:
                dead = DeadLetter(source, number, str(bad.args[0]), truncate_raw(text))
                count_dead_letter(dead)
                dead_letters.append(dead)
                continue
            if record is not None:
                records.append(record)
        self.records.inc(len(records))
        return records, dead_letters

    def process(self, line: AccessLine) -> Iterator[AccessRecord]:
        """Element-wise, for runners without Batched DoFns (the streaming DirectRunner). A
        ``LineList`` element (the live stream's chunks) is parsed whole into one
        ``RecordTable`` (``_parse_chunk``) or ``RecordList`` element, which the aggregating
        consumers take as they take a batch."""
        chunk = isinstance(line, list)
        parsed = self._parse_chunk(line) if chunk else None
        if parsed is not None:
            table, dead_letters = parsed
            for dead in dead_letters:
                yield pvalue.TaggedOutput(DEAD_LETTERS, dead)
            if len(table):
                yield table
            return
        records, dead_letters = self._parse(line if chunk else [line])
        for dead in dead_letters:
            yield pvalue.TaggedOutput(DEAD_LETTERS, dead)
        if not chunk:
            yield from records
        elif records:
            yield RecordList(records)

    def _parse_chunk(self, lines: list[AccessLine]) -> tuple[RecordTable, list] | None:
        """``_parse`` of a live chunk (``LineList``) by ``access_arrow``, as ``_parse_block``
        parses a file's block: the chunk's texts joined into one block, its records one
        ``RecordTable`` with each line's own number. None (parse it line by line) unless every
        line is of one file and one format with an Arrow path, and the block reads back as
        exactly those lines (no LF or CR inside or at the end of a text; valid Unicode)."""
        first = lines[0] if lines else None
        if (
            first is None
            or first[3] == STREAM_ERROR
            or any(line[0] != first[0] or line[3] != first[3] for line in lines)
        ):
            return None
        source, fmt = first[0], first[3] if self.fmt == "auto" else self.fmt
        if fmt not in access_arrow.FORMATS:
            return None
        texts = [line[2] for line in lines]
        try:
            block = ("\n".join(texts) + "\n").encode("utf-8")
            numbers = np.array([line[1] for line in lines], np.int64)
        except (UnicodeEncodeError, TypeError, ValueError):
            return None
        if block.count(b"\n") != len(texts) or b"\r" in block:
            return None
        try:
            table, others = access_arrow.parse_block(block, fmt)
        except pa.ArrowException:  # pragma: no cover - a line of the usual shape is a CSV row
            return None
        column = access_arrow.COLUMNS.index("line")
        table = table.set_column(column, "line", pa.array(numbers[table["line"].to_numpy()]))
        return self._with_others(table, others, source, fmt, lambda index: int(numbers[index]))

    def _parse_columns(self, lines: LineColumns) -> tuple[RecordColumns, list[DeadLetter]]:
        """``_parse`` of a batch, into columns: the lines of the usual shape at once
        (``access_log.parse_columns``), the others one by one. The batch's lines must share
        one known format (as a file's do), else all go one by one."""
        formats = set(lines.fmt)
        fmt = self.fmt
        if fmt == "auto":
            fmt = next(iter(formats)) if len(formats) == 1 else ""
        parsed = None
        if fmt in access_log.FORMATS and STREAM_ERROR not in formats:
            parsed = access_log.parse_columns(lines.text, fmt)
        if parsed is None:
            records, dead_letters = self._parse(lines)
            return RecordColumns.of(records), dead_letters
        columns, matches = parsed
        columns.append(list(compress(lines.source, matches)))
        columns.append(list(compress(lines.line, matches)))
        matched = len(columns[-1])
        self.records.inc(matched)
        dead_letters: list[DeadLetter] = []
        if matched < len(lines):  # header, blank, bad or unusual lines: one by one
            others, at = [], -1
            for _ in range(len(lines) - matched):
                at = matches.index(None, at + 1)
                others.append(AccessLine(*(column[at] for column in lines.columns)))
            records, dead_letters = self._parse(others)
            for column, values in zip(columns, zip(*records, strict=True), strict=False):
                column.extend(values)
        return RecordColumns(columns), dead_letters

    def _parse_block(self, lines: LineBlock) -> tuple[RecordColumns, list[DeadLetter]] | None:
        """``_parse`` of a ``LineBlock`` by ``access_arrow``: the lines of the usual shape at
        once, into a ``RecordTable``, the others one by one (their records appended to it).
        None when its format has no Arrow path."""
        fmt = lines.format if self.fmt == "auto" else self.fmt
        if fmt not in access_arrow.FORMATS:
            return None
        try:
            table, others = access_arrow.parse_block(lines.data, fmt, lines.skip)
        except pa.ArrowException:  # pragma: no cover - a line of the usual shape is a CSV row
            return None
        first = lines.before + 1
        table = table.set_column(
            access_arrow.COLUMNS.index("line"), "line", pc.add(table["line"], first)
        )
        return self._with_others(table, others, lines.path, fmt, lambda index: first + index)

    def _with_others(
        self, table, others, source: str, fmt: str, number
    ) -> tuple[RecordTable, list[DeadLetter]]:
        """The Arrow parse's records (``table``, its lines numbered) with those of its
        ``others`` parsed one by one (``number(index)``: the line number of a block's line
        ``index``), as one ``RecordTable``, and the others' dead letters."""
        self.records.inc(table.num_rows)
        dead_letters: list[DeadLetter] = []
        if others:  # header, blank, bad or unusual lines: one by one
            records, dead_letters = self._parse(
                [AccessLine(source, number(index), text, fmt) for index, text in others]
            )
            if records:
                table = pa.concat_tables([table, access_arrow.records_table(records)])
        return RecordTable(table, source), dead_letters

    @beam.DoFn.yields_batches
    def process_batch(self, lines: LineColumns) -> Iterator[RecordColumns]:
        parsed = self._parse_block(lines) if isinstance(lines, LineBlock) else None
        records, dead_letters = parsed or self._parse_columns(lines)
        if isinstance(records, RecordTable):
            if len(records):
                Metrics.counter(FILE_RECORDS, records.file).inc(len(records))
            if dead_letters:
                yield pvalue.TaggedOutput(DEAD_LETTERS, dead_letters)
            if len(records):
                yield records
            return
        if records:  # valid records per file, per batch (a batch is one file's, as a rule)
            sources = set(records.source)
            if len(sources) == 1:
                Metrics.counter(FILE_RECORDS, sources.pop()).inc(len(records))
            else:
                for source, n in Counter(records.source).items():
                    Metrics.counter(FILE_RECORDS, source).inc(n)
        if dead_letters:
            yield pvalue.TaggedOutput(DEAD_LETTERS, dead_letters)
        if records:
            yield records


class ParseAccessLines(beam.PTransform):
    """``PCollection[AccessLine]`` -> ``records`` (``AccessRecord``) and ``dead_letters``.

    With ``event_time`` (the default) each record is timestamped with its event time. The
    monitor turns it off: its consumers take event time from ``AccessRecord.timestamp`` and
    timestamp their own per-window and per-second partials, and stamping a million records one
    by one costs more than parsing them.
    """

    def __init__(self, fmt: str = "auto", event_time: bool = True) -> None:
        super().__init__()
        self.fmt = fmt
        self.event_time = event_time

    def expand(self, lines):
        parsed = lines | "Parse" >> beam.ParDo(ParseAccessLineFn(self.fmt)).with_outputs(
            DEAD_LETTERS, main=RECORDS
        )
        records = parsed[RECORDS]
        if self.event_time:
            records = records | "StampEventTime" >> beam.Map(
                lambda r: window.TimestampedValue(r, r.timestamp)
            ).with_output_types(AccessRecord)
        return {RECORDS: records, DEAD_LETTERS: parsed[DEAD_LETTERS]}


def _top(counts: dict[str, int], n: int) -> list[RankedCount]:
    """The ``n`` largest counts, ties broken by name so the output is deterministic."""
    ranked = sorted(counts.items())
    ranked.sort(key=lambda item: item[1], reverse=True)
    return [RankedCount(name, value) for name, value in ranked[:n]]


class TrafficStatsCombineFn(beam.CombineFn):
    """Combines ``AccessRecord``s into stats. The accumulator holds totals and a counter per
    section, status class, host and user: its size is the number of distinct keys in a window,
    never the number of records."""

    def __init__(self, top: int = 5) -> None:
        self.top = top

    def create_accumulator(self):
        # hits, bytes, sections, status classes, hits per host, bytes per host, hits per user
        return [0, 0, {}, {}, {}, {}, {}]

    def add_input(self, acc, record: AccessRecord):
        host, _, user, _, _, _, section, _, status, size, _, _ = record
        acc[0] += 1
        acc[1] += size
        sections, statuses, host_hits, host_bytes, users = acc[2:]
        sections[section] = sections.get(section, 0) + 1
        status_class = _STATUS_CLASSES.get(status // 100) or f"{status // 100}xx"
        statuses[status_class] = statuses.get(status_class, 0) + 1
        host_hits[host] = host_hits.get(host, 0) + 1
        host_bytes[host] = host_bytes.get(host, 0) + size
        users[user] = users.get(user, 0) + 1
        return acc

    def merge_accumulators(self, accumulators: Iterable[list]):
        merged = None
        for acc in accumulators:
            if merged is None:
                merged = acc
                continue
            merged[0] += acc[0]
            merged[1] += acc[1]
            for mine, theirs in zip(merged[2:], acc[2:], strict=True):
                for key, value in theirs.items():
                    mine[key] = mine.get(key, 0) + value
        return self.create_accumulator() if merged is None else merged

    def compact(self, acc):
        return acc

    def extract_output(self, acc):
        """``(hits, bytes, sections, status classes, error rate, hosts by hits, hosts by bytes,
        users, distinct hosts, distinct users)``; the window is added by ``ComputeTrafficStats``."""
        hits, size, sections, statuses, host_hits, host_bytes, users = acc
        errors = statuses.get("4xx", 0) + statuses.get("5xx", 0)
        if size > MAX_INT64:  # only then can a host's sum be past it too
            host_bytes = {host: min(value, MAX_INT64) for host, value in host_bytes.items()}
        return (
            hits,
            min(size, MAX_INT64),
            _top(sections, self.top),
            sorted(RankedCount(name, value) for name, value in statuses.items()),
            errors / hits if hits else 0.0,
            _top(host_hits, self.top),
            _top(host_bytes, self.top),
            _top(users, self.top),
            len(host_hits),
            len(users),
        )


class _BundleAggregateFn(beam.DoFn):
    """Aggregates a bundle's records in ``_add``, a ``RecordColumns`` batch at a time (from
    the parser's batches, or made from each element on runners without Batched DoFns, such
    as the streaming DirectRunner); subclasses emit in ``finish_bundle``."""

    def _add(self, records: RecordColumns) -> Iterable | None:
        """Adds ``records``; may return outputs to emit now (a bounded aggregator's oldest)."""
        raise NotImplementedError

    def process(self, record: AccessRecord):
        """Element-wise, for runners without Batched DoFns (the streaming DirectRunner); a
        ``RecordTable`` or ``RecordList`` element (from the live stream's chunks) is added
        whole."""
        if isinstance(record, RecordColumns):
            return self._add(record)
        return self._add(RecordColumns.of(record if isinstance(record, list) else (record,)))

    @beam.DoFn.yields_elements
    def process_batch(self, records: RecordColumns):
        return iter(self._add(records) or ())


@lru_cache(maxsize=1024)
def _status_class(status: int) -> str:
    return _STATUS_CLASSES.get(status // 100) or f"{status // 100}xx"


BUNDLE_TOTALS = "bundle_totals"


# Stats windows a bundle keeps open at most (``PartialStatsFn``): past it, the oldest half
# leave as partials, so a bundle's memory is bounded however much event time it covers (a
# window's partials are merged downstream, so one sent early is only one more to merge).
MAX_OPEN_WINDOWS = 2048

# Stats windows per element of a batch run's partials (``PartialStatsFn(grouped=True)``): one
# element per run of windows, not per window, for the shuffle to encode, partition and decode.
BATCH_KEY_WINDOWS = 360

# Stats windows per key of the streaming windowed combine (``ComputeTrafficStats``): the
# streaming DirectRunner keeps a state per key and scans them all at each round of timers, and
# its trigger handling is quadratic in the windows of one key; a few windows a key cost least
# (measured on 1,440 windows: 6 and 30 alike, 1 and 360 slower).
STREAMING_KEY_WINDOWS = 6


class PartialStatsFn(_BundleAggregateFn):
    """Pre-aggregates a bundle's records per stats window: one ``(key, accumulator)`` per window
    the bundle touched, timestamped at the window's start; the key is the window's start, or
    with ``key_windows`` the start of its run of that many windows (for a windowed combine,
    which groups by key and window). With ``grouped`` (batch), one ``(run start,
    pack_windows({window start: accumulator}))`` per run of ``key_windows`` windows instead,
    at the run's first window. Only these partials are windowed and shuffled, not every
    record. With ``totals``, also one ``(first window start, last window start,
    accumulator)`` per bundle on ``BUNDLE_TOTALS``: the bundle's partials merged, for the
    whole run's totals (a live run's totals are recombined from every input at each update,
    so one input per bundle, not per window)."""

    def __init__(
        self,
        size: int,
        combine_fn: TrafficStatsCombineFn,
        totals: bool = False,
        key_windows: int = 1,
        grouped: bool = False,
    ):
        self.size = size
        self.combine_fn = combine_fn
        self.totals = totals
        self.key_span = size * key_windows
        self.grouped = grouped

    def start_bundle(self):
        self.partials: dict[int, list] = {}
        self.total = None  # with totals: the partials already sent, merged

    def _add(self, records: RecordColumns):
        if isinstance(records, RecordTable) and not _may_overflow(records.table):
            self._add_table(records.table)
        else:
            self._add_columns(records)
        if len(self.partials) > MAX_OPEN_WINDOWS:
            return self._flush(sorted(self.partials)[: len(self.partials) // 2])
        return None

    def _add_table(self, table) -> None:
        """``_add_columns`` of an Arrow table of records (``RecordTable``): the table grouped
        by window and section, status class, host and user with Arrow's kernels, and only the
        groups added into the partials' dicts, a window's run of them at a time."""
        if not table.num_rows:
            return
        seconds = table["timestamp"].to_numpy()
        starts = pa.array(seconds - seconds % self.size)
        statuses = table["status"].to_numpy()
        keyed = pa.table(
            {
                "start": starts,
                "section": table["section"],
                "class": pa.array(statuses // 100),
                "host": table["host"],
                "user": table["user"],
                "bytes": table["bytes"],
            }
        )
        partials, create = self.partials, self.combine_fn.create_accumulator
        count, total = ("bytes", "count"), ("bytes", "sum")
        for slot, key, aggregates in (
            (None, None, (count, total)),
            (2, "section", (count,)),
            (3, "class", (count,)),
            (4, "host", (count, total)),
            (6, "user", (count,)),
        ):
            grouped = keyed.group_by(["start", key] if key else "start").aggregate(aggregates)
            grouped = grouped.sort_by("start")
            windows = grouped["start"].to_numpy()
            cuts = [0, *(np.flatnonzero(windows[1:] != windows[:-1]) + 1).tolist(), len(windows)]
            counts = grouped["bytes_count"].to_pylist()
            sums = grouped["bytes_sum"].to_pylist() if total in aggregates else None
            keys = grouped[key].to_pylist() if key else None
            if key == "class":
                keys = [_status_class(n * 100) for n in keys]
            for start, a, b in zip(windows[cuts[:-1]].tolist(), cuts, cuts[1:], strict=False):
                acc = partials.get(start)
                if acc is None:
                    acc = partials[start] = create()
                if key is None:
                    acc[0] += counts[a]
                    acc[1] += sums[a]
                    continue
                _add_counts(acc[slot], keys[a:b], counts[a:b])
                if sums is not None:  # bytes per host
                    _add_counts(acc[slot + 1], keys[a:b], sums[a:b])

    def _add_columns(self, records: RecordColumns) -> None:
        """``TrafficStatsCombineFn.add_input`` of each record into its window's partial,
        inlined over the batch's columns zipped (no call and no tuple unpacking per record;
        measured faster than counting each window's slice with ``Counter``)."""
        partials, size, create = self.partials, self.size, self.combine_fn.create_accumulator
        columns = (records.host, records.user, records.section, records.bytes)
        classes = map(_status_class, records.status)
        current = None  # lines come mostly in time order: the window of the line before
        for second, host, user, section, size_, status_class in zip(
            records.timestamp, *columns, classes, strict=True
        ):
            start = second - second % size
            if start != current:
                acc = partials.get(start)
                if acc is None:
                    acc = partials[start] = create()
                current = start
                sections, statuses, host_hits, host_bytes, users = acc[2:]
            acc[0] += 1
            acc[1] += size_
            sections[section] = sections.get(section, 0) + 1
            statuses[status_class] = statuses.get(status_class, 0) + 1
            host_hits[host] = host_hits.get(host, 0) + 1
            host_bytes[host] = host_bytes.get(host, 0) + size_
            users[user] = users.get(user, 0) + 1

    def _flush(self, starts: list[int]) -> list:
        """The partials of the windows ``starts``, to emit (merged into ``total`` first)."""
        if not starts:
            return []
        partials = [(start, self.partials.pop(start)) for start in starts]
        if self.totals:
            # into a fresh accumulator: the partials also leave as they are
            first, last, merged = self.total or (starts[0], starts[0], None)
            merged = self.combine_fn.merge_accumulators(
                [merged or self.combine_fn.create_accumulator(), *(acc for _, acc in partials)]
            )
            self.total = (min(first, *starts), max(last, *starts), merged)
        span = self.key_span
        if not self.grouped:
            return [
                window.GlobalWindows.windowed_value((start - start % span, acc), timestamp=start)
                for start, acc in partials
            ]
        runs: dict[int, dict[int, list]] = {}
        for start, acc in partials:
            runs.setdefault(start - start % span, {})[start] = acc
        return [
            window.GlobalWindows.windowed_value((run, pack_windows(accs)), timestamp=min(accs))
            for run, accs in runs.items()
        ]

    def finish_bundle(self):
        yield from self._flush(list(self.partials))
        total, self.total = self.total, None
        if total is not None:
            yield pvalue.TaggedOutput(
                BUNDLE_TOTALS, window.GlobalWindows.windowed_value(total, timestamp=total[0])
            )


def pack_windows(accs: dict[int, list]) -> bytes:
    """A run's ``{window start: accumulator}`` as one compressed blob (pickled, then zstd at
    its fastest level): what a batch run's shuffle holds until every input is read.

    The FnApiRunner keeps a GroupByKey's values decoded, in memory, until the last bundle is
    in. As dicts, a window's counters cost about 180 bytes per (window, host) pair, so the
    monitor's memory grew by ~100 MiB per million lines; packed, about 11 bytes (measured:
    17x smaller), and packing plus unpacking takes less time than Beam's coder spent encoding
    and decoding the dicts, twice, through the shuffle."""
    return zstandard.ZstdCompressor(level=1).compress(pickle.dumps(accs, pickle.HIGHEST_PROTOCOL))


def unpack_windows(blob: bytes) -> dict[int, list]:
    """``pack_windows`` undone."""
    return pickle.loads(zstandard.ZstdDecompressor().decompress(blob))


def _add_counts(counts: dict, keys: list, values: list) -> None:
    if not counts:
        counts.update(zip(keys, values, strict=True))
        return
    for key, value in zip(keys, values, strict=True):
        counts[key] = counts.get(key, 0) + value


def _may_overflow(table) -> bool:
    """Whether a byte sum over ``table``'s records could pass int64 (Arrow's sums would wrap;
    ``_add_columns`` adds Python integers, exact)."""
    largest = pc.max(table["bytes"]).as_py() or 0
    return largest * table.num_rows > MAX_INT64


class MergeStatsCombineFn(beam.CombineFn):
    """Combines partial ``TrafficStatsCombineFn`` accumulators into the window's stats."""

    def __init__(self, combine_fn: TrafficStatsCombineFn) -> None:
        self.combine_fn = combine_fn

    def create_accumulator(self):
        return self.combine_fn.create_accumulator()

    def add_input(self, acc, partial):
        return self.combine_fn.merge_accumulators([acc, partial])

    def merge_accumulators(self, accumulators):
        return self.combine_fn.merge_accumulators(accumulators)

    def compact(self, acc):
        return acc

    def extract_output(self, acc):
        return self.combine_fn.extract_output(acc)


class _WithWindowFn(beam.DoFn):
    def __init__(self) -> None:
        self.windows = Metrics.counter(METRICS_NAMESPACE, "stats_windows")

    def process(self, keyed_stats, win=beam.DoFn.WindowParam):
        self.windows.inc()
        yield TrafficStats(int(win.start), int(win.end), *keyed_stats[1])


class _MergeWindowStatsFn(beam.DoFn):
    """Batch: ``(run start, its packed partials)`` (``PartialStatsFn(grouped=True)``) -> each
    window's ``TrafficStats``, in window order, timestamped at the end of the window."""

    def __init__(self, size: int, combine_fn: TrafficStatsCombineFn) -> None:
        self.size = size
        self.combine_fn = combine_fn
        self.windows = Metrics.counter(METRICS_NAMESPACE, "stats_windows")

    def process(self, keyed_partials):
        _, groups = keyed_partials
        per_window: dict[int, list] = {}
        for packed in groups:
            for start, acc in unpack_windows(packed).items():
                per_window.setdefault(start, []).append(acc)
        for start in sorted(per_window):
            # unpacked here, so ours to merge in place
            acc = self.combine_fn.merge_accumulators(per_window[start])
            self.windows.inc()
            stats = TrafficStats(start, start + self.size, *self.combine_fn.extract_output(acc))
            # Stamped at the end of its window, as a windowed combine stamps its output.
            yield window.TimestampedValue(
                stats, window.IntervalWindow(start, start + self.size).max_timestamp()
            )


class _TotalsAccumulator:
    """The whole run's stats so far: the first and last window start seen, and the merged
    ``TrafficStatsCombineFn`` accumulator."""

    __slots__ = ("first", "last", "stats")

    def __init__(self, first, last, stats) -> None:
        self.first = first
        self.last = last
        self.stats = stats

    def __reduce__(self):
        return _TotalsAccumulator, (self.first, self.last, self.stats)


class TrafficTotalsCombineFn(beam.CombineFn):
    """Combines ``(first window start, last window start, accumulator)`` bundle totals
    (``PartialStatsFn``'s ``BUNDLE_TOTALS``) into one ``TrafficStats`` over everything:
    ``start`` the first window's start, ``end`` the last window's end. Its cost is per bundle,
    never per record."""

    def __init__(self, size: int, combine_fn: TrafficStatsCombineFn) -> None:
        self.size = size
        self.combine_fn = combine_fn

    def create_accumulator(self) -> _TotalsAccumulator:
        return _TotalsAccumulator(None, None, self.combine_fn.create_accumulator())

    def add_input(self, acc: _TotalsAccumulator, bundle_total) -> _TotalsAccumulator:
        first, last, partial = bundle_total
        acc.first = first if acc.first is None else min(acc.first, first)
        acc.last = last if acc.last is None else max(acc.last, last)
        acc.stats = self.combine_fn.merge_accumulators([acc.stats, partial])
        return acc

    def merge_accumulators(self, accumulators) -> _TotalsAccumulator:
        merged = self.create_accumulator()
        for acc in accumulators:
            if acc.first is None:
                continue
            merged.first = acc.first if merged.first is None else min(merged.first, acc.first)
            merged.last = acc.last if merged.last is None else max(merged.last, acc.last)
            merged.stats = self.combine_fn.merge_accumulators([merged.stats, acc.stats])
        return merged

    def compact(self, acc):
        return acc

    def extract_output(self, acc: _TotalsAccumulator) -> TrafficStats:
        first = 0 if acc.first is None else acc.first
        last = first if acc.last is None else acc.last
        return TrafficStats(first, last + self.size, *self.combine_fn.extract_output(acc.stats))


class UpdateTotalsFn(beam.DoFn):
    """Streaming: ``(key, bundle total)`` -> the whole run's ``TrafficStats`` so far, after
    each bundle total (``TrafficTotalsCombineFn`` over one key, its accumulator in state).

    In place of a ``CombineGlobally`` in a global window fired after every element: that is
    seven steps (window, key, reify, group, combine, unkey), each a bundle per stream event on
    the streaming DirectRunner, and a firing recombines every input so far; this is one step
    that merges each input once. It emits as it processes (no timer), so its output is never
    behind the watermark. The accumulator is kept pickled, as the detector's rule is."""

    TOTALS = ReadModifyWriteStateSpec("totals", BytesCoder())

    def __init__(self, size: int, combine_fn: TrafficStatsCombineFn) -> None:
        self.totals_fn = TrafficTotalsCombineFn(size, combine_fn)

    def process(self, keyed, totals=beam.DoFn.StateParam(TOTALS)) -> Iterator[TrafficStats]:
        pickled = totals.read()
        acc = self.totals_fn.create_accumulator() if pickled is None else pickle.loads(pickled)
        acc = self.totals_fn.add_input(acc, keyed[1])
        totals.write(pickle.dumps(acc, pickle.HIGHEST_PROTOCOL))
        yield self.totals_fn.extract_output(acc)


class ComputeTrafficStats(beam.PTransform):
    """``PCollection[AccessRecord]`` (timestamped) -> ``TrafficStats`` for every
    ``FixedWindows(size)`` window (aligned to epoch multiples of ``size``) that has traffic,
    each in its window; with ``totals=True``, a dict of that (``stats``) and ``totals``: one
    ``TrafficStats`` over the whole input, the same partials combined globally.

    Records are pre-aggregated per bundle and window (``PartialStatsFn``); then:

    * streaming: the partials are windowed into the ``FixedWindows`` and combined per window, so
      each window fires as the watermark passes its end;
    * batch (bounded input, no ``--streaming``): the partials, one element per run of
      ``BATCH_KEY_WINDOWS`` windows, are grouped by the run's start in the global window,
      merged per window, and the stats windowed into the same ``FixedWindows`` after. All
      input is there at once,
      so nothing needs to fire early, and a windowed GroupByKey would cost the FnApiRunner a
      general trigger state machine per window: ~1.3 s of a day's 8,640 ten-second windows,
      a fifth of the run. Both give the same stats in the same windows.

    The totals combine each bundle's partials merged (``BUNDLE_TOTALS``) with
    ``TrafficTotalsCombineFn``: a ``CombineGlobally``, once, at the end, in batch; in
    streaming one keyed stateful step (``UpdateTotalsFn``) emits the totals so far after every
    bundle, so the latest totals are always written, even by a run stopped before its stream
    ends.
    """

    def __init__(self, size: int = 10, top: int = 5, totals: bool = False) -> None:
        super().__init__()
        self.size = size
        self.top = top
        self.totals = totals

    def expand(self, records):
        combine_fn = TrafficStatsCombineFn(self.top)
        streaming = (
            records.pipeline.options.view_as(StandardOptions).streaming or not records.is_bounded
        )
        partial_stats = PartialStatsFn(
            self.size,
            combine_fn,
            totals=self.totals,
            key_windows=STREAMING_KEY_WINDOWS if streaming else BATCH_KEY_WINDOWS,
            grouped=not streaming,
        )
        if self.totals:
            aggregated = records | "PartialStats" >> beam.ParDo(partial_stats).with_outputs(
                BUNDLE_TOTALS, main="partials"
            )
            partials, bundle_totals = aggregated["partials"], aggregated[BUNDLE_TOTALS]
        else:
            partials = records | "PartialStats" >> beam.ParDo(partial_stats)
        if streaming:
            # Partials are keyed by the start of a run of STREAMING_KEY_WINDOWS windows as well
            # as windowed, so each key holds a few windows. (One key with every window, as
            # CombineGlobally gives, makes the runner's trigger handling quadratic in the
            # number of windows: a day took minutes; a key per window makes it keep, and scan
            # at every round of timers, a keyed state per window.)
            stats = (
                partials
                | "StatsWindows" >> beam.WindowInto(window.FixedWindows(self.size))
                | "MergeStats" >> beam.CombinePerKey(MergeStatsCombineFn(combine_fn))
                | "WithWindow" >> beam.ParDo(_WithWindowFn()).with_output_types(TrafficStats)
            )
        else:
            stats = (
                partials
                | "GroupPerWindow" >> beam.GroupByKey()
                | "MergeStats"
                >> beam.ParDo(_MergeWindowStatsFn(self.size, combine_fn)).with_output_types(
                    TrafficStats
                )
                | "StatsWindows" >> beam.WindowInto(window.FixedWindows(self.size))
            )
        if not self.totals:
            return stats
        if streaming:
            totals = (
                bundle_totals
                | "OneKey" >> beam.WithKeys("totals")
                | "Totals"
                >> beam.ParDo(UpdateTotalsFn(self.size, combine_fn)).with_output_types(TrafficStats)
            )
        else:
            totals = bundle_totals | "Totals" >> beam.CombineGlobally(
                TrafficTotalsCombineFn(self.size, combine_fn)
            ).without_defaults().with_output_types(TrafficStats)
        return {"stats": stats, "totals": totals}


class SecondCounts:
    """A bundle's records per event second (``counts``: second -> records) and where they came
    from, for the detector to dead-letter the lines of a second that arrives late:
    ``origins`` maps each source to two arrays of the same length, each record's second and
    line number (16 bytes a record, where a list of line numbers per second took ~40)."""

    __slots__ = ("counts", "origins")

    def __init__(self, counts: dict[int, int], origins: dict[str, tuple[array, array]]) -> None:
        self.counts = counts
        self.origins = origins

    def __reduce__(self):
        return SecondCounts, (self.counts, self.origins)

    def lines_of(self, seconds: set[int]) -> dict[int, dict[str, list[int]]]:
        """``{second: {source: line numbers}}`` of the records in ``seconds``, in input order."""
        found: dict[int, dict[str, list[int]]] = {}
        for source, (record_seconds, lines) in self.origins.items():
            for second, line in zip(record_seconds, lines, strict=True):
                if second in seconds:
                    found.setdefault(second, {}).setdefault(source, []).append(line)
        return found


class CountPerSecondFn(_BundleAggregateFn):
    """Streaming: counts a bundle's records per event second, and keeps each record's second
    and line, so that the detector can dead-letter a late second's lines one by one: one
    ``("all", SecondCounts)`` per bundle. A batch run evaluates every second after all its
    input, so no line is late there: it counts with ``CountSecondsFn``."""

    def start_bundle(self):
        self.seconds: dict[int, int] = {}
        self.origins: dict[str, tuple[array, array]] = {}

    def _add(self, records: RecordColumns) -> None:
        seconds = self.seconds
        if isinstance(records, RecordTable):
            counted = pc.value_counts(records.table["timestamp"])
            pairs = zip(
                counted.field("values").to_pylist(),
                counted.field("counts").to_pylist(),
                strict=True,
            )
        else:
            pairs = Counter(records.timestamp).items()
        for second, count in pairs:
            seconds[second] = seconds.get(second, 0) + count
        if isinstance(records, RecordTable):
            origin = self._origin(records.file)
            origin[0].frombytes(records.table["timestamp"].to_numpy().astype(np.int64).tobytes())
            origin[1].frombytes(records.table["line"].to_numpy().astype(np.int64).tobytes())
            return
        sources = records.source
        if not sources:
            return
        if sources[0] == sources[-1] and len(set(sources)) == 1:  # one file's batch, usually
            origin = self._origin(sources[0])
            origin[0].extend(records.timestamp)
            origin[1].extend(records.line)
            return
        for source, second, line in zip(sources, records.timestamp, records.line, strict=True):
            origin = self._origin(source)
            origin[0].append(second)
            origin[1].append(line)

    def _origin(self, source: str) -> tuple[array, array]:
        origin = self.origins.get(source)
        if origin is None:
            origin = self.origins[source] = (array("q"), array("q"))
        return origin

    def finish_bundle(self):
        if self.seconds:
            # One element for the whole bundle, at its earliest second (the watermark hold).
            yield window.GlobalWindows.windowed_value(
                ("all", SecondCounts(self.seconds, self.origins)), timestamp=min(self.seconds)
            )
        self.seconds, self.origins = {}, {}


def sum_per_second(parts) -> tuple[np.ndarray, np.ndarray]:
    """``(seconds, counts)`` pairs of int64 arrays -> one pair, the seconds sorted and
    distinct, each with the sum of its counts."""
    return sum_by_key(
        np.concatenate([part[0] for part in parts]), np.concatenate([part[1] for part in parts])
    )


class CountSecondsFn(_BundleAggregateFn):
    """Batch: counts a bundle's records per event second, as two int64 arrays (the seconds,
    sorted, and their counts): one ``("all", (seconds, counts))`` per bundle, 16 bytes a
    second with traffic where a dict took ~100, for ``DetectFromCountsFn``."""

    MAX_PARTS = 64  # a bundle's counted batches are summed into one when there are this many

    def start_bundle(self):
        self.parts: list[tuple[np.ndarray, np.ndarray]] = []

    def _add(self, records: RecordColumns) -> None:
        if isinstance(records, RecordTable):
            counted = pc.value_counts(records.table["timestamp"])
            part = counted.field("values").to_numpy(), counted.field("counts").to_numpy()
        else:
            counted = Counter(records.timestamp)
            part = (
                np.fromiter(counted.keys(), np.int64, len(counted)),
                np.fromiter(counted.values(), np.int64, len(counted)),
            )
        self.parts.append(part)
        if len(self.parts) >= self.MAX_PARTS:
            self.parts = [sum_per_second(self.parts)]

    def finish_bundle(self):
        parts, self.parts = self.parts, []
        if parts:
            seconds, counts = sum_per_second(parts)
            if len(seconds):
                yield window.GlobalWindows.windowed_value(
                    ("all", (seconds, counts)), timestamp=int(seconds[0])
                )


class DetectFromCountsFn(beam.DoFn):
    """Batch: ``("all", every bundle's (seconds, counts))`` -> each ``Alert`` of the rule over
    the whole input, at once (``alert_rule.changes_of_counts``), stamped at its second. The
    stateful ``DetectHighTrafficFn`` keeps, in batch, a pending count per second of the input
    and pickles them at each bundle; this holds two arrays of the seconds with traffic."""

    def __init__(self, threshold: float, window_seconds: int) -> None:
        self.threshold = threshold
        self.window_seconds = window_seconds
        self.alerts = Metrics.counter(METRICS_NAMESPACE, "alerts")
        self.recoveries = Metrics.counter(METRICS_NAMESPACE, "recoveries")

    def process(self, keyed) -> Iterator[window.TimestampedValue]:
        seconds, counts = sum_per_second(list(keyed[1]))
        for change in changes_of_counts(seconds, counts, self.threshold, self.window_seconds):
            (self.alerts if change.kind == ALERT else self.recoveries).inc()
            yield window.TimestampedValue(change, change.at)


def _read_rule(state) -> TrafficAlertRule | None:
    pickled = state.read()
    return None if pickled is None else pickle.loads(pickled)


def _write_rule(state, rule: TrafficAlertRule) -> None:
    state.write(pickle.dumps(rule, pickle.HIGHEST_PROTOCOL))


class DetectHighTrafficFn(beam.DoFn):
    """Keyed stateful detector over per-second counts.

    A second is evaluated once the watermark has passed it (timer ``progress``, kept
    ``max_delay`` seconds behind the newest second seen, and one more for each second after
    that up to the newest, so one advance past several evaluates them together) or the input
    has ended (timer ``end``).
    Counts for a second already evaluated are late: their lines leave as ``late`` dead letters.
    """

    # The rule is kept pickled: the runner's state cache weighs each value it holds by walking
    # it (objsize), and the rule holds a count per pending second (a whole day's in batch);
    # bytes are weighed at once.
    RULE = ReadModifyWriteStateSpec("rule", BytesCoder())
    PENDING = ReadModifyWriteStateSpec("pending", PickleCoder())
    PROGRESS = TimerSpec("progress", TimeDomain.WATERMARK)
    END = TimerSpec("end", TimeDomain.WATERMARK)

    def __init__(self, threshold: float, window_seconds: int, max_delay: int) -> None:
        self.threshold = threshold
        self.window_seconds = window_seconds
        self.max_delay = max_delay
        self.alerts = Metrics.counter(METRICS_NAMESPACE, "alerts")
        self.recoveries = Metrics.counter(METRICS_NAMESPACE, "recoveries")
        self.late = Metrics.counter(METRICS_NAMESPACE, "late_lines")

    def _target(self, rule: TrafficAlertRule, newest: int) -> int:
        """Where the watermark will be once ``newest`` is ``max_delay`` behind it (never before
        the next second to evaluate)."""
        return max(newest - self.max_delay, rule.cursor or min(rule.counts, default=newest)) + 1

    def _each_second(self, progress, target: int, newest: int) -> None:
        """A timer as the watermark passes each second from ``target`` to ``newest`` (at most
        ``max_delay`` of them), beside the one at ``target``: the runner fires every timer the
        watermark has passed in one round, so an advance past several of these seconds
        evaluates them all at once, where the one timer, set again at each firing, would step
        a second a round (a bundle, and one for each step downstream, per second)."""
        for second in range(target, newest + 1):
            progress.set(Timestamp(second + 1), dynamic_timer_tag=str(second + 1))

    def process(
        self,
        keyed,
        win=beam.DoFn.WindowParam,
        rule_state=beam.DoFn.StateParam(RULE),
        pending=beam.DoFn.StateParam(PENDING),
        progress=beam.DoFn.TimerParam(PROGRESS),
        end=beam.DoFn.TimerParam(END),
    ):
        _, counted = keyed
        seconds = counted.counts
        rule = _read_rule(rule_state) or TrafficAlertRule(self.threshold, self.window_seconds)
        late = []
        for second, count in sorted(seconds.items()):
            if rule.is_late(second):
                self.late.inc(count)
                late.append(second)
            else:
                rule.add(second, count)
        if late:
            where = counted.lines_of(set(late))
            for second in late:
                reason = f"late: event second {second} was already evaluated"
                for source, lines in where.get(second, {}).items():
                    for line in lines:
                        dead = DeadLetter(source, line, reason, "")
                        count_dead_letter(dead)
                        yield pvalue.TaggedOutput(LATE, dead)
        _write_rule(rule_state, rule)
        # A pending timer is never pushed later (it must fire as soon as the watermark reaches
        # it), but is moved earlier by a bundle whose newest second is earlier: one outlier
        # second far ahead then holds evaluation back only until the next bundle.
        newest = max(seconds)
        target = self._target(rule, newest)
        scheduled = pending.read()
        if scheduled is None or target < scheduled:
            progress.set(Timestamp(target))
            pending.write(target)
        self._each_second(progress, target, newest)
        end.set(win.max_timestamp())

    def _evaluate(self, rule_state, until: int, rule: TrafficAlertRule | None = None):
        rule = rule or _read_rule(rule_state)
        changes = rule.evaluate_until(until)
        _write_rule(rule_state, rule)
        for change in changes:
            (self.alerts if change.kind == ALERT else self.recoveries).inc()
        return rule, changes

    @on_timer(PROGRESS)
    def on_progress(
        self,
        fired=beam.DoFn.TimestampParam,
        rule_state=beam.DoFn.StateParam(RULE),
        pending=beam.DoFn.StateParam(PENDING),
        progress=beam.DoFn.TimerParam(PROGRESS),
    ):
        fired_at = int(fired.micros // 1_000_000)
        rule, changes = self._evaluate(rule_state, fired_at - 1)
        yield from changes
        target = self._target(rule, rule.last_second)
        if target > fired_at:  # newer seconds arrived meanwhile: follow the watermark to them
            progress.set(Timestamp(target))
            pending.write(target)
            self._each_second(progress, target, rule.last_second)
        else:
            pending.clear()

    @on_timer(END)
    def on_end(self, rule_state=beam.DoFn.StateParam(RULE)):
        rule = _read_rule(rule_state)
        yield from self._evaluate(rule_state, rule.last_second, rule)[1]


class DetectHighTraffic(beam.PTransform):
    """``PCollection[AccessRecord]`` -> ``alerts`` (``Alert``, each change of state) and ``late``
    (``DeadLetter`` per line that arrived after its second was evaluated).

    Streaming: per-bundle counts into the stateful ``DetectHighTrafficFn``, which evaluates a
    second once the watermark has passed it. Batch: every second is evaluated after all the
    input, so none is late: per-bundle counts as arrays, grouped, evaluated at once
    (``DetectFromCountsFn``); its ``late`` is empty."""

    def __init__(self, threshold: float = 10.0, window_seconds: int = 120, max_delay: int = 5):
        super().__init__()
        self.threshold = threshold
        self.window_seconds = window_seconds
        self.max_delay = max_delay

    def expand(self, records):
        streaming = (
            records.pipeline.options.view_as(StandardOptions).streaming or not records.is_bounded
        )
        if not streaming:
            return (
                records
                | "CountSeconds" >> beam.ParDo(CountSecondsFn())
                | "GatherCounts" >> beam.GroupByKey()
                | "Detect"
                >> beam.ParDo(DetectFromCountsFn(self.threshold, self.window_seconds))
                .with_outputs(LATE, main=ALERTS)
                .with_output_types(Alert)
            )
        counts = records | "CountPerSecond" >> beam.ParDo(CountPerSecondFn()).with_output_types(
            tuple[str, SecondCounts]
        )
        return counts | "Detect" >> beam.ParDo(
            DetectHighTrafficFn(self.threshold, self.window_seconds, self.max_delay)
        ).with_outputs(LATE, main=ALERTS)
