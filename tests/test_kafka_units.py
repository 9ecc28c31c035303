"""The Kafka path's pieces that need no broker: addresses, the command-line checks (one line,
exit 2), the write-once sink a restore replays into, and the end marker's drain."""

from __future__ import annotations

import os
import subprocess
import sys

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_tally.errors import UsageError
from beam_tally.io.kafka import MarkDrained, WriteJsonLinesOnce, once_name, parse_address
from beam_tally.io.stream import is_live_part


def test_an_address_is_host_port_and_topic():
    assert parse_address("kafka://127.0.0.1:9092/access") == ("127.0.0.1:9092", "access")
    for bad in (
        "kafka://127.0.0.1/access",
        "kafka://127.0.0.1:9092/",
        "http://h:1/t",
        "kafka://h:1/a/b",
    ):
        with pytest.raises(UsageError):
            parse_address(bad)


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (
            ["monitor", "--streaming", "--source", "kafka://127.0.0.1:9/t", "--output", "o"],
            "runs here on --runner=FlinkRunner only",
        ),
        (
            ["monitor", "--streaming", "--source", "127.0.0.1:9", "--producers", "2",
             "--output", "o"],
            "are for a kafka:// --source",
        ),
        (
            ["monitor", "--streaming", "--source", "kafka://127.0.0.1:9/t", "--runner=FlinkRunner",
             "--producers", "0", "--output", "o"],
            "--producers must be 1 or more",
        ),
        (["produce", "access", "--input", "x.csv", "--to", "kafka://h/t"], "give kafka://HOST:PORT/TOPIC"),
        (
            ["produce", "access", "--input", "x.csv", "--to", "kafka://h:1/t",
             "--serve", "127.0.0.1:0"],
            "not both",
        ),
        (
            ["produce", "access", "--input", "x.csv", "--to", "kafka://h:1/t", "--partitions", "0"],
            "--partitions must be a positive number",
        ),
        (["produce", "access", "--input", "x.csv"], "--serve HOST:PORT or --to kafka://"),
        (
            ["monitor", "--streaming", "--source", "kafka://127.0.0.1:9/t", "--runner=FlinkRunner",
             "--producers", "2", "--savepoint_path", "/tmp/chk-1", "--output", "o"],
            "--savepoint_path with --producers above 1",
        ),
        (
            ["monitor", "--streaming", "--source", "kafka://127.0.0.1:9/t", "--runner=FlinkRunner",
             "--output", "gs://bucket/out"],
            "give a local --output folder",
        ),
    ],
)  # fmt: skip
def test_bad_kafka_command_lines_are_one_line_and_exit_2(argv, fragment, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "beam_tally", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr
    assert fragment in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr


def test_once_names_are_content_addressed_and_read_as_live_parts():
    name = once_name("stats.jsonl", '{"hits": 3}')
    assert name == once_name("stats.jsonl", '{"hits": 3}') != once_name("stats.jsonl", "{}")
    assert is_live_part(name, "stats.jsonl")
    assert not is_live_part(name, "alerts.jsonl")


def test_a_replayed_result_is_neither_written_nor_emitted_twice(tmp_path):
    directory = str(tmp_path)
    with TestPipeline() as p:
        written = {"out.jsonl": p | beam.Create(["a", "b", "a"])} | WriteJsonLinesOnce(directory)
        assert_that(written["out.jsonl"], equal_to(["a", "b"]), label="first")
    files = sorted(os.listdir(directory))
    assert len(files) == 2 and all(f.startswith("out-once-") for f in files)
    with TestPipeline() as p:  # the replay after a restore: the same lines again, and one new
        written = {"out.jsonl": p | beam.Create(["b", "a", "c"])} | WriteJsonLinesOnce(directory)
        assert_that(written["out.jsonl"], equal_to(["c"]), label="replay")
    lines = sorted(
        (tmp_path / f).read_text() for f in os.listdir(directory) if f.endswith(".jsonl")
    )
    assert lines == ["a\n", "b\n", "c\n"]
    assert not [f for f in os.listdir(directory) if f.endswith(".tmp")]


def test_the_end_marker_is_written_even_when_an_input_is_empty(tmp_path):
    """Its timing (after every written output) is the engine tests' (tests/test_kafka.py)."""
    marker = str(tmp_path / ".stream-ended")
    with TestPipeline() as p:
        empty = p | "Empty" >> beam.Create([])
        some = p | "Some" >> beam.Create(["x", "y"])
        (empty, some) | MarkDrained(marker)
    assert os.path.exists(marker)
