"""The tally command end to end on generated files, against an independent count."""

from __future__ import annotations

import glob
import gzip
import json
import os
import subprocess
import sys
from collections import Counter

import orjson
import pytest

from beam_tally.cli import main
from beam_tally.generate.tally import generate_tally
from tests.conftest import independent_tally

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THREADS = ["--direct_num_workers=2", "--direct_running_mode=multi_threading"]


def read_lines(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """Generated files with bad records, unicode emails, an empty file, plus hand-made cases."""
    data = tmp_path_factory.mktemp("logs")
    generate_tally(
        str(data),
        files=6,
        logs_per_file=300,
        emails=40,
        bad_fraction=0.03,
        bad_files=4,
        empty_files=1,
        seed=11,
    )
    with open(data / "logs_90.json", "wb") as handle:
        handle.write(
            orjson.dumps(
                {
                    "logs": [
                        {"id": "c1", "email": "evil\x1b[2J@x.com", "message": "m"},
                        {"id": "c2", "email": "zoë.müller@exämple.de", "message": "m"},
                        {"id": "c3", "email": "李.伟@例子.中国", "message": "m"},
                    ]
                }
            )
        )
    with open(data / "logs_91.json", "wb") as handle:
        handle.write(b'{"logs": []}')
    with open(data / "logs_92.json.gz", "wb") as handle:
        handle.write(gzip.compress(orjson.dumps({"logs": [{"email": "gz@x.com"}]})))
    with open(data / "logs_93.json.gz", "wb") as handle:
        handle.write(b"this is not gzip data")
    return str(data)


@pytest.fixture(scope="module")
def run_result(sample, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("out"))
    pattern = os.path.join(sample, "logs_*.json*")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "beam_tally",
            "tally",
            "--input",
            pattern,
            "--output",
            out,
            "--print_limit",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return pattern, out, result


def test_exit_status_and_clean_stderr(run_result):
    _, out, result = run_result
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    # Exactly the contract's files: the sink's temporary parts are gone.
    assert sorted(os.listdir(out)) == [
        "dead_letters.jsonl",
        "global_tally.jsonl",
        "global_tally_final.json",
        "report.html",
        "tallies.jsonl",
    ]


def test_every_file_tally_equals_an_independent_count(run_result):
    pattern, out, _ = run_result
    expected, _ = independent_tally(pattern)
    tallies = read_lines(os.path.join(out, "tallies.jsonl"))
    assert sorted(t["source"] for t in tallies) == sorted(expected)
    for line in tallies:
        entries = line["tally"]
        assert {e["email"]: e["total"] for e in entries} == dict(expected[line["source"]])
        assert entries == sorted(entries, key=lambda e: (-e["total"], e["email"]))
        assert set(line) == {"tally", "source"}


def test_global_tally_equals_an_independent_count(run_result):
    pattern, out, _ = run_result
    expected, _ = independent_tally(pattern)
    total = Counter()
    for counts in expected.values():
        total.update(counts)
    final = read_lines(os.path.join(out, "global_tally_final.json"))
    assert len(final) == 1
    assert {e["email"]: e["total"] for e in final[0]["global_tally"]} == dict(total)
    assert final[0]["files"] == len(expected)
    updates = read_lines(os.path.join(out, "global_tally.jsonl"))
    assert max(updates, key=lambda u: u["files"]) == final[0]


def test_each_global_update_is_the_sum_of_the_messages_before_it(run_result):
    _, out, _ = run_result
    per_file = {
        t["source"]: Counter({e["email"]: e["total"] for e in t["tally"]})
        for t in read_lines(os.path.join(out, "tallies.jsonl"))
    }
    updates = sorted(read_lines(os.path.join(out, "global_tally.jsonl")), key=lambda u: u["files"])
    assert [u["files"] for u in updates] == list(range(1, len(per_file) + 1))
    assert sorted(u["after"] for u in updates) == sorted(per_file)
    running = Counter()
    for update in updates:
        running.update(per_file[update["after"]])
        assert {e["email"]: e["total"] for e in update["global_tally"]} == dict(+running)


def test_one_dead_letter_per_bad_record(run_result):
    pattern, out, result = run_result
    _, bad = independent_tally(pattern)
    dead = read_lines(os.path.join(out, "dead_letters.jsonl"))
    assert len(dead) == bad
    assert all(set(d) == {"source", "where", "reason", "raw"} for d in dead)
    assert {d["source"] for d in dead} <= set(glob.glob(pattern))
    reasons = Counter(d["reason"].split(":")[0] for d in dead)
    for code in (
        "malformed JSON",
        "undecodable bytes",
        "no 'logs' list",
        "log is not an object",
        "missing email",
        "email is not a string",
        "damaged file",  # logs_93.json.gz, which is not gzip data
    ):
        assert reasons[code] >= 1, code
    assert f"{bad:,} dead letters" in result.stdout


def test_console_shows_updates_escaped_and_a_summary(run_result):
    pattern, _, result = run_result
    expected, _ = independent_tally(pattern)
    assert "\x1b" not in result.stdout
    assert "evil\\x1b[2J@x.com" in result.stdout
    assert result.stdout.count("global tally after ") == len(expected)
    assert "... and " in result.stdout
    logs = sum(sum(c.values()) for c in expected.values())
    emails = len(set().union(*expected.values()))
    assert f"summary: {len(expected):,} files, {logs:,} logs, {emails:,} distinct emails" in (
        result.stdout
    )


def test_in_process_run_matches_and_is_repeatable(sample, tmp_path, capsys):
    pattern = os.path.join(sample, "logs_0*.json")
    out = str(tmp_path / "again")
    assert main(["tally", "--input", pattern, "--output", out, "--print_limit", "0"]) == 0
    expected, _ = independent_tally(pattern)
    total = Counter()
    for counts in expected.values():
        total.update(counts)
    final = read_lines(os.path.join(out, "global_tally_final.json"))[0]
    assert {e["email"]: e["total"] for e in final["global_tally"]} == dict(total)
    assert "summary:" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["tally", "--output", "o"], "--input is required"),
        (["tally", "--input", "x*.json"], "--output is required"),
        (["tally", "--input", "/nonexistent/*.json", "--output", "o"], "matches no file"),
        (["tally", "--input", "a", "--output", "o", "--bogus", "1"], "unknown option --bogus"),
        (["tally", "--input", "a", "b.json", "--output", "o"], "quote the --input glob"),
        (["tally", "--input", "a", "--output", "o", "--print_limit", "x"], "invalid int"),
        (
            ["tally", "--input", "a", "--output", "o", *THREADS],
            "use --direct_running_mode=multi_processing",
        ),
        (["frobnicate"], "unknown command"),
        (["generate", "tally"], "--out"),
        (["generate", "tally", "--out", "o", "--bad_fraction", "2"], "between 0 and 1"),
    ],
)
def test_bad_command_lines_are_one_line_and_exit_2(argv, fragment, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "beam_tally", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert fragment in lines[0]
    assert "Traceback" not in result.stderr


def test_generator_is_deterministic(tmp_path):
    for name in ("a", "b"):
        generate_tally(
            str(tmp_path / name), files=2, logs_per_file=50, emails=5, bad_fraction=0.1, seed=4
        )
    for path in sorted(glob.glob(str(tmp_path / "a" / "*.json"))):
        other = path.replace(f"{os.sep}a{os.sep}", f"{os.sep}b{os.sep}")
        with open(path, "rb") as left, open(other, "rb") as right:
            assert left.read() == right.read()


def test_generator_counts_what_it_wrote(tmp_path):
    written = generate_tally(
        str(tmp_path),
        files=3,
        logs_per_file=200,
        emails=9,
        bad_fraction=0.05,
        bad_files=4,
        empty_files=2,
        seed=9,
    )
    per_file, bad = independent_tally(str(tmp_path / "*.json"))
    assert written["files"] == len(per_file) == 9
    assert written["logs"] == sum(sum(c.values()) for c in per_file.values())
    assert written["bad_logs"] + written["bad_files"] == bad
    assert written["bad_logs"] > 0


@pytest.mark.parametrize("argv", [["--help"], ["tally", "--help"], ["generate", "tally", "-h"]])
def test_help_goes_to_stdout_with_exit_0(argv, capsys):
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "usage: beam-tally" in captured.out
    assert captured.err == ""


def test_unusual_file_names_and_contents_never_crash_the_run(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "logs_bom.json").write_bytes(
        b"\xef\xbb\xbf" + orjson.dumps({"logs": [{"email": "a@x"}]})
    )
    deep = "[" * 300 + "]" * 300
    (data / "logs_deep.json").write_text(f'{{"logs": [{{"email": "a@x", "message": {deep}}}]}}')
    (data / "logs_surrogate.json").write_bytes(
        b'{"logs": [{"email": "b\\udc80@x"}, {"email": "a@x"}]}'
    )
    with open(os.fsencode(str(data)) + b"/logs_\xff.json", "wb") as handle:
        handle.write(b'{"logs": [{"email": "never@x"}]}')
    out = tmp_path / "out"
    pattern = str(data / "logs_*.json")
    assert main(["tally", "--input", pattern, "--output", str(out), "--print_limit", "0"]) == 0
    final = read_lines(str(out / "global_tally_final.json"))[0]
    assert final["global_tally"] == [{"email": "a@x", "total": 3}]
    assert final["files"] == 3
    reasons = sorted(d["reason"] for d in read_lines(str(out / "dead_letters.jsonl")))
    assert reasons == [
        "email is not a string: not valid Unicode (a lone surrogate)",
        "unreadable file: file name is not valid Unicode",
    ]
    assert "2 dead letters" in capsys.readouterr().out
