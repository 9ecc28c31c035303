"""Sources and sinks: the only code that touches files and the terminal.

``ReadLogFiles`` is the tally job's producer stage (match and read each file). ``WriteJsonLines``
writes several line-per-element files under the output directory in one sink. ``WriteToConsole``
prints formatted elements on stdout.
"""

import glob
import os
import shutil
import sys
import uuid
from collections.abc import Callable, Iterable
from typing import Iterator, NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam import pvalue
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows

from beam_tally import progress
from beam_tally.gc_settings import tune_worker_gc
from beam_tally.io.sources import (
    DEFAULT_MAX_FILE_BYTES,
    LINE_TOO_LONG,
    UNREADABLE,
    FileProblem,
    compression_of,
    cr_only_endings,
    match_input,
    open_input,
    read_pieces,
    unreadable,
)
from transforms import access_arrow, access_log
from transforms.list_batches import LineBlock, LineColumns
from transforms.parse_logs import count_log_stream, valid_utf8
from transforms.records import AccessLine, DeadLetter, FileTally, SourceFile, truncate_raw
from transforms.tally import (
    DEAD_LETTERS,
    METRICS_NAMESPACE,
    TALLIES,
    count_dead_letter,
    tally_outputs,
)

MAX_LINE_BYTES = 64 << 20
"""A line longer than this (64 MiB, no line end in sight) ends the file's reading: held whole,
one such line per worker would be the memory limit."""

_COPY_CHUNK = 1 << 20
_NO_PART = ("", "")
_KEYED_PART = tuple[str, tuple[str, str]]  # (temporary directory, (file name, part path))


def _match(pattern: str) -> tuple[list[str], list[tuple[str, str]]]:
    """``sources.match_input`` for a local pattern; through Beam's FileSystems for a scheme."""
    if "://" not in pattern:
        return match_input(pattern)
    results = FileSystems.match([pattern])
    return sorted(meta.path for result in results for meta in result.metadata_list), []


def matching_files(pattern: str) -> list[str]:
    """Names that ``pattern`` matches now, files to read or not (used by the CLI to reject an
    empty match early)."""
    files, problems = _match(pattern)
    return sorted(files + [name for name, _ in problems])


def _path_ok(path: str) -> DeadLetter | None:
    """None for a name that is valid Unicode; else its dead letter (counted), under an escaped
    form of the name: such a name cannot be carried (or written in JSON)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        shown = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        dead = DeadLetter(shown, None, f"{UNREADABLE}: file name is not valid Unicode", "")
        count_dead_letter(dead)
        return dead
    return None


class _MatchFn(beam.DoFn):
    """The pattern -> each regular file it matches (a path), and a dead letter (counted) for
    every other name it matches: special files, folders, broken links, unlistable folders."""

    def process(self, pattern: str):
        files, problems = _match(pattern)
        for path in files:
            dead = _path_ok(path)
            yield path if dead is None else pvalue.TaggedOutput(DEAD_LETTERS, dead)
        for name, reason in problems:
            dead = _path_ok(name) or DeadLetter(name, None, reason, "")
            if dead.reason == reason:
                count_dead_letter(dead)
            yield pvalue.TaggedOutput(DEAD_LETTERS, dead)


class MatchInputFiles(beam.PTransform):
    """``PBegin`` -> ``files`` (the path of each regular file ``pattern`` matches) and
    ``dead_letters`` (one per other name it matches, saying why it is not read)."""

    def __init__(self, pattern: str) -> None:
        super().__init__()
        self.pattern = pattern

    def expand(self, pbegin):
        return (
            pbegin
            | "Pattern" >> beam.Create([self.pattern])
            | "Match" >> beam.ParDo(_MatchFn()).with_outputs(DEAD_LETTERS, main="files")
        )


def literal_pattern(path: str) -> str:
    """``path`` as a pattern that matches itself only (``[``, ``*`` and ``?`` escaped)."""
    return glob.escape(path)


def list_directory(directory: str) -> list[str]:
    """The paths of the files directly under ``directory``, named literally (a local directory
    is listed, not globbed, so ``[`` in its name is only a character)."""
    if "://" in directory:  # gs://, s3://: through Beam, with the directory's name escaped
        pattern = FileSystems.join(literal_pattern(directory), "*")
        return [meta.path for meta in FileSystems.match([pattern])[0].metadata_list]
    if not os.path.isdir(directory):
        return []
    return [os.path.join(directory, name) for name in os.listdir(directory)]


def remove_paths(paths: list[str]) -> None:
    """Removes files (and folders, with what they hold) named literally: Beam's local delete
    would take each path for a glob, and fail on one holding ``[``."""
    remote = [path for path in paths if "://" in path]
    if remote:
        FileSystems.delete(remote)
    for path in paths:
        if "://" in path:
            continue
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.remove(path)


STREAM_ABOVE = 64 << 20
"""A document of more content than this (64 MiB) is counted as a stream (``LARGE``), never held
whole; smaller ones are read whole and parsed at once, which is several times faster."""

LARGE = "large"  # ReadFileFn's tag for the paths of documents to stream


class ReadFileFn(beam.DoFn):
    """Reads a whole matched file (its path) with ``sources.read_pieces`` (any scheme Beam's
    FileSystems know, compressed files decompressed, at most ``max_file_bytes``); a file that
    is unreadable, damaged or too large, or a name that is not valid Unicode, becomes a dead
    letter. A file of more than ``stream_above`` bytes of content is not held: its path goes
    to tag ``large`` (an uncompressed local file is told by its size, before any read)."""

    def __init__(
        self, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES, stream_above: int = STREAM_ABOVE
    ) -> None:
        self.max_file_bytes = max_file_bytes
        self.stream_above = stream_above
        self.files = Metrics.counter(METRICS_NAMESPACE, "files_read")

    def setup(self) -> None:
        tune_worker_gc()  # a worker process's collector, as the launcher's (gc_settings)

    def _known_large(self, path: str) -> bool:
        if "://" in path or compression_of(path) is not None:
            return False
        try:
            return os.stat(path).st_size > self.stream_above
        except OSError:  # the read says why
            return False

    def process(self, path: str):
        dead = _path_ok(path)
        if dead is not None:
            yield pvalue.TaggedOutput(DEAD_LETTERS, dead)
            return
        if self._known_large(path):
            yield pvalue.TaggedOutput(LARGE, path)
            return
        pieces, size = [], 0
        try:
            # One read for an uncompressed file held whole: no pieces to join.
            for piece in read_pieces(path, self.max_file_bytes, self.stream_above + 1):
                pieces.append(piece)
                size += len(piece)
                if size > self.stream_above:  # compressed, or grown since: stream it
                    yield pvalue.TaggedOutput(LARGE, path)
                    return
        except FileProblem as problem:
            reason = str(problem.args[0])
        except Exception as err:
            reason = unreadable(err)
        else:
            self.files.inc()
            progress.report(files=1, size=size)
            yield SourceFile(path, b"".join(pieces))
            return
        progress.report(files=1)
        dead = DeadLetter(path, None, reason, "")
        count_dead_letter(dead)
        yield pvalue.TaggedOutput(DEAD_LETTERS, dead)


class TallyLargeDocumentFn(beam.DoFn):
    """Counts a document too large to hold (its path, from ``ReadFileFn``'s tag ``large``) as
    a stream of pieces (``parse_logs.count_log_stream``): the outputs of
    ``TallyDocumentFn`` (its ``FileTally``, dead letters tagged ``dead_letters``) in bounded
    memory. A file that cannot be read to its end is one dead letter, as ``ReadFileFn``'s."""

    def __init__(self, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> None:
        self.max_file_bytes = max_file_bytes
        self.files = Metrics.counter(METRICS_NAMESPACE, "files_read")
        self.documents = Metrics.counter(METRICS_NAMESPACE, "documents")
        self.logs = Metrics.counter(METRICS_NAMESPACE, "logs")

    def process(self, path: str):
        sizes = []

        def pieces():
            for piece in read_pieces(path, self.max_file_bytes):
                sizes.append(len(piece))
                yield piece

        try:
            counts, dead_letters, empty = count_log_stream(path, pieces())
        except FileProblem as problem:
            reason = str(problem.args[0])
        except Exception as err:
            reason = unreadable(err)
        else:
            self.files.inc()
            progress.report(files=1, size=sum(sizes))
            yield from tally_outputs(path, counts, dead_letters, empty, self.documents, self.logs)
            return
        progress.report(files=1)
        dead = DeadLetter(path, None, reason, "")
        count_dead_letter(dead)
        yield pvalue.TaggedOutput(DEAD_LETTERS, dead)


def _read_matching(
    pbegin, pattern: str, read_fn: beam.DoFn, main: str, split_fn: beam.DoFn | None = None
) -> dict:
    """Match ``pattern``, spread the matches over workers, read each with ``read_fn`` (which
    takes a path): returns ``{main: what it reads, "dead_letters": names not read and files
    not read to their end}``. Matches are reshuffled before reading so that contents are read
    inside the stage that processes them."""
    matched = pbegin | "Match" >> MatchInputFiles(pattern)
    files = matched["files"]
    if split_fn is not None:  # large files as ranges, which the reader reads as parts
        files = files | "Split" >> beam.ParDo(split_fn)
    read = (
        files
        | "Spread" >> beam.Reshuffle()
        | "Read" >> beam.ParDo(read_fn).with_outputs(DEAD_LETTERS, main=main)
    )
    dead_letters = (matched[DEAD_LETTERS], read[DEAD_LETTERS]) | "ReadDeadLetters" >> beam.Flatten()
    return {main: read[main], DEAD_LETTERS: dead_letters}


class ReadLogFiles(beam.PTransform):
    """``PBegin`` -> ``files`` (``SourceFile``, one per readable file of at most
    ``stream_above`` bytes), ``large`` (the paths of larger files, for
    ``TallyLargeDocuments``) and ``dead_letters``.

    Paths are reshuffled before reading so that on a cluster the files spread over workers, and
    so that file contents are read inside the stage that parses and counts them (only small
    per-file tallies cross the shuffle that follows).
    """

    def __init__(
        self,
        pattern: str,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        stream_above: int = STREAM_ABOVE,
    ) -> None:
        super().__init__()
        self.pattern = pattern
        self.max_file_bytes = max_file_bytes
        self.stream_above = stream_above

    def expand(self, pbegin):
        matched = pbegin | "Match" >> MatchInputFiles(self.pattern)
        read = (
            matched["files"]
            | "Spread" >> beam.Reshuffle()
            | "Read"
            >> beam.ParDo(ReadFileFn(self.max_file_bytes, self.stream_above)).with_outputs(
                DEAD_LETTERS, LARGE, main="files"
            )
        )
        dead_letters = (
            matched[DEAD_LETTERS],
            read[DEAD_LETTERS],
        ) | "ReadDeadLetters" >> beam.Flatten()
        return {"files": read.files, LARGE: read[LARGE], DEAD_LETTERS: dead_letters}


class TallyLargeDocuments(beam.PTransform):
    """``PCollection[str]`` of paths (``ReadLogFiles``' ``large``) -> ``tallies``
    (``FileTally``) and ``dead_letters``, each document counted as a stream."""

    def __init__(self, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> None:
        super().__init__()
        self.max_file_bytes = max_file_bytes

    def expand(self, paths):
        return paths | "CountStreamed" >> beam.ParDo(
            TallyLargeDocumentFn(self.max_file_bytes)
        ).with_output_types(FileTally, **{DEAD_LETTERS: DeadLetter}).with_outputs(
            DEAD_LETTERS, main=TALLIES
        )


class WriteBundleFn(beam.DoFn):
    """Streams a bundle's elements of output ``name``, one line each (``to_text(element)``,
    the element itself by default), into one new file under ``directory``, created at the
    bundle's first line; when the bundle ends, ``_done(path)`` says what becomes of it. Here, a
    temporary part: emits ``(directory, (name, part_path))`` for ``WriteJsonLines`` to
    concatenate."""

    def __init__(
        self, directory: str, name: str, to_text: Callable[[object], str] | None = None
    ) -> None:
        self.directory = directory
        self.name = name
        self.to_text = to_text

    def _new_path(self) -> str:
        return FileSystems.join(self.directory, f"{self.name}.{uuid.uuid4().hex}.part")

    def _done(self, path: str) -> Iterable:
        yield GlobalWindows.windowed_value((self.directory, (self.name, path)))

    def start_bundle(self):
        self.path = None
        self.handle = None

    def process(self, element):
        if self.handle is None:
            self.path = self._new_path()
            self.handle = FileSystems.create(self.path)
        line = element if self.to_text is None else self.to_text(element)
        self.handle.write(line.encode("utf-8") + b"\n")

    def finish_bundle(self):
        if self.handle is not None:
            self.handle.close()
            yield from self._done(self.path)
        self.handle = None


class _ConcatenatePartsFn(beam.DoFn):
    """Writes every expected file from its parts, in part order.

    Idempotent: a retry rewrites the same files from the same parts (which a later step removes,
    once this one has committed).
    """

    def __init__(self, directory: str, names: list[str], defaults: dict[str, str]) -> None:
        self.directory = directory
        self.names = names
        self.defaults = defaults

    def process(self, keyed_parts: tuple[str, Iterable[tuple[str, str]]]):
        _, parts = keyed_parts
        by_name: dict[str, list[str]] = {name: [] for name in self.names}
        for name, path in parts:
            if name:
                by_name[name].append(path)
        finals = []
        for name, paths in by_name.items():
            final = FileSystems.join(self.directory, name)
            with FileSystems.create(final) as out:
                if not paths and name in self.defaults:
                    out.write(self.defaults[name].encode("utf-8") + b"\n")
                for path in sorted(paths):
                    with FileSystems.open(path) as part:
                        shutil.copyfileobj(part, out, _COPY_CHUNK)
            finals.append(final)
        yield finals


class _RemoveTempDirFn(beam.DoFn):
    """Removes the temporary parts once the final files are committed (parts of failed bundle
    attempts included), then the temporary directory where the filesystem has one."""

    def __init__(self, temp_dir: str) -> None:
        self.temp_dir = temp_dir

    def process(self, finals: list[str]):
        parts = list_directory(self.temp_dir)
        if parts:
            remove_paths(parts)
        if FileSystems.exists(self.temp_dir):
            remove_paths([self.temp_dir])
        yield from finals


def _file_format(block: bytes) -> str:
    """The format of a file from its first lines ("csv" or "clf"), or "" when they cannot tell
    (the parser then tells each line apart)."""
    first = block[:65536].decode("utf-8", errors="replace").splitlines()[:20]
    try:
        return access_log.detect_format(first)
    except ValueError:
        return ""


SPLIT_BYTES = 64 << 20
"""An uncompressed local access log larger than this (64 MiB) is read as ranges of about this
many bytes, which several workers can share (``SplitFileFn``)."""


class FileRange(NamedTuple):
    """Bytes ``[start, end)`` of an access log (``end`` None: to the end of the file), which
    start and end at line boundaries: ``lines_before`` lines come before them, and ``fmt`` is
    the file's format as its first lines tell it."""

    path: str
    start: int
    end: int | None
    lines_before: int
    fmt: str


def _range_pieces(part: FileRange, block: int) -> Iterator[bytes]:
    with open_input(part.path) as handle:
        handle.seek(part.start)
        left = None if part.end is None else part.end - part.start
        while left is None or left > 0:
            piece = handle.read(block if left is None else min(block, left))
            if not piece:
                break
            if left is not None:
                left -= len(piece)
            yield piece


def line_cuts(handle, split_bytes: int, block: int) -> tuple[list[tuple[int, int]], int]:
    """Where ranges of about ``split_bytes`` start in a file read from ``handle``:
    ``[(offset, lines before it)]``, the first ``(0, 0)``, each later one just after a line
    end at least ``split_bytes`` after the one before; and the file's size. One read of the
    file, newlines counted in C."""
    cuts, position, lines, target = [(0, 0)], 0, 0, split_bytes
    for chunk in iter(lambda: handle.read(block), b""):
        start = max(0, target - 1 - position)
        while start < len(chunk):
            newline = chunk.find(b"\n", start)
            if newline < 0:
                break
            cut = position + newline + 1
            cuts.append((cut, lines + chunk.count(b"\n", 0, newline + 1)))
            target = cut + split_bytes
            start = target - 1 - position
        lines += chunk.count(b"\n")
        position += len(chunk)
    return [(cut, before) for cut, before in cuts if cut < position], position


class SplitFileFn(beam.DoFn):
    """A matched access log (its path) -> ``FileRange``s of it, so that several workers read
    one large file; or the path itself, read whole, for a file that is compressed, remote,
    not larger than ``split_bytes``, over ``max_file_bytes`` (its reader says so), without a
    line feed in its first block (CR-only line ends, or one huge line), or that cannot be
    read now (its reader says why)."""

    def __init__(
        self,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        split_bytes: int = SPLIT_BYTES,
        block: int = 1 << 22,
    ) -> None:
        self.max_file_bytes = max_file_bytes
        self.split_bytes = split_bytes
        self.block = block

    def process(self, path: str):
        ranges = self._ranges(path)
        yield from ranges or [path]

    def _ranges(self, path: str) -> list[FileRange] | None:
        if "://" in path or compression_of(path) is not None:
            return None
        try:
            path.encode("utf-8")
            size = os.stat(path).st_size
            if size <= self.split_bytes or size > self.max_file_bytes:
                return None
            with open_input(path) as handle:
                head = handle.read(self.block)
                if cr_only_endings(head) is not False:
                    return None
                fmt = _file_format(head[: head.rfind(b"\n") + 1])
                handle.seek(0)
                # ranges of one size (at line ends), so that they share out evenly over workers
                step = -(-size // -(-size // self.split_bytes))
                cuts, _ = line_cuts(handle, step, self.block)
        except (OSError, UnicodeEncodeError, FileProblem):
            return None
        if len(cuts) < 2:
            return None
        ends = [cut for cut, _ in cuts[1:]] + [None]
        return [
            FileRange(path, start, end, before, fmt)
            for (start, before), end in zip(cuts, ends, strict=True)
        ]


class ReadLinesFn(beam.DoFn):
    """Reads a matched file (its path) with ``sources.read_pieces`` into ``AccessLine``s
    (1-based line numbers, text without the line ending), emitted as a ``LineBlock`` batch per
    block of up to ``BLOCK`` bytes, its bytes as read (Beam's Batched DoFns: element-wise
    consumers still see one ``AccessLine`` at a time).
    An undecodable line, an unreadable file, or a name that is not valid Unicode is a dead
    letter; a file that cannot be read to its end (damaged, too large, failing) keeps the lines
    read before, and one dead letter for the file (``where`` None) says why, its unfinished
    last line as ``raw``."""

    BLOCK = 1 << 22  # content bytes read at a time

    def __init__(self, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> None:
        self.max_file_bytes = max_file_bytes
        self.files = Metrics.counter(METRICS_NAMESPACE, "files_read")
        self.lines = Metrics.counter(METRICS_NAMESPACE, "lines")

    def setup(self) -> None:
        tune_worker_gc()  # a worker process's collector, as the launcher's (gc_settings)

    def infer_output_type(self, input_type):
        return AccessLine

    @beam.DoFn.yields_batches
    def process(self, element) -> Iterator[LineColumns]:
        """``element``: a path (the whole file), or a ``FileRange`` of it (``SplitAccessLogs``)."""
        if isinstance(element, FileRange):
            pieces = _range_pieces(element, self.BLOCK)
            first = element.start == 0
            yield from self._read(element.path, pieces, element.lines_before, element.fmt, first)
            return
        path = element
        dead = _path_ok(path)
        if dead is not None:
            yield pvalue.TaggedOutput(DEAD_LETTERS, [dead])
            return
        yield from self._read(path, read_pieces(path, self.max_file_bytes, self.BLOCK), 0, None)

    def _read(self, path: str, pieces, number: int, fmt: str | None, first: bool = True):
        """The lines and dead letters of ``pieces`` of ``path``'s content, whose first line is
        line ``number + 1``; ``fmt`` None tells the format from the first block. ``first``:
        this read counts as the file's (metrics, progress)."""
        dead_letters: list[DeadLetter] = []
        tail = b""
        before = number
        # whether lines end with CR alone (classic Mac OS), told at the start; a range of a
        # file is of one that ends its lines with LF (SplitFileFn)
        cr_only = None if fmt is None else False
        try:
            for piece in pieces:
                block = tail + piece
                if cr_only is None:
                    cr_only = cr_only_endings(block)
                if cr_only:
                    block = block.replace(b"\r", b"\n")
                cut = block.rfind(b"\n") + 1
                block, tail = block[:cut], block[cut:]
                if len(tail) > MAX_LINE_BYTES:  # no line end in sight: not a line to keep
                    raise FileProblem(
                        f"{LINE_TOO_LONG}: line {number + 1} is over {MAX_LINE_BYTES:,} "
                        "bytes: the rest of the file is not read"
                    )
                lines = block.count(b"\n")
                if block:
                    fmt = _file_format(block) if fmt is None else fmt
                    yield from self._batches(path, block, number, dead_letters, fmt)
                    number += lines
                progress.report(size=len(piece), lines=lines)  # once per 4 MiB block
        except Exception as err:  # the rest of the file is one dead letter, for the file
            reason = err.args[0] if isinstance(err, FileProblem) else unreadable(err)
            dead_letters.append(DeadLetter(path, None, reason, truncate_raw(tail)))
        else:
            if tail:
                fmt = _file_format(tail) if fmt is None else fmt
                yield from self._batches(path, tail + b"\n", number, dead_letters, fmt)
                number += 1
            if first:
                self.files.inc()
        self.lines.inc(number - before)
        if first:
            progress.report(files=1)
        for dead in dead_letters:
            count_dead_letter(dead)
        if dead_letters:
            yield pvalue.TaggedOutput(DEAD_LETTERS, dead_letters)

    def _batches(
        self, path: str, block: bytes, before: int, dead_letters: list[DeadLetter], fmt: str
    ):
        """The lines of a block of whole lines, as one ``LineBlock`` (the block's bytes,
        which the parser's Arrow path reads at once). A line with undecodable bytes is a dead
        letter here, and a line the block skips (a typical bad block holds a few)."""
        skip = () if valid_utf8(block) else self._undecodable(path, block, before, dead_letters)
        yield LineBlock(path, before, block, fmt, block.count(b"\n"), frozenset(skip))

    @staticmethod
    def _undecodable(
        path: str, block: bytes, before: int, dead_letters: list[DeadLetter]
    ) -> list[int]:
        """The indices of a block's undecodable lines, each one a dead letter.

        Only the lines holding a byte over 127 can be undecodable: NumPy finds them, and each
        is decoded on its own (a block of ASCII with a few bad lines costs a pass over its
        bytes, not a Python string per line). A bad line's raw bytes are without its LF (and
        CRs at its end, in a block that holds one)."""
        offsets = access_arrow.line_offsets(block)
        high = np.flatnonzero(np.frombuffer(block, np.uint8) > 127)
        indices = np.unique(np.searchsorted(offsets[1:] - 1, high)).tolist()
        starts = offsets.tolist() if indices else []
        crlf = b"\r" in block
        bad = []
        for index in indices:
            raw = block[starts[index] : starts[index + 1] - 1]
            if crlf:
                raw = raw.rstrip(b"\r")
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as err:  # the error's position within the line itself
                reason = f"undecodable bytes: invalid UTF-8 at byte {err.start}"
                dead_letters.append(DeadLetter(path, before + 1 + index, reason, truncate_raw(raw)))
                bad.append(index)
        return bad


class ReadAccessLogs(beam.PTransform):
    """``PBegin`` -> ``lines`` (``AccessLine``) and ``dead_letters``: the monitor's producer stage.
    Files are matched, an uncompressed local file over ``split_bytes`` (None: none) is cut into
    ranges at line ends (``SplitFileFn``), and the files and ranges are spread over workers and
    read line by line (line numbers and dead letters as the whole file's)."""

    def __init__(
        self,
        pattern: str,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        split_bytes: int | None = SPLIT_BYTES,
    ) -> None:
        super().__init__()
        self.pattern = pattern
        self.max_file_bytes = max_file_bytes
        self.split_bytes = split_bytes

    def expand(self, pbegin):
        read_fn = ReadLinesFn(self.max_file_bytes)
        split_fn = None
        if self.split_bytes is not None:  # None: every file read whole
            split_fn = SplitFileFn(self.max_file_bytes, self.split_bytes)
        return _read_matching(pbegin, self.pattern, read_fn, "lines", split_fn)


class WriteJsonLines(beam.PTransform):
    """``{file name: PCollection}`` -> one file per name under ``directory``, one line per
    element: ``formats[name](element)``, or the element itself (a ``str``) for a name without
    a format. A file whose PCollection is empty is written empty, or with its line in
    ``defaults``.

    Each bundle streams its lines into a temporary part file and a final step concatenates the
    parts, so memory stays flat however large an output grows. (``WriteToText(num_shards=1)`` would
    group every line under one key first, and its expansion is ~17 transforms per file.)
    """

    def __init__(
        self,
        directory: str,
        defaults: dict[str, str] | None = None,
        formats: dict[str, Callable[[object], str]] | None = None,
    ) -> None:
        super().__init__()
        self.directory = directory
        self.defaults = defaults or {}
        self.formats = formats or {}
        self.temp_dir = FileSystems.join(directory, f".beam-tally-tmp-{uuid.uuid4().hex[:12]}")

    def expand(self, named):
        # Parts are written in each producer's own stage; only their paths are flattened (a
        # Flatten of the lines themselves would be materialised by the FnApiRunner).
        parts = []
        for name, elements in named.items():
            label = _label(name)
            global_elements = (
                elements
                if elements.windowing.is_default()
                else elements | f"Global{label}" >> beam.WindowInto(GlobalWindows())
            )  # parts in different windowings could not be flattened, nor fire just once
            write = beam.ParDo(
                WriteBundleFn(self.temp_dir, name, self.formats.get(name))
            ).with_output_types(_KEYED_PART)
            parts.append(global_elements | f"Write{label}" >> write)
        # One marker, so that the files are written (empty) even when every input is empty.
        pipeline = next(iter(named.values())).pipeline
        marker = (self.temp_dir, _NO_PART)
        parts.append(
            pipeline
            | "Start" >> beam.Impulse()
            | "Marker" >> beam.Map(lambda _: marker).with_output_types(_KEYED_PART)
        )
        return (
            parts
            | "AllParts" >> beam.Flatten().with_output_types(_KEYED_PART)
            | "ListParts" >> beam.GroupByKey()  # one key: the temporary directory
            | "Concatenate"
            >> beam.ParDo(_ConcatenatePartsFn(self.directory, list(named), self.defaults))
            | "RemoveParts" >> beam.ParDo(_RemoveTempDirFn(self.temp_dir))
        )


def _label(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace(".", "_").split("_"))


class _PrintFn(beam.DoFn):
    def __init__(self, formatter: Callable[[object], str]) -> None:
        self.formatter = formatter

    def process(self, element):
        sys.stdout.write(self.formatter(element) + "\n")
        sys.stdout.flush()


class WriteToConsole(beam.PTransform):
    """Prints ``formatter(element)`` for each element on stdout (the console sink)."""

    def __init__(self, formatter: Callable[[object], str]) -> None:
        super().__init__()
        self.formatter = formatter

    def expand(self, pcoll):
        return pcoll | "Print" >> beam.ParDo(_PrintFn(self.formatter))
