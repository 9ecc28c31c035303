"""The Kafka live path end to end: a real broker (scripts/kafka.sh), producers writing a replay
into a topic (``produce --to kafka://``), and both jobs reading it on embedded Flink with Beam's
cross-language KafkaIO; their outputs against the batch job's, or an independent count, on the
same input. One test kills a consumer mid-stream and resumes it from its last checkpoint.

Marked ``engines``: they need java, javac and mvn (the broker, KafkaIO and the job server come
from Maven into the cache on first use). Every process is bounded and stopped in ``finally``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from beam_tally.generate.access import generate_access
from beam_tally.generate.tally import generate_tally
from tests.conftest import independent_tally, need_tools
from tests.test_engines import run_cli

pytestmark = pytest.mark.engines

ROOT = Path(__file__).resolve().parent.parent
KAFKA = ROOT / "scripts" / "kafka.sh"
DEADLINE = 300  # seconds any one process of these tests may take
ALERT = r"generated an alert|^Recovered from"
FLINK = ["--runner=FlinkRunner"]


def kafka_sh(action: str, state: Path) -> str:
    """``scripts/kafka.sh ACTION`` with its state in ``state``; its last line (the address)."""
    env = {**os.environ, "BEAM_TALLY_KAFKA": str(state)}
    done = subprocess.run(
        ["bash", str(KAFKA), action],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    assert done.returncode == 0, done.stderr
    return (done.stdout.strip().splitlines() or [""])[-1]


@pytest.fixture(scope="module")
def broker_state(tmp_path_factory):
    need_tools("java", "javac", "mvn")
    return tmp_path_factory.mktemp("kafka")


@pytest.fixture(scope="module")
def broker(broker_state):
    try:
        yield kafka_sh("start", broker_state)
    finally:
        kafka_sh("stop", broker_state)


class Background:
    """``python -m beam_tally ARGS`` in its own process group (the job server is its child),
    its output lines kept with the time each came; ``stop`` kills the group."""

    def __init__(self, *args: str) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "beam_tally", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.out: list[tuple[float, str]] = []
        self.err: list[tuple[float, str]] = []
        self.threads = [
            threading.Thread(target=self._pump, args=(self.popen.stdout, self.out), daemon=True),
            threading.Thread(target=self._pump, args=(self.popen.stderr, self.err), daemon=True),
        ]
        for thread in self.threads:
            thread.start()
        self.ended_at: float | None = None

    @staticmethod
    def _pump(stream, into) -> None:
        for line in stream:
            into.append((time.monotonic(), line.rstrip("\n")))

    def lines(self, pattern: str, err: bool = False) -> list[tuple[float, str]]:
        return [
            (at, line) for at, line in (self.err if err else self.out) if re.search(pattern, line)
        ]

    def wait_until(self, ready, what: str, timeout: float = DEADLINE) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if self.popen.poll() is not None or time.monotonic() > deadline:
                tail = [line for _, line in self.err[-8:]]
                raise AssertionError(f"{what}: not within {timeout} s; stderr: {tail}")
            time.sleep(0.1)

    def running(self) -> bool:
        return self.popen.poll() is None

    def wait(self, timeout: float = DEADLINE) -> int:
        """Waits for a clean exit, after which nothing of the process group may be left (a job
        server that outlives its run holds 1.5 GB)."""
        try:
            code = self.popen.wait(timeout=timeout)
            self.ended_at = time.monotonic()
            left = self._group_left(10)
        finally:
            self.stop()
        for thread in self.threads:
            thread.join(timeout=10)
        assert code == 0, [line for _, line in self.err[-10:]]
        assert not left, "a process of the run (its job server?) outlived it"
        return code

    def _group_left(self, grace: float) -> bool:
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.killpg(self.popen.pid, 0)
            except ProcessLookupError:
                return False
            time.sleep(0.2)
        return True

    def kill(self) -> None:
        """SIGKILL to the whole group: the consumer and its job server, as a crash would."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=30)

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=30)


def create_topic(address: str, topic: str, partitions: int) -> None:
    """The topic a consumer may wait on before any producer starts (as ``produce`` makes it)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    from beam_tally.io.kafka import TOPIC_CONFIG

    admin = AdminClient({"bootstrap.servers": address})
    future = admin.create_topics([NewTopic(topic, partitions, 1, config=dict(TOPIC_CONFIG))])
    future[topic].result(timeout=60)


def lines_of(directory: Path, name: str) -> list[str]:
    """Every line of ``NAME.jsonl`` or ``NAME-*.jsonl``, sorted; the raw text of a line that is
    not UTF-8 travels as a stream dead letter without it (as over gRPC), so raw is dropped."""
    found = []
    for path in sorted(directory.glob(f"{name}*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            record.pop("raw", None)
            found.append(json.dumps(record, sort_keys=True))
    return sorted(found)


def same_as_batch(live: Path, batch: Path) -> None:
    """Every stats window, alert and dead letter of the batch run, once; the live totals are
    running totals, and the last (largest) equals the batch run's."""
    for name in ("stats", "alerts", "dead_letters"):
        assert lines_of(live, name) == lines_of(batch, name), name
    running = [json.loads(line) for line in lines_of(live, "totals")]
    assert max(running, key=lambda t: t["hits"]) == json.loads(lines_of(batch, "totals")[0])


def batch(pattern: str, out: Path) -> None:
    done = run_cli("monitor", "--input", pattern, "--output", str(out))
    assert done.returncode == 0, done.stderr


def produce(address: str, topic: str, path: str, *extra: str) -> Background:
    return Background(
        "produce", "access", "--input", path, "--to", f"kafka://{address}/{topic}", *extra
    )


def consume(job: str, address: str, topic: str, out: Path, *extra: str) -> Background:
    source = f"kafka://{address}/{topic}"
    return Background(job, "--streaming", "--source", source, *FLINK, "--output", str(out), *extra)


def running_job(consumer: Background) -> None:
    consumer.wait_until(lambda: consumer.lines("the job runs", err=True), "the consumer's job")


@pytest.fixture(scope="module")
def traffic(tmp_path_factory):
    data = tmp_path_factory.mktemp("kafka_traffic")
    for name, seed in (("a.csv", 5), ("b.csv", 6)):
        generate_access(
            str(data / name),
            fmt="csv",
            seconds=240,
            rate=3,
            bursts=[(80, 50, 25)],
            disorder=3,
            bad_fraction=0.02,
            seed=seed,
        )
    return data


def test_live_from_kafka_on_flink_prints_alerts_as_the_stream_goes_and_equals_batch(
    broker, traffic, tmp_path
):
    batch(str(traffic / "a.csv"), tmp_path / "batch")
    create_topic(broker, "live", 2)
    consumer = consume("monitor", broker, "live", tmp_path / "live")
    producer = None
    try:
        running_job(consumer)
        # 240 s of traffic in 24 s, its burst from second 80 on
        producer = produce(broker, "live", str(traffic / "a.csv"), "--speedup", "10")
        producer.wait()
        consumer.wait()
    finally:
        for proc in (consumer, producer):
            if proc is not None:
                proc.stop()
    same_as_batch(tmp_path / "live", tmp_path / "batch")
    expected = lines_of(tmp_path / "batch", "alerts")
    assert expected, "the traffic must raise an alert"
    printed = consumer.lines(ALERT)
    assert len(printed) == len(expected)  # each printed once
    assert printed[0][0] < producer.ended_at, "the first alert comes while the stream goes"
    assert consumer.lines(r"^live run: the stream ended$")


def test_two_producers_into_one_topic_equal_batch_over_both_files(broker, traffic, tmp_path):
    batch(str(traffic / "*.csv"), tmp_path / "batch")
    producers = [
        produce(broker, "two", str(traffic / name), "--partitions", "3", "--speedup", "1000")
        for name in ("a.csv", "b.csv")
    ]
    try:
        for proc in producers:
            proc.wait()
    finally:
        for proc in producers:
            proc.stop()
    consumer = consume("monitor", broker, "two", tmp_path / "live", "--producers", "2")
    try:
        consumer.wait()
    finally:
        consumer.stop()
    same_as_batch(tmp_path / "live", tmp_path / "batch")


def test_the_monitor_reads_a_topic_on_a_flink_cluster_too(broker, traffic, flink_cluster, tmp_path):
    """The standalone cluster (scripts/flink_cluster.sh) at --parallelism=2: the job server ships
    KafkaIO to its TaskManager with the job."""
    batch(str(traffic / "b.csv"), tmp_path / "batch")
    producer = produce(broker, "cluster", str(traffic / "b.csv"), "--partitions", "2")
    try:
        producer.wait()
    finally:
        producer.stop()
    consumer = consume(
        "monitor", broker, "cluster", tmp_path / "live",
        f"--flink_master={flink_cluster}", "--parallelism=2",
    )  # fmt: skip
    try:
        consumer.wait()
    finally:
        consumer.stop()
    same_as_batch(tmp_path / "live", tmp_path / "batch")


def test_a_producer_rides_out_a_broker_restart_without_loss_or_duplicates(
    broker, broker_state, traffic, tmp_path
):
    """The broker stops mid-replay and starts again on the same address (its data kept): the
    producer retries, and its idempotence means no record is written twice."""
    batch(str(traffic / "b.csv"), tmp_path / "batch")
    producer = produce(broker, "restart", str(traffic / "b.csv"), "--speedup", "20")  # 12 s
    try:
        producer.wait_until(lambda: producer.lines("first element"), "the replay's start")
        time.sleep(3)
        kafka_sh("stop", broker_state)
        time.sleep(4)
        assert producer.running(), "the producer waits for the broker"
        assert kafka_sh("start", broker_state) == broker
        producer.wait()
    finally:
        producer.stop()
        kafka_sh("start", broker_state)  # for the tests after this one, whatever happened
    consumer = consume("monitor", broker, "restart", tmp_path / "live")
    try:
        consumer.wait()
    finally:
        consumer.stop()
    same_as_batch(tmp_path / "live", tmp_path / "batch")


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete Flink checkpoint (``chk-N`` with its ``_metadata``) under ``root``."""
    done = [path.parent for path in root.glob("*/chk-*/_metadata")]
    return max(done, key=lambda path: int(path.name.split("-")[1]), default=None)


def test_a_killed_consumer_resumes_from_its_checkpoint_and_nothing_is_lost_or_twice(
    broker, tmp_path
):
    """The seed's failover: the consumer (its Flink job and job server) is killed mid-stream
    and started again from its last retained checkpoint; the outputs at the end equal batch,
    and each alert was printed once, by one run or the other."""
    data = tmp_path / "access.csv"
    generate_access(
        str(data),
        fmt="csv",
        seconds=600,
        rate=4,
        bursts=[(100, 60, 25), (350, 60, 25)],
        disorder=3,
        bad_fraction=0.01,
        seed=9,
    )
    batch(str(data), tmp_path / "batch")
    checkpoints = tmp_path / "checkpoints"
    flags = [
        "--checkpointing_interval=2000",
        "--state_backend=filesystem",
        f"--state_backend_storage_path=file://{checkpoints}",
        "--externalized_checkpoints_enabled",
        "--retain_externalized_checkpoints_on_cancellation",
    ]
    out = tmp_path / "live"
    create_topic(broker, "failover", 2)
    first = consume("monitor", broker, "failover", out, *flags)
    producer = second = None
    try:
        running_job(first)
        producer = produce(broker, "failover", str(data), "--speedup", "10")  # 60 s
        first.wait_until(
            lambda: first.lines(ALERT) and latest_checkpoint(checkpoints),
            "an alert printed and a checkpoint taken",
        )
        assert producer.running(), "the consumer must be killed while the stream goes on"
        first.kill()
        restore = latest_checkpoint(checkpoints)
        second = consume("monitor", broker, "failover", out, *flags, f"--savepoint_path={restore}")
        producer.wait()
        second.wait()
    finally:
        for proc in (first, producer, second):
            if proc is not None:
                proc.stop()
    same_as_batch(out, tmp_path / "batch")
    printed = [line for _, line in first.lines(ALERT) + second.lines(ALERT)]
    assert len(printed) == len(set(printed)) == len(lines_of(tmp_path / "batch", "alerts"))
    assert second.lines(ALERT), "the resumed run prints the alerts after the kill"


def test_tally_over_documents_in_a_topic_equals_an_independent_count(broker, tmp_path):
    docs = tmp_path / "logs"
    generate_tally(str(docs), files=5, logs_per_file=120, emails=9, bad_fraction=0.05, seed=4)
    producer = Background(
        "produce", "tally", "--input", str(docs), "--to", f"kafka://{broker}/docs"
    )
    try:
        producer.wait()
    finally:
        producer.stop()
    out = tmp_path / "live"
    consumer = consume("tally", broker, "docs", out)
    try:
        consumer.wait()
    finally:
        consumer.stop()
    updates = [json.loads(line) for line in lines_of(out, "global_tally")]
    final = max(updates, key=lambda u: u["files"])
    per_file, bad = independent_tally(str(docs / "*"))
    assert final["files"] == len(per_file)
    assert {e["email"]: e["total"] for e in final["global_tally"]} == dict(
        sum(per_file.values(), Counter())
    )
    assert len(lines_of(out, "dead_letters")) == bad > 0


def test_a_topic_the_producer_did_not_create_is_a_usage_error(broker, tmp_path):
    done = run_cli(
        "monitor",
        "--streaming",
        "--source",
        f"kafka://{broker}/nothing",
        *FLINK,
        "--output",
        str(tmp_path / "out"),
        "--connect_timeout",
        "2",
        timeout=120,
    )
    assert done.returncode == 2
    assert re.search(r"topic 'nothing' does not exist", done.stderr)
