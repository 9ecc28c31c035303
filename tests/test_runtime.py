"""Preparing the output directory of a run."""

from beam_tally.runtime import prepare_output


def test_a_run_replaces_an_earlier_runs_outputs_and_nothing_else(tmp_path):
    out = tmp_path / "run[1]"  # glob characters in the path are only characters
    neighbour = tmp_path / "run1"
    for directory in (out, neighbour):
        directory.mkdir()
        (directory / "stats.jsonl").write_text("old\n")
    for name in ("stats-20261123T000000-0123456789ab.jsonl", "alerts.jsonl"):
        (out / name).write_text("old\n")
    mine = ("stats_notes.jsonl", "stats-archive.jsonl", "notes.txt")
    for name in mine:
        (out / name).write_text("mine\n")
    prepare_output(str(out), ("stats.jsonl", "alerts.jsonl", "dead_letters.jsonl"))
    assert sorted(p.name for p in out.iterdir()) == sorted(mine)
    assert (neighbour / "stats.jsonl").exists()


def test_a_missing_output_directory_is_created(tmp_path):
    prepare_output(str(tmp_path / "a" / "b"), ("stats.jsonl",))
    assert (tmp_path / "a" / "b").is_dir()


def test_a_batch_direct_run_goes_straight_to_the_fn_api_runner():
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner

    from beam_tally.runtime import batch_runner

    assert isinstance(batch_runner(PipelineOptions(["--runner=DirectRunner"])), FnApiRunner)
    assert isinstance(batch_runner(PipelineOptions(["--runner=direct"])), FnApiRunner)
    # Streaming, and any other runner, stay with the runner --runner names.
    assert batch_runner(PipelineOptions(["--runner=DirectRunner", "--streaming"])) is None
    assert batch_runner(PipelineOptions(["--runner=PortableRunner"])) is None


def test_the_runners_worker_processes_are_closed_together():
    import threading
    from collections import defaultdict

    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.portability.fn_api_runner import worker_handlers

    from beam_tally.runtime import batch_runner

    batch_runner(PipelineOptions(["--runner=DirectRunner"]))  # installs the closing
    # Each close waits until every other one has begun: closed one after the other, the first
    # would wait out the barrier's timeout and break it.
    barrier = threading.Barrier(3, timeout=10)
    closed = []

    class Worker:
        def close(self):
            barrier.wait()
            closed.append(self)

    class Failing:
        def close(self):
            barrier.wait()
            raise RuntimeError("this worker could not be closed")

    manager = worker_handlers.WorkerHandlerManager.__new__(worker_handlers.WorkerHandlerManager)
    workers = [Worker(), Worker()]
    manager._cached_handlers = defaultdict(list, {"env": [*workers, Failing()]})
    manager._workers_by_id = {}
    manager._grpc_server = None
    manager.close_all()
    assert sorted(map(id, closed)) == sorted(map(id, workers))  # one failure stops no other
    assert not barrier.broken
    assert manager._cached_handlers == {}


def test_the_allocator_settings_reach_the_workers_and_a_users_own_are_kept(monkeypatch):
    from beam_tally.runtime import MALLOC_SETTINGS, tune_malloc

    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "12345")
    tune_malloc()
    import os

    # Worker processes inherit the environment: Beam starts them with os.environ and more.
    assert os.environ["MALLOC_MMAP_THRESHOLD_"] == str(MALLOC_SETTINGS["MALLOC_MMAP_THRESHOLD_"])
    assert os.environ["MALLOC_TRIM_THRESHOLD_"] == "12345"


def test_cached_dofn_introspection_answers_as_beam_does_and_is_undone_after():
    """Each DoFn of the live monitor's graph (stateful or not, ``beam.Map``'s too) gets the same
    specs and arguments from the cache as from Beam, a second time too; an instance that
    carries a method of its own is inspected as itself; Beam's functions are back after."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.common import DoFnSignature
    from apache_beam.transforms import core, userstate

    from beam_tally.jobs.monitor import build_monitor_pipeline
    from beam_tally.runtime import cached_dofn_introspection

    options = PipelineOptions(["--streaming", "--source", "127.0.0.1:1", "--output", "unused"])
    p = beam.Pipeline(options=options)
    build_monitor_pipeline(p, options)
    dofns = []

    class Collect(beam.pipeline.PipelineVisitor):
        def visit_transform(self, node):
            if isinstance(node.transform, beam.ParDo):
                dofns.append(node.transform.dofn)

    p.visit(Collect())

    class WithOwnMethod(beam.DoFn):
        def process(self, element):
            yield element

    own = WithOwnMethod()
    own.start_bundle = WithOwnMethod().process  # a bound method on the instance
    dofns.append(own)

    def answers(dofn):
        signature = DoFnSignature(dofn)
        return (
            userstate.get_dofn_specs(dofn),
            userstate.is_stateful_dofn(dofn),
            core.get_function_arguments(dofn, "process"),
            signature.process_method.args,
            signature.process_method.defaults,
        )

    expected = [answers(dofn) for dofn in dofns]
    assert any(stateful for _, stateful, *_ in expected)  # the detector and the totals
    assert len(expected) > 10
    original = (core.get_function_args_defaults, userstate.get_dofn_specs)
    with cached_dofn_introspection():
        assert userstate.get_dofn_specs is not original[1]
        for _ in range(2):
            assert [answers(dofn) for dofn in dofns] == expected
    assert (core.get_function_args_defaults, userstate.get_dofn_specs) == original


def test_cached_state_tags_merge_as_beam_does_and_are_undone_after():
    """Under ``cached_state_tags`` a windowed combine's state, through the trigger machinery's
    merging adapter, adds and reads what it does under Beam's own tags; one tag without
    extraction is made once; Beam's method is back after."""
    from apache_beam.transforms import trigger
    from apache_beam.transforms.combiners import MeanCombineFn
    from apache_beam.transforms.window import IntervalWindow

    from beam_tally.runtime import cached_state_tags

    tag = trigger._CombiningValueStateTag("mean", MeanCombineFn())
    windows = [IntervalWindow(0, 10), IntervalWindow(10, 20)]

    def means():
        state = trigger.MergeableStateAdapter(trigger.InMemoryUnmergedState())
        for n, value in enumerate([1, 2, 4, 8, 16]):
            state.add_state(windows[n % 2], tag, value)
        return [state.get_state(w, tag) for w in windows]

    original = trigger._CombiningValueStateTag.without_extraction
    expected = means()
    with cached_state_tags():
        assert tag.without_extraction() is tag.without_extraction()
        assert means() == expected == [7.0, 5.0]
    assert trigger._CombiningValueStateTag.without_extraction is original
    assert tag.without_extraction() is not tag.without_extraction()


def test_a_worker_process_gets_the_launchers_collector_settings_once(monkeypatch):
    import gc

    from beam_tally import gc_settings

    before = gc.get_threshold()
    monkeypatch.setitem(gc_settings._worker, "tuned", False)
    monkeypatch.delenv("CONTROL_API_SERVICE_DESCRIPTOR", raising=False)
    gc_settings.tune_worker_gc()  # a launcher (or this test) keeps its own settings
    assert gc.get_threshold() == before and not gc_settings._worker["tuned"]
    monkeypatch.setenv("CONTROL_API_SERVICE_DESCRIPTOR", "url: 'localhost:1'")  # as Beam's
    try:
        gc_settings.tune_worker_gc()
        assert gc.get_threshold()[0] == gc_settings.YOUNG and gc_settings._worker["tuned"]
        gc.set_threshold(*before)
        gc_settings.tune_worker_gc()  # once per process
        assert gc.get_threshold() == before
    finally:
        gc_settings.restore_gc(before)
