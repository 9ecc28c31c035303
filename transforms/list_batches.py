"""Batch types for Beam's Batched DoFns: ``LineList`` of ``AccessLine``, ``RecordList`` of
``AccessRecord``, and ``RecordColumns``: ``AccessRecord``s as one list per field, which the
parser fills and the per-window and per-second aggregators count with C loops (``Counter`` over
``zip`` of columns) instead of a Python call per record.

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


class RecordColumns:
    """A batch of ``AccessRecord`` as columns: ``columns[i]`` holds field ``i``
    (``AccessRecord._fields``) of every record, all of one length. Fields are read by name
    (``batch.timestamp``); the lists are the batch's own, not to be modified by a consumer."""

    __slots__ = ("columns",)
    FIELDS = AccessRecord._fields

    def __init__(self, columns: Sequence[list]) -> None:
        if len(columns) != len(self.FIELDS):
            raise ValueError(f"{len(self.FIELDS)} columns expected, not {len(columns)}")
        self.columns = tuple(columns)

    @classmethod
    def of(cls, records: Iterable[AccessRecord]) -> "RecordColumns":
        records = list(records)
        if not records:
            return cls([[] for _ in cls.FIELDS])
        return cls([list(column) for column in zip(*records, strict=True)])

    def __len__(self) -> int:
        return len(self.columns[0])

    def __iter__(self) -> Iterator[AccessRecord]:
        return starmap(AccessRecord, zip(*self.columns, strict=True))

    def __eq__(self, other) -> bool:
        return isinstance(other, RecordColumns) and self.columns == other.columns

    __hash__ = None  # mutable columns

    def __repr__(self) -> str:
        return f"RecordColumns({len(self)} records)"

    def __reduce__(self):
        return RecordColumns, (self.columns,)


def _field(index: int, name: str) -> property:
    return property(lambda batch: batch.columns[index], doc=f"The ``{name}`` column.")


for _index, _name in enumerate(AccessRecord._fields):
    setattr(RecordColumns, _name, _field(_index, _name))


_ELEMENTS = {LineList: AccessLine, RecordList: AccessRecord, RecordColumns: AccessRecord}


class ListBatchConverter(BatchConverter):
    def __init__(self, batch_type: type) -> None:
        super().__init__(batch_type, _ELEMENTS[batch_type])

    def produce_batch(self, elements):
        if self.batch_type is RecordColumns:
            return RecordColumns.of(elements)
        return self.batch_type(elements)

    def explode_batch(self, batch):
        # Type-agnostic on purpose: Beam also explodes the lists of dead letters that a
        # batch-producing DoFn sends on its side tag with this converter.
        return iter(batch)

    def combine_batches(self, batches):
        if self.batch_type is RecordColumns:
            return RecordColumns.of(chain.from_iterable(batches))
        return self.batch_type(chain.from_iterable(batches))

    def get_length(self, batch):
        return len(batch)

    def estimate_byte_size(self, batch):
        return 100 * len(batch)


@BatchConverter.register(name="beam_tally_lists")
def _make_converter(element_type, batch_type) -> ListBatchConverter:
    if batch_type not in _ELEMENTS:
        raise TypeError("batch type must be LineList, RecordList or RecordColumns")
    if element_type not in (_ELEMENTS[batch_type], typehints.Any, Any):
        raise TypeError(f"element type must be {_ELEMENTS[batch_type].__name__}")
    return ListBatchConverter(batch_type)
