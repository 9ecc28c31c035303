"""Both jobs on real engines, against the DirectRunner on the same inputs:

- batch: the CLI with ``--runner=FlinkRunner`` (an embedded MiniCluster), on a standalone Flink
  cluster on loopback with ``--parallelism=2``, and with ``--runner=PrismRunner``; one cluster
  run ships the project as an sdist to SDK workers started from a fresh virtualenv;
- streaming: the alert detector and the windowed stats driven by an in-pipeline TestStream on
  Prism (on-time, out-of-order and late lines) and on Flink (on-time and out-of-order).

Marked ``engines``: they need java, mvn and go, and fetch the engines into the cache on first
use (minutes; later runs are offline). Without those tools they skip, unless ``CI`` is set.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import window

from beam_tally import engines
from beam_tally.generate.access import generate_access
from beam_tally.generate.tally import generate_tally
from tests.conftest import need_tools
from tests.test_alert_rule import reference_alerts
from tests.test_traffic_transforms import burst, record
from transforms.records import AccessRecord
from transforms.traffic import ALERTS, LATE, ComputeTrafficStats, DetectHighTraffic

pytestmark = pytest.mark.engines

ROOT = Path(__file__).resolve().parent.parent
RUN_TIMEOUT = 420  # seconds for one job on an engine (the first also fetches it)
COMPARED = {
    "tally": ["tallies.jsonl", "dead_letters.jsonl", "global_tally_final.json"],
    "monitor": ["stats.jsonl", "alerts.jsonl", "dead_letters.jsonl"],
}


def run_cli(*args: str, timeout: float = RUN_TIMEOUT, env: dict | None = None):
    """``python -m beam_tally ARGS`` in its own process group (the job server and Prism are
    its children), killed as a group if it outlives ``timeout``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "beam_tally", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, **(env or {})},
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        # Whether it ended or timed out, nothing it started (a job server, Prism) outlives it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    data = tmp_path_factory.mktemp("engine_inputs")
    generate_tally(
        str(data / "logs"),
        files=5,
        logs_per_file=300,
        emails=15,
        bad_fraction=0.03,
        bad_files=2,
        seed=11,
    )
    generate_access(
        str(data / "access.csv"),
        fmt="csv",
        seconds=420,
        rate=3,
        bursts=[(100, 130, 20)],
        disorder=15,
        bad_fraction=0.02,
        seed=11,
    )
    return {"tally": str(data / "logs" / "*.json"), "monitor": str(data / "access.csv")}


def job_args(job: str, inputs: dict, out: Path) -> list[str]:
    args = [job, "--input", inputs[job], "--output", str(out)]
    return [*args, "--print_limit", "3"] if job == "tally" else args


def outputs(job: str, out: Path) -> dict[str, list[str]]:
    """The job's deterministic outputs, each file's lines sorted (engines write in their own
    order; ``after`` of the final tally names whichever file the engine applied last)."""
    result = {}
    for name in COMPARED[job]:
        lines = (out / name).read_text(encoding="utf-8").splitlines()
        if name == "global_tally_final.json":
            lines = [re.sub(r',"after":"[^"]*"', "", line) for line in lines]
        result[name] = sorted(lines)
    return result


def summary(stdout: str) -> str:
    """The closing summary's figures, without the wall time."""
    line = next(line for line in stdout.splitlines() if line.startswith("summary: "))
    return re.sub(r", [\d.]+ s$", "", line)


@pytest.fixture(scope="module")
def direct(inputs, tmp_path_factory):
    """Each job's outputs and summary on the DirectRunner, the reference for every engine."""
    results = {}
    for job in COMPARED:
        out = tmp_path_factory.mktemp(f"direct_{job}")
        done = run_cli(*job_args(job, inputs, out))
        assert done.returncode == 0, done.stderr
        results[job] = (outputs(job, out), summary(done.stdout))
        assert any(results[job][0].values())  # never a comparison of empty outputs
    return results


def check_updates(out: Path) -> None:
    """Every global update is the update before it plus one file's tally, in whatever order
    the engine applied the files."""
    per_file = {}
    for line in (out / "tallies.jsonl").read_text(encoding="utf-8").splitlines():
        tally = json.loads(line)
        per_file[tally["source"]] = Counter({e["email"]: e["total"] for e in tally["tally"]})
    updates = [json.loads(line) for line in (out / "global_tally.jsonl").read_text().splitlines()]
    updates.sort(key=lambda update: update["files"])
    assert [u["files"] for u in updates] == list(range(1, len(per_file) + 1))
    assert sorted(u["after"] for u in updates) == sorted(per_file)
    running: Counter = Counter()
    for update in updates:
        running.update(per_file[update["after"]])
        assert {e["email"]: e["total"] for e in update["global_tally"]} == dict(+running)


def assert_same_as_direct(job: str, done, out: Path, direct) -> None:
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    expected_outputs, expected_summary = direct[job]
    assert outputs(job, out) == expected_outputs
    assert summary(done.stdout) == expected_summary
    if job == "tally":
        check_updates(out)


# Batch, through the CLI ----------------------------------------------------------------------


@pytest.mark.parametrize("job", ["tally", "monitor"])
@pytest.mark.parametrize("engine", ["FlinkRunner", "PrismRunner"])
def test_batch_job_on_an_embedded_engine_equals_the_direct_runner(
    job, engine, inputs, direct, tmp_path
):
    need_tools("java", "mvn") if engine == "FlinkRunner" else need_tools("go")
    out = tmp_path / "out"
    done = run_cli(*job_args(job, inputs, out), f"--runner={engine}")
    assert_same_as_direct(job, done, out, direct)


@pytest.mark.parametrize("job", ["tally", "monitor"])
def test_batch_job_on_a_flink_cluster_with_parallelism_2_equals_the_direct_runner(
    job, inputs, direct, flink_cluster, tmp_path
):
    out = tmp_path / "out"
    done = run_cli(
        *job_args(job, inputs, out),
        "--runner=FlinkRunner",
        f"--flink_master={flink_cluster}",
        "--parallelism=2",
    )
    assert_same_as_direct(job, done, out, direct)


@pytest.fixture(scope="session")
def shipped(tmp_path_factory):
    """The project as an sdist, and a fresh virtualenv holding only apache-beam (at the
    launcher's version) for the SDK workers, with Beam's worker boot program."""
    need_tools("java", "mvn", "go")
    base = tmp_path_factory.mktemp("shipped")
    built = subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--outdir", str(base / "dist"), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (sdist,) = (base / "dist").glob("beam_tally-*.tar.gz")
    venv = base / "worker-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], timeout=300, check=True)
    subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            f"apache-beam=={engines.beam_version()}",
        ],
        timeout=1200,
        check=True,
    )
    return sdist, venv, engines.sdk_worker_boot()


def test_a_job_shipped_as_an_sdist_to_separate_workers_equals_the_direct_runner(
    inputs, direct, flink_cluster, shipped, tmp_path
):
    sdist, venv, boot = shipped
    has_project = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import beam_tally"],
        cwd=tmp_path,  # not the checkout, which `python -c` would put on sys.path
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert has_project.returncode != 0  # the workers' interpreter lacks the project until shipped
    config = {
        "command": str(boot),
        "env": {
            "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
            "VIRTUAL_ENV": str(venv),
            "RUN_PYTHON_SDK_IN_DEFAULT_ENVIRONMENT": "1",  # install into that venv
        },
    }
    out = tmp_path / "out"
    done = run_cli(
        *job_args("monitor", inputs, out),
        "--runner=FlinkRunner",
        f"--flink_master={flink_cluster}",
        "--parallelism=2",
        "--environment_type=PROCESS",
        f"--environment_config={json.dumps(config)}",
        f"--extra_package={sdist}",
        # the sdist's build backend (setuptools>=77) comes from PyPI, not from the workers' venv
        "--experiments=pip_use_build_isolation",
    )
    assert_same_as_direct("monitor", done, out, direct)
    # The workers ran the shipped project in the fresh venv, not the launcher's checkout.
    installed = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import beam_tally; print(beam_tally.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert str(venv) in installed.stdout


# Streaming: the detector and the windowed stats under an in-pipeline TestStream ----------------

_CODER = beam.coders.registry.get_coder(AccessRecord)


def stream_scenario(with_late: bool):
    """(TestStream batches, the records counted, the late records): lines arrive shuffled
    within 5 s and the watermark trails the newest second by 5 s; with ``with_late``, two lines
    arrive after the watermark passed their second."""
    rng = random.Random(3)
    timestamps = sorted(burst(100, 300, 2) + burst(130, 40, 40))
    records = [
        record(t, line=i, section=rng.choice(["/a", "/b"]), size=rng.randrange(1, 5000))
        for i, t in enumerate(timestamps)
    ]
    batches = []
    for i in range(0, len(records), 60):
        chunk = records[i : i + 60]
        rng.shuffle(chunk)
        batches.append((chunk, max(r.timestamp for r in chunk) - 5))
    late = []
    if with_late:
        late = [record(105, line=90_001), record(171, line=90_002)]
        batches.insert(2, ([late[0]], batches[1][1]))  # second 105 long evaluated
        batches.append(([late[1]], 400))  # after the watermark passed 171 + 5
    return batches, records, late


def write_each(directory: str):
    """A test sink that any engine's workers on this machine can run: one file per element."""

    def write(element) -> None:
        path = os.path.join(directory, f"{uuid.uuid4().hex}.json")
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(element, handle)

    return write


def read_each(directory: Path) -> list:
    return sorted(tuple(json.loads(p.read_text())) for p in directory.glob("*.json"))


def encoded_stream(batches) -> TestStream:
    """The batches as a TestStream of encoded records, the watermark advanced after each batch
    where it moves. Elements travel as bytes: Flink's TestStream decodes them in Java, which
    has no RowCoder for our records; they are decoded in the first Python step."""
    stream = TestStream(coder=beam.coders.BytesCoder()).advance_watermark_to(0)
    watermark = 0
    for chunk, after in batches:
        stream = stream.add_elements(
            [window.TimestampedValue(_CODER.encode(r), r.timestamp) for r in chunk]
        )
        if after > watermark:
            stream, watermark = stream.advance_watermark_to(after), after
    return stream


def run_streaming(runner_args: list[str], batches, out: Path):
    """The detector and the stats over the TestStream, on the runner ``runner_args`` names;
    their outputs land in ``out/alerts``, ``out/late`` and ``out/stats``."""
    for name in ("alerts", "late", "stats"):
        (out / name).mkdir(parents=True)
    stream = encoded_stream(batches)
    options = PipelineOptions([*runner_args, "--streaming"])
    engines.configure_runner(options, runner_args)
    with TestPipeline(options=options) as p:
        records = (
            p
            | stream.advance_watermark_to_infinity().with_output_types(bytes)
            | "Decode" >> beam.Map(_CODER.decode).with_output_types(AccessRecord)
        )
        detected = records | DetectHighTraffic(10, 120, max_delay=5)
        stats = records | ComputeTrafficStats(10, top=2)
        detected[ALERTS] | "Alerts" >> beam.Map(
            lambda a: write_each(str(out / "alerts"))([a.kind, a.at, a.hits])
        )
        detected[LATE] | "Late" >> beam.Map(
            lambda d: write_each(str(out / "late"))([d.source, d.where, d.reason.split(":")[0]])
        )
        stats | "Stats" >> beam.Map(
            lambda s: write_each(str(out / "stats"))(
                [s.start, s.hits, s.bytes, [[c.name, c.value] for c in s.sections]]
            )
        )
    return {name: read_each(out / name) for name in ("alerts", "late", "stats")}


def expected_streaming(records, late):
    alerts = sorted(tuple(a) for a in reference_alerts([r.timestamp for r in records], 10, 120))
    per_window: dict[int, list] = {}
    for r in records:
        per_window.setdefault(r.timestamp - r.timestamp % 10, []).append(r)
    stats = []
    for start, rows in sorted(per_window.items()):
        sections = Counter(r.section for r in rows)
        top = sorted(sections.items(), key=lambda kv: (-kv[1], kv[0]))[:2]
        stats.append((start, len(rows), sum(r.bytes for r in rows), [list(kv) for kv in top]))
    late_rows = sorted((r.source, r.line, "late") for r in late)
    return {"alerts": alerts, "late": late_rows, "stats": stats}


STREAMING_ENGINES = {
    "prism": (["--runner=PrismRunner"], True, ("go",)),
    # Flink's portable TestStream passes watermarks on only as each Python bundle finishes, so
    # which lines a window sees as late is the engine's; Flink gets on-time and shuffled lines.
    "flink": (["--runner=FlinkRunner"], False, ("java", "mvn")),
}


@pytest.mark.parametrize("engine", sorted(STREAMING_ENGINES))
def test_streaming_detector_and_stats_on_an_engine_equal_the_direct_runner(engine, tmp_path):
    runner_args, with_late, tools = STREAMING_ENGINES[engine]
    need_tools(*tools)
    batches, records, late = stream_scenario(with_late)
    on_direct = run_streaming(["--runner=DirectRunner"], batches, tmp_path / "direct")
    on_engine = run_streaming(runner_args, batches, tmp_path / engine)
    expected = expected_streaming(records, late)
    assert [kind for kind, _, _ in expected["alerts"]] == ["alert", "recover"]
    assert on_direct == expected
    assert on_engine == on_direct


def test_streaming_assertions_hold_on_prism_with_a_late_line(tmp_path):
    """The same graph with ``assert_that`` inside the pipeline: Prism runs the checks itself."""
    need_tools("go")
    batches, records, late = stream_scenario(True)
    expected = expected_streaming(records, late)
    stream = encoded_stream(batches)
    args = ["--runner=PrismRunner", "--streaming"]
    options = PipelineOptions(args)
    engines.configure_runner(options, args)
    with TestPipeline(options=options) as p:
        records_in = (
            p
            | stream.advance_watermark_to_infinity().with_output_types(bytes)
            | beam.Map(_CODER.decode).with_output_types(AccessRecord)
        )
        detected = records_in | DetectHighTraffic(10, 120, max_delay=5)
        assert_that(
            detected[ALERTS] | beam.Map(lambda a: (a.kind, a.at, a.hits)),
            equal_to(expected["alerts"]),
        )
        assert_that(
            detected[LATE] | beam.Map(lambda d: (d.source, d.where, d.reason.split(":")[0])),
            equal_to(expected["late"]),
            label="Late",
        )


# The engines command and its failures -------------------------------------------------------


def test_engines_list_and_install_say_what_and_where(tmp_path):
    need_tools("go")
    env = {"BEAM_TALLY_CACHE": str(tmp_path / "cache")}
    listed = run_cli("engines", "list", env=env, timeout=60)
    assert listed.returncode == 0
    assert all(line.endswith("not fetched") for line in listed.stdout.splitlines())
    # Prism from the Go module cache: the first install prints one line while it runs.
    first = run_cli("engines", "install", "prism", env=env, timeout=900)
    assert first.returncode == 0, first.stderr
    assert first.stderr.count("fetching") == 1
    path = Path(first.stdout.split()[-1])
    assert path.is_file() and os.access(path, os.X_OK)
    again = run_cli("engines", "install", "prism", env=env, timeout=60)
    assert again.returncode == 0 and again.stderr == ""  # cached: nothing fetched
    assert f"prism          {path}" in run_cli("engines", "list", env=env, timeout=60).stdout


def test_a_missing_client_is_one_line_naming_what_to_install(tmp_path):
    env = {"BEAM_TALLY_CACHE": str(tmp_path / "cache"), "PATH": str(tmp_path)}  # no go, no mvn
    for args, tool in (
        (["engines", "install", "prism"], "'go'"),
        (["engines", "install", "flink"], "'java'"),
    ):
        done = run_cli(*args, env=env, timeout=60)
        assert done.returncode == 2
        assert len(done.stderr.strip().splitlines()) == 1
        assert tool in done.stderr and "install" in done.stderr


def test_unserved_flink_versions_and_live_sources_on_engines_are_usage_errors(tmp_path):
    for args, fragment in (
        (["--runner=FlinkRunner", "--flink_version=2.0"], "Flink 1.19 only"),
        (["--runner=PrismRunner", "--streaming", "--source", "127.0.0.1:1"], "DirectRunner only"),
    ):
        source = "--source" in args
        base = ["monitor", "--output", str(tmp_path / "out")]
        if not source:
            access = tmp_path / "a.csv"
            access.write_text('"remotehost"\n', encoding="utf-8")
            base += ["--input", str(access)]
        done = run_cli(*base, *args, timeout=60)
        assert done.returncode == 2
        assert fragment in done.stderr and len(done.stderr.strip().splitlines()) == 1
