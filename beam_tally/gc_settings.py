"""The cyclic garbage collector's settings for the processes that run pipeline stages.

CPython's collector runs a collection after enough new container objects, and a full one
scans every tracked object: Beam's own heap (modules, protos, the pipeline graph) is large,
and a job allocates millions of short-lived records, so collections took a third of a monitor
run. ``tune_gc`` moves what exists into the permanent generation (``gc.freeze``) and collects
young objects less often; ``tune_worker_gc`` does the same in a worker process Beam started.
Nothing here changes results.
"""

import contextlib
import gc
import os

YOUNG = 50_000  # new container objects between young collections, in a batch run
# A live run's: one stream event's chunks, and the lines and records parsed from them, are
# alive together (tens of thousands of each), so a young collection every 50,000 traversed
# them while they were still in use (34 ms each, a tenth of the run's CPU time on 152k lines);
# at 250,000 most young objects are gone by the time one runs.
LIVE_YOUNG = 250_000


def tune_gc(young: int = YOUNG) -> tuple[int, int, int]:
    """Applies the settings, a young collection every ``young`` new container objects;
    returns the previous thresholds for ``restore_gc``."""
    previous = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(young, previous[1], previous[2])
    return previous


def restore_gc(previous: tuple[int, int, int]) -> None:
    gc.unfreeze()
    gc.set_threshold(*previous)


_worker = {"tuned": False}


def tune_worker_gc() -> None:
    """The batch settings in a worker process that Beam started for a launcher (the
    FnApiRunner's multi-processing workers, an engine's SDK harness process), where the
    launcher's ``tune_gc`` does not reach: called from the ``setup`` of the DoFns that start a
    job's heavy stages, it acts once per process, and only in such a worker (Beam gives it
    ``CONTROL_API_SERVICE_DESCRIPTOR``; a launcher, or a test, running a stage in its own
    process keeps its settings). Untuned, a worker's collections made the monitor's parsing
    3.7 times as long with two workers as with one."""
    if _worker["tuned"] or "CONTROL_API_SERVICE_DESCRIPTOR" not in os.environ:
        return
    _worker["tuned"] = True
    tune_gc()


@contextlib.contextmanager
def paused():
    """No collection inside: for reading a run's outputs back (JSON into dicts, lists and
    tuples, which hold no cycles), where young collections kept traversing the rows read so
    far (0.68 s against 0.25 s to turn a 3.3M-line run's 28,512 stats rows into objects)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
