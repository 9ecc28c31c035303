"""Sources and sinks: the only code that touches files and the terminal.

``ReadLogFiles`` is the tally job's producer stage (match and read each file). ``WriteJsonLines``
writes one JSON line per element to a file under the output directory. ``WriteToConsole``
prints formatted elements on stdout.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from beam_tally.records import DeadLetter, SourceFile
from transforms.tally import DEAD_LETTERS, METRICS_NAMESPACE, count_dead_letter

UNREADABLE = "unreadable file"


def matching_files(pattern: str) -> list[str]:
    """Paths that ``pattern`` matches now (used by the CLI to reject an empty match early)."""
    results = FileSystems.match([pattern])
    return sorted(meta.path for result in results for meta in result.metadata_list)


class ReadFileFn(beam.DoFn):
    """Reads a whole file through Beam's FileSystems (so any registered scheme works and
    ``.gz``/``.bz2`` are decompressed); an unreadable file becomes a dead letter."""

    def __init__(self) -> None:
        self.files = Metrics.counter(METRICS_NAMESPACE, "files_read")

    def process(self, path: str):
        try:
            with FileSystems.open(path, compression_type=CompressionTypes.AUTO) as handle:
                content = handle.read()
        except Exception as err:
            dead = DeadLetter(path, None, f"{UNREADABLE}: {type(err).__name__}: {err}", "")
            count_dead_letter(dead)
            yield pvalue.TaggedOutput(DEAD_LETTERS, dead)
            return
        self.files.inc()
        yield SourceFile(path, content)


class ReadLogFiles(beam.PTransform):
    """``PBegin`` -> ``files`` (``SourceFile``, one per readable file) and ``dead_letters``.

    Paths are reshuffled before reading so that on a cluster the files spread over workers, and
    so that file contents are read inside the stage that parses and counts them (only small
    per-file tallies cross the shuffle that follows).
    """

    def __init__(self, pattern: str) -> None:
        super().__init__()
        self.pattern = pattern

    def expand(self, pbegin):
        return (
            pbegin
            | "Match" >> fileio.MatchFiles(self.pattern)
            | "Paths" >> beam.Map(lambda meta: meta.path)
            | "Spread" >> beam.Reshuffle()
            | "Read" >> beam.ParDo(ReadFileFn()).with_outputs(DEAD_LETTERS, main="files")
        )


class WriteJsonLines(beam.PTransform):
    """Writes each element as one line, ``to_json(element)``, to ``directory/name``."""

    def __init__(self, directory: str, name: str, to_json: Callable[[object], str]) -> None:
        super().__init__()
        self.path = os.path.join(directory, name)
        self.to_json = to_json

    def expand(self, pcoll):
        return (
            pcoll
            | "ToJson" >> beam.Map(self.to_json)
            | "Write" >> beam.io.WriteToText(self.path, shard_name_template="", num_shards=1)
        )


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
