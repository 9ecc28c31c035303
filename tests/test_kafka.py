"""The Kafka live path end to end: a real broker (scripts/kafka.sh), producers writing a replay
into a topic (``produce --to kafka://``), and the monitor reading it on embedded Flink with
Beam's cross-language KafkaIO; its outputs against the batch job's on the same lines.

Marked ``engines``: they need java, javac and mvn (the broker, KafkaIO and the job server come
from Maven into the cache on first use). Every process is bounded and stopped in ``finally``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from beam_tally.generate.access import generate_access
from tests.test_engines import need_tools, run_cli

pytestmark = pytest.mark.engines

ROOT = Path(__file__).resolve().parent.parent
KAFKA = ROOT / "scripts" / "kafka.sh"


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    need_tools("java", "javac", "mvn")
    state = tmp_path_factory.mktemp("kafka")
    env = {**os.environ, "BEAM_TALLY_KAFKA": str(state)}
    try:
        started = subprocess.run(
            ["bash", str(KAFKA), "start"],
            check=False,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert started.returncode == 0, started.stderr
        yield started.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run(
            ["bash", str(KAFKA), "stop"], check=False, env=env, capture_output=True, timeout=60
        )


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


def produce(address: str, topic: str, path: str, *extra: str):
    done = run_cli(
        "produce",
        "access",
        "--input",
        path,
        "--to",
        f"kafka://{address}/{topic}",
        *extra,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "replay finished" in done.stdout
    return done


def monitor(address: str, topic: str, out: Path, *extra: str):
    done = run_cli(
        "monitor",
        "--streaming",
        "--source",
        f"kafka://{address}/{topic}",
        "--runner=FlinkRunner",
        "--output",
        str(out),
        *extra,
        timeout=400,
    )
    assert done.returncode == 0, done.stderr
    assert "live run: the stream ended" in done.stdout
    return done


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


def batch(pattern: str, out: Path) -> None:
    done = run_cli("monitor", "--input", pattern, "--output", str(out))
    assert done.returncode == 0, done.stderr


def test_replay_into_kafka_then_monitor_on_flink_equals_batch(broker, traffic, tmp_path):
    batch(str(traffic / "a.csv"), tmp_path / "batch")
    produce(broker, "one", str(traffic / "a.csv"), "--partitions", "2", "--speedup", "1000")
    done = monitor(broker, "one", tmp_path / "live")
    same_as_batch(tmp_path / "live", tmp_path / "batch")
    assert lines_of(tmp_path / "batch", "alerts"), "the traffic must raise an alert"
    # Each alert and recovery printed once (the write-once sink prints what it wrote first).
    printed = [
        line
        for line in done.stdout.splitlines()
        if "generated an alert" in line or line.startswith("Recovered from")
    ]
    assert len(printed) == len(lines_of(tmp_path / "batch", "alerts"))


def test_two_producers_into_one_topic_equal_batch_over_both_files(broker, traffic, tmp_path):
    batch(str(traffic / "*.csv"), tmp_path / "batch")
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "beam_tally",
                "produce",
                "access",
                "--input",
                str(traffic / name),
                "--to",
                f"kafka://{broker}/two",
                "--partitions",
                "3",
                "--speedup",
                "1000",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a.csv", "b.csv")
    ]
    try:
        for proc in procs:
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
    monitor(broker, "two", tmp_path / "live", "--producers", "2")
    same_as_batch(tmp_path / "live", tmp_path / "batch")


def test_a_topic_the_producer_did_not_create_is_a_usage_error(broker, tmp_path):
    done = run_cli(
        "monitor",
        "--streaming",
        "--source",
        f"kafka://{broker}/nothing",
        "--runner=FlinkRunner",
        "--output",
        str(tmp_path / "out"),
        "--connect_timeout",
        "2",
        timeout=120,
    )
    assert done.returncode == 2
    assert re.search(r"topic 'nothing' does not exist", done.stderr)
