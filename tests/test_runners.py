"""Both jobs' batch graphs on the portable path (PortableRunner with the embedded job service,
the route Flink and Spark job servers take) and on two DirectRunner worker processes: their
outputs must equal the default run's."""

from __future__ import annotations

import os

import pytest

from beam_tally.cli import main
from beam_tally.generate import generate_tally
from beam_tally.generate_access import generate_access

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
