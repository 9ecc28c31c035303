"""Which input files a pattern names, and their bytes: the one mechanism behind the batch readers
(``io``) and the producer (``produce``). No Beam import here for local files.

- ``match_input``: every name a pattern matches is either a regular file to read or a reason
  why not (a FIFO, socket or device, a folder where a file is wanted, a dangling symbolic link
  or a loop, a permission, a folder that cannot be listed). Beam's own match drops the names it
  cannot stat and lists a FIFO as a file, whose read then blocks forever.
- ``open_input``: opens a regular file without ever blocking (``O_NONBLOCK``, then ``fstat``:
  a file swapped for a FIFO after the match is refused, not waited on).
- ``Inflater``: raw bytes in, decompressed bytes out in bounded pieces (``.gz``, ``.bz2``,
  ``.xz``/``.lzma``, ``.deflate``, ``.zst`` as Beam detects them; any other name is taken as it
  is), counting against a per-file limit; ``finish`` says whether the stream was whole. A
  truncated or corrupt archive is a ``FileProblem``, never a silent end.

Matching follows Beam's pattern syntax for local paths (``*`` and ``?`` stay within a folder,
``**`` crosses folders, ``[...]`` is a class, so ``[[]`` is a literal ``[``), except that
folders are listed only as deep as the pattern reaches.
"""

from __future__ import annotations

import bz2
import errno
import lzma
import os
import re
import stat
import zlib
from collections.abc import Iterator

UNREADABLE = "unreadable file"
DAMAGED = "damaged file"
TOO_LARGE = "file too large"
LINE_TOO_LONG = "line too long"
DEFAULT_MAX_FILE_BYTES = 1 << 30  # 1 GiB decompressed
PIECE = 1 << 22  # decompressed bytes per piece at most: memory stays bounded

_MAGIC = re.compile(r"[*?[]")


class FileProblem(Exception):
    """A file that cannot be read (to its end): ``args[0]`` is the dead letter's reason."""


def unreadable(err: Exception) -> str:
    """The dead-letter reason for a file that could not be read."""
    return f"{UNREADABLE}: {type(err).__name__}: {err}"


# --- Matching ------------------------------------------------------------------------------------
def _char_class(pattern: str, i: int) -> tuple[str, int]:
    """The regular expression of the ``[...]`` class opening before ``pattern[i]``, and where
    the pattern goes on; an unclosed ``[`` is a literal ``[``."""
    j = i + (pattern[i : i + 1] in ("!", "^"))
    j += pattern[j : j + 1] == "]"
    close = pattern.find("]", j)
    if close < 0:
        return r"\[", i
    inside = pattern[i:close].replace("\\", "\\\\").replace("[", "\\[")
    if inside[:1] in ("!", "^"):
        inside = "^" + inside[1:]
    return f"[{inside}]", close + 1


def _translate(pattern: str) -> re.Pattern:
    """Beam's local pattern syntax (``FileSystem.translate_pattern``) as a regular expression."""
    out, i, n = [], 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*" and pattern[i : i + 1] == "*":
            out.append(".*")
            i += 1
        elif c in "*?":
            out.append("[^/]*" if c == "*" else "[^/]")
        elif c == "[":
            regex, i = _char_class(pattern, i)
            out.append(regex)
        else:
            out.append(re.escape(c))
    return re.compile("".join(out) + r"\Z")


_KINDS = (
    (stat.S_ISDIR, "a folder, not a file (match the files in it, e.g. folder/*)"),
    (stat.S_ISFIFO, "a FIFO (named pipe), not a regular file"),
    (stat.S_ISSOCK, "a socket, not a regular file"),
    (stat.S_ISCHR, "a device, not a regular file"),
    (stat.S_ISBLK, "a device, not a regular file"),
)


def file_kind(path: str) -> str | None:
    """None for a regular file (or a link to one); else why it is not one to read."""
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        if err.errno == errno.ELOOP:
            return f"{UNREADABLE}: a loop of symbolic links"
        if err.errno == errno.ENOENT and os.path.islink(path):
            return f"{UNREADABLE}: a dangling symbolic link (its target does not exist)"
        return unreadable(err)
    if stat.S_ISREG(mode):
        return None
    what = next((text for test, text in _KINDS if test(mode)), "not a regular file")
    return f"{UNREADABLE}: {what}"


def match_input(pattern: str) -> tuple[list[str], list[tuple[str, str]]]:
    """``(regular files, [(name, reason)] for every other match)`` of a local ``pattern``, each
    list sorted. A pattern without ``*``, ``?`` or ``[`` names one path (nothing if absent)."""
    if pattern.endswith("/"):
        pattern += "*"
    literal = _MAGIC.search(pattern) is None
    if literal:
        if not os.path.lexists(pattern):
            return [], []
        reason = file_kind(pattern)
        return ([pattern], []) if reason is None else ([], [(pattern, reason)])
    regex = _translate(pattern)
    prefix = pattern[: _MAGIC.search(pattern).start()]
    root = prefix if prefix.endswith("/") else os.path.dirname(prefix) or "/"
    deep = "**" in pattern
    depth = pattern.count("/")
    files: list[str] = []
    problems: list[tuple[str, str]] = []

    def cannot_list(err: OSError) -> None:
        if err.filename is not None and os.path.normpath(err.filename) != os.path.normpath(root):
            problems.append((err.filename, f"{UNREADABLE}: cannot list the folder: {err.strerror}"))

    for folder, dirs, names in os.walk(root, onerror=cannot_list):
        for name in dirs:
            path = os.path.join(folder, name)
            if not deep and regex.match(path):
                problems.append((path, file_kind(path) or f"{UNREADABLE}: not a regular file"))
        if not deep:  # deeper folders cannot hold a match
            dirs[:] = [d for d in dirs if os.path.join(folder, d).count("/") < depth]
        for name in names:
            path = os.path.join(folder, name)
            if regex.match(path):
                reason = file_kind(path)
                if reason is None:
                    files.append(path)
                else:
                    problems.append((path, reason))
    return sorted(files), sorted(problems)


_LONE_CR = re.compile(rb"\r[^\n]")


def cr_only_endings(start: bytes) -> bool | None:
    """Whether a file whose first bytes are ``start`` ends its lines with CR alone (classic
    Mac OS): False once a LF is seen, True once a CR is followed by anything else, None while
    ``start`` cannot tell (a CR at its very end may be half of a CRLF)."""
    if b"\n" in start:
        return False
    return True if _LONE_CR.search(start) else None


# --- Opening -------------------------------------------------------------------------------------
def open_input(path: str):
    """A binary handle on the raw bytes of ``path``; ``FileProblem`` if it is not a regular
    file. Local files are opened without blocking, so a FIFO put in a file's place after it was
    matched is refused, not waited on; other schemes open through Beam's FileSystems."""
    if "://" in path:
        from apache_beam.io.filesystem import CompressionTypes
        from apache_beam.io.filesystems import FileSystems

        return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise FileProblem(file_kind(path) or f"{UNREADABLE}: not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


# --- Decompressing -------------------------------------------------------------------------------
_SUFFIXES = (
    (".bz2", "bzip2"),
    (".deflate", "deflate"),
    (".gz", "gzip"),
    (".zst", "zstd"),
    (".zstd", "zstd"),
    (".xz", "lzma"),
    (".lzma", "lzma"),
)


def compression_of(path: str) -> str | None:
    """The compression of a file by its name, as Beam's ``CompressionTypes.AUTO`` detects it."""
    lowered = path.lower()
    return next((kind for suffix, kind in _SUFFIXES if lowered.endswith(suffix)), None)


def _new_decompressor(kind: str):
    if kind == "gzip":
        return zlib.decompressobj(zlib.MAX_WBITS | 16)
    if kind == "deflate":
        return zlib.decompressobj()
    if kind == "bzip2":
        return bz2.BZ2Decompressor()
    if kind == "lzma":
        return lzma.LZMADecompressor()
    import zstandard  # Beam's own reader of .zst needs it too

    return zstandard.ZstdDecompressor().decompressobj()


_ERRORS = (zlib.error, OSError, EOFError, lzma.LZMAError, ValueError)


class Inflater:
    """Raw bytes of one file in (``feed``, any sizes), its content out in pieces of at most
    ``piece`` bytes; past ``max_bytes`` of content, ``FileProblem(file too large)``.

    Concatenated gzip members and bzip2 streams are read in turn, as ``gzip`` and ``bz2`` do;
    zero padding after the last is ignored, other bytes after it are damage."""

    def __init__(
        self, path: str, max_bytes: int = DEFAULT_MAX_FILE_BYTES, piece: int = PIECE
    ) -> None:
        self.kind = compression_of(path)
        self.piece = piece
        self.max_bytes = max_bytes
        self.total = 0  # content bytes given out so far
        self.decompressor = None if self.kind is None else _new_decompressor(self.kind)
        self.between = False  # after a member's end, before the next one starts

    def _give(self, piece: bytes) -> Iterator[bytes]:
        """``piece``, or the part of it within ``max_bytes`` and then ``FileProblem``."""
        room = self.max_bytes - self.total
        if len(piece) > room:
            if room > 0:
                self.total += room
                yield piece[:room]
            raise FileProblem(
                f"{TOO_LARGE}: over {self.max_bytes:,} bytes"
                + (" decompressed" if self.kind else "")
                + " (--max_file_bytes): the rest is not read"
            )
        self.total += len(piece)
        yield piece

    def feed(self, raw: bytes) -> Iterator[bytes]:
        if self.kind is None:
            for start in range(0, len(raw), self.piece):
                yield from self._give(raw[start : start + self.piece])
            return
        if self.kind == "zstd":
            yield from self._feed_zstd(raw)
            return
        data = raw
        while data:
            if self.between:
                if not data.strip(b"\x00"):
                    return  # zero padding after the last member
                self.decompressor = _new_decompressor(self.kind)
                self.between = False
            try:
                data = yield from self._inflate(data)
            except _ERRORS as err:
                raise FileProblem(f"{DAMAGED}: corrupt {self.kind} data ({err})") from None

    def _inflate(self, data: bytes):
        """Decompresses ``data`` up to the end of a member; returns the bytes after that end."""
        d = self.decompressor
        if isinstance(d, (bz2.BZ2Decompressor, lzma.LZMADecompressor)):
            piece = d.decompress(data, self.piece)
            while True:
                if piece:
                    yield from self._give(piece)
                if d.eof:
                    self.between = True
                    return d.unused_data
                if d.needs_input:
                    return b""
                piece = d.decompress(b"", self.piece)
        piece = d.decompress(data, self.piece)
        while True:
            if piece:
                yield from self._give(piece)
            if d.eof:
                self.between = True
                return d.unused_data
            if not d.unconsumed_tail:
                return b""
            piece = d.decompress(d.unconsumed_tail, self.piece)

    def _feed_zstd(self, raw: bytes) -> Iterator[bytes]:
        # zstandard's decompressobj has no output bound: feed it small slices (a zstd frame
        # expands at most ~32,000 times, so 64 KiB in stays within a few pieces' worth out).
        # Each frame has a decompressor of its own (concatenated frames are read in turn).
        for start in range(0, len(raw), 1 << 16):
            data = raw[start : start + (1 << 16)]
            while data:
                if self.between:
                    self.decompressor = _new_decompressor("zstd")
                    self.between = False
                try:
                    out = self.decompressor.decompress(data)
                except Exception as err:  # zstandard.ZstdError
                    raise FileProblem(f"{DAMAGED}: corrupt zstd data ({err})") from None
                for offset in range(0, len(out), self.piece):
                    yield from self._give(out[offset : offset + self.piece])
                data = b""
                if self.decompressor.eof:
                    self.between = True
                    data = self.decompressor.unused_data

    def finish(self) -> None:
        """``FileProblem`` if the compressed stream stopped before its end (a truncated file)."""
        if self.kind is None or self.between:
            return
        d = self.decompressor
        if self.kind == "zstd" or isinstance(d, (bz2.BZ2Decompressor, lzma.LZMADecompressor)):
            whole = d.eof
        else:
            whole = d.eof and not d.unconsumed_tail
        if not whole:
            raise FileProblem(
                f"{DAMAGED}: the {self.kind} stream ends before its end (a truncated file): "
                f"{self.total:,} bytes of content read"
            )


def read_pieces(
    path: str, max_bytes: int = DEFAULT_MAX_FILE_BYTES, piece: int = PIECE
) -> Iterator[bytes]:
    """The content of ``path`` in pieces (decompressed, bounded); ``FileProblem`` for a file
    that is not regular, damaged or too large (after the pieces read before the damage)."""
    inflater = Inflater(path, max_bytes, piece)
    raw_size = piece if inflater.kind is None else min(piece, 1 << 16)  # bounded expansion
    with open_input(path) as handle:
        if inflater.kind is None and "://" not in path:
            # A read allocates what it asks for before it reads: asked for the file's size and
            # a byte more (to see a file that grew), not ``piece``, a whole file is one read.
            raw_size = max(1, min(raw_size, os.fstat(handle.fileno()).st_size + 1))
        while True:
            raw = handle.read(raw_size)
            if not raw:
                break
            yield from inflater.feed(raw)
            if len(raw) < raw_size:
                # Most likely the end: seen with a small read, for a big one would allocate
                # its size again while the content is still held (page faults on fresh memory:
                # most of the cost of reading a cached file here).
                raw_size = min(raw_size, 1 << 16)
    inflater.finish()
