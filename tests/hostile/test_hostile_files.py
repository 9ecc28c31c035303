"""Reproductions of issue 11 about files: special files and broken names under the glob, damaged
and oversized compressed files, the producer reading compressed files as the batch jobs do, and
names that would reach the terminal raw."""

from __future__ import annotations

import bz2
import gzip
import json
import os
import socket
import subprocess
import sys
import tracemalloc
import zlib

import pytest

from beam_tally.cli import main

HEADER = '"remotehost","rfc931","authuser","date","request","status","bytes"\n'
START = 1549573860


def lines_csv(n: int) -> str:
    return HEADER + "".join(
        f'"10.0.0.{i % 7}","-","u{i % 3}",{START + i // 4},"GET /s{i % 5}/x HTTP/1.0",200,{i}\n'
        for i in range(n)
    )


def read_jsonl(path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def run_cli(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    process = subprocess.Popen(
        [sys.executable, "-m", "beam_tally", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def special_files(folder) -> dict[str, str]:
    """Makes one name of each kind that is not a regular file; returns name -> reason's words."""
    os.mkfifo(folder / "fifo.csv")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(folder / "sock.csv"))
    server.close()
    os.symlink(folder / "nowhere", folder / "dangling.csv")
    os.symlink(folder / "loop.csv", folder / "loop.csv")
    (folder / "folder.csv").mkdir()
    os.symlink("/dev/null", folder / "device.csv")
    return {
        "fifo.csv": "FIFO",
        "sock.csv": "socket",
        "dangling.csv": "dangling symbolic link",
        "loop.csv": "loop of symbolic links",
        "folder.csv": "a folder",
        "device.csv": "device",
    }


def test_special_files_under_the_glob_are_dead_letters_and_never_block(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "good.csv").write_text(lines_csv(40))
    expected = special_files(data)
    out = tmp_path / "out"
    result = run_cli("monitor", "--input", str(data / "*.csv"), "--output", str(out), timeout=90)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    dead = read_jsonl(out / "dead_letters.jsonl")
    by_name = {os.path.basename(d["source"]): d for d in dead}
    assert set(by_name) == set(expected)
    for name, words in expected.items():
        assert words in by_name[name]["reason"], by_name[name]
        assert by_name[name]["where"] is None
    assert sum(s["hits"] for s in read_jsonl(out / "stats.jsonl")) == 40
    tally_out = tmp_path / "tally"
    result = run_cli("tally", "--input", str(data / "*.csv"), "--output", str(tally_out))
    # No valid log in any file: exit 1, with the one readable file told as what it is.
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines() == [
        "beam-tally tally: no log of good.csv (nor of the 6 other files) is a valid log; it is "
        "an access log in CSV, which 'beam-tally monitor' reads"
    ]
    tally_dead = read_jsonl(tally_out / "dead_letters.jsonl")
    assert {os.path.basename(d["source"]) for d in tally_dead} >= set(expected)


def test_an_unlistable_folder_under_the_glob_is_a_dead_letter(tmp_path, monkeypatch):
    from beam_tally.io.sources import match_input

    (tmp_path / "open").mkdir()
    (tmp_path / "open" / "a.log").write_text("x\n")
    (tmp_path / "locked").mkdir()
    real_scandir = os.scandir

    def scandir(path="."):
        if os.path.basename(os.fspath(path)) == "locked":
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    files, problems = match_input(str(tmp_path / "*" / "*.log"))
    assert files == [str(tmp_path / "open" / "a.log")]
    assert problems == [
        (str(tmp_path / "locked"), "unreadable file: cannot list the folder: Permission denied")
    ]


def complete_prefix(decompressor, data: bytes) -> bytes:
    """What the standard library decompresses of a damaged archive, up to its last line end."""
    try:
        content = decompressor.decompress(data)
    except (OSError, EOFError, ValueError, zlib.error):  # pragma: no cover - not for a cut
        content = b""
    return content[: content.rfind(b"\n") + 1]


@pytest.mark.parametrize("suffix", [".gz", ".bz2", ".zst"])
def test_a_truncated_archive_keeps_its_lines_and_is_one_file_dead_letter(tmp_path, capsys, suffix):
    import zstandard

    content = lines_csv(30_000).encode()  # bzip2 blocks are 900 kB: several blocks
    packed = {
        ".gz": lambda: gzip.compress(content),
        ".bz2": lambda: bz2.compress(content, 1),
        ".zst": lambda: zstandard.ZstdCompressor().compress(content),
    }[suffix]()
    cut = packed[: len(packed) * 2 // 3]
    path = tmp_path / f"cut.csv{suffix}"
    path.write_bytes(cut)
    decompressor = {
        ".gz": lambda: zlib.decompressobj(31),
        ".bz2": bz2.BZ2Decompressor,
        ".zst": lambda: zstandard.ZstdDecompressor().decompressobj(),
    }[suffix]()
    prefix = complete_prefix(decompressor, cut)
    requests = prefix.count(b"\n") - 1  # less the header
    assert 0 < requests < 30_000
    out = tmp_path / "out"
    assert main(["monitor", "--input", str(path), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    [dead] = read_jsonl(out / "dead_letters.jsonl")
    assert dead["where"] is None and dead["reason"].startswith("damaged file: ")
    assert sum(s["hits"] for s in read_jsonl(out / "stats.jsonl")) == requests
    assert f"{requests:,} requests" in printed and "1 dead letter (damaged file 1)" in printed


def test_the_summary_does_not_claim_the_end_of_an_input_it_did_not_read():
    from beam_tally.console import format_monitor_summary

    counters = {"alerts": 1, "recoveries": 0, "dead_letters": 1}
    damaged = format_monitor_summary(counters, {"damaged file": 1}, 1.0, "out")
    assert "alert still active at the end of what was read (1 file not read to the end)" in damaged
    assert "at the end of the input" not in damaged
    whole = format_monitor_summary(counters, {"bad status": 1}, 1.0, "out")
    assert "alert still active at the end of the input" in whole


def test_a_corrupt_gzip_tally_document_is_a_damaged_file(tmp_path, capsys):
    good = gzip.compress(b'{"logs": [{"email": "a@x"}]}')
    (tmp_path / "cut.json.gz").write_bytes(good[:-6])  # its trailer cut off
    (tmp_path / "ok.json.gz").write_bytes(good + gzip.compress(b""))  # two members
    out = tmp_path / "out"
    assert main(["tally", "--input", str(tmp_path / "*.gz"), "--output", str(out)]) == 0
    [dead] = read_jsonl(out / "dead_letters.jsonl")
    assert (os.path.basename(dead["source"]), dead["where"]) == ("cut.json.gz", None)
    assert dead["reason"].startswith("damaged file")
    [tally] = read_jsonl(out / "tallies.jsonl")
    assert tally["tally"] == [{"email": "a@x", "total": 1}]
    capsys.readouterr()


def test_max_file_bytes_makes_a_bomb_a_dead_letter_with_bounded_memory(tmp_path, capsys):
    from beam_tally.io.sources import PIECE, FileProblem, read_pieces

    line = b'"10.0.0.1","-","u",1549573860,"GET /a HTTP/1.0",200,1\n'
    bomb = gzip.compress(HEADER.encode() + line * 4_000_000, 9)  # ~220 MB from ~0.6 MB
    path = tmp_path / "bomb.csv.gz"
    path.write_bytes(bomb)
    tracemalloc.start()
    total = 0
    try:
        with pytest.raises(FileProblem, match="file too large: over 100,000,000 bytes"):
            for piece in read_pieces(str(path), 100_000_000):
                assert len(piece) <= PIECE
                total += len(piece)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert 100_000_000 - PIECE <= total <= 100_000_000
    assert peak < 4 * PIECE + (8 << 20)  # a few pieces, never the file
    out = tmp_path / "out"
    argv = ["monitor", "--input", str(path), "--output", str(out), "--max_file_bytes", "5000"]
    assert main(argv) == 0
    [dead] = read_jsonl(out / "dead_letters.jsonl")
    assert dead["where"] is None and dead["reason"].startswith("file too large")
    hits = sum(s["hits"] for s in read_jsonl(out / "stats.jsonl"))
    assert hits == (5000 - len(HEADER)) // len(line)  # the whole lines within the limit
    capsys.readouterr()


def test_max_file_bytes_must_be_positive(tmp_path, capsys):
    (tmp_path / "a.csv").write_text(lines_csv(2))
    argv = ["monitor", "--input", str(tmp_path / "a.csv"), "--output", str(tmp_path / "o")]
    assert main([*argv, "--max_file_bytes", "0"]) == 2
    assert "--max_file_bytes must be a positive" in capsys.readouterr().err


def test_the_producer_reads_compressed_files_as_the_batch_jobs_do(tmp_path):
    from beam_tally.live.produce import access_poll

    content = lines_csv(500).encode()
    (tmp_path / "a.csv.gz").write_bytes(gzip.compress(content))
    (tmp_path / "b.csv.bz2").write_bytes(bz2.compress(content))
    expected = content.decode().splitlines()
    for follow in (False, True):
        for name in ("a.csv.gz", "b.csv.bz2"):
            poll = access_poll(str(tmp_path / name), "auto", follow=follow)
            texts = []
            for _ in range(200):
                updates = poll()
                texts += [line.text for update in updates for _, line in update.items]
                if len(texts) >= len(expected) or (updates and all(u.done for u in updates)):
                    break
            assert texts == expected, (name, follow)


def test_the_producer_reports_a_truncated_archive_once(tmp_path):
    from beam_tally.live.produce import access_poll
    from transforms.records import STREAM_ERROR

    content = lines_csv(2000).encode()
    packed = gzip.compress(content)
    (tmp_path / "cut.csv.gz").write_bytes(packed[: len(packed) // 2])
    prefix = complete_prefix(zlib.decompressobj(31), packed[: len(packed) // 2])
    items = []
    poll = access_poll(str(tmp_path / "cut.csv.gz"), "auto", follow=False)
    for _ in range(100):
        updates = poll()
        items += [line for update in updates for _, line in update.items]
        if updates and all(u.done for u in updates):
            break
    errors = [line for line in items if line.fmt == STREAM_ERROR]
    assert [(e.line, e.text.split(":")[0]) for e in errors] == [(0, "damaged file")]
    assert [line.text for line in items if line.fmt != STREAM_ERROR] == (
        prefix.decode().splitlines()
    )


def test_the_producer_serves_special_files_as_dead_letters(tmp_path):
    from beam_tally.live.produce import access_poll, tally_poll
    from tests.test_replay import FakeClock
    from transforms.records import STREAM_ERROR, STREAM_ERROR_PREFIX

    expected = special_files(tmp_path)
    (tmp_path / "good.csv").write_text(lines_csv(3))
    updates = access_poll(str(tmp_path / "*.csv"), "auto", follow=False)()
    errors = {
        os.path.basename(line.source): line.text
        for update in updates
        for _, line in update.items
        if line.fmt == STREAM_ERROR
    }
    assert set(errors) == set(expected)
    [update] = tally_poll(str(tmp_path / "*.csv"), follow=False, clock=FakeClock())()
    reasons = {
        os.path.basename(doc.source)
        for _, doc in update.items
        if doc.content.startswith(STREAM_ERROR_PREFIX)
    }
    assert reasons == set(expected)


HOSTILE_NAME = "evil\x1b]0;owned\x07\x1b[2J\x9b31m\u202ename.csv"


def test_the_producer_escapes_a_followed_file_name(tmp_path, capsys):
    from beam_tally.live.produce import access_poll

    path = tmp_path / HOSTILE_NAME
    path.write_text(lines_csv(20))
    poll = access_poll(str(tmp_path / "*.csv"), "csv", follow=True)
    poll()
    path.write_text(lines_csv(1))  # truncated: the producer says so, with the name
    for _ in range(3):
        poll()
    printed = capsys.readouterr().out
    assert "was truncated" in printed
    for char in ("\x1b", "\x07", "\x9b", "\u202e"):
        assert char not in printed
    assert "\\x1b]0;owned\\x07\\x1b[2J\\x9b31m\\u202ename.csv was truncated" in printed


def test_errors_and_summaries_escape_names(tmp_path, capsys):
    missing = str(tmp_path / HOSTILE_NAME)
    assert main(["monitor", "--input", missing, "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "matches no file" in err and "\x1b" not in err and "\u202e" not in err
    (tmp_path / "a.csv").write_text(lines_csv(3))
    out = str(tmp_path / ("out" + HOSTILE_NAME))
    assert main(["monitor", "--input", str(tmp_path / "a.csv"), "--output", out]) == 0
    printed = capsys.readouterr().out
    assert "outputs: " in printed and "\x1b" not in printed and "\u202e" not in printed


def test_escape_control_covers_c0_c1_del_bidi_and_surrogates():
    from beam_tally.terminal import escape_control

    for code in [*range(0x20), *range(0x7F, 0xA0), 0x202E, 0x2066, 0x200F, 0xDC80]:
        shown = escape_control(f"a{chr(code)}b")
        assert shown.isprintable() and shown.isascii(), hex(code)
    assert escape_control("plain text, tab-free é") == "plain text, tab-free é"
