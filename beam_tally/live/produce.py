"""``beam-tally produce``: replays (or follows) inputs and serves them as a live event stream.

One reader per access-log file (lines, in file order, each with the event time its parser
finds) or one reader for a folder of tally documents (each document stamped with the time it
is served). ``replay.stream_events`` reorders, merges, paces and watermarks them; each consumer
that connects gets the whole replay from the start, as Beam ``TestStreamService`` events over
gRPC (``io_stream``).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from concurrent import futures

from beam_tally.errors import HelpRequested, UsageError, UsageParser, flags_help
from beam_tally.io.paths import input_pattern, watched_folder
from beam_tally.io.sources import (
    DEFAULT_MAX_FILE_BYTES,
    TOO_LARGE,
    FileProblem,
    Inflater,
    cr_only_endings,
    match_input,
    open_input,
    read_pieces,
)
from beam_tally.live.replay import Elements, End, Session, StreamSettings, SystemClock, Update
from beam_tally.terminal import escape_control, say

INTRO = """usage: beam-tally produce tally|access --input GLOB --serve HOST:PORT [options]
       beam-tally produce tally|access --input GLOB --to kafka://HOST:PORT/TOPIC [options]

Serves the inputs as a live stream for 'beam-tally tally|monitor --streaming --source HOST:PORT'.
  access         access-log lines, in event-time order within --max_delay seconds of disorder
  tally          logs_xx.json documents, oldest first, each stamped with the time it is served
Each consumer that connects gets the whole replay; Ctrl-C stops serving."""


BLOCK = 4 << 20  # bytes read from a file per poll, at most
# A reader's first poll reads this much, and each next one twice the last, up to BLOCK: the
# first lines leave within milliseconds of a consumer connecting (a 4 MiB first read held the
# stream back for half a second of parsing), while later polls stay large, since each poll's
# lines are one stream event, and each event a bundle through every step of the consumer.
FIRST_BLOCK = 256 << 10
MAX_LINE = 1 << 20  # a longer access line travels as a dead letter (gRPC's message limit)
MAX_CONSUMERS = 32  # consumers served at once; one more is refused, not left waiting
CHUNK_FILES = 16


def _parser() -> UsageParser:
    parser = UsageParser(prog="beam-tally produce", allow_abbrev=False, add_help=False)
    parser.add_argument("kind", choices=["tally", "access"], help="what the files hold")
    parser.add_argument(
        "--input",
        required=True,
        metavar="GLOB",
        help="files to read: a file, a folder (its files) or a glob (quote it)",
    )
    parser.add_argument(
        "--serve",
        metavar="HOST:PORT",
        help="address to serve on, loopback (port 0 picks a free one and prints it)",
    )
    parser.add_argument(
        "--to",
        metavar="kafka://HOST:PORT/TOPIC",
        help="write the replay into a Kafka topic instead of serving it: each line or "
        "document one record, keyed by its file, its event time the record's timestamp; "
        "exits once the broker confirmed every record",
    )
    parser.add_argument(
        "--partitions",
        type=int,
        metavar="N",
        help="partitions of the topic, when --to creates it (default 1)",
    )
    parser.add_argument(
        "--broker_timeout",
        type=float,
        default=120.0,
        metavar="S",
        help="seconds to wait for, and retry, a Kafka broker that is away",
    )
    parser.add_argument(
        "--speedup",
        type=float,
        metavar="N",
        help="pace by event time divided by N (default: as fast as the consumer takes it)",
    )
    parser.add_argument(
        "--follow",
        action="store_true",
        help="keep reading lines appended to the files, and new files that --input matches "
        "(its folder must exist)",
    )
    parser.add_argument(
        "--max_delay",
        type=float,
        default=5.0,
        metavar="S",
        help="reorder budget, and how far the watermark trails the newest line, in seconds",
    )
    parser.add_argument(
        "--format",
        default="auto",
        choices=["auto", "csv", "clf"],
        help="access-log format (auto: told per file)",
    )
    parser.add_argument(
        "--max_file_bytes",
        type=int,
        default=DEFAULT_MAX_FILE_BYTES,
        metavar="N",
        help="content read from one file at most, decompressed (default: 1 GiB)",
    )
    parser.add_argument(
        "--allow_remote",
        action="store_true",
        help="allow an address other hosts can reach (the stream is unauthenticated)",
    )
    parser.add_argument(
        "--max_consumers",
        type=int,
        default=MAX_CONSUMERS,
        metavar="N",
        help="consumers served at once; one more is refused with a reason",
    )
    parser.add_argument("--heartbeat", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--poll", type=float, default=0.2, help=argparse.SUPPRESS)
    return parser


def help_text() -> str:
    return f"{INTRO}\n\n{flags_help(_parser())}"


def _pattern(path: str) -> str:
    return input_pattern(path)  # a folder is the files in it, as for the batch jobs


def _matches(pattern: str) -> list[str]:
    """The regular files ``pattern`` matches (``sources.match_input``, as the batch jobs)."""
    return match_input(pattern)[0]


class AccessFileReader:
    """Complete lines appended to one access-log file since the last read, each with its event
    time (None for a line without one: a bad line, the CSV header, a blank line).

    A reader follows a file, not a path: it keeps the file open, so a file renamed by a
    rotation is read to its end while the new file under the old path gets a reader of its
    own. A truncated file is read again from its start; a deleted one, once drained, ends the
    reader. A line longer than ``MAX_LINE`` travels as a ``STREAM_ERROR`` line, not as data."""

    def __init__(
        self, path: str, fmt: str, handle, max_bytes: int = DEFAULT_MAX_FILE_BYTES
    ) -> None:
        self.path = path  # where it was first seen: the source of its lines
        self.fmt = None if fmt == "auto" else fmt
        self.handle = handle
        self.max_bytes = max_bytes
        self.inflater = Inflater(path, max_bytes)  # compressed files read as the batch jobs do
        # Compressed bytes are read in small blocks, so one poll's content stays bounded.
        self.raw_block = FIRST_BLOCK if self.inflater.kind is None else 1 << 16
        info = os.fstat(handle.fileno())
        self.identity = (info.st_dev, info.st_ino)
        self.name = f"{path} ({info.st_dev}:{info.st_ino})"
        self.line = 0
        self.tail = b""
        self.skipping = False  # inside a line too long to send, until its newline
        self.cr_only: bool | None = None  # told from the first bytes read

    def read(self, final: bool) -> tuple[list, bool]:
        """New ``(event time, AccessLine)`` pairs (up to a block of bytes: ``FIRST_BLOCK``, then
        twice as much each read, up to ``BLOCK``) and whether the
        reader is finished: at the end of the file in a replay (``final``: an unterminated last
        line is a line too), or, followed, at the end of a file that was deleted."""
        from beam_tally.io.files import unreadable

        pieces: list[bytes] = []
        try:
            raw = self.handle.read(self.raw_block)
            gone = moved = False
            if not raw and not final:
                info = os.fstat(self.handle.fileno())
                if info.st_size < self.handle.tell():
                    _say(f"{self.path} was truncated: reading it again from its start")
                    self.handle.seek(0)
                    self.line, self.tail, self.skipping = 0, b"", False
                    self.inflater = Inflater(self.path, self.max_bytes)
                    raw = self.handle.read(self.raw_block)
                gone = info.st_nlink == 0
                moved = (_signature(self.path) or (None, None))[:2] != self.identity
            done = len(raw) < self.raw_block and (final or gone)
            if self.inflater.kind is None:
                self.raw_block = min(2 * self.raw_block, BLOCK)
            pieces.extend(self.inflater.feed(raw))
            if done:
                self.inflater.finish()
        except (OSError, FileProblem) as err:
            # The complete lines read before, then one dead letter for the file (line 0: no
            # position), which stands for the rest, an unfinished last line included.
            self.close()
            items = self._lines(b"".join(pieces), False) if isinstance(err, FileProblem) else []
            reason = err.args[0] if isinstance(err, FileProblem) else unreadable(err)
            error = _file_error(self.path, reason)
            return [*items, (None, error)], True
        block = b"".join(pieces)
        # A file renamed away by a rotation no longer gets lines: its last one is complete.
        items = self._lines(block, done or (not block and not final and moved))
        if done:
            self.close()
        return items, done

    def close(self) -> None:
        self.handle.close()

    def _error(self, reason: str):
        """A dead letter for the current line, which could not be sent as data."""
        from transforms.records import STREAM_ERROR, AccessLine

        return AccessLine(self.path, self.line, reason, STREAM_ERROR)

    def _lines(self, block: bytes, last: bool) -> list:
        from beam_tally.io.files import _file_format
        from transforms import access_log
        from transforms.records import AccessLine

        data = self.tail + block
        if self.cr_only is None:  # lines ending with CR alone (classic Mac OS)
            self.cr_only = cr_only_endings(data)
        if self.cr_only:
            data = data.replace(b"\r", b"\n")
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
            ts = access_log.event_time(text, self.fmt or access_log.format_of_line(text))
            items.append((ts, AccessLine(self.path, self.line, text, self.fmt or "")))
        return items


def _file_error(path: str, reason: str):
    """A dead letter for a whole file (no line number)."""
    from transforms.records import STREAM_ERROR, AccessLine

    return AccessLine(path, 0, reason, STREAM_ERROR)


def _signature(path: str) -> tuple[int, ...] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino, info.st_mtime_ns, info.st_ctime_ns, info.st_size


def access_poll(pattern: str, fmt: str, follow: bool, max_bytes: int = DEFAULT_MAX_FILE_BYTES):
    """One reader per file matching ``pattern`` (a file matched under two names, such as a
    rotated file whose new name matches too, is read once). Followed, files that appear later
    get a reader too; a file that cannot be opened is one dead letter, tried again only once
    it changes."""
    from beam_tally.io.files import unreadable

    readers: dict[tuple[int, int], AccessFileReader] = {}
    refused: dict[str, tuple] = {}  # path -> its signature when it could not be opened
    started = [False]

    def open_new() -> list[Update]:
        updates = []
        files, problems = match_input(pattern)
        for path, reason in problems:  # each reported once, and again only once it changes
            signature = _signature(path) or (reason,)
            if refused.get(path) != signature:
                refused[path] = signature
                line = _file_error(path, reason)
                updates.append(Update(f"{path} (unreadable)", [(None, line)], done=True))
        for path in files:
            signature = _signature(path)
            if signature is None or signature[:2] in readers or refused.get(path) == signature:
                continue
            try:
                handle = open_input(path)  # kept open between polls; never blocks
            except (OSError, FileProblem) as err:
                refused[path] = signature
                reason = err.args[0] if isinstance(err, FileProblem) else unreadable(err)
                line = _file_error(path, reason)
                updates.append(Update(f"{path} (unreadable)", [(None, line)], done=True))
                continue
            refused.pop(path, None)
            reader = AccessFileReader(path, fmt, handle, max_bytes)
            if reader.identity in readers:  # replaced between stat and open: read it next time
                reader.close()
                continue
            readers[reader.identity] = reader
        return updates

    def poll() -> list[Update]:
        updates = open_new() if follow or not started[0] else []
        started[0] = True
        for identity, reader in list(readers.items()):
            items, done = reader.read(final=not follow)
            if done:
                del readers[identity]  # its identity may be reused by a new file
            updates.append(Update(reader.name, items, done))
        return updates

    return poll


def tally_poll(pattern: str, follow: bool, clock, max_bytes: int = DEFAULT_MAX_FILE_BYTES):
    """Documents oldest first; in follow mode a new file is served once its size and mtime
    have not changed between two polls, and every path only once."""
    from beam_tally.io.files import unreadable
    from beam_tally.io.stream import MAX_ELEMENT_BYTES
    from transforms.records import STREAM_ERROR_PREFIX, SourceFile

    served: set[str] = set()
    last_seen: dict[str, tuple[int, int]] = {}
    stamp = [0.0]

    def stamped(document):
        stamp[0] = max(clock.now(), stamp[0] + 0.002)  # strictly increasing event times
        return stamp[0], document

    def error(path: str, reason: str) -> SourceFile:
        return SourceFile(path, STREAM_ERROR_PREFIX + reason.encode("utf-8", "backslashreplace"))

    def read(path: str) -> SourceFile:
        limit = min(max_bytes, MAX_ELEMENT_BYTES)  # never more than can be sent
        try:
            return SourceFile(path, b"".join(read_pieces(path, limit)))
        except FileProblem as problem:
            reason = problem.args[0]
            if reason.startswith(TOO_LARGE) and limit < max_bytes:
                reason = f"too large to stream: over {MAX_ELEMENT_BYTES:,} bytes in one document"
        except OSError as err:
            reason = unreadable(err)
        return error(path, reason)

    def poll() -> list[Update]:
        candidates = []
        files, problems = match_input(pattern)
        unread = [(path, reason) for path, reason in problems if path not in served]
        served.update(path for path, _ in unread)
        for path in files:
            if path in served:
                continue
            signature = _signature(path)
            if signature is None:
                continue
            _, _, mtime, _, size = signature
            if follow and last_seen.get(path) != (size, mtime):
                last_seen[path] = (size, mtime)  # still changing, or just seen: next poll
                continue
            candidates.append((mtime, path))
        candidates.sort()
        batch = [path for _, path in candidates[:CHUNK_FILES]]
        served.update(batch)
        items = [stamped(error(path, reason)) for path, reason in unread]
        items += [stamped(read(path)) for path in batch]
        done = not follow and len(candidates) <= CHUNK_FILES
        return [Update("documents", items, done)]

    return poll


class _Service:
    """The gRPC servicer: each ``Events`` call streams a fresh replay."""

    def __init__(self, kind: str, make_poll, settings: StreamSettings) -> None:
        from beam_tally.io.stream import stream_coder

        self.kind = kind
        self.coder = stream_coder(kind)
        self.make_poll = make_poll
        self.settings = settings

    def Events(self, request, context):
        from beam_tally.io.stream import (
            elements_events,
            end_element,
            stream_items,
            watermark_event,
        )

        if not request.output_ids:
            # A consumer's check that it may connect (``io_stream.wait_for_source``): past
            # --max_consumers gRPC refuses it before this; otherwise it gets no replay.
            return
        tag = request.output_ids[0]
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
                end = [(session.sent, end_element(self.kind, served))]
                yield from elements_events(stream_items(self.kind, end), self.coder, tag)
            elif isinstance(event, Elements):
                if not served:  # the pacing origin, for latency measurements
                    first, at = session.pacer.origin or (event.items[0][0], time.time())
                    _say(f"first element: event time {first:.0f} due at {at:.3f}")
                served += len(event.items)
                yield from elements_events(stream_items(self.kind, event.items), self.coder, tag)
            else:
                yield watermark_event(event.at, tag)
        _say(f"replay finished: {served:,} elements served ({late:,} late)")


def late_line(ts: float, line, behind: float, max_delay: float):
    """A line more out of order than the reorder budget, as the consumer must see it: a
    ``late`` dead letter. Lines that are not requests (a header, a bad line) stay as they are,
    for the consumer's parser to skip or dead-letter for what they are."""
    from transforms import access_log
    from transforms.records import STREAM_ERROR, AccessLine

    if line.fmt == STREAM_ERROR:
        return line
    fmt = line.fmt or access_log.format_of_line(line.text)
    try:
        if access_log.parse_line(line.text, fmt) is None:
            return line
    except access_log.BadLine:
        return line
    if ts < behind - max_delay:
        reason = (
            f"late: event second {ts:.0f} came after second {behind:.0f}, more than "
            f"--max_delay {max_delay:g} s out of order"
        )
    else:  # its files had been quiet, and the stream had moved on to their newest line
        reason = f"late: event second {ts:.0f} came after the stream had passed {behind:.0f}"
    return AccessLine(line.source, line.line, reason, STREAM_ERROR)


def _say(message: str) -> None:
    """A line on stdout, escaped: file names and peers come from outside."""
    say(f"produce: {message}")


def serve(args) -> int:
    import grpc
    from apache_beam.portability.api import beam_interactive_api_pb2_grpc as api_grpc

    pattern = _pattern(args.input)
    if args.follow and "://" not in args.input:
        folder = watched_folder(args.input)
        if not os.path.isdir(folder):
            raise UsageError(
                f"--input: the folder {folder!r} does not exist, so --follow would wait on "
                "nothing: create it first (new files are written into it, then renamed in)"
            )
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
            return access_poll(pattern, args.format, args.follow, args.max_file_bytes)
    else:

        def make_poll(clock):
            return tally_poll(pattern, args.follow, clock, args.max_file_bytes)

    if args.to:
        from beam_tally.io import kafka as io_kafka

        return io_kafka.produce(args, make_poll, settings, late_line, _say)
    # No SO_REUSEPORT: a second producer on a taken port must fail, not share it. Each
    # connected consumer holds one worker thread for its whole stream.
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=args.max_consumers),
        options=[("grpc.so_reuseport", 0)],
        maximum_concurrent_rpcs=args.max_consumers,
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


def is_loopback(host: str) -> bool:
    """Whether ``host`` (of ``--serve HOST:PORT``) is reachable from this machine only: a
    loopback address or ``localhost``. ``0.0.0.0``, ``[::]`` and other addresses are not."""
    import ipaddress

    host = host.strip("[]")
    if host.lower() in ("localhost", "localhost.", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def _check_kafka_args(args) -> None:
    from beam_tally.io.kafka import parse_address

    if args.serve:
        raise UsageError("give --serve HOST:PORT or --to kafka://HOST:PORT/TOPIC, not both")
    parse_address(args.to)
    if args.partitions is not None and args.partitions <= 0:
        raise UsageError("--partitions must be a positive number")
    if args.broker_timeout <= 0:
        raise UsageError("--broker_timeout must be a positive number of seconds")


def run(argv: list[str]) -> int:
    if any(arg in ("-h", "--help") for arg in argv):
        raise HelpRequested(help_text())
    args = _parser().parse_args(argv)
    if args.to:
        _check_kafka_args(args)
        args.serve = "127.0.0.1:0"  # checked below like a loopback address; not served
    elif args.serve is None:
        raise UsageError("--serve HOST:PORT or --to kafka://HOST:PORT/TOPIC is required")
    if ":" not in args.serve:
        raise UsageError("--serve needs HOST:PORT, e.g. --serve 127.0.0.1:50051")
    host = args.serve.rsplit(":", 1)[0]
    if not is_loopback(host):
        if not args.allow_remote:
            raise UsageError(
                f"--serve {args.serve} is reachable from other hosts, and the stream is "
                "unauthenticated: serve on 127.0.0.1 (or [::1]), or add --allow_remote"
            )
        print(
            f"produce: warning: serving on {escape_control(args.serve)} to the network: anyone "
            "who can reach it reads every line, unauthenticated and unencrypted",
            file=sys.stderr,
            flush=True,
        )
    if args.speedup is not None and args.speedup <= 0:
        raise UsageError("--speedup must be a positive number")
    if args.max_delay < 0:
        raise UsageError("--max_delay must be 0 or more seconds")
    if args.max_consumers < 1:
        raise UsageError("--max_consumers must be 1 or more")
    if args.max_file_bytes <= 0:
        raise UsageError("--max_file_bytes must be a positive number of bytes")
    sys.stdout.reconfigure(line_buffering=True)
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")  # errors are reported in one line here
    return serve(args)
