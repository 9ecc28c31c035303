"""transforms/access_log.py: pure line parsing, no pipeline."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.access_oracle import section as oracle_section
from transforms import access_log
from transforms.access_log import (
    BadLine,
    decode_line,
    detect_format,
    parse_clf_line,
    parse_csv_line,
    parse_line,
    reason_code,
    section_of,
)
from transforms.records import AccessRecord


def epoch(year, month, day, hour, minute, second, offset_minutes=0) -> int:
    """Independent of the parser: datetime with a fixed-offset zone."""
    zone = timezone(timedelta(minutes=offset_minutes))
    return int(datetime(year, month, day, hour, minute, second, tzinfo=zone).timestamp())


def fields(record: AccessRecord) -> tuple:
    return tuple(record)[:10]


# --- CSV -----------------------------------------------------------------------------------------
def test_the_exercise_csv():
    lines = [
        '"remotehost","rfc931","authuser","date","request","status","bytes"',
        '"10.0.0.2","-","apache",1549573860,"GET /api/user HTTP/1.0",200,1234',
        '"10.0.0.4","-","apache",1549573860,"GET /api/user HTTP/1.0",200,1234',
        '"10.0.0.5","-","apache",1549573860,"GET /report HTTP/1.0",200,1136',
        '"10.0.0.1","-","apache",1549573861,"POST /api/help HTTP/1.0",503,1234',
    ]
    parsed = [parse_csv_line(line) for line in lines]
    assert parsed[0] is None
    assert fields(parsed[1]) == (
        "10.0.0.2",
        "-",
        "apache",
        1549573860,
        "GET",
        "/api/user",
        "/api",
        "HTTP/1.0",
        200,
        1234,
    )
    assert parsed[3].section == "/report"
    assert (parsed[4].method, parsed[4].section, parsed[4].status) == ("POST", "/api", 503)
    assert all(isinstance(record, AccessRecord) for record in parsed[1:])
    assert calendar.timegm((2019, 2, 7, 21, 11, 0)) == parsed[1].timestamp


@pytest.mark.parametrize(
    "line",
    [
        '"10.0.0.2","-","apache","1549573860","GET /api/user HTTP/1.0","200","1234"',
        ' "10.0.0.2" , "-" ,"apache", 1549573860 , "GET /api/user HTTP/1.0" , 200 , 1234 ',
        '"10.0.0.2","-","apache",1549573860,"GET /api/user HTTP/1.0",200,1234\r\n',
        '"10.0.0.2","-","apache",1549573860,"GET /api/user HTTP/1.0",200,1234\n',
        "10.0.0.2,-,apache,1549573860,GET /api/user HTTP/1.0,200,1234",
        '\ufeff"10.0.0.2","-","apache",1549573860,"GET /api/user HTTP/1.0",200,1234',
        '"10.0.0.2","-","apache",\t1549573860\t,"GET /api/user HTTP/1.0",200,1234',
    ],
)
def test_csv_tolerates_quoting_and_whitespace(line):
    assert fields(parse_csv_line(line)) == (
        "10.0.0.2",
        "-",
        "apache",
        1549573860,
        "GET",
        "/api/user",
        "/api",
        "HTTP/1.0",
        200,
        1234,
    )


def test_csv_odd_but_valid_values():
    record = parse_csv_line('"::1","-","zoë ""z"" müller",0,"DELETE /api/x?y=1 HTTP/2",599,-')
    assert fields(record) == (
        "::1",
        "-",
        'zoë "z" müller',
        0,
        "DELETE",
        "/api/x?y=1",
        "/api",
        "HTTP/2",
        599,
        0,
    )
    assert parse_csv_line('"h","-","-",1,"GET /",100,0').protocol == ""  # HTTP/0.9 style
    assert parse_csv_line('"h","-","-",253402300799,"GET / HTTP/1.1",200,0').timestamp == (
        epoch(9999, 12, 31, 23, 59, 59)
    )


@pytest.mark.parametrize(
    "line",
    [
        "",
        "   ",
        "\r\n",
        "\t \n",
        '"remotehost","rfc931","authuser","date","request","status","bytes"\r\n',
        "remotehost,rfc931,authuser,date,request,status,bytes",
        '\ufeff"remotehost","rfc931","authuser","date","request","status","bytes"',
        '"RemoteHost" , "RFC931","AuthUser","Date","Request","Status","Bytes"',
    ],
)
def test_csv_blank_lines_and_header_are_skipped(line):
    assert parse_csv_line(line) is None


# --- CLF -----------------------------------------------------------------------------------------
def test_apache_common_log_format():
    # The example of Apache's own documentation.
    line = '127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326'
    assert fields(parse_clf_line(line)) == (
        "127.0.0.1",
        "-",
        "frank",
        epoch(2000, 10, 10, 13, 55, 36, -7 * 60),
        "GET",
        "/apache_pb.gif",
        "/apache_pb.gif",
        "HTTP/1.0",
        200,
        2326,
    )
    assert parse_clf_line(line).timestamp == calendar.timegm((2000, 10, 10, 20, 55, 36))


def test_the_exercise_clf_line():
    line = '127.0.0.1 - james [09/May/2018:16:00:39 +0000] "GET /report HTTP/1.0" 200 123'
    record = parse_clf_line(line)
    assert record.timestamp == epoch(2018, 5, 9, 16, 0, 39)
    assert (record.user, record.section, record.bytes) == ("james", "/report", 123)


def test_nginx_combined_log_format():
    line = (
        '203.0.113.9 - - [07/Feb/2019:21:11:00 +0530] "GET /api/user/42?verbose=1 HTTP/1.1" '
        '304 - "https://example.com/start?a=1" "Mozilla/5.0 (X11; Linux x86_64) '
        'AppleWebKit/537.36 (KHTML, like Gecko) Chrome/72.0 Safari/537.36"'
    )
    assert fields(parse_clf_line(line)) == (
        "203.0.113.9",
        "-",
        "-",
        epoch(2019, 2, 7, 21, 11, 0, 5 * 60 + 30),
        "GET",
        "/api/user/42?verbose=1",
        "/api",
        "HTTP/1.1",
        304,
        0,
    )


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            '2001:db8::1 - alice [01/Jan/2020:00:00:00 +0000] "POST /login HTTP/2.0" 302 0',
            ("2001:db8::1", "alice", epoch(2020, 1, 1, 0, 0, 0), "POST", "/login", "/login"),
        ),
        (
            '::1 - - [31/Dec/1999:23:59:59 -0700] "OPTIONS * HTTP/1.1" 204 0 "-" "curl/7.64"',
            ("::1", "-", epoch(1999, 12, 31, 23, 59, 59, -420), "OPTIONS", "*", "*"),
        ),
        (
            'proxy.example.com - - [29/Feb/2020:12:00:00 +0100] "GET http://a.example/b/c HTTP/1.1"'
            " 200 10",
            (
                "proxy.example.com",
                "-",
                epoch(2020, 2, 29, 12, 0, 0, 60),
                "GET",
                "http://a.example/b/c",
                "/b",
            ),
        ),
        (
            '10.1.2.3 - - [07/feb/2019:21:11:00 +0000] "GET /~user//index.html HTTP/1.1" 200 5',
            ("10.1.2.3", "-", epoch(2019, 2, 7, 21, 11, 0), "GET", "/~user//index.html", "/~user"),
        ),
        (
            '10.1.2.3 - - [07/Feb/2019:21:11:00 +0000] "GET /a\\"b/c HTTP/1.1" 400 5 "-" "x"',
            ("10.1.2.3", "-", epoch(2019, 2, 7, 21, 11, 0), "GET", '/a\\"b/c', '/a\\"b'),
        ),
        (
            '10.1.2.3 - - [07/Feb/2019:21:11:00 +0000] "GET /" 200 5',  # HTTP/0.9
            ("10.1.2.3", "-", epoch(2019, 2, 7, 21, 11, 0), "GET", "/", "/"),
        ),
        (
            '10.1.2.3 - - [07/Feb/2019:21:11:00 +0000] "get /static/img/logo%20v2.png HTTP/1.1"'
            " 200 5 extra fields 0.002",
            (
                "10.1.2.3",
                "-",
                epoch(2019, 2, 7, 21, 11, 0),
                "get",
                "/static/img/logo%20v2.png",
                "/static",
            ),
        ),
    ],
)
def test_clf_varied_lines(line, expected):
    record = parse_clf_line(line)
    assert (
        record.host,
        record.user,
        record.timestamp,
        record.method,
        record.path,
        record.section,
    ) == expected


@pytest.mark.parametrize(
    "line",
    [
        '127.0.0.1 - james [09/May/2018:16:00:39 +0000] "GET /report HTTP/1.0" 200 123\r\n',
        '  127.0.0.1 - james [09/May/2018:16:00:39 +0000] "GET /report HTTP/1.0" 200 123  ',
        '\ufeff127.0.0.1 - james [09/May/2018:16:00:39 +0000] "GET /report HTTP/1.0" 200 123',
        '127.0.0.1 - james [09/May/2018:18:00:39 +0200] "GET /report HTTP/1.0" 200 123 "-"\t"ua"',
    ],
)
def test_clf_tolerates_line_ends_and_whitespace(line):
    assert fields(parse_clf_line(line)) == (
        "127.0.0.1",
        "-",
        "james",
        epoch(2018, 5, 9, 16, 0, 39),
        "GET",
        "/report",
        "/report",
        "HTTP/1.0",
        200,
        123,
    )


@pytest.mark.parametrize(
    ("zone", "minutes"),
    [("+0000", 0), ("-0700", -420), ("+0530", 330), ("+1400", 840), ("-1200", -720)],
)
def test_clf_time_zones(zone, minutes):
    line = f'h - - [01/Mar/2021:00:30:00 {zone}] "GET / HTTP/1.1" 200 1'
    expected = datetime(2021, 3, 1, 0, 30, tzinfo=UTC) - timedelta(minutes=minutes)
    assert parse_clf_line(line).timestamp == int(expected.timestamp())
    assert parse_clf_line(line).timestamp == epoch(2021, 3, 1, 0, 30, 0, minutes)


@pytest.mark.parametrize("line", ["", " ", "\n", "\r\n", " \t "])
def test_clf_blank_lines_are_skipped(line):
    assert parse_clf_line(line) is None


# --- Sections ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "section"),
    [
        ("/api/user", "/api"),
        ("/report", "/report"),
        ("/", "/"),
        ("/api/", "/api"),
        ("/api?x=1", "/api"),
        ("/api?x=/y/z", "/api"),
        ("/api#frag/x", "/api"),
        ("/?q=1", "/"),
        ("/api/user/42/items", "/api"),
        ("//double", "/"),
        ("/a.b;c=d/e", "/a.b;c=d"),
        ("/%7Euser/x", "/%7Euser"),
        ("http://host/a/b", "/a"),
        ("https://host:8443/report?x=1", "/report"),
        ("http://host", "/"),
        ("http://host?x=/a/b", "/"),
        ("*", "*"),
        ("example.com:443", "example.com:443"),
        ("relative/path", "relative"),
        ("?x", "/"),
    ],
)
def test_section_of(path, section):
    assert section_of(path) == section


# --- Bad lines -----------------------------------------------------------------------------------
CSV_GOOD = [
    '"10.0.0.2"',
    '"-"',
    '"apache"',
    "1549573860",
    '"GET /api/user HTTP/1.0"',
    "200",
    "1234",
]


def csv_with(index: int, value: str) -> str:
    row = list(CSV_GOOD)
    row[index] = value
    return ",".join(row)


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (",".join(CSV_GOOD[:6]), access_log.WRONG_FIELD_COUNT),
        (",".join([*CSV_GOOD, "1"]), access_log.WRONG_FIELD_COUNT),
        ("just some text", access_log.WRONG_FIELD_COUNT),
        ('"10.0.0.2,"-","apache"', access_log.UNPARSEABLE),
        ('10.0.0.2 "x",-,a,1,GET / HTTP/1.0,200,1', access_log.UNPARSEABLE),
        ('{"level":"info"}', access_log.UNPARSEABLE),
        (csv_with(3, "2019-02-07"), access_log.BAD_DATE),
        (csv_with(3, '""'), access_log.BAD_DATE),
        (csv_with(3, "1549573860.5"), access_log.BAD_DATE),
        (csv_with(3, "-1"), access_log.BAD_DATE),
        (csv_with(3, "253402300800"), access_log.BAD_DATE),
        (csv_with(3, "99999999999999999999"), access_log.BAD_DATE),
        (csv_with(3, "١٥٤٩٥٧٣٨٦٠"), access_log.BAD_DATE),  # non-ASCII digits
        (csv_with(5, "99"), access_log.BAD_STATUS),
        (csv_with(5, "600"), access_log.BAD_STATUS),
        (csv_with(5, "OK"), access_log.BAD_STATUS),
        (csv_with(5, "0200"), access_log.BAD_STATUS),
        (csv_with(6, "-1"), access_log.BAD_BYTES),
        (csv_with(6, "1.5"), access_log.BAD_BYTES),
        (csv_with(6, "1" * 19), access_log.BAD_BYTES),
        (csv_with(6, ""), access_log.BAD_BYTES),
        (csv_with(4, '"-"'), access_log.BAD_REQUEST),
        (csv_with(4, '"GET"'), access_log.BAD_REQUEST),
        (csv_with(4, '"GET /a b HTTP/1.1"'), access_log.BAD_REQUEST),
        (csv_with(4, '"GET  /a HTTP/1.1"'), access_log.BAD_REQUEST),
        (csv_with(4, '"GET /a FTP/1.0"'), access_log.BAD_REQUEST),
        (csv_with(4, '"G(E)T /a HTTP/1.0"'), access_log.BAD_REQUEST),
        (csv_with(4, '"GET /a\tb HTTP/1.0"'), access_log.BAD_REQUEST),
        (csv_with(2, '"apa\x00che"'), access_log.CONTROL_CHARACTERS),
        (csv_with(2, '"apa\x1b[31mche"'), access_log.CONTROL_CHARACTERS),
        (csv_with(0, '"10.0.0.2\x7f"'), access_log.CONTROL_CHARACTERS),
        (csv_with(4, '"GET /a\x9b HTTP/1.0"'), access_log.CONTROL_CHARACTERS),
        (csv_with(4, '"GET /a\rb HTTP/1.0"'), access_log.CONTROL_CHARACTERS),
        (csv_with(2, '"apa\udcffche"'), access_log.UNDECODABLE),
    ],
)
def test_bad_csv_lines(line, code):
    with pytest.raises(BadLine) as bad:
        parse_csv_line(line)
    reason = bad.value.args[0]
    assert reason_code(reason) == code
    assert reason.startswith(f"{code}: ")


CLF_DATE = "[09/May/2018:16:00:39 +0000]"


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (f'127.0.0.1 - james {CLF_DATE} "GET /report HTTP/1.0" 200', access_log.WRONG_FIELD_COUNT),
        (f'127.0.0.1 - james {CLF_DATE} "GET /report HTTP/1.0"', access_log.WRONG_FIELD_COUNT),
        (f'127.0.0.1 james {CLF_DATE} "GET /report HTTP/1.0" 200 1', access_log.WRONG_FIELD_COUNT),
        (f'a b c d {CLF_DATE} "GET /report HTTP/1.0" 200 1', access_log.WRONG_FIELD_COUNT),
        (f'{CLF_DATE} "GET /report HTTP/1.0" 200 1', access_log.WRONG_FIELD_COUNT),
        ("this is not a log line", access_log.UNPARSEABLE),
        ("<html><body>502 Bad Gateway</body></html>", access_log.UNPARSEABLE),
        (f'a b c {CLF_DATE} "GET /report HTTP/1.0"200 1', access_log.UNPARSEABLE),
        (f"a b c {CLF_DATE} GET /report HTTP/1.0 200 1", access_log.UNPARSEABLE),
        (f'a  b c {CLF_DATE} "GET /report HTTP/1.0" 200 1', access_log.UNPARSEABLE),
        ('a b c [09/Foo/2018:16:00:39 +0000] "GET / HTTP/1.0" 200 1', access_log.BAD_DATE),
        ('a b c [31/Apr/2018:16:00:39 +0000] "GET / HTTP/1.0" 200 1', access_log.BAD_DATE),
        ('a b c [09/May/2018:24:00:00 +0000] "GET / HTTP/1.0" 200 1', access_log.BAD_DATE),
        ('a b c [09/May/2018:16:00:39] "GET / HTTP/1.0" 200 1', access_log.BAD_DATE),
        ('a b c [09/May/2018:16:00:39 +2400] "GET / HTTP/1.0" 200 1', access_log.BAD_DATE),
        ('a b c [2018-05-09T16:00:39Z] "GET / HTTP/1.0" 200 1', access_log.BAD_DATE),
        ('a b c [31/Dec/1969:23:59:59 +0000] "GET / HTTP/1.0" 200 1', access_log.BAD_DATE),
        ('a b c [01/Jan/1970:00:59:59 +0100] "GET / HTTP/1.0" 200 1', access_log.BAD_DATE),
        ('a b c [] "GET / HTTP/1.0" 200 1', access_log.BAD_DATE),
        (f'a b c {CLF_DATE} "GET / HTTP/1.0" 700 1', access_log.BAD_STATUS),
        (f'a b c {CLF_DATE} "GET / HTTP/1.0" - 1', access_log.BAD_STATUS),
        (f'a b c {CLF_DATE} "GET / HTTP/1.0" 200 -5', access_log.BAD_BYTES),
        (f'a b c {CLF_DATE} "GET / HTTP/1.0" 200 12kB', access_log.BAD_BYTES),
        (f'a b c {CLF_DATE} "-" 400 0', access_log.BAD_REQUEST),
        (f'a b c {CLF_DATE} "" 400 0', access_log.BAD_REQUEST),
        (f'a b c {CLF_DATE} "\\x16\\x03\\x01" 400 0', access_log.BAD_REQUEST),
        (f'a b c {CLF_DATE} "GET / HTTP/1.0 extra" 200 1', access_log.BAD_REQUEST),
        (f'a b c {CLF_DATE} "GET / http/1.0" 200 1', access_log.BAD_REQUEST),
        (f'a b\x00 c {CLF_DATE} "GET / HTTP/1.0" 200 1', access_log.CONTROL_CHARACTERS),
        (f'a b c {CLF_DATE} "GET /\x07 HTTP/1.0" 200 1', access_log.CONTROL_CHARACTERS),
        (f'a b c {CLF_DATE} "GET / HTTP/1.0" 200 1 "-" "ua\x85"', access_log.CONTROL_CHARACTERS),
        (f'a b c {CLF_DATE} "GET / HTTP/1.0" 200 1\x0b', access_log.CONTROL_CHARACTERS),
        (f'a b\udc80 c {CLF_DATE} "GET / HTTP/1.0" 200 1', access_log.UNDECODABLE),
    ],
)
def test_bad_clf_lines(line, code):
    with pytest.raises(BadLine) as bad:
        parse_clf_line(line)
    assert reason_code(bad.value.args[0]) == code


def test_the_same_bad_date_fails_every_time():
    line = 'a b c [31/Feb/2018:16:00:39 +0000] "GET / HTTP/1.0" 200 1'
    for _ in range(3):
        with pytest.raises(BadLine, match=r"^bad date: "):
            parse_clf_line(line)


# --- Bytes, formats, dispatch --------------------------------------------------------------------
def test_decode_line():
    assert decode_line("zoë".encode()) == "zoë"
    assert decode_line(b"") == ""
    with pytest.raises(BadLine) as bad:
        decode_line(b'"10.0.0.2","-","ap\xffache"')
    assert reason_code(bad.value.args[0]) == access_log.UNDECODABLE
    assert "byte 18" in bad.value.args[0]
    with pytest.raises(BadLine, match=r"^undecodable bytes: "):
        decode_line(b"\xed\xa0\x80")  # an encoded surrogate is not UTF-8


def test_parse_line_dispatches():
    csv_line = '"10.0.0.2","-","apache",1549573860,"GET /api/user HTTP/1.0",200,1234'
    clf_line = '127.0.0.1 - james [09/May/2018:16:00:39 +0000] "GET /report HTTP/1.0" 200 123'
    assert parse_line(csv_line, "csv") == parse_csv_line(csv_line)
    assert parse_line(clf_line, "clf") == parse_clf_line(clf_line)
    with pytest.raises(BadLine):
        parse_line(csv_line, "clf")
    with pytest.raises(BadLine):
        parse_line(clf_line, "csv")
    with pytest.raises(ValueError, match="format"):
        parse_line(csv_line, "json")


@pytest.mark.parametrize(
    ("lines", "fmt"),
    [
        (['"remotehost","rfc931","authuser","date","request","status","bytes"'], "csv"),
        (["", '"10.0.0.2","-","apache",1549573860,"GET /api/user HTTP/1.0",200,1234'], "csv"),
        (['"10.0.0.2","-","apache",yesterday,"GET /api/user HTTP/1.0",200,1234'], "csv"),
        (['\ufeff"remotehost","rfc931","authuser","date","request","status","bytes"'], "csv"),
        (['127.0.0.1 - james [09/May/2018:16:00:39 +0000] "GET /report HTTP/1.0" 200 123'], "clf"),
        (["garbage", '::1 - - [09/May/2018:16:00:39 +0000] "GET / HTTP/1.1" 200 1 "-" "x"'], "clf"),
        (['a b c [bad] "GET / HTTP/1.0" 200 1'], "clf"),
        (['a b c [bad] "GET / HTTP/1.0" 200 1', '"h","-","-",1,"GET / HTTP/1.0",200,1'], "csv"),
    ],
)
def test_detect_format(lines, fmt):
    assert detect_format(lines) == fmt


@pytest.mark.parametrize("lines", [[], ["", "  "], ["hello", "world"], ['{"logs": []}']])
def test_detect_format_refuses_other_text(lines):
    with pytest.raises(ValueError, match="format"):
        detect_format(lines)


# --- Property: format a record, parse it back ----------------------------------------------------
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
NO_CONTROLS = st.characters(blacklist_categories=("Cc", "Cs"))
NO_SPACE = NO_CONTROLS.filter(lambda c: not c.isspace())
TOKEN = st.text(
    "!#$%&'*+.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-", min_size=1
)
PATH_CHARS = NO_SPACE.filter(lambda c: c != '"')


@st.composite
def records(draw, *, names):
    target = draw(
        st.one_of(
            st.builds(lambda rest: "/" + rest, st.text(PATH_CHARS)),
            st.just("*"),
            st.builds(lambda rest: "http://example.com/" + rest, st.text(PATH_CHARS)),
        )
    )
    return AccessRecord(
        host=draw(names),
        ident=draw(names),
        user=draw(names),
        timestamp=draw(st.integers(0, access_log.MAX_TIMESTAMP - 14 * 3600)),
        method=draw(TOKEN),
        path=target,
        section=oracle_section(target),  # the rule, written independently of section_of
        protocol=draw(st.sampled_from(["HTTP/1.0", "HTTP/1.1", "HTTP/2.0", "HTTP/2", ""])),
        status=draw(st.integers(100, 599)),
        bytes=draw(st.integers(0, 10**18 - 1)),
    )


def csv_field(draw, value: str, *, quote: bool | None = None) -> str:
    """Quoted (with "" escapes) or, when that is unambiguous, bare, with optional spaces."""
    bare_ok = value == value.strip(" \t") and not set(value) & set(',"') and value
    if quote is None:
        quote = not bare_ok or draw(st.booleans())
    text = '"' + value.replace('"', '""') + '"' if quote else value
    pad = st.sampled_from(["", " ", "\t"])
    return draw(pad) + text + draw(pad)


def format_csv(draw, record: AccessRecord) -> str:
    request = " ".join(filter(None, (record.method, record.path, record.protocol)))
    size = "-" if record.bytes == 0 and draw(st.booleans()) else str(record.bytes)
    row = [
        csv_field(draw, record.host, quote=True),
        csv_field(draw, record.ident, quote=True),
        csv_field(draw, record.user, quote=True),
        csv_field(draw, str(record.timestamp)),
        csv_field(draw, request),
        csv_field(draw, str(record.status)),
        csv_field(draw, size),
    ]
    return ",".join(row) + draw(st.sampled_from(["", "\n", "\r\n"]))


def format_clf(draw, record: AccessRecord) -> str:
    minutes = draw(st.integers(-14 * 60, 14 * 60))
    local = datetime.fromtimestamp(record.timestamp, UTC) + timedelta(minutes=minutes)
    sign = "-" if minutes < 0 else "+"
    zone = f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"
    stamp = (
        f"{local.day:02d}/{MONTHS[local.month - 1]}/{local.year}:"
        f"{local.hour:02d}:{local.minute:02d}:{local.second:02d} {zone}"
    )
    request = " ".join(filter(None, (record.method, record.path, record.protocol)))
    size = "-" if record.bytes == 0 and draw(st.booleans()) else str(record.bytes)
    tail = draw(st.sampled_from(["", ' "-" "-"', ' "https://r.example/?a=b" "Mozilla/5.0 (X)"']))
    line = (
        f'{record.host} {record.ident} {record.user} [{stamp}] "{request}" '
        f"{record.status} {size}{tail}"
    )
    return line + draw(st.sampled_from(["", "\n", "\r\n"]))


CSV_TEXT = st.text(st.one_of(NO_CONTROLS, st.just("\t")))
# A leading byte order mark is not part of the line (it is the file's), so no host starts with one.
CLF_NAME = st.text(NO_SPACE, min_size=1).filter(lambda name: not name.startswith("\ufeff"))


@settings(max_examples=300)
@given(st.data())
def test_csv_round_trip(data):
    record = data.draw(records(names=CSV_TEXT))
    line = format_csv(data.draw, record)
    assert parse_csv_line(line) == record
    assert access_log._parse_csv_careful(line) == record


@settings(max_examples=300)
@given(st.data())
def test_clf_round_trip(data):
    record = data.draw(records(names=CLF_NAME))
    line = format_clf(data.draw, record)
    assert parse_clf_line(line) == record
    assert access_log._parse_clf_careful(line) == record


def _parsed_time(text: str, fmt: str) -> int | None:
    try:
        record = parse_line(text, fmt)
    except BadLine:
        return None
    return None if record is None else record.timestamp


@settings(max_examples=300)
@given(st.data())
def test_event_time_is_the_time_parse_line_gives_whatever_the_line(data):
    fmt = data.draw(st.sampled_from(["csv", "clf"]))
    if data.draw(st.booleans()):  # a well-formed line, possibly with a date out of range
        record = data.draw(records(names=CSV_TEXT if fmt == "csv" else CLF_NAME))
        line = (format_csv if fmt == "csv" else format_clf)(data.draw, record)
    else:
        line = data.draw(st.text())
    assert access_log.event_time(line, fmt) == _parsed_time(line, fmt)


@pytest.mark.parametrize(
    ("line", "fmt"),
    [
        ('"remotehost","rfc931","authuser","date","request","status","bytes"', "csv"),
        ('"10.0.0.1","-","u","1549573860","GET /a HTTP/1.0",200,12', "csv"),
        ('"10.0.0.1","-","u","999999999999","GET /a HTTP/1.0",200,12', "csv"),
        ('"10.0.0.1","-","u","15x","GET /a HTTP/1.0",200,12', "csv"),
        ('1.2.3.4 - - [09/May/2018:16:00:39 +0200] "GET /a HTTP/1.0" 200 1', "clf"),
        ('1.2.3.4 - - [31/Feb/2018:16:00:39 +0000] "GET /a HTTP/1.0" 200 1', "clf"),
        ('1.2.3.4 - - [09/May/2018:16:00:39 +0000] "GET /a HTTP/1.0" 200 -', "clf"),
        ("", "csv"),
        ("  ", "clf"),
    ],
)
def test_event_time_of_usual_and_bad_lines(line, fmt):
    assert access_log.event_time(line, fmt) == _parsed_time(line, fmt)


@given(st.text())
def test_any_text_parses_or_is_a_bad_line(text):
    for fmt in ("csv", "clf"):
        try:
            record = parse_line(text, fmt)
        except BadLine as bad:
            assert reason_code(bad.args[0]) in {
                access_log.WRONG_FIELD_COUNT,
                access_log.BAD_DATE,
                access_log.BAD_STATUS,
                access_log.BAD_BYTES,
                access_log.BAD_REQUEST,
                access_log.CONTROL_CHARACTERS,
                access_log.UNDECODABLE,
                access_log.UNPARSEABLE,
            }
        else:
            assert record is None or isinstance(record, AccessRecord)


@pytest.mark.parametrize(
    ("line", "shape"),
    [
        ("a" + " " * 200_000 + "b", None),
        ("a," + " " * 200_000 + 'x"', None),
        ('"' + 'a""' * 100_000, None),
        ("[" * 200_000, None),
        ('[x] "y' * 30_000, "clf"),  # CLF-shaped: '... [x] "...'
        ("a " * 100_000, None),
        ('a b c [09/May/2018:16:00:39 +0000] "' + '"x' * 100_000, "clf"),
        (
            'a b c [09/May/2018:16:00:39 +0000] "GET / HTTP/1.1" 200 1 ' + "x" * 200_000 + "\x00",
            "clf",
        ),
    ],
)
def test_long_bad_lines_are_bad_lines_and_told_apart_by_their_shape(line, shape):
    """Long lines built to make a backtracking regular expression slow (their timing is
    benchmarks/bench_bad_lines.py's): bad in both formats, and ``detect_format`` tells the
    CLF-shaped ones and refuses the others."""
    for fmt in ("csv", "clf"):
        with pytest.raises(BadLine):
            parse_line(line, fmt)
    if shape is None:
        with pytest.raises(ValueError, match="cannot tell the format"):
            detect_format([line])
    else:
        assert detect_format([line]) == shape
