"""Running a job's pipeline from the CLI, and the process-level settings it needs.

CPython's cyclic garbage collector runs a full collection after enough allocations, and each
one scans every tracked object: Beam's own heap (modules, protos, the pipeline graph) is large,
and a batch job allocates millions of short-lived records, so collections take a third of a
monitor run. ``tune_gc`` moves what exists when the run starts into the permanent generation
(``gc.freeze``) and collects young objects less often. Nothing here changes results.
"""

import gc
import time
from collections.abc import Callable

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems


def tune_gc() -> tuple[int, int, int]:
    """Applies the settings; returns the previous thresholds for ``restore_gc``."""
    previous = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, previous[1], previous[2])
    return previous


def restore_gc(previous: tuple[int, int, int]) -> None:
    gc.unfreeze()
    gc.set_threshold(*previous)


def run_pipeline(options, output: str, build: Callable) -> tuple[object, float]:
    """Creates ``output``, builds the graph with ``build(p, options)``, tunes the GC and runs it
    to the end; returns the ``PipelineResult`` and the wall time in seconds."""
    if not FileSystems.exists(output):
        FileSystems.mkdirs(output)  # through Beam, so gs://, s3:// and local paths all work
    started = time.perf_counter()
    p = beam.Pipeline(options=options)
    build(p, options)
    previous = tune_gc()
    try:
        result = p.run()
        result.wait_until_finish()
    finally:
        restore_gc(previous)
    return result, time.perf_counter() - started
