"""Property tests of every parser on hostile input: random bytes and text, and mutations of
valid lines and documents. Each input is a record (or skipped), or a dead letter with its
reason; no other exception escapes, and every record holds values every sink can carry."""

from __future__ import annotations

import json
from collections import Counter

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transforms import access_log
from transforms.parse_logs import (
    UNDECODABLE,
    count_log_document,
    count_log_stream,
    parse_log_document,
    reason_code,
)
from transforms.records import AccessRecord

VALID_CSV = '"10.0.0.1","-","apache",1549573860,"GET /api/user HTTP/1.0",200,1234'
VALID_CLF = '10.0.0.1 - bob [07/Feb/2019:21:11:00 +0100] "GET /api/user HTTP/1.1" 200 1234'
VALID_DOC = json.dumps({"logs": [{"id": "1", "email": "a@x", "message": "m"}, {"email": "b@x"}]})
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


ANY_CHARACTER = st.characters()


@st.composite
def mutated(draw, base: str, alphabet=ANY_CHARACTER):
    """``base`` with a few random insertions, deletions and replacements."""
    text = list(base)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        if op == "insert" or not text:
            text.insert(at, draw(st.text(alphabet, min_size=1, max_size=3)))
        elif at < len(text):
            if op == "delete":
                del text[at]
            else:
                text[at] = draw(st.text(alphabet, min_size=1, max_size=3))
    return "".join(text)


def check_line(text: str, fmt: str) -> None:
    try:
        record = access_log.parse_line(text, fmt, "s", 1)
    except access_log.BadLine as bad:
        assert access_log.reason_code(bad.args[0])
        return
    if record is None:
        return
    assert isinstance(record, AccessRecord)
    assert 0 <= record.timestamp <= access_log.MAX_TIMESTAMP
    assert 100 <= record.status <= 599 and 0 <= record.bytes < 10**18
    for field in (record.host, record.user, record.method, record.path, record.section):
        assert access_log._CONTROL_RE.search(field) is None  # nothing raw reaches a sink


@PROPERTY
@given(st.text(max_size=300), st.sampled_from(access_log.FORMATS))
def test_random_text_is_a_record_or_a_bad_line(text, fmt):
    check_line(text, fmt)


@PROPERTY
@given(st.binary(max_size=300), st.sampled_from(access_log.FORMATS))
def test_random_bytes_decode_or_are_undecodable_lines(raw, fmt):
    try:
        text = access_log.decode_line(raw)
    except access_log.BadLine as bad:
        assert bad.args[0].startswith(access_log.UNDECODABLE)
        return
    check_line(text, fmt)


@PROPERTY
@given(
    st.one_of(
        mutated(VALID_CSV),
        mutated(VALID_CSV, st.sampled_from('0123456789",- \t\r\x1b\x85\u202e:/[]+')),
    )
)
def test_mutated_csv_lines(text):
    check_line(text, access_log.CSV)


@PROPERTY
@given(
    st.one_of(
        mutated(VALID_CLF),
        mutated(VALID_CLF, st.sampled_from('0123456789"- \t\r\x1b\x85\u202e:/[]+')),
    )
)
def test_mutated_clf_lines(text):
    check_line(text, access_log.CLF)


def check_streamed(content: bytes, dead: list, counts: Counter) -> None:
    """The streamed count (pieces of 1, 7 and 4,096 bytes) against the in-memory one: equal
    for a document orjson reads; for one it does not, the same kind of whole-document dead
    letter, with the same reason for undecodable bytes."""
    whole = [d for d in dead if d.where is None]
    try:
        orjson.loads(content.removeprefix(b"\xef\xbb\xbf"))
        strict = True
    except orjson.JSONDecodeError:
        strict = False
    for size in (1, 7, 4096):
        pieces = [content[i : i + size] for i in range(0, len(content), size)]
        got_counts, got_dead, empty = count_log_stream("doc.json", pieces)
        assert empty == (not content.strip())
        if strict and not whole:
            assert (got_counts, got_dead) == (counts, dead)
        elif whole:
            assert [reason_code(d.reason) for d in got_dead] == [reason_code(whole[0].reason)]
            assert got_counts == {}
            if reason_code(whole[0].reason) == UNDECODABLE:
                assert got_dead == whole


def check_document(content: bytes) -> None:
    batch, dead = parse_log_document("doc.json", content)
    # The tally's counting path gives the same counts and the same dead letters.
    assert count_log_document("doc.json", content) == (Counter(batch.emails), dead)
    check_streamed(content, dead, Counter(batch.emails))
    assert all(type(email) is str for email in batch.emails)
    assert all(d.source == "doc.json" and d.reason for d in dead)
    whole = [d for d in dead if d.where is None]
    if whole:  # the document itself is bad: nothing of it is counted
        assert len(whole) == 1 and len(dead) == 1 and len(batch.emails) == 0
    positions = list(batch.indexes) + [d.where for d in dead if d.where is not None]
    assert len(positions) == len(set(positions))  # each log once: counted or dead
    try:
        logs = json.loads(content.removeprefix(b"\xef\xbb\xbf").decode("utf-8"))["logs"]
    except (ValueError, KeyError, TypeError, RecursionError):
        return
    if isinstance(logs, list) and not whole:
        assert sorted(positions) == list(range(len(logs)))


@PROPERTY
@given(st.binary(max_size=300))
def test_random_documents(content):
    check_document(content)


@PROPERTY
@given(
    st.one_of(
        mutated(VALID_DOC),
        mutated(VALID_DOC, st.sampled_from('{}[],:"\\ 0123456789email')),
    )
)
def test_mutated_documents(text):
    check_document(text.encode("utf-8", "surrogatepass"))


@PROPERTY
@given(
    st.lists(st.sampled_from([b"[", b"]", b"{", b"}", b",", b'"logs":', b'"a"', b"1"]), max_size=60)
)
def test_bracket_soup_documents(tokens):
    check_document(b'{"logs": [' + b"".join(tokens) + b"]}")


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=2000), st.integers(1, 64))
def test_the_reader_gives_every_line_once(tmp_path_factory, raw, block):
    from apache_beam import pvalue

    from beam_tally.io.files import ReadLinesFn

    path = tmp_path_factory.mktemp("r") / "f.log"
    path.write_bytes(raw)
    fn = ReadLinesFn()
    fn.BLOCK = block
    numbers = []
    for out in fn.process(str(path)):
        items = out.value if isinstance(out, pvalue.TaggedOutput) else out
        numbers += [
            item.where if isinstance(out, pvalue.TaggedOutput) else item.line for item in items
        ]
    assert sorted(numbers) == list(range(1, len(numbers) + 1))
