"""The hostile suite: generated cases of every class issue 11 names, run through both jobs and
the producer's reading, each with its expected outcome known by construction.

For every case: the run exits 0 (2 for usage), prints no traceback and no raw control
character, and records in = records counted + dead letters, exactly, per file. Cases are
batched into one run per job (in-process ``beam_tally.cli.main``), so the suite stays quick.
"""

from __future__ import annotations

import bz2
import gzip
import json
import os
import re
import socket
import zlib
from collections import Counter
from dataclasses import dataclass

import pytest

from beam_tally.cli import main

HEADER = '"remotehost","rfc931","authuser","date","request","status","bytes"'
T0 = 1549573860
RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def good_csv(i: int, host: str = "10.0.0.1", user: str = "u") -> str:
    return f'"{host}","-","{user}",{T0 + i % 50},"GET /s{i % 4}/p HTTP/1.0",200,{i}'


def good_clf(i: int) -> str:
    return (
        f'10.0.0.{i % 9} - bob [07/Feb/2019:21:11:{i % 60:02d} +0000] "GET /c/{i} HTTP/1.1" 200 {i}'
    )


@dataclass
class Case:
    """One input file: its bytes (or a maker for a special file) and what it must give."""

    name: str
    cls: str
    good: int = 0  # records counted
    bad: int = 0  # line-level dead letters
    file_level: int = 0  # dead letters with ``where`` null
    data: bytes | None = None
    make: object = None  # callable(path) for files that are not plain bytes


def _cut(packed: bytes, content: bytes, decompressor) -> tuple[bytes, int]:
    """A truncated archive and the number of whole good lines the standard library reads of it."""
    cut = packed[: len(packed) * 2 // 3]
    try:
        prefix = decompressor.decompress(cut)
    except (OSError, EOFError, zlib.error):  # pragma: no cover
        prefix = b""
    return cut, prefix[: prefix.rfind(b"\n") + 1].count(b"\n") - 1  # less the header


def access_cases() -> list[Case]:
    lines = lambda n, **kw: "\n".join([HEADER, *(good_csv(i, **kw) for i in range(n))])  # noqa: E731
    cases = [
        Case("plain.csv", "baseline", good=20, data=(lines(20) + "\n").encode()),
        Case(
            "plain.clf",
            "baseline",
            good=12,
            data="".join(good_clf(i) + "\n" for i in range(12)).encode(),
        ),
        Case(
            "crlf.csv",
            "line endings",
            good=5,
            data=(lines(5) + "\n").replace("\n", "\r\n").encode(),
        ),
        Case(
            "cr_only.csv",
            "line endings",
            good=6,
            data=(lines(6) + "\r").replace("\n", "\r").encode(),
        ),
        Case("no_final_newline.csv", "line endings", good=4, data=lines(4).encode()),
        Case("bom.csv", "encodings", good=3, data=b"\xef\xbb\xbf" + (lines(3) + "\n").encode()),
        Case(
            "latin1_lines.csv",
            "encodings",
            good=3,
            bad=2,
            data=(lines(3) + "\n").encode()
            + good_csv(1, user="jos\xe9").encode("latin-1")
            + b"\n"
            + b"\xff\xfe\x00garbage\n",
        ),
        Case("empty.csv", "truncated writes", data=b""),
        Case("header_only.csv", "truncated writes", data=(HEADER + "\n").encode()),
        Case(
            "cut_mid_line.csv",
            "truncated writes",
            good=3,
            bad=1,
            data=(lines(3) + "\n" + good_csv(9)[:40]).encode(),
        ),
        Case(
            "nul_run.csv",
            "truncated writes",
            good=2,
            bad=1,
            data=(lines(2) + "\n").encode() + b"\x00" * 4096 + b"\n",
        ),
        Case(
            "huge_line.csv",
            "huge lines",
            good=2,
            bad=1,
            data=(lines(2) + "\n" + "A" * 3_000_000 + "\n").encode(),
        ),
        Case(
            "controls.csv",
            "terminal injection",
            good=1,  # bidi marks are text in a field; the console escapes them
            bad=3,
            data="\n".join(
                [
                    HEADER,
                    good_csv(1, host="\x1b]0;owned\x07\x1b[2J"),
                    good_csv(2, user="\x9b31m"),
                    good_csv(3, user="a\x00b"),
                    good_csv(4, host="evil\u202etxt.exe"),
                ]
            ).encode()
            + b"\n",
        ),
        Case(
            "edge_values.csv",
            "edge values",
            good=4,
            bad=6,
            data="\n".join(
                [
                    HEADER,
                    '"h","-","-",0,"GET / HTTP/1.0",200,1',
                    '"h","-","-",253402300799,"GET / HTTP/1.0",200,1',
                    '"h","-","-",253402300800,"GET / HTTP/1.0",200,1',
                    '"h","-","-",-1,"GET / HTTP/1.0",200,1',
                    '"h","-","-",1.5,"GET / HTTP/1.0",200,1',
                    f'"h","-","-",{T0},"GET / HTTP/1.0",200,999999999999999999',
                    f'"h","-","-",{T0},"GET / HTTP/1.0",200,1000000000000000000',
                    f'"h","-","-",{T0},"GET / HTTP/1.0",600,1',
                    f'"h","-","-",{T0},"GET / HTTP/1.0",099,1',
                    f'"h","-","-",{T0},"GET / HTTP/1.0",200,-',
                ]
            ).encode()
            + b"\n",
        ),
        Case(
            "clf_edges.clf",
            "edge values",
            good=2,
            bad=4,
            data="\n".join(
                [
                    good_clf(1),
                    '1.2.3.4 - - [07/Feb/2019:21:11:00 +0059] "GET / HTTP/1.1" 200 1',
                    '1.2.3.4 - - [07/Feb/2019:21:11:00 +0060] "GET / HTTP/1.1" 200 1',
                    '1.2.3.4 - - [07/Feb/2019:21:11:00 +2400] "GET / HTTP/1.1" 200 1',
                    '1.2.3.4 - - [30/Feb/2019:21:11:00 +0000] "GET / HTTP/1.1" 200 1',
                    '1.2.3.4 - - [07/Feb/2019:21:11:00 +0000] "-" 400 0',
                ]
            ).encode()
            + b"\n",
        ),
    ]
    content = (lines(3000) + "\n").encode()
    cut, good = _cut(gzip.compress(content), content, zlib.decompressobj(31))
    cases.append(Case("cut.csv.gz", "damaged archives", good=good, file_level=1, data=cut))
    cut, good = _cut(bz2.compress(content, 1), content, bz2.BZ2Decompressor())
    cases.append(Case("cut.csv.bz2", "damaged archives", good=good, file_level=1, data=cut))
    cases += [
        Case("whole.csv.gz", "damaged archives", good=3000, data=gzip.compress(content)),
        Case("not_gzip.csv.gz", "damaged archives", file_level=1, data=b"this is not gzip\n"),
        Case("zero.csv.gz", "damaged archives", file_level=1, data=b""),
        Case(
            "trailing_garbage.csv.gz",
            "damaged archives",
            good=3000,
            file_level=1,
            data=gzip.compress(content) + b"garbage after the end",
        ),
    ]
    for name in (
        'sp ace "q" \u00e9.csv',
        "new\nline.csv",
        "esc\x1b[31m.csv",
        "br[ck]*?.csv",
        "-dash.csv",
    ):
        cases.append(Case(name, "odd names", good=2, data=(lines(2) + "\n").encode()))
    cases += [
        Case("fifo.csv", "special files", file_level=1, make=os.mkfifo),
        Case("socket.csv", "special files", file_level=1, make=_make_socket),
        Case(
            "dangling.csv", "special files", file_level=1, make=lambda p: os.symlink(p + ".gone", p)
        ),
        Case("loop.csv", "special files", file_level=1, make=lambda p: os.symlink(p, p)),
        Case("folder.csv", "special files", file_level=1, make=os.mkdir),
        Case(
            "device.csv", "special files", file_level=1, make=lambda p: os.symlink("/dev/zero", p)
        ),
    ]
    return cases


def _make_socket(path: str) -> None:
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(path)
    finally:
        sock.close()


def tally_cases() -> list[Case]:
    doc = lambda logs: json.dumps({"logs": logs}).encode()  # noqa: E731
    deep = '{"email": "d@x", "message": ' + "[" * 1100 + "1" + "]" * 1100 + "}"
    return [
        Case("valid.json", "baseline", good=3, data=doc([{"email": "a@x"}] * 3)),
        Case("bom.json", "encodings", good=1, data=b"\xef\xbb\xbf" + doc([{"email": "a@x"}])),
        Case(
            "utf16.json",
            "encodings",
            file_level=1,
            data=doc([{"email": "a@x"}]).decode().encode("utf-16"),
        ),
        Case(
            "bad_logs.json",
            "malformed records",
            good=1,
            bad=4,
            data=doc([{"email": "a@x"}, 3, {"id": 1}, {"email": 5}, [1]]),
        ),
        Case(
            "surrogate.json",
            "encodings",
            good=1,
            bad=1,
            data=b'{"logs": [{"email": "a@x"}, {"email": "\\udc80"}]}',
        ),
        Case("nan.json", "edge values", good=1, data=b'{"logs": [{"email": "a@x", "id": NaN}]}'),
        Case(
            "deep_log.json",
            "deep nesting",
            good=2,
            bad=1,
            data=('{"logs": [{"email": "a@x"}, ' + deep + ', {"email": "b@x"}]}').encode(),
        ),
        Case(
            "deep_meta.json",
            "deep nesting",
            good=1,
            data=b'{"m": ' + b"[" * 1100 + b"]" * 1100 + b', "logs": [{"email": "a@x"}]}',
        ),
        Case("cut.json", "truncated writes", file_level=1, data=doc([{"email": "a@x"}] * 5)[:-7]),
        Case("empty.json", "truncated writes", file_level=1, data=b""),
        Case("no_list.json", "malformed records", file_level=1, data=b'{"logs": {"email": "a@x"}}'),
        Case(
            "cut.json.gz",
            "damaged archives",
            file_level=1,
            data=gzip.compress(doc([{"email": "a@x"}]))[:-5],
        ),
        Case(
            "ok.json.gz",
            "damaged archives",
            good=2,
            data=gzip.compress(doc([{"email": "g@x"}] * 2)),
        ),
        Case("esc\x1b]0;x\x07.json", "odd names", good=1, data=doc([{"email": "\x1b[2Je@x"}])),
        Case("fifo.json", "special files", file_level=1, make=os.mkfifo),
        Case("loop.json", "special files", file_level=1, make=lambda p: os.symlink(p, p)),
    ]


def write_cases(folder, cases: list[Case]) -> None:
    folder.mkdir()
    for case in cases:
        path = os.path.join(folder, case.name)
        if case.make is not None:
            case.make(path)
        else:
            with open(path, "wb") as handle:
                handle.write(case.data)


def read_jsonl(path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def assert_clean(out: str, err: str) -> None:
    assert "Traceback" not in out + err
    assert RAW_CONTROL.search(out) is None, RAW_CONTROL.search(out)


def dead_by_source(dead: list[dict]) -> tuple[Counter, Counter]:
    lines = Counter(os.path.basename(d["source"]) for d in dead if d["where"] is not None)
    files = Counter(os.path.basename(d["source"]) for d in dead if d["where"] is None)
    return lines, files


def test_case_classes_and_count():
    cases = access_cases() + tally_cases()
    classes = {case.cls for case in cases}
    assert len(cases) >= 45 and len(classes) >= 12, (len(cases), sorted(classes))


@pytest.fixture(scope="module")
def monitored(tmp_path_factory):
    cases = access_cases()
    folder = tmp_path_factory.mktemp("hostile") / "access"
    write_cases(folder, cases)
    # A name that is not valid UTF-8: a dead letter under its escaped name.
    with open(os.path.join(os.fsencode(folder), b"bad\xffname.csv"), "wb") as handle:
        handle.write((HEADER + "\n" + good_csv(1) + "\n").encode())
    out = folder.parent / "out"
    return cases, folder, out


def test_monitor_counts_every_record_in_as_a_record_or_a_dead_letter(monitored, capsys):
    cases, folder, out = monitored
    assert main(["monitor", "--input", str(folder / "*"), "--output", str(out)]) == 0
    printed, err = capsys.readouterr()
    assert_clean(printed, err)
    dead = read_jsonl(out / "dead_letters.jsonl")
    lines, files = dead_by_source(dead)
    for case in cases:
        assert (lines[case.name], files[case.name]) == (case.bad, case.file_level), case.name
    assert files["bad\\xffname.csv"] == 1
    hits = sum(s["hits"] for s in read_jsonl(out / "stats.jsonl"))
    assert hits == sum(case.good for case in cases)
    assert f"{hits:,} requests" in printed and f"{len(dead):,} dead letters" in printed


def test_the_producer_reads_every_case_as_the_monitor_does(monitored):
    from beam_tally.live.produce import access_poll
    from transforms import access_log
    from transforms.records import STREAM_ERROR

    cases, folder, _ = monitored
    poll = access_poll(str(folder / "*"), "auto", follow=False)
    items = []
    for _ in range(2000):
        updates = poll()
        items += [line for update in updates for _, line in update.items]
        if all(update.done for update in updates):
            break
    good, bad, file_level = Counter(), Counter(), Counter()
    for line in items:
        name = os.path.basename(line.source)
        if line.fmt == STREAM_ERROR:
            (file_level if line.line == 0 else bad)[name] += 1
            continue
        try:
            record = access_log.parse_line(
                line.text, line.fmt or access_log.format_of_line(line.text)
            )
        except access_log.BadLine:
            bad[name] += 1
        else:
            good[name] += record is not None
    for case in cases:
        expected = (case.good, case.bad, case.file_level)
        assert (good[case.name], bad[case.name], file_level[case.name]) == expected, case.name


def test_tally_counts_every_log_in_as_counted_or_a_dead_letter(tmp_path, capsys):
    cases = tally_cases()
    write_cases(tmp_path / "docs", cases)
    out = tmp_path / "out"
    assert main(["tally", "--input", str(tmp_path / "docs" / "*"), "--output", str(out)]) == 0
    printed, err = capsys.readouterr()
    assert_clean(printed, err)
    lines, files = dead_by_source(read_jsonl(out / "dead_letters.jsonl"))
    counted = Counter()
    for tally in read_jsonl(out / "tallies.jsonl"):
        counted[os.path.basename(tally["source"])] += sum(e["total"] for e in tally["tally"])
    for case in cases:
        got = (counted[case.name], lines[case.name], files[case.name])
        assert got == (case.good, case.bad, case.file_level), case.name


@pytest.mark.parametrize(
    "argv",
    [
        ["monitor", "--input", "x", "--output", "o", "--no_such_flag"],
        ["monitor", "--input", "/nonexistent/\x1b[2J*", "--output", "o"],
        ["monitor", "--input", "x", "--output", "o", "--stats_window", "0"],
        ["monitor", "--input", "x", "--output", "o", "--max_file_bytes", "-1"],
        ["tally", "--input", "/nonexistent/\u202e*", "--output", "o"],
        ["produce", "access", "--input", "x", "--serve", "0.0.0.0:0"],
        ["produce", "access", "--input", "x", "--serve", "nocolon"],
        ["\x1b[2Junknown"],
    ],
)
def test_bad_command_lines_are_one_line_and_exit_2(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x").write_text(HEADER + "\n")
    assert main(argv) == 2
    printed, err = capsys.readouterr()
    assert_clean(printed, err)
    assert RAW_CONTROL.search(err) is None
    assert len(err.strip().splitlines()) == 1
