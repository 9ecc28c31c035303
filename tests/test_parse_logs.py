"""parse_log_document: pure, no pipeline."""

from __future__ import annotations

from collections import Counter

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from transforms import parse_logs
from transforms.parse_logs import count_log_document, parse_log_document, reason_code


def doc(*logs) -> bytes:
    return orjson.dumps({"logs": list(logs)})


def test_valid_document_becomes_columns():
    batch, dead = parse_log_document(
        "f.json",
        doc(
            {"id": "1", "email": "a@x.com", "message": "ok"},
            {"id": "2", "email": "b@x.com", "message": "failed"},
            {"id": "3", "email": "a@x.com"},
        ),
    )
    assert dead == []
    assert list(batch.sources) == ["f.json"] * 3
    assert list(batch.indexes) == [0, 1, 2]
    assert list(batch.emails) == ["a@x.com", "b@x.com", "a@x.com"]
    assert list(batch.ids) == ["1", "2", "3"]
    assert list(batch.messages) == ["ok", "failed", None]
    assert batch.single_source() == "f.json"


def test_non_string_id_and_message_are_kept_as_json_text():
    batch, dead = parse_log_document("f", doc({"id": 7, "email": "a@x", "message": ["m"]}))
    assert dead == []
    assert list(batch.ids) == ["7"]
    assert list(batch.messages) == ['["m"]']


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b'{"logs": [', parse_logs.MALFORMED_JSON),
        (b"", parse_logs.MALFORMED_JSON),
        (b'{"logs": ["caf\xe9"]}', parse_logs.UNDECODABLE),
        (b'{"log": []}', parse_logs.NO_LOGS_LIST),
        (b"[]", parse_logs.NO_LOGS_LIST),
        (b'{"logs": {"email": "a@x"}}', parse_logs.NO_LOGS_LIST),
        (b'"just a string"', parse_logs.NO_LOGS_LIST),
    ],
)
def test_bad_document_is_one_dead_letter(content, code):
    batch, dead = parse_log_document("bad.json", content)
    assert len(batch.emails) == 0
    assert len(dead) == 1
    assert dead[0].source == "bad.json"
    assert dead[0].where is None
    assert reason_code(dead[0].reason) == code


@pytest.mark.parametrize(
    ("log", "code"),
    [
        ("not a log", parse_logs.NOT_AN_OBJECT),
        (42, parse_logs.NOT_AN_OBJECT),
        (None, parse_logs.NOT_AN_OBJECT),
        (["a@x"], parse_logs.NOT_AN_OBJECT),
        ({"id": "1", "message": "m"}, parse_logs.MISSING_EMAIL),
        ({"email": None}, parse_logs.EMAIL_NOT_STRING),
        ({"email": 3}, parse_logs.EMAIL_NOT_STRING),
        ({"email": ["a@x"]}, parse_logs.EMAIL_NOT_STRING),
    ],
)
def test_bad_log_is_one_dead_letter_with_its_index(log, code):
    batch, dead = parse_log_document("f", doc({"email": "ok@x"}, log, {"email": "ok2@x"}))
    assert list(batch.emails) == ["ok@x", "ok2@x"]
    assert list(batch.indexes) == [0, 2]
    assert [(d.source, d.where, reason_code(d.reason)) for d in dead] == [("f", 1, code)]
    assert dead[0].raw == orjson.dumps(log).decode()


def test_undecodable_bytes_reports_the_offset():
    _, dead = parse_log_document("f", b'{"logs": [{"email": "\xff"}]}')
    assert dead[0].reason == "undecodable bytes: invalid UTF-8 at byte 21"


def test_raw_excerpt_is_bounded():
    _, dead = parse_log_document("f", b"{" + b"x" * 10_000)
    assert len(dead[0].raw) <= 203


logs_strategy = st.lists(
    st.one_of(
        st.fixed_dictionaries({"email": st.text(max_size=8)}),
        st.fixed_dictionaries(
            {"email": st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), st.booleans())}
        ),
        st.fixed_dictionaries({"id": st.text(max_size=3)}),
        st.integers(-(2**63), 2**63 - 1),
        st.text(max_size=3),
    ),
    max_size=30,
)


@given(logs_strategy)
def test_every_log_is_either_kept_or_one_dead_letter(logs):
    batch, dead = parse_log_document("f", doc(*logs))
    expected = [
        (i, log["email"])
        for i, log in enumerate(logs)
        if isinstance(log, dict) and isinstance(log.get("email"), str)
    ]
    assert list(zip(batch.indexes, batch.emails, strict=True)) == expected
    assert sorted(d.where for d in dead) == sorted(set(range(len(logs))) - {i for i, _ in expected})


def test_deeply_nested_values_do_not_crash():
    deep = "[" * 300 + "]" * 300
    content = f'{{"logs": [{{"email": "a@x", "message": {deep}}}, {deep}]}}'.encode()
    batch, dead = parse_log_document("f", content)
    assert list(batch.emails) == ["a@x"]
    assert batch.messages[0].startswith("[[")
    assert [(d.where, reason_code(d.reason)) for d in dead] == [(1, parse_logs.NOT_AN_OBJECT)]


def test_byte_order_mark_is_accepted():
    batch, dead = parse_log_document("f", b"\xef\xbb\xbf" + doc({"email": "a@x"}))
    assert (list(batch.emails), dead) == (["a@x"], [])


def test_json_that_orjson_rejects_keeps_its_valid_logs():
    content = (
        b'{"logs": [{"email": "a@x", "message": 1e400}, {"email": "b\\udc80@x"},'
        b' {"email": "c@x", "message": "half \\ud800 pair"}]}'
    )
    batch, dead = parse_log_document("f", content)
    assert list(batch.emails) == ["a@x", "c@x"]
    assert list(batch.indexes) == [0, 2]
    assert isinstance(batch.messages[0], str)  # kept as JSON text
    batch.messages[1].encode("utf-8")  # cleaned: encodable
    assert [(d.where, reason_code(d.reason)) for d in dead] == [(1, parse_logs.EMAIL_NOT_STRING)]


@given(logs_strategy)
def test_counting_a_document_counts_every_valid_log_and_tags_the_rest(logs):
    counts, dead = count_log_document("f", doc(*logs))
    expected = Counter(
        log["email"] for log in logs if isinstance(log, dict) and isinstance(log.get("email"), str)
    )
    assert counts == expected
    valid = {i for i, log in enumerate(logs) if isinstance(log, dict) and "email" in log}
    valid &= {i for i in valid if isinstance(logs[i]["email"], str)}
    assert [d.where for d in dead] == sorted(set(range(len(logs))) - valid)


def test_counting_skips_unhashable_and_lone_surrogate_emails():
    content = (
        b'{"logs": [{"email": ["a@x"]}, {"email": {"address": "b@x"}}, {"email": "a@x"},'
        b' {"email": "b\\udc80@x"}, "a@x", {"email": "a@x", "message": 1e400}]}'
    )
    counts, dead = count_log_document("f", content)
    assert counts == {"a@x": 2}
    assert [(d.where, reason_code(d.reason)) for d in dead] == [
        (0, parse_logs.EMAIL_NOT_STRING),
        (1, parse_logs.EMAIL_NOT_STRING),
        (3, parse_logs.EMAIL_NOT_STRING),
        (4, parse_logs.NOT_AN_OBJECT),
    ]


def general_count(content: bytes):
    """count_log_document's general path (orjson) on its own."""
    return parse_logs.count_logs("f", orjson.loads(content))


@given(logs_strategy)
def test_the_typed_read_takes_documents_with_bad_logs_and_agrees_with_the_general_path(logs):
    # The tally's fast path must not fall back on ordinary bad logs (every large file has some).
    content = orjson.dumps({"id": 1, "logs": [{"email": "a@x"}, *logs, [1, {"email": "x"}]]})
    typed = parse_logs._count_typed("f", content)
    assert typed is not None
    assert typed == general_count(content)


@pytest.mark.parametrize(
    "content",
    [
        b'{"logs": [{"email": "b\\udc80@x"}, {"email": "a@x"}]}',  # lone surrogate: lenient path
        b'{"logs": [12345678901234567890123, {"email": "a@x"}]}',  # beyond 64 bits: orjson refuses
        *(  # around orjson's 1,024 levels: the typed read must never count what orjson refuses
            b'{"logs": [{"email": "a@x", "m": ' + b"[" * n + b"]" * n + b'}, {"email": "b@x"}]}'
            for n in (500, 1023, 1024, 1100, 2000)
        ),
        b'{"logs": {"email": "a@x"}}',  # no list
        b'{"logs": [{"email": "a@x"}], "logs": [{"email": "b@x"}, 7]}',  # the last key wins
        b'\xef\xbb\xbf{"logs": [{"email": "a@x"}, null]}',  # a byte order mark
        # invalid UTF-8 where the typed read skips (a message, a key, an unknown field): the
        # whole file is the general path's dead letter, never counted
        b'{"logs": [{"email": "a@x", "message": "caf\xe9"}]}',
        b'{"logs": [{"email": "a@x", "\xff": 1}]}',
        b'{"x": "\xed\xb2\x80", "logs": [{"email": "a@x"}]}',
        b'{"logs": [{"email": "a@x", "m": {"k": ["\xc0\xaf"]}}]}',
        b'{"logs": [' + b"[" * 1018 + b"]" * 1018 + b', {"email": "a@x"}]}',  # deep, not an object
    ],
)
def test_documents_the_typed_read_refuses_or_reads_count_as_the_general_path_does(content):
    reread, dead, lenient = parse_logs._load("f", content)
    expected = ({}, [dead]) if dead is not None else parse_logs.count_logs("f", reread, lenient)
    assert count_log_document("f", content) == expected


@given(
    st.binary(max_size=40) | st.text(max_size=20).map(lambda t: t.encode("utf-8", "surrogatepass"))
)
def test_the_utf8_check_agrees_with_pythons_strict_codec(raw):
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        valid = False
    else:
        valid = True
    assert parse_logs.valid_utf8(raw) is valid
