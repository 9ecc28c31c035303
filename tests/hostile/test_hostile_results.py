"""Reproductions of issue 11 that gave wrong results: a CLF offset of 60+ minutes accepted, a
CR-only file read as one line, a document too deep somewhere losing all its logs, and a
producer serving the network by default."""

from __future__ import annotations

import json

import orjson
import pytest

from beam_tally.cli import main
from transforms import access_log
from transforms.parse_logs import parse_log_document

CLF = '10.0.0.1 - - [09/May/2018:16:00:39 {offset}] "GET /a HTTP/1.0" 200 10'


@pytest.mark.parametrize("offset", ["+0060", "-0099", "+0160"])
def test_a_clf_offset_with_60_or_more_minutes_is_a_bad_date(offset):
    with pytest.raises(access_log.BadLine, match="bad date"):
        access_log.parse_clf_line(CLF.format(offset=offset))


def test_clf_offsets_below_60_minutes_are_applied():
    base = access_log.parse_clf_line(CLF.format(offset="+0000")).timestamp
    assert access_log.parse_clf_line(CLF.format(offset="+0159")).timestamp == base - 119 * 60
    assert access_log.parse_clf_line(CLF.format(offset="-0030")).timestamp == base + 30 * 60


def test_a_file_with_cr_only_line_endings_is_read_line_by_line(tmp_path, capsys):
    rows = [
        '"remotehost","rfc931","authuser","date","request","status","bytes"',
        *[f'"10.0.0.1","-","-",{1549573860 + i},"GET /a HTTP/1.0",200,{i}' for i in range(5)],
    ]
    path = tmp_path / "mac.csv"
    path.write_bytes("\r".join(rows).encode() + b"\r")
    out = tmp_path / "out"
    assert main(["monitor", "--input", str(path), "--output", str(out)]) == 0
    stats = [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]
    assert [(s["hits"], s["bytes"]) for s in stats] == [(5, sum(range(5)))]
    assert (out / "dead_letters.jsonl").read_text() == ""
    assert "6 lines read, 5 requests" in capsys.readouterr().out


def test_the_producer_reads_cr_only_files_line_by_line(tmp_path):
    from beam_tally.live.produce import access_poll

    rows = [f'"10.0.0.1","-","-",{1549573860 + i},"GET /a HTTP/1.0",200,{i}' for i in range(4)]
    (tmp_path / "mac.csv").write_bytes("\r".join(rows).encode() + b"\r")
    [update] = access_poll(str(tmp_path / "mac.csv"), "csv", follow=False)()
    assert [line.text for _, line in update.items] == rows


def test_a_log_nested_too_deep_is_its_own_dead_letter_and_the_others_are_kept():
    deep = '{"email": "deep@x", "message": ' + "[" * 1100 + '"leaf"' + "]" * 1100 + "}"
    logs = [
        json.dumps({"email": "a@x"}),
        deep,
        json.dumps({"email": "b@x", "message": 'a "[,]" {'}),
    ]
    content = ('{"meta": [[[1]]], "logs": [' + ", ".join(logs) + "]}").encode()
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(content)
    batch, dead = parse_log_document("doc.json", content)
    assert (list(batch.emails), list(batch.indexes)) == (["a@x", "b@x"], [0, 2])
    assert list(batch.messages) == [None, 'a "[,]" {']
    assert [(d.where, d.reason.split(":")[0]) for d in dead] == [(1, "nested too deep")]


def test_a_document_too_deep_outside_its_logs_keeps_them():
    content = b'{"meta": ' + b"[" * 1100 + b"]" * 1100 + b', "logs": [{"email": "a@x"}]}'
    batch, dead = parse_log_document("doc.json", content)
    assert (list(batch.emails), dead) == (["a@x"], [])


def test_an_unbalanced_deep_document_stays_one_malformed_dead_letter():
    content = b'{"logs": [' + b"[" * 1100 + b"]" * 1099 + b"]}"
    batch, dead = parse_log_document("doc.json", content)
    assert list(batch.emails) == [] and [d.reason.split(":")[0] for d in dead] == ["malformed JSON"]


@pytest.mark.parametrize("address", ["0.0.0.0:0", "[::]:0", "192.0.2.1:0", "example.com:0"])
def test_produce_refuses_a_network_address_without_allow_remote(tmp_path, capsys, address):
    (tmp_path / "a.csv").write_text("x\n")
    argv = ["produce", "access", "--input", str(tmp_path / "a.csv"), "--serve", address]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "unauthenticated" in err and "--allow_remote" in err and "Traceback" not in err


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "[::1]", "localhost"])
def test_loopback_hosts_need_no_allow_remote(host):
    from beam_tally.live.produce import is_loopback

    assert is_loopback(host)
    assert not is_loopback("0.0.0.0") and not is_loopback("::")
