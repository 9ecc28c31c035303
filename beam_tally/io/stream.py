"""Live IO: the event stream between ``beam-tally produce`` and a ``--streaming`` consumer, and
the streaming sink.

The stream is Beam's ``TestStreamService`` over loopback gRPC: the producer serves elements
with event timestamps and watermarks, and the consumer reads them with ``TestStream(endpoint=)``,
the one live source the DirectRunner's streaming mode runs offline. Elements are encoded with
``stream_coder``, the same on both sides: chunks of access lines as columns (``LineListCoder``),
documents with their record's coder.
"""

from __future__ import annotations

import os
import re
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from itertools import repeat
from typing import Any

import apache_beam as beam
import grpc
import orjson
from apache_beam.io.filesystems import FileSystems
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms import window
from apache_beam.utils.timestamp import MAX_TIMESTAMP, MIN_TIMESTAMP

from beam_tally.errors import UsageError
from transforms.list_batches import LineList
from transforms.records import STREAM_END, STREAM_END_DOCUMENT, AccessLine, SourceFile

KINDS = {"access": AccessLine, "tally": SourceFile}
END_MARKER = ".stream-ended"  # written under --output when the stream's end marker arrives
# A tally document larger than one gRPC message (4 MiB by default) travels as a
# ``records.STREAM_ERROR_PREFIX`` dead letter rather than failing the stream.
MAX_ELEMENT_BYTES = (4 << 20) - (16 << 10)
MAX_EVENT_BYTES = 3 << 20

_TimestampedElement = beam_runner_api_pb2.TestStreamPayload.TimestampedElement

_Event = beam_runner_api_pb2.TestStreamPayload.Event


# Access lines travel in chunks of up to this many, one stream element each: the streaming
# DirectRunner has no Batched DoFns and pays its per-element machinery (decoding, bundles,
# each step's invocation) once per element, so a chunk costs it what one line did; and the
# parser takes a chunk of one file's lines through the Arrow path, whose fixed cost per call
# made 512-line chunks slower there than line by line (4,096: half the time a line). A chunk
# holds only lines due together, so a paced stream's are smaller. Documents (tally) are large
# enough to travel one by one.
LINES_PER_ELEMENT = 4096
CHUNK_BYTES = 512 << 10  # characters per chunk at most (plus one line): under 3 MiB encoded


class LineListCoder(beam.coders.Coder):
    """A chunk of ``AccessLine`` (``LineList``) as columns: the lines' texts and numbers, and
    their source and format once when all the chunk's lines share them (as a chunk of one
    file does), in one orjson document, compressed (zlib, fastest level). Decoding a row per
    line (``RowCoder``) cost the consumer more than parsing the line; this costs a fraction,
    and compressed chunks fill fewer stream events, each a bundle through every step of the
    consumer. A chunk orjson cannot encode (a name with a lone surrogate, from undecodable
    bytes in a file name) travels as rows."""

    _COLUMNS, _ROWS = b"c", b"r"

    def __init__(self) -> None:
        self._rows = beam.coders.ListCoder(beam.coders.registry.get_coder(AccessLine))

    def encode(self, lines) -> bytes:
        sources = {line.source for line in lines}
        fmts = {line.fmt for line in lines}
        columns = [
            sources.pop() if len(sources) == 1 else [line.source for line in lines],
            fmts.pop() if len(fmts) == 1 else [line.fmt for line in lines],
            [line.line for line in lines],
            [line.text for line in lines],
        ]
        try:
            data = zlib.compress(orjson.dumps(columns), 1)
        except orjson.JSONEncodeError:  # not valid Unicode (surrogates): as rows
            return self._ROWS + self._rows.encode(lines)
        # never larger than UTF-8's three bytes a character (see CHUNK_BYTES), whatever JSON
        # escapes and however little the text compresses
        if len(data) > 3 * sum(map(len, columns[3])) + 64 * len(lines):
            return self._ROWS + self._rows.encode(lines)
        return self._COLUMNS + data

    def decode(self, encoded: bytes) -> LineList:
        if encoded[:1] == self._ROWS:
            return LineList(self._rows.decode(encoded[1:]))
        sources, fmts, numbers, texts = orjson.loads(zlib.decompress(encoded[1:]))
        if isinstance(sources, str):
            sources = repeat(sources)
        if isinstance(fmts, str):
            fmts = repeat(fmts)
        # tuple.__new__ builds each AccessLine without a Python call (its fields are positional
        # and it has no __new__ of its own): half the time of AccessLine(...) per line
        rows = zip(sources, numbers, texts, fmts, strict=False)  # sources, fmts may repeat
        return LineList(map(tuple.__new__, repeat(AccessLine), rows))

    def is_deterministic(self) -> bool:
        return True

    def to_type_hint(self):
        return LineList

    def __eq__(self, other) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(type(self))


def stream_coder(kind: str) -> beam.coders.Coder:
    return LineListCoder() if kind == "access" else beam.coders.registry.get_coder(KINDS[kind])


def stream_items(kind: str, items: list[tuple[float, Any]]) -> list[tuple[float, Any]]:
    """``(event time, element)`` pairs as the stream carries them: access lines in
    ``LineList`` chunks (in order, each at its earliest line's time, so never behind the
    watermark), documents one by one."""
    if kind != "access":
        return items
    chunks, part, size = [], [], 0
    for ts, line in items:
        part.append((ts, line))
        size += len(line.text) + len(line.source) + 16
        # a chunk also ends before one message's worth of text: long lines (up to 1 MiB each)
        # must not make an element larger than gRPC lets the consumer receive
        if len(part) >= LINES_PER_ELEMENT or size >= CHUNK_BYTES:
            chunks.append((min(t for t, _ in part), LineList(item for _, item in part)))
            part, size = [], 0
    if part:
        chunks.append((min(t for t, _ in part), LineList(item for _, item in part)))
    return chunks


def _micros(seconds: float) -> int:
    if seconds == float("inf"):
        return MAX_TIMESTAMP.micros
    if seconds == float("-inf"):
        return MIN_TIMESTAMP.micros
    return int(seconds * 1_000_000)


def elements_events(items: list[tuple[float, Any]], coder, tag: str) -> Iterator[_Event]:
    """``TestStreamService`` events carrying ``(event time in seconds, element)`` pairs, as few
    as fit in gRPC's message size (each event is one bundle for the consumer, and a bundle has
    a fixed cost there)."""
    elements, size = [], 0
    for ts, item in items:
        encoded = coder.encode(item)
        if elements and size + len(encoded) > MAX_EVENT_BYTES:
            yield _Event(element_event=_Event.AddElements(elements=elements, tag=tag))
            elements, size = [], 0
        elements.append(_TimestampedElement(encoded_element=encoded, timestamp=_micros(ts)))
        size += len(encoded) + 16
    if elements:
        yield _Event(element_event=_Event.AddElements(elements=elements, tag=tag))


def watermark_event(at: float, tag: str) -> _Event:
    return _Event(watermark_event=_Event.AdvanceWatermark(new_watermark=_micros(at), tag=tag))


FULL = (
    "the producer at {endpoint} already serves as many consumers as it takes "
    "(its --max_consumers): stop one of them, or start another producer"
)


def wait_for_source(endpoint: str, timeout: float) -> None:
    """Waits up to ``timeout`` seconds for a producer at ``endpoint``, and checks that it takes
    one more consumer; ``UsageError`` if none answers or it is full."""
    deadline = time.monotonic() + timeout
    while True:
        channel = grpc.insecure_channel(endpoint)
        try:
            if _check_room(channel, endpoint, min(1.0, max(timeout, 0.05))):
                return
        finally:
            channel.close()
        time.sleep(0.05)  # what refused at once (nothing listening there) is asked again
        if time.monotonic() >= deadline:
            raise UsageError(
                f"no producer answers at --source {endpoint} after {timeout:g} s: start "
                f"'beam-tally produce ... --serve {endpoint}' first"
            )


def _check_room(channel, endpoint: str, wait: float) -> bool:
    """Asks for a stream of no outputs, which the producer answers with nothing, waiting up to
    ``wait`` seconds for it to answer at all; whether it did. One serving its maximum of
    consumers refuses the call at once (the run would otherwise fail only after Beam's reader
    had waited 30 s for events). The call waits for the connection itself (``wait_for_ready``):
    ``grpc.channel_ready_future`` polls the channel's state in a thread that closing the
    channel then waits for, a fifth of a second of every live run's start."""
    from apache_beam.portability.api import beam_interactive_api_pb2, beam_interactive_api_pb2_grpc

    stub = beam_interactive_api_pb2_grpc.TestStreamServiceStub(channel)
    request = beam_interactive_api_pb2.EventsRequest(output_ids=[])
    call = stub.Events(request, timeout=wait, wait_for_ready=True)
    try:
        next(call, None)
    except grpc.RpcError as err:
        if err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
            raise UsageError(FULL.format(endpoint=endpoint)) from None
        if err.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE):
            return False  # nothing answers there yet
        # anything else (a producer going away) is the run's to report
    finally:
        call.cancel()
    return True


def stream_refused(err: BaseException | None) -> bool:
    """Whether ``err`` is a producer refusing one more consumer (``RESOURCE_EXHAUSTED``)."""
    return (
        isinstance(err, grpc.RpcError)
        and err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        and "larger than max" not in (err.details() or "")  # an oversized message is no refusal
    )


def end_element(kind: str, lines: int = 0):
    """The element a producer sends last, when its replay is complete; an access stream's
    carries the number of lines the producer read (header and blank lines included)."""
    return (
        AccessLine("", lines, "", STREAM_END)
        if kind == "access"
        else SourceFile("", STREAM_END_DOCUMENT)
    )


def _is_end(element) -> bool:
    if isinstance(element, AccessLine):
        return element.fmt == STREAM_END and not element.source
    return element == end_element("tally")


def lines_read(output: str) -> int | None:
    """The lines the producer read, from the end marker under ``output`` (None without one:
    the stream did not end, or the kind carries no count)."""
    marker = end_marker(output)
    if not FileSystems.exists(marker):
        return None
    with FileSystems.open(marker) as handle:
        text = handle.read().strip()
    return int(text) if text else None


def end_marker(output: str) -> str:
    return FileSystems.join(output, END_MARKER)


class _StreamEndFn(beam.DoFn):
    """Passes the stream's elements on; its end element writes ``marker`` instead (so the
    run can tell a stream that ended from one that broke off)."""

    def __init__(self, kind: str, marker: str | None) -> None:
        self.marker = marker

    def process(self, element):
        if isinstance(element, list):  # a chunk of access lines; the end comes alone
            if element and _is_end(element[-1]):
                self._ended(element[-1])
                element = LineList(element[:-1])
            if element:
                yield LineList(element)
            return
        if _is_end(element):
            self._ended(element)
            return
        yield element

    def _ended(self, end) -> None:
        if self.marker:  # holding the producer's count of lines read, for the summary
            with FileSystems.create(self.marker) as handle:
                handle.write(str(end.line).encode() if isinstance(end, AccessLine) else b"")


class ReadStream(beam.PTransform):
    """``PBegin`` -> the elements a producer serves at ``endpoint`` (``LineList`` chunks of
    ``AccessLine`` for ``access``, ``SourceFile`` for ``tally``), timestamped with their event
    time. The end of the stream writes ``marker``, when given."""

    def __init__(self, endpoint: str, kind: str, marker: str | None = None) -> None:
        super().__init__()
        self.endpoint = endpoint
        self.kind = kind
        self.marker = marker

    def expand(self, pbegin):
        # Chunks are typed Any: the parser takes lines and chunks of them alike.
        element_type = Any if self.kind == "access" else KINDS[self.kind]
        return (
            pbegin
            | "TestStreamService"
            >> TestStream(coder=stream_coder(self.kind), endpoint=self.endpoint).with_output_types(
                element_type
            )
            | "UntilTheEnd"
            >> beam.ParDo(_StreamEndFn(self.kind, self.marker)).with_output_types(element_type)
        )


def live_part_name(name: str, at: float | None = None) -> str:
    """A live run's file of output ``name`` for the roll that started at ``at`` (epoch seconds,
    now by default): ``stats-<time>-<id>.jsonl``."""
    stem, ext = os.path.splitext(name)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(time.time() if at is None else at))
    return f"{stem}-{stamp}-{uuid.uuid4().hex[:12]}{ext}"


def is_live_part(file_name: str, name: str) -> bool:
    """Whether ``file_name`` is a ``live_part_name`` of output ``name``."""
    stem, ext = os.path.splitext(name)
    # The second form is a Kafka run's write-once file (``kafka.once_name``).
    pattern = (
        rf"{re.escape(stem)}-(\d{{8}}T\d{{6}}-[0-9a-f]{{12}}|once-[0-9a-f]{{16}}){re.escape(ext)}"
    )
    return re.fullmatch(pattern, file_name) is not None


def live_source(options, kind: str, marker: str | None, job: str) -> beam.PTransform:
    """The read of a live run: the ``produce`` stream at ``--source HOST:PORT`` (its end writes
    ``marker``), or a Kafka topic at ``--source kafka://HOST:PORT/TOPIC`` (``kafka.ReadKafka``;
    the job marks its end with ``kafka.MarkDrained`` over its outputs)."""
    from beam_tally.io.kafka import ReadKafka, is_kafka
    from beam_tally.options import FlinkJobOptions, StreamOptions

    stream = options.view_as(StreamOptions)
    if is_kafka(stream.source):
        # Offsets are committed, at each completed checkpoint, for a group that is named only:
        # a default group's commits would make the next fresh run start where this one ended
        # (a restore takes its offsets from the checkpoint, not from the group).
        group = stream.consumer_group or f"beam-tally-{job}-{uuid.uuid4().hex[:8]}"
        interval = options.view_as(FlinkJobOptions).checkpointing_interval
        commit = bool(stream.consumer_group) and interval is not None and interval > 0
        return ReadKafka(stream.source, kind, group, commit, stream.producers)
    return ReadStream(stream.source, kind, marker)


class _RollingFile:
    """The file of one live output for the current roll: lines appended under a temporary
    name, then, once the roll is over, closed and renamed into place (a reader never sees half
    a file)."""

    def __init__(self, directory: str, name: str, roll_seconds: float) -> None:
        self.directory = directory
        self.name = name
        self.roll_seconds = roll_seconds
        self.handle = None
        self.path = ""
        self.started = 0.0

    def write(self, data: bytes, now: float) -> None:
        if self.handle is not None and now >= self.started + self.roll_seconds:
            self.finish()
        if self.handle is None:
            self.started = now - now % self.roll_seconds  # rolls aligned to the wall clock
            self.path = FileSystems.join(self.directory, f".{uuid.uuid4().hex}.tmp")
            self.handle = FileSystems.create(self.path)
        self.handle.write(data)
        self.handle.flush()

    def due(self, now: float) -> bool:
        return self.handle is not None and now >= self.started + self.roll_seconds

    def finish(self) -> None:
        if self.handle is None:
            return
        self.handle.close()
        self.handle = None
        final = FileSystems.join(self.directory, live_part_name(self.name, self.started))
        FileSystems.rename([self.path], [final])


class LiveFiles:
    """The rolling files of the live outputs written in this process, shared by every bundle
    and thread of the sink (a live run is the DirectRunner's streaming mode, in this process:
    ``options.check_source``). The launcher rolls what is due while the run goes
    (``roll_due``) and finishes every file when it ends (``finish``)."""

    _lock = threading.Lock()
    _files: dict[tuple[str, str], _RollingFile] = {}  # one per process, on purpose

    @classmethod
    def write(cls, directory: str, name: str, roll_seconds: float, data: bytes) -> None:
        with cls._lock:
            rolling = cls._files.get((directory, name))
            if rolling is None:
                rolling = cls._files[(directory, name)] = _RollingFile(
                    directory, name, roll_seconds
                )
            rolling.write(data, time.time())

    @classmethod
    def roll_due(cls, directory: str) -> None:
        """Closes and renames into place every file of ``directory`` whose roll is over."""
        now = time.time()
        with cls._lock:
            for (folder, _), rolling in cls._files.items():
                if folder == directory and rolling.due(now):
                    rolling.finish()

    @classmethod
    def open_rolls(cls, directory: str) -> dict[str, str]:
        """``{output name: temporary path}`` of the rolls of ``directory`` still being written
        (for the live report, which reads them before they are renamed in)."""
        with cls._lock:
            return {
                name: rolling.path
                for (folder, name), rolling in cls._files.items()
                if folder == directory and rolling.handle is not None
            }

    @classmethod
    def finish(cls, directory: str) -> None:
        """Closes and renames into place every open file of ``directory`` (the run ended)."""
        with cls._lock:
            for key in [key for key in cls._files if key[0] == directory]:
                cls._files.pop(key).finish()


class _WriteLiveFn(beam.DoFn):
    """Appends each bundle's lines of output ``name`` to the current rolling file of that
    output (``LiveFiles``): one file per output per ``roll_seconds`` of wall time, each written
    under a temporary name and renamed into place once complete, so a reader never sees half a
    file and a run that is stopped keeps what it already reported."""

    def __init__(self, directory: str, name: str, to_text=None, roll_seconds: float = 60.0) -> None:
        self.directory = directory
        self.name = name
        self.to_text = to_text
        self.roll_seconds = roll_seconds

    def start_bundle(self):
        self.lines: list[str] = []

    def process(self, element):
        self.lines.append(element if self.to_text is None else self.to_text(element))

    def finish_bundle(self):
        if self.lines:
            data = ("\n".join(self.lines) + "\n").encode("utf-8")
            LiveFiles.write(self.directory, self.name, self.roll_seconds, data)
        self.lines = []


class WriteJsonLinesLive(beam.PTransform):
    """``{file name: PCollection}`` -> files ``NAME-*.jsonl`` under ``directory``, one line per
    element (``formats[name](element)``, or the ``str`` element itself), written as a
    streaming run goes, a new file of each output every ``roll_seconds`` (readers glob
    ``NAME*.jsonl``)."""

    def __init__(
        self, directory: str, formats: dict | None = None, roll_seconds: float = 60.0
    ) -> None:
        super().__init__()
        self.directory = directory
        self.formats = formats or {}
        self.roll_seconds = roll_seconds

    def expand(self, named):
        for name, pcoll in named.items():
            write = _WriteLiveFn(self.directory, name, self.formats.get(name), self.roll_seconds)
            pcoll | f"Write {name}" >> beam.ParDo(write)
        return beam.pvalue.PDone(next(iter(named.values())).pipeline)


def per_document_windows(seconds: float = 0.001):
    """Tiny fixed windows for the tally stream: each document's logs close (and its per-file
    tally fires) as soon as the producer's watermark passes the document's event time."""
    return beam.WindowInto(window.FixedWindows(seconds))
