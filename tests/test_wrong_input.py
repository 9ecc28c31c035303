"""Wrong input caught, end to end through the CLI: a run where no file has a valid record exits 1
with one line saying what the input is and which job or --format reads it; a file whose every
record is bad is named in the summary; bad and empty tally files are told apart on the console;
--input may be a folder in every command."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import orjson
import pytest

from beam_tally.generate.access import generate_access
from beam_tally.generate.tally import generate_tally
from tests.access_oracle import read_requests, window_stats
from tests.conftest import independent_tally


def cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "beam_tally", *argv],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    data = tmp_path_factory.mktemp("wrong")
    generate_tally(str(data / "logs"), files=2, logs_per_file=50, emails=5, seed=3)
    csv, clf = str(data / "access.csv"), str(data / "access.log")
    generate_access(csv, fmt="csv", seconds=60, rate=3, bad_fraction=0.05, seed=1)
    generate_access(clf, fmt="clf", seconds=60, rate=3, seed=2)
    tally_json = str(data / "access.json")  # a tally document under an access-log name
    with open(os.path.join(data, "logs", "logs_00.json"), "rb") as src, open(tally_json, "wb") as d:
        d.write(src.read())
    return {"data": data, "csv": csv, "clf": clf, "json": tally_json}


@pytest.mark.parametrize(
    ("job", "name", "extra", "message"),
    [
        (
            "monitor",
            "json",
            (),
            "no line of access.json is an access log; it is JSON with a 'logs' list, which "
            "'beam-tally tally' reads",
        ),
        (
            "tally",
            "csv",
            (),
            "no log of access.csv is a valid log; it is an access log in CSV, which "
            "'beam-tally monitor' reads",
        ),
        (
            "monitor",
            "csv",
            ("--format", "clf"),
            "no line of access.csv is an access log in CLF; it is an access log in CSV, which "
            "--format csv (or auto) reads",
        ),
        (
            "monitor",
            "clf",
            ("--format", "csv"),
            "no line of access.log is an access log in CSV; it is an access log in Common Log "
            "Format, which --format clf (or auto) reads",
        ),
    ],
    ids=["monitor-on-tally-json", "tally-on-csv", "clf-on-csv", "csv-on-clf"],
)
def test_input_no_job_step_can_use_exits_1_with_one_line_that_says_what_reads_it(
    inputs, tmp_path, job, name, extra, message
):
    path = inputs[name]
    result = cli(job, "--input", path, "--output", str(tmp_path / "out"), *extra)
    assert result.returncode == 1, result
    assert result.stderr.strip().splitlines() == [f"beam-tally {job}: {message}"]
    # The summary still comes, and names the file whose every record is bad.
    with open(tmp_path / "out" / "dead_letters.jsonl", encoding="utf-8") as handle:
        dead = sum(1 for line in handle if line.strip())
    assert dead > 0
    word = "dead letter" if dead == 1 else "dead letters"
    assert f"every record bad in 1 file: {path} ({dead:,} {word})" in result.stdout


def test_the_right_input_with_one_bad_file_exits_0_and_names_the_bad_file(inputs, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in ("csv", "json"):
        with open(inputs[name], "rb") as src:
            (folder / os.path.basename(inputs[name])).write_bytes(src.read())
    (folder / "empty.log").write_bytes(b"")  # empty is not bad: no record at all
    result = cli("monitor", "--input", str(folder), "--output", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    with open(inputs["json"], "rb") as handle:
        bad_lines = sum(1 for line in handle if line.strip())
    assert f"every record bad in 1 file: {folder / 'access.json'} ({bad_lines:,} dead letters)" in (
        result.stdout
    )
    assert "empty.log" not in result.stdout


def test_a_folder_is_its_files_in_both_batch_jobs(inputs, tmp_path):
    logs = inputs["data"] / "logs"
    result = cli("tally", "--input", str(logs), "--output", str(tmp_path / "t"))
    assert result.returncode == 0, result.stderr
    per_file, _ = independent_tally(str(logs / "*"))
    with open(tmp_path / "t" / "tallies.jsonl", encoding="utf-8") as handle:
        tallies = {row["source"]: row["tally"] for row in map(json.loads, handle)}
    assert {s: {e["email"]: e["total"] for e in t} for s, t in tallies.items()} == {
        s: dict(c) for s, c in per_file.items()
    }
    folder = tmp_path / "access"
    folder.mkdir()
    for name in ("csv", "clf"):
        with open(inputs[name], "rb") as src:
            (folder / os.path.basename(inputs[name])).write_bytes(src.read())
    result = cli("monitor", "--input", f"{folder}/", "--output", str(tmp_path / "m"))
    assert result.returncode == 0, result.stderr
    good = (
        read_requests(str(folder / "access.csv"))[0] + read_requests(str(folder / "access.log"))[0]
    )
    with open(tmp_path / "m" / "stats.jsonl", encoding="utf-8") as handle:
        stats = {row["start"]: row for row in map(json.loads, handle)}
    assert stats == window_stats(good)


def test_bad_and_empty_tally_files_are_told_apart_on_the_console(tmp_path):
    data = tmp_path / "logs"
    data.mkdir()
    (data / "logs_good.json").write_bytes(orjson.dumps({"logs": [{"email": "a@x"}] * 2}))
    (data / "logs_empty_list.json").write_bytes(b'{"logs": []}')
    (data / "logs_zero_bytes.json").write_bytes(b"")
    (data / "logs_malformed.json").write_bytes(b'{"logs": [')
    (data / "logs_all_bad.json").write_bytes(b'{"logs": [{"email": 1}, {"id": "2"}]}')
    (data / "logs_some_bad.json").write_bytes(b'{"logs": [{"email": "a@x"}, "x"]}')
    result = cli("tally", "--input", str(data), "--output", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    heads = {
        os.path.basename(line.split(": ", 1)[1].split(" (")[0]): line.split(" (", 1)[1]
        for line in result.stdout.splitlines()
        if line.startswith("tally message ")
    }
    assert heads == {
        "logs_good.json": "2 logs, 1 email)",
        "logs_empty_list.json": "no logs: the 'logs' list is empty)",
        "logs_zero_bytes.json": "no logs: empty file)",
        "logs_malformed.json": "no logs: bad file: malformed JSON)",
        "logs_all_bad.json": "no logs: every log bad: email is not a string 1, missing email 1)",
        "logs_some_bad.json": "1 log, 1 email; 1 bad log: log is not an object 1)",
    }
    # The summary names the files without a valid log that gave dead letters.
    (line,) = [s for s in result.stdout.splitlines() if s.startswith("every record bad in ")]
    assert line == (
        f"every record bad in 3 files: {data / 'logs_all_bad.json'} (2 dead letters), "
        f"{data / 'logs_malformed.json'} (1 dead letter), "
        f"{data / 'logs_zero_bytes.json'} (1 dead letter)"
    )
