"""Running a job's pipeline from the CLI, and the process-level settings it needs: the
collector's (``beam_tally.gc_settings``: building the graph alone triggers several full
collections over Beam's heap), the allocator's, and Beam's own where it costs time."""

import contextlib
import logging
import os
import signal
import sys
import threading
import time
import types
import weakref
from collections.abc import Callable, Sequence
from typing import NamedTuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.runners.runner import PipelineRunner

from beam_tally.errors import UsageError
from beam_tally.gc_settings import LIVE_YOUNG, restore_gc, tune_gc
from beam_tally.io.stream import (
    FULL,
    LiveFiles,
    end_marker,
    is_live_part,
    lines_read,
    stream_refused,
    wait_for_source,
)

# glibc's allocator: blocks up to 32 MiB (its largest setting) come from the heap, and up to
# 64 MiB free at the heap's top are kept. By default a freed block over a few MiB goes back to
# the system and the next one (each file read whole, each parsed batch) faults in fresh, zeroed
# pages: with these, a tally over 16 MiB files here made half the page faults and took a tenth
# less CPU, for 9 MiB more peak RSS.
MALLOC_SETTINGS = {"MALLOC_MMAP_THRESHOLD_": 32 << 20, "MALLOC_TRIM_THRESHOLD_": 64 << 20}
_MALLOPT = {"MALLOC_TRIM_THRESHOLD_": -1, "MALLOC_MMAP_THRESHOLD_": -3}  # glibc's M_* numbers


def tune_malloc() -> None:
    """Applies ``MALLOC_SETTINGS`` to this process (``mallopt``, on glibc only) and, through
    the environment, to the worker processes a run starts; a setting already in the
    environment is the user's and is kept."""
    import ctypes

    ours = [name for name in MALLOC_SETTINGS if name not in os.environ]
    for name in ours:
        os.environ[name] = str(MALLOC_SETTINGS[name])
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already has loaded
    except (OSError, AttributeError):  # not glibc: nothing to tune
        return
    for name in ours:  # a user's own setting was applied by glibc as this process started
        mallopt(_MALLOPT[name], MALLOC_SETTINGS[name])


@contextlib.contextmanager
def cached_dofn_introspection():
    """While the block runs, Beam's introspection of DoFns is computed once per function and
    DoFn class instead of at every bundle. Nothing here changes results.

    The streaming DirectRunner, at every bundle of every ParDo step, asks whether the DoFn is
    stateful (three times: ``userstate.get_dofn_specs``, which inspects the signature of every
    method the DoFn has, its base class's too) and builds a ``DoFnSignature`` of its methods
    (``core.get_function_args_defaults``, ``inspect.signature`` each). The answers depend only
    on the functions (a bound method's on its function), and the specs only on the class,
    unless an instance carries methods of its own or the class inspects a function it wraps
    (``_inspect_process``, as ``beam.Map``'s DoFn does): those are inspected as before.
    """
    from apache_beam.runners.direct import transform_evaluator
    from apache_beam.transforms import core, userstate

    args_defaults, dofn_specs = core.get_function_args_defaults, userstate.get_dofn_specs
    arguments: dict[object, tuple[list, list]] = {}
    specs: dict[type, tuple[set, set]] = {}

    def cached_args_defaults(f):
        if isinstance(f, types.MethodType):
            key = ("bound", f.__func__)  # without its first parameter
        elif isinstance(f, types.FunctionType):
            key = f
        else:  # a class, a partial, a builtin: as Beam does
            return args_defaults(f)
        found = arguments.get(key)
        if found is None:
            found = arguments[key] = args_defaults(f)
        return list(found[0]), list(found[1])  # callers own the lists they get

    inspecting: dict[type, bool] = {}  # whether a class inspects a function it wraps

    def cached_dofn_specs(dofn):
        cls = type(dofn)
        own = getattr(dofn, "__dict__", None)
        wraps = inspecting.get(cls)
        if wraps is None:
            wraps = inspecting[cls] = any(name.startswith("_inspect_") for name in dir(cls))
        if wraps or own is None or any(isinstance(v, types.MethodType) for v in own.values()):
            return dofn_specs(dofn)
        found = specs.get(cls)
        if found is None:
            found = specs[cls] = dofn_specs(dofn)
        return set(found[0]), set(found[1])

    patched = [
        (core, "get_function_args_defaults", cached_args_defaults),
        (userstate, "get_dofn_specs", cached_dofn_specs),
        (transform_evaluator, "get_dofn_specs", cached_dofn_specs),
    ]
    previous = [(module, name, getattr(module, name)) for module, name, _ in patched]
    for module, name, value in patched:
        setattr(module, name, value)
    try:
        yield
    finally:
        for module, name, value in previous:
            setattr(module, name, value)


@contextlib.contextmanager
def cached_state_tags():
    """While the block runs, the trigger machinery's combining state tag without extraction
    is made once per tag instead of at every state read and write. Nothing here changes
    results.

    The streaming DirectRunner keeps a windowed combine's accumulators through
    ``MergeableStateAdapter``, which, at every ``add_state`` and ``get_state``, calls
    ``_CombiningValueStateTag.without_extraction``: it defines a new ``CombineFn`` class each
    time (a twentieth of a live monitor's run, in a profile). The class only forwards the
    tag's own combine function's methods, which never change, so one per tag serves."""
    from apache_beam.transforms import trigger

    tag_class = trigger._CombiningValueStateTag
    original = tag_class.without_extraction
    made: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def without_extraction(tag):
        found = made.get(tag)
        if found is None:
            found = made[tag] = original(tag)
        return found

    tag_class.without_extraction = without_extraction
    try:
        yield
    finally:
        tag_class.without_extraction = original


def prepare_output(output: str, names: Sequence[str]) -> None:
    """Creates ``output``, or removes what an earlier run (batch or live) wrote there under
    the job's output ``names`` (``stats.jsonl``, ``stats-<time>-<id>.jsonl``...), so that a
    reader who globs ``NAME*.jsonl`` sees this run only. Other files are left alone."""
    if not FileSystems.exists(output):
        FileSystems.mkdirs(output)  # through Beam, so gs://, s3:// and local paths all work
        return
    if "://" in output:  # gs://, s3://: the directory's files through Beam
        listing = FileSystems.match([FileSystems.join(output, "*")])[0].metadata_list
        paths = [meta.path for meta in listing]
    else:  # local: listed, not globbed, so a '[' in the path is only a character
        paths = [os.path.join(output, name) for name in os.listdir(output)]
    for path in paths:
        file_name = os.path.basename(path)
        if any(file_name == name or is_live_part(file_name, name) for name in names):
            _remove(path)


def _remove(path: str) -> None:
    if "://" in path:
        FileSystems.delete([path])
    else:
        os.remove(path)  # not Beam's local delete, which would take the path for a glob


# A batch run on the DirectRunner uses several worker processes when the input has enough
# bytes beyond its largest file to keep a second worker busy: a file is read by one worker,
# and starting the workers costs seconds. Measured here: 2 workers took 10M logs (1.6 GB in
# 100 files) from 9.5 s to 7 s, and 2M logs (321 MB) from 3.6 s to 5.7 s.
SPREAD_BYTES = 1 << 30


def choose_workers(
    sizes: Sequence[int],
    cpus: int,
    split_bytes: int | None = None,
    spread_bytes: int | None = None,
    splittable: Sequence[bool] | None = None,
) -> int:
    """Worker processes for input files of these ``sizes`` (bytes) on ``cpus`` cores: one,
    unless the bytes outside the largest piece of work reach ``spread_bytes``
    (``SPREAD_BYTES`` if None); then one per core, at most one per piece. A piece is a file,
    or, for a job that reads a file over ``split_bytes`` in ranges, one of its ranges (only the
    files ``splittable`` marks, all if None: a compressed or remote one is read whole)."""
    spread = SPREAD_BYTES if spread_bytes is None else spread_bytes
    pieces = []
    for size, split in zip(sizes, splittable or [True] * len(sizes), strict=True):
        count = -(-size // split_bytes) if split and split_bytes and size > split_bytes else 1
        pieces.extend([size / count] * count)
    if cpus < 2 or len(pieces) < 2 or sum(pieces) - max(pieces) < spread:
        return 1
    return min(cpus, len(pieces))


def several_workers(options) -> bool:
    """Whether a batch run may have more than one worker process: not the DirectRunner (an
    engine's parallelism), or the DirectRunner with ``--direct_num_workers`` other than 1
    (0 is every core)."""
    from apache_beam.options.pipeline_options import DirectOptions

    if not _direct_batch(options):
        return True
    return options.view_as(DirectOptions).direct_num_workers != 1


def default_workers(
    options, argv: Sequence[str], split_bytes: int | None = None, spread_bytes: int | None = None
) -> str | None:
    """Sets the DirectRunner's worker count for a batch run over ``--input`` when the command
    line gave none (``--direct_num_workers`` always wins; ``choose_workers`` decides from the
    files' sizes, the job's ``split_bytes`` and ``spread_bytes``); returns a line saying so, or
    None when the run keeps one worker."""
    from apache_beam.options.pipeline_options import DirectOptions, WorkerOptions

    from beam_tally.io.files import matching_files
    from beam_tally.options import IOOptions

    pattern = options.view_as(IOOptions).input
    if not pattern or not _direct_batch(options):
        return None
    if any(arg.startswith("--direct_num_workers") for arg in argv):
        return None
    from beam_tally.io.sources import compression_of

    sizes, splittable = [], []
    for path in matching_files(pattern):
        with contextlib.suppress(OSError):  # a file that went away is the reader's to report
            sizes.append(os.stat(path).st_size)
            # what SplitFileFn never cuts into ranges is one piece of work
            splittable.append("://" not in path and compression_of(path) is None)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    workers = choose_workers(sizes, cpus or 1, split_bytes, spread_bytes, splittable)
    if workers == 1:
        return None
    direct = options.view_as(DirectOptions)
    direct.direct_num_workers = workers
    direct.direct_running_mode = "multi_processing"
    if not any(arg.startswith("--default_sdk_harness_log_level") for arg in argv):
        # each worker process would log its every step on stderr at INFO
        options.view_as(WorkerOptions).default_sdk_harness_log_level = "WARNING"
    return (
        f"using {workers} worker processes for {sum(sizes) / 2**20:,.0f} MiB in "
        f"{len(sizes):,} files (--direct_num_workers=1 runs one)"
    )


def prepare_runner(
    options, argv: Sequence[str], split_bytes: int | None = None, spread_bytes: int | None = None
) -> None:
    """What a job's run sets up once its options are checked: the engine ``--runner`` names
    (``engines.configure_runner``) and, for a batch run on the DirectRunner, its worker count
    (``default_workers``, said on stderr when it is more than one)."""
    from beam_tally.engines import configure_runner

    configure_runner(options, list(argv))
    workers = default_workers(options, argv, split_bytes, spread_bytes)
    if workers:
        print(f"beam-tally: {workers}", file=sys.stderr)


def _direct_batch(options) -> bool:
    """A batch run that ``--runner`` gives to the DirectRunner, by name (dotted or not)."""
    standard = options.view_as(StandardOptions)
    name = standard.runner if isinstance(standard.runner, str) else ""
    return not standard.streaming and name.rsplit(".", 1)[-1].lower() in ("direct", "directrunner")


def batch_runner(options) -> PipelineRunner | None:
    """The runner of a batch run: for ``--runner=DirectRunner`` its batch engine, the
    FnApiRunner, directly; None (the runner ``--runner`` names) otherwise.

    Beam 2.77's DirectRunner first tries the PrismRunner, which downloads its binary from
    GitHub, and falls back to the FnApiRunner when that fails: a network call and a second
    translation of the graph on every run. Our batch graphs hold nothing the FnApiRunner lacks
    (no TestStream, no real-time timers), so this is the engine the DirectRunner would pick,
    set up as it does, without the detour. Streaming keeps the DirectRunner's own choice.
    """
    if not _direct_batch(options):
        return None
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    info = beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)
    _close_workers_together()
    return fn_runner.FnApiRunner(provision_info=fn_runner.ExtendedProvisionInfo(info))


def _close_workers_together() -> None:
    """At the end of a run the FnApiRunner closes its worker processes one after the other,
    each close waiting for that process to exit (about 0.3 s each here, a Python process
    with Beam loaded). Here they are all told to close at once, and then waited for."""
    from apache_beam.runners.portability.fn_api_runner import worker_handlers

    manager = worker_handlers.WorkerHandlerManager
    if getattr(manager.close_all, "together", False):
        return
    close_one_by_one = manager.close_all

    def close_all(self) -> None:
        handlers = {handler for group in self._cached_handlers.values() for handler in group}
        if len(handlers) > 1:
            closers = [threading.Thread(target=_close_worker, args=(h,)) for h in handlers]
            for closer in closers:
                closer.start()
            for closer in closers:
                closer.join()
            self._cached_handlers.clear()
        close_one_by_one(self)  # what is left: Beam's own closing of its servers

    close_all.together = True
    manager.close_all = close_all


def _close_worker(handler) -> None:
    try:
        handler.close()
    except Exception:  # as Beam's close_all: one worker's failure does not stop the others
        logging.getLogger(__name__).exception("could not close worker %s", handler)


def _teardown_cancel(exc: BaseException | None) -> bool:
    """A gRPC stream the runner cancelled: how an engine ends an SDK harness's connections
    when it releases the harness after a stage (Flink does so after each of its tasks)."""
    import grpc

    return isinstance(exc, grpc.RpcError) and exc.code() == grpc.StatusCode.CANCELLED


class _QuietTeardown(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and _teardown_cancel(record.exc_info[1]))


@contextlib.contextmanager
def _caught_thread_errors(caught: Callable[[BaseException | None], bool]):
    """While the block runs, an exception that ends a thread and that ``caught`` picks is
    collected into the list yielded, instead of printing as that thread's traceback; every
    other one goes to the previous hook."""
    errors: list[BaseException] = []
    previous = threading.excepthook

    def hook(args):
        if caught(args.exc_value):
            errors.append(args.exc_value)
        else:
            previous(args)

    threading.excepthook = hook
    try:
        yield errors
    finally:
        threading.excepthook = previous


@contextlib.contextmanager
def quiet_harness_teardown():
    """While a job runs on a portable engine with the SDK harness in this process (LOOPBACK),
    the harness's threads print a traceback each time the engine cancels their streams, which
    is the normal end of a stage there, not a failure (the job's state says whether it
    failed). Those cancellations are kept off the terminal; every other error still shows."""
    quiet = _QuietTeardown()
    data_plane = logging.getLogger("apache_beam.runners.worker.data_plane")
    data_plane.addFilter(quiet)
    try:
        with _caught_thread_errors(_teardown_cancel):
            yield
    finally:
        data_plane.removeFilter(quiet)


def run_pipeline(
    options, output: str, build: Callable, names: Sequence[str] = ()
) -> tuple[object, float]:
    """Prepares ``output`` (``prepare_output``), tunes the GC, builds the graph with
    ``build(p, options)`` and runs it to the end; returns the ``PipelineResult`` and the wall
    time. (Building a graph allocates enough for several full collections over Beam's heap.)"""
    from beam_tally import progress
    from beam_tally.options import ConsoleOptions, IOOptions

    prepare_output(output, names)
    started = time.perf_counter()
    previous = tune_gc()
    tune_malloc()
    runner = batch_runner(options)
    shown = progress.display(
        options.view_as(ConsoleOptions).progress, options.view_as(IOOptions).input
    )
    try:
        p = beam.Pipeline(runner=runner, options=options)
        build(p, options)
        with contextlib.nullcontext() if runner else quiet_harness_teardown(), shown:
            result = p.run()
            result.wait_until_finish()
    finally:
        restore_gc(previous)
    return result, time.perf_counter() - started


class LiveRun(NamedTuple):
    """How a live run went: its result, wall time, how it ended, and the lines the producer
    read (from the stream's end; None for a run stopped before it, or for documents)."""

    result: object
    seconds: float
    ended: str
    lines_read: int | None


def run_live(
    options,
    output: str,
    build: Callable,
    names: Sequence[str] = (),
    while_running: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> LiveRun:
    """Runs a streaming job until its stream ends, ``--stop_after`` seconds pass, or Ctrl-C
    (SIGTERM too); returns how it went (``LiveRun``). The outputs are
    written as the run goes, so stopping it keeps everything already reported.
    ``while_running()`` is entered as the run starts and left when it is over (the live
    report's refresher)."""
    from beam_tally.options import StreamOptions

    stream = options.view_as(StreamOptions)
    kafka = _wait_for_live_source(stream)
    if not (kafka and _restoring(options)):  # a restore adds to what the run before wrote
        prepare_output(output, names)
    marker = end_marker(output)
    if FileSystems.exists(marker):  # from an earlier run into the same directory
        _remove(marker)
    started = time.perf_counter()
    previous = tune_gc(LIVE_YOUNG)  # as in batch: each chunk of lines allocates thousands
    try:
        p = beam.Pipeline(options=options)
        build(p, options)
        # Beam's stream reader runs in a thread of its own: a producer that refuses this
        # consumer (full since wait_for_source checked) is collected, for the run to report in
        # one line.
        with (
            _caught_thread_errors(stream_refused) as refused,
            while_running(),
            cached_dofn_introspection(),
            cached_state_tags(),
        ):
            result = p.run()
            if kafka:  # an engine takes a while to start: say that the job is under way
                print(f"beam-tally: the job runs, reading {stream.source}", file=sys.stderr)
            ended, failure = _run_until_stopped(
                result, stream, output, refused, _TopicEnd(marker) if kafka else bool
            )
    finally:
        restore_gc(previous)
    if refused:
        raise UsageError(FULL.format(endpoint=stream.source))
    if failure:
        raise failure[0]
    read = None
    if ended == "the stream ended":
        if not FileSystems.exists(marker):
            raise StreamBroken(
                f"the stream from {stream.source} broke off before its end (the producer "
                "stopped or the connection failed): the outputs hold what had arrived"
            )
        read = lines_read(output)
        _remove(marker)
    return LiveRun(result, time.perf_counter() - started, ended, read)


def _run_until_stopped(
    result, stream, output: str, refused: list, topic_ended: Callable[[], bool]
) -> tuple[str, list[BaseException]]:
    """Waits for ``result`` until its stream ends (or ``topic_ended()``: a Kafka topic has no
    end), ``--stop_after`` passes, Ctrl-C or SIGTERM, or the producer refuses the stream;
    cancels it if it still runs, and completes the last roll of every output under ``output``.
    Returns how it ended and the run's failure, if any."""
    finished = threading.Event()
    failure: list[BaseException] = []

    def wait():
        try:
            result.wait_until_finish()
        except BaseException as err:  # reported by the main thread
            failure.append(err)
        finally:
            finished.set()

    threading.Thread(target=wait, name="wait-until-finish", daemon=True).start()
    # Ctrl-C and SIGTERM only set a flag: the main thread then cancels the run itself, so no
    # KeyboardInterrupt lands in the middle of a lock.
    signals: list[int] = []
    handlers = {
        signum: signal.signal(signum, lambda signum, frame: signals.append(signum))
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    ended = "the stream ended"
    deadline = None if stream.stop_after is None else time.monotonic() + stream.stop_after
    try:
        while not finished.wait(0.1) and not refused and not topic_ended():
            LiveFiles.roll_due(output)  # a quiet output's finished roll is renamed in too
            if signals:
                ended = "stopped by " + ("Ctrl-C" if signals[0] == signal.SIGINT else "SIGTERM")
                break
            if deadline is not None and time.monotonic() >= deadline:
                ended = f"stopped after --stop_after {stream.stop_after:g} s"
                break
    finally:
        if not finished.is_set():
            # Beam's cancel waits for its workers, which may be waiting on a silent stream:
            # give it a few seconds (its threads are daemons and end with the process).
            cancelling = threading.Thread(target=result.cancel, name="cancel", daemon=True)
            cancelling.start()
            cancelling.join(timeout=5)
        LiveFiles.finish(output)  # the last roll of every output, complete as it stands
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    return ended, failure


KAFKA_END_GRACE = 2.0  # seconds between a Kafka run's end marker and its cancellation


def _wait_for_live_source(stream) -> bool:
    """Waits for the ``--source`` to answer; returns whether it is a Kafka topic."""
    from beam_tally.io.kafka import is_kafka, parse_address, wait_for_broker

    if is_kafka(stream.source):
        bootstrap, topic = parse_address(stream.source)
        wait_for_broker(bootstrap, stream.connect_timeout, topic)
        return True
    wait_for_source(stream.source, stream.connect_timeout)
    return False


def _restoring(options) -> bool:
    from beam_tally.options import FlinkJobOptions

    return bool(options.view_as(FlinkJobOptions).savepoint_path)


class _TopicEnd:
    """A topic has no end: a Kafka run ends ``KAFKA_END_GRACE`` seconds after its end marker
    appeared (``kafka.MarkDrained``: every producer's replay ended and every result was
    written), which leaves the console steps beside the writers the time to print the last."""

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.seen_at: float | None = None

    def __call__(self) -> bool:
        if self.seen_at is None and FileSystems.exists(self.marker):
            self.seen_at = time.monotonic()
        return self.seen_at is not None and time.monotonic() >= self.seen_at + KAFKA_END_GRACE


class StreamBroken(Exception):
    """A live run's stream ended without its end marker."""
