"""Batch types for Beam's Batched DoFns: ``LineList`` of ``AccessLine``, ``RecordList`` of
``AccessRecord``, and ``RecordColumns``: ``AccessRecord``s as one list per field, which the
parser fills and the per-window and per-second aggregators count with C loops (``Counter`` over
slices of columns) instead of a Python call per record; and ``LineColumns``, the file reader's
lines as columns.

Beam's own ``List[T]`` converter estimates a batch's size by encoding sampled elements with the
main output's coder, and applies it to batches on every tag: a list of dead letters on a side
tag is then encoded as if it held records, and fails. These converters estimate without
encoding, so a batch-producing DoFn can also send lists of dead letters on their own tag.
"""

from collections.abc import Iterable, Iterator, Sequence
from itertools import chain, starmap
from typing import Any

from apache_beam.typehints import typehints
from apache_beam.typehints.batch import BatchConverter

from transforms.records import AccessLine, AccessRecord


class LineList(list):
    """A batch of ``AccessLine``."""


class RecordList(list):
    """A batch of ``AccessRecord``."""


class _Columns:
    """A batch as columns: ``columns[i]`` holds field ``i`` of ``ELEMENT`` for every element,
    all of one length. Fields are read by name (``batch.timestamp``); the lists are the
    batch's own, not to be modified by a consumer."""

    __slots__ = ("_columns",)
    ELEMENT: type = tuple

    def __init__(self, columns: Sequence[list]) -> None:
        if len(columns) != len(self.ELEMENT._fields):
            raise ValueError(f"{len(self.ELEMENT._fields)} columns expected, not {len(columns)}")
        self._columns = tuple(columns)

    @property
    def columns(self) -> tuple[list, ...]:
        if self._columns is None:  # a batch kept in another form (LineBlock, RecordTable)
            self._columns = tuple(self._materialize())
        return self._columns

    def _materialize(self) -> Sequence[list]:  # pragma: no cover - only lazy batches have none
        raise NotImplementedError

    @classmethod
    def of(cls, elements: Iterable):
        elements = list(elements)
        if not elements:
            return cls([[] for _ in cls.ELEMENT._fields])
        return cls([list(column) for column in zip(*elements, strict=True)])

    def __len__(self) -> int:
        return len(self.columns[0])

    def __iter__(self) -> Iterator:
        return starmap(self.ELEMENT, zip(*self.columns, strict=True))

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and self.columns == other.columns

    __hash__ = None  # mutable columns

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} elements)"

    def __reduce__(self):
        return type(self), (self.columns,)

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        for index, name in enumerate(cls.ELEMENT._fields):
            setattr(cls, name, property(_column(index)))


def _column(index: int) -> property:
    return lambda batch: batch.columns[index]


class RecordColumns(_Columns):
    """A batch of ``AccessRecord`` as columns (``AccessRecord._fields``)."""

    __slots__ = ()
    ELEMENT = AccessRecord


class RecordTable(RecordColumns):
    """``RecordColumns`` kept as an Arrow table (``access_arrow.COLUMNS``, ``line`` the line
    number) of records all from the file ``file``: what the parser's Arrow path makes, and the
    aggregators count with Arrow's kernels. Any other use (``columns``, a field, iterating)
    builds the Python columns, once."""

    __slots__ = ("file", "table")

    def __init__(self, table, file: str) -> None:
        self._columns = None
        self.table = table
        self.file = file

    def __len__(self) -> int:
        return self.table.num_rows

    def _materialize(self) -> list[list]:
        table = self.table
        requests = [request.split(" ") for request in table["request"].to_pylist()]
        method = [parts[0] for parts in requests]
        target = [parts[1] for parts in requests]
        protocol = [parts[2] if len(parts) > 2 else "" for parts in requests]
        host, ident, user, timestamp, section, status, size, line = (
            table[name].to_pylist()
            for name in ("host", "ident", "user", "timestamp", "section", "status", "bytes", "line")
        )
        return [host, ident, user, timestamp, method, target, section, protocol, status, size,
                [self.file] * len(line), line]  # fmt: skip

    def __reduce__(self):
        return RecordTable, (self.table, self.file)


class LineColumns(_Columns):
    """A batch of ``AccessLine`` as columns (``source``, ``line``, ``text``, ``fmt``): what
    the file reader emits, so that no tuple is built per line before the parser."""

    __slots__ = ()
    ELEMENT = AccessLine

    @classmethod
    def numbered(cls, source: str, numbers: Sequence[int], texts: list[str], fmt: str):
        """The lines ``texts`` of ``source``, numbered ``numbers``, all of format ``fmt``."""
        n = len(texts)
        return cls([[source] * n, list(numbers), texts, [fmt] * n])


class LineBlock(LineColumns):
    """``LineColumns`` kept as a block of whole lines of one file, its bytes as read: each line
    ending in LF (CRLF too), numbered from ``before + 1``, all of format ``fmt``, but the lines
    of indices ``skip`` (undecodable: the reader made them dead letters); every other line is
    UTF-8. The parser's Arrow path reads the bytes; any other use splits them into the Python
    columns (once), as the reader did before."""

    __slots__ = ("before", "count", "data", "format", "path", "skip")

    def __init__(
        self, path: str, before: int, data: bytes, fmt: str, lines: int, skip=frozenset()
    ) -> None:
        self._columns = None
        self.path = path
        self.before = before
        self.data = data
        self.format = fmt
        self.count = lines - len(skip)
        self.skip = skip

    def __len__(self) -> int:
        return self.count

    def _materialize(self) -> tuple[list, ...]:
        first = self.before + 1
        if not self.skip:
            text = self.data.decode("utf-8")
            if "\r" in text:  # CRLF line endings
                text = text.replace("\r\n", "\n")
            texts = text.split("\n")[:-1]
            numbers = range(first, first + len(texts))
        else:
            text = self.data.decode("utf-8", "surrogateescape")
            lines = text.split("\n")[:-1]
            if "\r" in text:
                lines = [line.rstrip("\r") for line in lines]
            kept = [i for i in range(len(lines)) if i not in self.skip]
            texts = [lines[i] for i in kept]
            numbers = [first + i for i in kept]
        return LineColumns.numbered(self.path, numbers, texts, self.format).columns

    def __reduce__(self):
        lines = self.count + len(self.skip)
        return LineBlock, (self.path, self.before, self.data, self.format, lines, self.skip)


_ELEMENTS = {
    LineList: AccessLine,
    RecordList: AccessRecord,
    RecordColumns: AccessRecord,
    LineColumns: AccessLine,
}  # LineBlock and RecordTable are LineColumns and RecordColumns to Beam (one batch type each)


class ListBatchConverter(BatchConverter):
    def __init__(self, batch_type: type) -> None:
        super().__init__(batch_type, _ELEMENTS[batch_type])

    def produce_batch(self, elements):
        if issubclass(self.batch_type, _Columns):
            return self.batch_type.of(elements)
        return self.batch_type(elements)

    def explode_batch(self, batch):
        # Type-agnostic on purpose: Beam also explodes the lists of dead letters that a
        # batch-producing DoFn sends on its side tag with this converter.
        return iter(batch)

    def combine_batches(self, batches):
        if issubclass(self.batch_type, _Columns):
            return self.batch_type.of(chain.from_iterable(batches))
        return self.batch_type(chain.from_iterable(batches))

    def get_length(self, batch):
        return len(batch)

    def estimate_byte_size(self, batch):
        return 100 * len(batch)


@BatchConverter.register(name="beam_tally_lists")
def _make_converter(element_type, batch_type) -> ListBatchConverter:
    if batch_type not in _ELEMENTS:
        raise TypeError("batch type must be LineList, RecordList, RecordColumns or LineColumns")
    if element_type not in (_ELEMENTS[batch_type], typehints.Any, Any):
        raise TypeError(f"element type must be {_ELEMENTS[batch_type].__name__}")
    return ListBatchConverter(batch_type)
