"""``beam-tally produce``: replays (or follows) inputs and serves them as a live event stream.

One reader per access-log file (lines, in file order, each with the event time its parser
finds) or one reader for a folder of tally documents (each document stamped with the time it
is served). ``replay.stream_events`` reorders, merges, paces and watermarks them; each consumer
that connects gets the whole replay from the start, as Beam ``TestStreamService`` events over
gRPC (``io_stream``).
"""

from __future__ import annotations

import argparse
import glob
import os
import signal
import sys
import threading
import time
from concurrent import futures

from beam_tally.errors import HelpRequested, UsageError, UsageParser
from beam_tally.replay import Elements, End, Session, StreamSettings, SystemClock, Update

HELP = """usage: beam-tally produce tally|access --input GLOB --serve HOST:PORT [--speedup N]
          [--follow] [--max_delay 5] [--format auto|csv|clf]

Serves the inputs as a live stream for 'beam-tally tally|monitor --streaming --source HOST:PORT'.
  access         access-log lines, in event-time order within --max_delay seconds of disorder
  tally          logs_xx.json documents, oldest first, each stamped with the time it is served
  --input GLOB   files to read (quote the glob), or a folder
  --serve H:P    address to serve on, loopback (port 0 picks a free one and prints it)
  --speedup N    pace by event time divided by N (default: as fast as possible)
  --follow       keep reading lines appended to the files and new files matching GLOB
  --max_delay S  reorder budget and watermark delay behind the newest line (default 5)
Each consumer that connects gets the whole replay; Ctrl-C stops serving."""

BLOCK = 4 << 20  # bytes read from a file per poll
MAX_LINE = 1 << 20  # a longer access line travels as a dead letter (gRPC's message limit)
MAX_CONSUMERS = 32  # consumers served at once; one more is refused, not left waiting
CHUNK_FILES = 16


def _parser() -> UsageParser:
    parser = UsageParser(prog="beam-tally produce", allow_abbrev=False, add_help=False)
    parser.add_argument("kind", choices=["tally", "access"])
    parser.add_argument("--input", required=True)
    parser.add_argument("--serve", required=True)
    parser.add_argument("--speedup", type=float)
    parser.add_argument("--follow", action="store_true")
    parser.add_argument("--max_delay", type=float, default=5.0)
    parser.add_argument("--format", default="auto", choices=["auto", "csv", "clf"])
    parser.add_argument("--heartbeat", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--poll", type=float, default=0.2, help=argparse.SUPPRESS)
    return parser


def _pattern(path: str) -> str:
    path = os.path.abspath(path)
    return os.path.join(path, "*") if os.path.isdir(path) else path


def _matches(pattern: str) -> list[str]:
    return sorted(p for p in glob.glob(pattern) if os.path.isfile(p))


class AccessFileReader:
    """Complete lines appended to one access-log file since the last read, each with its event
    time (None for a line without one: a bad line, the CSV header, a blank line).

    The file stays open between reads. Followed, it is drained before a rotation is honoured (a
    new file under the path: read from its start), a truncation is read again from the start,
    and a deleted file ends the reader. A line longer than ``MAX_LINE`` travels as a
    ``STREAM_ERROR`` line, not as data."""

    def __init__(self, path: str, fmt: str) -> None:
        self.path = path
        self.fmt = None if fmt == "auto" else fmt
        self.handle = None
        self.identity: tuple[int, int] | None = None
        self.line = 0
        self.tail = b""
        self.skipping = False  # inside a line too long to send, until its newline
        self.pending: list = []  # lines of a rotated file, read before its successor
        self.rotated_away: set[tuple[int, int]] = set()  # files this reader drained and left

    def read(self, final: bool) -> tuple[list, bool]:
        """New ``(event time, AccessLine)`` pairs (up to a ``BLOCK`` of bytes) and whether the
        reader is finished: at the end of the file in a replay (``final``: an unterminated last
        line is a line too), or the file gone or unreadable."""
        from beam_tally.io import UNREADABLE

        try:
            if self.handle is None:
                self._open()
            block = self.handle.read(BLOCK)
            if not block and not final:
                block = self._rotated_or_truncated()
                if block is None:  # deleted: what was read is all there is
                    self.close()
                    return self._lines(b"", True), True
        except OSError as err:
            self.close()
            self.line += 1
            reason = f"{UNREADABLE}: {type(err).__name__}: {err}"
            return [(None, self._error(reason))], True
        at_end = len(block) < BLOCK
        items, self.pending = self.pending + self._lines(block, final and at_end), []
        if final and at_end:
            self.close()
        return items, final and at_end

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None

    def _open(self) -> None:
        self.handle = open(self.path, "rb")  # noqa: SIM115 (kept open between polls)
        info = os.fstat(self.handle.fileno())
        self.identity = (info.st_dev, info.st_ino)
        self.line, self.tail, self.skipping = 0, b"", False

    def _rotated_or_truncated(self) -> bytes | None:
        """At the end of the open file: the first block of what replaced it, if anything did;
        None if the path is gone."""
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return None
        if (info.st_dev, info.st_ino) != self.identity:
            _say(f"{self.path} was rotated: reading the new file from its start")
            self.close()
            self.pending = self._lines(b"", True)  # the old file's unterminated last line
            self.rotated_away.add(self.identity)
            self._open()
        elif info.st_size < self.handle.tell():
            _say(f"{self.path} was truncated: reading it again from its start")
            self.handle.seek(0)
            self.line, self.tail, self.skipping = 0, b"", False
        else:
            return b""
        return self.handle.read(BLOCK)

    def _error(self, reason: str):
        from beam_tally.records import STREAM_ERROR, AccessLine

        return AccessLine(self.path, self.line, reason, STREAM_ERROR)

    def _lines(self, block: bytes, last: bool) -> list:
        from beam_tally.io import _file_format
        from beam_tally.records import AccessLine
        from transforms import access_log

        data = self.tail + block
        if self.skipping:
            newline = data.find(b"\n")
            if newline < 0:
                self.tail = b""
                return []
            data, self.skipping = data[newline + 1 :], False
        cut = len(data) if last else data.rfind(b"\n") + 1
        complete, self.tail = data[:cut], data[cut:]
        raw_lines = complete.split(b"\n") if complete else []
        if complete.endswith(b"\n"):
            raw_lines.pop()  # the empty piece after the last newline
        items = []
        if len(self.tail) > MAX_LINE:  # no newline in sight: skip to the next one
            raw_lines.append(self.tail)
            self.tail, self.skipping = b"", True
        if self.fmt is None:
            sample = [raw for raw in raw_lines[:50] if raw.strip()]
            if sample:  # "" when the first lines cannot tell: then each line is told apart
                self.fmt = _file_format(b"\n".join(sample)) or ""
        for raw in raw_lines:
            self.line += 1
            if len(raw) > MAX_LINE:
                items.append((None, self._error(f"line too long to stream: {len(raw):,}+ bytes")))
                continue
            try:
                text = raw.decode("utf-8").rstrip("\r")
            except UnicodeDecodeError as bad:
                reason = f"{access_log.UNDECODABLE}: invalid UTF-8 at byte {bad.start}"
                items.append((None, self._error(reason)))
                continue
            fmt = self.fmt or ("csv" if text.lstrip("\ufeff \t")[:1] == '"' else "clf")
            try:
                record = access_log.parse_line(text, fmt)
                ts = record.timestamp if record is not None else None
            except access_log.BadLine:
                ts = None
            items.append((ts, AccessLine(self.path, self.line, text, self.fmt or "")))
        return items


def _signature(path: str) -> tuple[int, int, int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino, info.st_mtime_ns, info.st_size


def access_poll(pattern: str, fmt: str, follow: bool):
    """Reads every file matching ``pattern``, one reader each. Followed, files that appear
    later get a reader too, except a file already being read under another name (a rotated
    file whose new name matches); a path whose reader ended (deleted, unreadable) gets a new
    one only once the file there has changed."""
    readers: dict[str, AccessFileReader] = {}
    ended: dict[str, tuple | None] = {}  # path -> its signature when its reader ended

    def poll() -> list[Update]:
        for path in _matches(pattern):
            if path in readers and path not in ended:
                continue
            signature = _signature(path)
            if path in ended and (not follow or signature == ended[path]):
                continue
            known = set()
            for other, reader in readers.items():
                known |= reader.rotated_away
                if other not in ended:
                    known.add(reader.identity)
            if signature is not None and signature[:2] in known:
                continue  # a file already read under another name (renamed by a rotation)
            readers[path] = AccessFileReader(path, fmt)
            readers[path].identity = signature[:2] if signature else None
            ended.pop(path, None)
        updates = []
        for path, reader in readers.items():
            if path in ended:
                continue
            items, done = reader.read(final=not follow)
            if done:
                ended[path] = _signature(path)
            # a followed file that is gone stops holding the watermark, but the stream goes on
            updates.append(Update(path, items, done))
        return updates

    return poll


def tally_poll(pattern: str, follow: bool, clock):
    """Documents oldest first; in follow mode a new file is served once its size and mtime
    have not changed between two polls, and every path only once."""
    from beam_tally.io import UNREADABLE
    from beam_tally.io_stream import MAX_ELEMENT_BYTES
    from beam_tally.records import STREAM_ERROR_PREFIX, SourceFile

    served: set[str] = set()
    last_seen: dict[str, tuple[int, int]] = {}
    stamp = [0.0]

    def stamped(document):
        stamp[0] = max(clock.now(), stamp[0] + 0.002)  # strictly increasing event times
        return stamp[0], document

    def read(path: str) -> SourceFile:
        try:
            with open(path, "rb") as handle:
                content = handle.read(MAX_ELEMENT_BYTES + 1)  # never more than can be sent
        except OSError as err:
            reason = f"{UNREADABLE}: {type(err).__name__}: {err}"
            return SourceFile(path, STREAM_ERROR_PREFIX + reason.encode())
        if len(content) > MAX_ELEMENT_BYTES:
            size = _signature(path)[3] if _signature(path) else len(content)
            reason = f"too large to stream: {size:,} bytes in one document"
            return SourceFile(path, STREAM_ERROR_PREFIX + reason.encode())
        return SourceFile(path, content)

    def poll() -> list[Update]:
        candidates = []
        for path in _matches(pattern):
            if path in served:
                continue
            try:
                info = os.stat(path)
            except OSError:
                continue
            signature = (info.st_size, info.st_mtime_ns)
            if follow and last_seen.get(path) != signature:
                last_seen[path] = signature  # still changing, or just seen: next poll
                continue
            candidates.append((info.st_mtime_ns, path))
        candidates.sort()
        batch = [path for _, path in candidates[:CHUNK_FILES]]
        served.update(batch)
        items = [stamped(read(path)) for path in batch]
        done = not follow and len(candidates) <= CHUNK_FILES
        return [Update("documents", items, done)]

    return poll


class _Service:
    """The gRPC servicer: each ``Events`` call streams a fresh replay."""

    def __init__(self, kind: str, make_poll, settings: StreamSettings) -> None:
        from beam_tally.io_stream import stream_coder

        self.kind = kind
        self.coder = stream_coder(kind)
        self.make_poll = make_poll
        self.settings = settings

    def Events(self, request, context):
        from beam_tally.io_stream import elements_events, end_element, watermark_event

        tag = request.output_ids[0] if request.output_ids else ""
        clock = SystemClock()
        served = late = 0
        _say(f"consumer connected from {context.peer()}")

        def mark_late(ts, line, behind):
            nonlocal late
            marked = late_line(ts, line, behind, self.settings.max_delay)
            late += marked is not line
            return marked

        mark = mark_late if self.kind == "access" else None
        session = Session(self.make_poll(clock), self.settings, clock, mark)
        for event in session.events():
            if not context.is_active():
                _say(f"consumer left after {served:,} elements")
                return
            if isinstance(event, End):
                yield from elements_events(
                    [(session.sent, end_element(self.kind))], self.coder, tag
                )
            elif isinstance(event, Elements):
                if not served:  # the pacing origin, for latency measurements
                    first, at = session.pacer.origin or (event.items[0][0], time.time())
                    _say(f"first element: event time {first:.0f} due at {at:.3f}")
                served += len(event.items)
                yield from elements_events(event.items, self.coder, tag)
            else:
                yield watermark_event(event.at, tag)
        _say(f"replay finished: {served:,} elements served ({late:,} late)")


def late_line(ts: float, line, behind: float, max_delay: float):
    """A line more out of order than the reorder budget, as the consumer must see it: a
    ``late`` dead letter. Lines that are not requests (a header, a bad line) stay as they are,
    for the consumer's parser to skip or dead-letter for what they are."""
    from beam_tally.records import STREAM_ERROR, AccessLine
    from transforms import access_log

    if line.fmt == STREAM_ERROR:
        return line
    fmt = line.fmt or ("csv" if line.text.lstrip("\ufeff \t")[:1] == '"' else "clf")
    try:
        if access_log.parse_line(line.text, fmt) is None:
            return line
    except access_log.BadLine:
        return line
    reason = (
        f"late: event second {ts:.0f} arrived after the stream had reached {behind:.0f}, "
        f"more than --max_delay {max_delay:g} s out of order"
    )
    return AccessLine(line.source, line.line, reason, STREAM_ERROR)


def _say(message: str) -> None:
    print(f"produce: {message}", flush=True)


def serve(args) -> int:
    import grpc
    from apache_beam.portability.api import beam_interactive_api_pb2_grpc as api_grpc

    pattern = _pattern(args.input)
    if not args.follow and not _matches(pattern):
        raise UsageError(f"--input {args.input!r} matches no file: check the path, or use --follow")
    settings = StreamSettings(
        max_delay=args.max_delay if args.kind == "access" else 0.0,
        speedup=args.speedup if args.kind == "access" else None,
        follow=args.follow,
        heartbeat=args.heartbeat,
        poll=args.poll,
        clock_watermark=args.kind == "tally",
    )
    if args.kind == "access":

        def make_poll(clock):
            return access_poll(pattern, args.format, args.follow)
    else:

        def make_poll(clock):
            return tally_poll(pattern, args.follow, clock)

    # No SO_REUSEPORT: a second producer on a taken port must fail, not share it. Each
    # connected consumer holds one worker thread for its whole stream.
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=MAX_CONSUMERS),
        options=[("grpc.so_reuseport", 0)],
        maximum_concurrent_rpcs=MAX_CONSUMERS,
    )
    service = _Service(args.kind, make_poll, settings)
    servicer = type(
        "TestStreamService", (api_grpc.TestStreamServiceServicer,), {"Events": service.Events}
    )()
    api_grpc.add_TestStreamServiceServicer_to_server(servicer, server)
    try:
        port = server.add_insecure_port(args.serve)
    except RuntimeError:
        port = 0
    if not port:
        raise UsageError(
            f"cannot serve on {args.serve}: the port is taken or the address is not local "
            "(pick another --serve HOST:PORT, or port 0 for a free one)"
        )
    host = args.serve.rsplit(":", 1)[0]
    server.start()
    mode = "following" if args.follow else "replaying"
    pace = f"speedup {args.speedup:g}" if settings.speedup else "unpaced"
    _say(f"{mode} {args.kind} from {pattern} on {host}:{port} ({pace}); Ctrl-C stops")
    stop = threading.Event()
    handlers = {
        signum: signal.signal(signum, lambda signum, frame: stop.set())
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        while not stop.wait(0.2):
            pass
    finally:
        server.stop(grace=1).wait(2)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    _say("stopped")
    return 0


def run(argv: list[str]) -> int:
    if any(arg in ("-h", "--help") for arg in argv):
        raise HelpRequested(HELP)
    args = _parser().parse_args(argv)
    if ":" not in args.serve:
        raise UsageError("--serve needs HOST:PORT, e.g. --serve 127.0.0.1:50051")
    if args.speedup is not None and args.speedup <= 0:
        raise UsageError("--speedup must be a positive number")
    if args.max_delay < 0:
        raise UsageError("--max_delay must be 0 or more seconds")
    sys.stdout.reconfigure(line_buffering=True)
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")  # errors are reported in one line here
    return serve(args)
