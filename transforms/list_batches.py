"""List batch types for Beam's Batched DoFns: ``LineList`` of ``AccessLine`` and ``RecordList``
of ``AccessRecord``.

Beam's own ``List[T]`` converter estimates a batch's size by encoding sampled elements with the
main output's coder, and applies it to batches on every tag: a list of dead letters on a side
tag is then encoded as if it held records, and fails. These converters estimate without
encoding, so a batch-producing DoFn can also send lists of dead letters on their own tag.
"""

from itertools import chain
from typing import Any

from apache_beam.typehints import typehints
from apache_beam.typehints.batch import BatchConverter

from transforms.records import AccessLine, AccessRecord


class LineList(list):
    """A batch of ``AccessLine``."""


class RecordList(list):
    """A batch of ``AccessRecord``."""


_ELEMENTS = {LineList: AccessLine, RecordList: AccessRecord}


class ListBatchConverter(BatchConverter):
    def __init__(self, batch_type: type) -> None:
        super().__init__(batch_type, _ELEMENTS[batch_type])

    def produce_batch(self, elements):
        return self.batch_type(elements)

    def explode_batch(self, batch):
        # Type-agnostic on purpose: Beam also explodes the lists of dead letters that a
        # batch-producing DoFn sends on its side tag with this converter.
        return iter(batch)

    def combine_batches(self, batches):
        return self.batch_type(chain.from_iterable(batches))

    def get_length(self, batch):
        return len(batch)

    def estimate_byte_size(self, batch):
        return 100 * len(batch)


@BatchConverter.register(name="beam_tally_lists")
def _make_converter(element_type, batch_type) -> ListBatchConverter:
    if batch_type not in _ELEMENTS:
        raise TypeError("batch type must be LineList or RecordList")
    if element_type not in (_ELEMENTS[batch_type], typehints.Any, Any):
        raise TypeError(f"element type must be {_ELEMENTS[batch_type].__name__}")
    return ListBatchConverter(batch_type)
