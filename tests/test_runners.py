"""Both jobs' batch graphs on the portable path (PortableRunner with the embedded job service,
the route Flink and Spark job servers take) and on two DirectRunner worker processes: their
outputs must equal the default run's."""

from __future__ import annotations

import os
import shutil

import pytest

from beam_tally.cli import main
from beam_tally.generate.access import generate_access
from beam_tally.generate.tally import generate_tally

PORTABLE = ["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=LOOPBACK"]
MULTI = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
# Files whose lines are deterministic (global_tally.jsonl's order and `after` depend on arrival).
COMPARED = {
    "tally": ["tallies.jsonl", "dead_letters.jsonl", "global_tally_final.json"],
    "monitor": ["stats.jsonl", "alerts.jsonl", "dead_letters.jsonl"],
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    data = tmp_path_factory.mktemp("runner_inputs")
    generate_tally(
        str(data / "logs"),
        files=4,
        logs_per_file=200,
        emails=12,
        bad_fraction=0.05,
        bad_files=2,
        seed=5,
    )
    generate_access(
        str(data / "access.csv"),
        fmt="csv",
        seconds=400,
        rate=3,
        bursts=[(100, 120, 20)],
        disorder=15,
        bad_fraction=0.02,
        seed=5,
    )
    return {
        "tally": str(data / "logs" / "*.json"),
        "monitor": str(data / "access.csv"),
    }


def outputs(job: str, out: str) -> dict[str, list[str]]:
    result = {}
    for name in COMPARED[job]:
        with open(os.path.join(out, name), encoding="utf-8") as handle:
            lines = handle.read().splitlines()
        if name == "global_tally_final.json":  # `after` names the last file to arrive
            lines = [line.split(',"after"')[0] for line in lines]
        result[name] = sorted(lines)
    return result


def run_job(job: str, pattern: str, out: str, extra: list[str]) -> dict[str, list[str]]:
    argv = [job, "--input", pattern, "--output", out, *extra]
    if job == "tally":
        argv += ["--print_limit", "0"]
    assert main(argv) == 0
    return outputs(job, out)


@pytest.mark.parametrize("job", ["tally", "monitor"])
@pytest.mark.parametrize("runner", ["portable", "multi_processing"])
def test_runner_gives_the_default_results(job, runner, inputs, tmp_path, capsys):
    default = run_job(job, inputs[job], str(tmp_path / "default"), [])
    other = run_job(
        job, inputs[job], str(tmp_path / runner), PORTABLE if runner == "portable" else MULTI
    )
    assert other == default
    assert any(default.values())  # the comparison is not between empty outputs
    capsys.readouterr()


def test_choose_workers_spreads_only_what_another_worker_can_take():
    from beam_tally.runtime import SPREAD_BYTES, choose_workers

    big = SPREAD_BYTES
    assert choose_workers([10, 20], cpus=2) == 1  # small input: today's start-up
    assert choose_workers([100 * big], cpus=2) == 1  # one file is read by one worker
    assert choose_workers([100 * big, big - 1], cpus=2) == 1  # too little beside the largest
    assert choose_workers([100 * big, big], cpus=2) == 2
    assert choose_workers([big] * 3, cpus=1) == 1  # one core
    assert choose_workers([big] * 3, cpus=8) == 3  # at most a worker per file
    assert choose_workers([big] * 10, cpus=4) == 4
    # A job that reads a large file in ranges (the monitor) can share one file.
    split = 64
    assert choose_workers([4 * split], cpus=2, split_bytes=split, spread_bytes=split) == 2
    assert choose_workers([split], cpus=2, split_bytes=split, spread_bytes=split) == 1
    assert choose_workers([split + 1], cpus=2, split_bytes=split, spread_bytes=split) == 1
    assert choose_workers([4 * split], cpus=2, split_bytes=None, spread_bytes=split) == 1
    # a compressed or remote file is read whole, however large
    assert choose_workers([4 * split], 2, split, split, splittable=[False]) == 1
    assert choose_workers([4 * split, 4 * split], 2, split, split, splittable=[False, True]) == 2


@pytest.mark.parametrize("job", ["tally", "monitor"])
def test_a_large_input_runs_on_every_core_with_the_one_worker_results(
    job, inputs, tmp_path, capsys, monkeypatch
):
    """With the threshold lowered, the generated input counts as large: the run says it
    uses two worker processes, and its outputs equal those of one worker."""
    from beam_tally import runtime
    from beam_tally.jobs import monitor

    monkeypatch.setattr(runtime, "SPREAD_BYTES", 1)
    monkeypatch.setattr(monitor, "MONITOR_SPREAD_BYTES", 1)
    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: {0, 1})
    pattern = inputs[job]
    if job == "monitor":  # two files, so that a second worker has one to read
        second = tmp_path / "second.csv"
        generate_access(str(second), fmt="csv", seconds=300, rate=3, seed=6)
        pattern = str(tmp_path / "*.csv")
        shutil.copy(inputs["monitor"], tmp_path / "first.csv")
    one = run_job(job, pattern, str(tmp_path / "one"), ["--direct_num_workers=1"])
    assert "worker processes" not in capsys.readouterr().err
    auto = run_job(job, pattern, str(tmp_path / "auto"), [])
    assert "using 2 worker processes" in capsys.readouterr().err
    assert auto == one and any(one.values())
