"""A deterministic generator of realistic HTTP access logs (``beam-tally generate access``).

One file of ``csv`` (the exercise's format, header first) or ``clf`` (nginx's combined format)
lines for demos, tests and benchmarks: a host pool with a few heavy hosts and a long tail (some
IPv6), mostly anonymous users, Zipf-popular paths under /api /report /static /login /admin,
mostly GET and 2xx, log-normal sizes, and a Poisson number of lines per second around ``rate``.
``bursts`` raise the rate for a while (to cross the alert threshold and recover), ``disorder``
shuffles lines locally in time and ``bad_fraction`` replaces lines with bad ones of varied kinds.
Only the seeded ``random.Random`` is used: the same arguments always write the same bytes.

Independent of ``transforms/access_log.py`` (the parser), so that its tests check one against
the other.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import math
import os
import random
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from beam_tally.errors import HelpRequested, UsageError, UsageParser, flags_help
from beam_tally.terminal import escape_control
from transforms.timefmt import iso_utc

FORMATS = ("csv", "clf")
DEFAULT_START = 1549573860  # 2019-02-07T21:11:00Z, the exercise's first line
CSV_HEADER = '"remotehost","rfc931","authuser","date","request","status","bytes"\n'
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

USERS = ["apache", "james", "mary", "frank", "liz", "wei", "aiko", "priya", "mateo", "zoë"]
# (path, mu of the log-normal size): ranked by popularity (Zipf weights by rank).
PATHS = [
    ("/api/user", 6.5),
    ("/report", 9.0),
    ("/static/css/app.css", 8.5),
    ("/api/orders", 7.0),
    ("/", 8.0),
    ("/login", 6.0),
    ("/static/js/app.js", 10.0),
    ("/api/user/42", 6.0),
    ("/api/search?q=beam&page=2", 7.5),
    ("/report/daily?date=2019-02-07", 9.5),
    ("/static/img/logo%20v2.png", 9.0),
    ("/admin", 7.5),
    ("/api/orders/1001/items", 6.5),
    ("/favicon.ico", 7.0),
    ("/admin/users", 7.5),
    ("/api/", 5.0),
    ("/report/export.csv", 11.0),
    ("/login?next=/admin/users", 6.0),
    ("/static/fonts/inter.woff2", 10.5),
    ("/api/health", 3.5),
    ("/admin/settings", 7.0),
    ("/robots.txt", 4.5),
    ("/api/user/7/preferences", 6.0),
    ("/report;jsessionid=ABC123", 9.0),
]
METHODS = [("GET", 85.0), ("POST", 9.0), ("PUT", 2.0), ("DELETE", 1.5), ("HEAD", 1.5)]
METHODS += [("OPTIONS", 0.5), ("PATCH", 0.5)]
STATUSES = [(200, 78.0), (201, 2.0), (204, 1.5), (206, 0.5), (301, 1.5), (302, 2.5)]
STATUSES += [(304, 5.0), (400, 1.5), (401, 1.0), (403, 1.0), (404, 3.5), (429, 0.3)]
STATUSES += [(500, 0.8), (502, 0.4), (503, 0.5)]
PROTOCOLS = [("HTTP/1.1", 70.0), ("HTTP/1.0", 15.0), ("HTTP/2.0", 15.0)]
REFERERS = ["-", "-", "https://www.example.com/", "https://example.com/report"]
REFERERS += ["https://search.example.org/?q=http+monitor"]
AGENTS = [
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/72.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_14_3) AppleWebKit/605.1.15 Version/12.0 Safari",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:65.0) Gecko/20100101 Firefox/65.0",
    "curl/7.64.0",
    "python-requests/2.21.0",
    "kube-probe/1.13",
]
BAD_KINDS = (
    "wrong_field_count",
    "bad_date",
    "bad_status",
    "bad_bytes",
    "bad_request",
    "control_characters",
    "invalid_utf8",
    "garbage",
)
GARBAGE = [
    "this is not a log line",
    "<html><body><h1>502 Bad Gateway</h1></body></html>",
    '{"level":"info","msg":"server started"}',
    "GET /index.html HTTP/1.1",
    "-,-,-",
    "#Fields: date time cs-method cs-uri-stem",
]
CONTROLS = ["\x00", "\x07", "\x1b[31m", "\x7f", "\x9b"]
INVALID_UTF8 = ["\udcff\udcfe", "\udcc3(", "\udce2\udc82"]  # surrogateescape'd bytes
_OFFSET_RE = re.compile(r"([+-])([01][0-9]|2[0-3])([0-5][0-9])")
_FLUSH_LINES = 65536


def _zipf(count: int, exponent: float) -> list[float]:
    return list(itertools.accumulate(1.0 / (rank + 1) ** exponent for rank in range(count)))


def _cumulative(weights: list[tuple[object, float]]) -> tuple[list, list[float]]:
    return [value for value, _ in weights], list(itertools.accumulate(w for _, w in weights))


def make_hosts(rng: random.Random, count: int) -> list[str]:
    """Distinct client addresses: IPv4 from private and documentation ranges, ~8% IPv6."""
    hosts: list[str] = []
    seen: set[str] = set()
    while len(hosts) < count:
        roll = rng.random()
        if roll < 0.08:
            host = f"2001:db8:{rng.randrange(1, 0xFFFF):x}::{rng.randrange(1, 0xFFFF):x}"
        elif roll < 0.5:
            host = f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        elif roll < 0.7:
            host = f"192.168.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        else:
            prefix = rng.choice(("203.0.113", "198.51.100", "192.0.2"))
            host = f"{prefix}.{rng.randrange(1, 255)}"
        if host not in seen:
            seen.add(host)
            hosts.append(host)
    return hosts


def poisson(rng: random.Random, mean: float) -> int:
    """A Poisson-distributed count (Knuth's method; normal approximation for large means)."""
    if mean <= 0:
        return 0
    if mean >= 30:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


def rate_at(offset: int, rate: float, bursts: Sequence[tuple[int, int, float]]) -> float:
    """The mean lines per second at ``offset`` s: the highest of the base rate and the rates of
    the bursts ``(start_offset, duration, rate)`` covering it."""
    for start, duration, burst_rate in bursts:
        if start <= offset < start + duration:
            rate = max(rate, burst_rate)
    return rate


def _clf_time(timestamp: int, offset: timedelta, zone: str) -> str:
    local = datetime.fromtimestamp(timestamp, UTC) + offset
    return (
        f"{local.day:02d}/{MONTHS[local.month - 1]}/{local.year:04d}:"
        f"{local.hour:02d}:{local.minute:02d}:{local.second:02d} {zone}"
    )


def _good_line(fmt: str, parts: tuple) -> str:
    host, user, stamp, method, path, protocol, status, size, tail = parts
    if fmt == "csv":
        return f'"{host}","-","{user}",{stamp},"{method} {path} {protocol}",{status},{size}'
    return f'{host} - {user} [{stamp}] "{method} {path} {protocol}" {status} {size}{tail}'


def _with_control(rng: random.Random, fields: dict) -> None:
    if rng.random() < 0.5:
        fields["user"] += rng.choice(CONTROLS)
    else:
        fields["path"] += rng.choice(CONTROLS)


def _with_bad_date(rng: random.Random, fields: dict) -> None:
    if fields["fmt"] == "csv":
        fields["stamp"] = rng.choice(["2019-02-07T21:11:00Z", "yesterday", "", "1.5", "-5"])
    else:
        fields["stamp"] = rng.choice(
            ["07/Foo/2019:21:11:00 +0000", "31/Feb/2019:10:00:00 +0000", "2019-02-07 21:11"]
        )


def _with_bad_request(rng: random.Random, fields: dict) -> None:
    fields["request"] = rng.choice(
        ["-", "GET", f"GET {fields['path']} b HTTP/1.1", "\\x16\\x03\\x01\\x02"]
    )


_CORRUPT = {
    "control_characters": _with_control,
    "bad_date": _with_bad_date,
    "bad_status": lambda rng, fields: fields.update(status=rng.choice(["999", "OK", "20", "099"])),
    "bad_bytes": lambda rng, fields: fields.update(size=rng.choice(["-12", "lots", "12.5", "0x1"])),
    "bad_request": _with_bad_request,
}


def _bad_line(rng: random.Random, fmt: str, parts: tuple) -> str:
    """A line that does not parse, made from the parts of a good one (without the newline)."""
    kind = rng.choice(BAD_KINDS)
    if kind == "garbage":
        return rng.choice(GARBAGE)
    if kind == "invalid_utf8":
        return _good_line(fmt, parts) + rng.choice(INVALID_UTF8)
    names = ("host", "user", "stamp", "method", "path", "protocol", "status", "size", "tail")
    fields = dict(zip(names, map(str, parts), strict=True), fmt=fmt, request=None)
    if kind in _CORRUPT:
        _CORRUPT[kind](rng, fields)
    request = fields["request"] or f"{fields['method']} {fields['path']} {fields['protocol']}"
    host, user, stamp, status, size = (
        fields[k] for k in ("host", "user", "stamp", "status", "size")
    )
    if fmt == "csv":
        row = [f'"{host}"', '"-"', f'"{user}"', stamp, f'"{request}"', status, size]
        if kind == "wrong_field_count":
            row = row[:-1] if rng.random() < 0.5 else [*row, '"extra"']
        return ",".join(row)
    if kind == "wrong_field_count":
        return f'{host} - {user} [{stamp}] "{request}"'
    return f'{host} - {user} [{stamp}] "{request}" {status} {size}{fields["tail"]}'


class _Traffic:
    """The pools and the seeded choices: ``second(timestamp, n)`` makes one second's lines."""

    def __init__(self, rng: random.Random, fmt: str, bad_fraction: float, utc_offset: str):
        zone = _OFFSET_RE.fullmatch(utc_offset)
        if zone is None:
            raise ValueError(f"utc_offset must be +hhmm or -hhmm, not {utc_offset!r}")
        offset = timedelta(hours=int(zone.group(2)), minutes=int(zone.group(3)))
        self.offset = -offset if zone.group(1) == "-" else offset
        self.zone, self.rng, self.fmt, self.bad_fraction = utc_offset, rng, fmt, bad_fraction
        self.hosts = make_hosts(rng, 300)
        self.host_weights = _zipf(len(self.hosts), 1.2)
        # Most clients are anonymous; an authenticated client mostly sends the same user.
        self.host_users = {
            host: "-" if rng.random() < 0.8 else USERS[min(int(rng.paretovariate(1.2)) - 1, 9)]
            for host in self.hosts
        }
        self.paths = [path for path, _ in PATHS]
        self.path_mu = dict(PATHS)
        self.path_weights = _zipf(len(self.paths), 1.1)
        self.methods = _cumulative(METHODS)
        self.statuses = _cumulative(STATUSES)
        self.protocols = _cumulative(PROTOCOLS)
        self.tails = [f' "{referer}" "{agent}"' for referer in REFERERS for agent in AGENTS]

    def second(self, timestamp: int, n: int) -> list[tuple[str, bool]]:
        """``n`` lines (with their newline) at ``timestamp``, each with whether it is good."""
        rng, fmt, bad_fraction = self.rng, self.fmt, self.bad_fraction
        choices, lognormal, uniform = rng.choices, rng.lognormvariate, rng.random
        stamp = str(timestamp) if fmt == "csv" else _clf_time(timestamp, self.offset, self.zone)
        lines = []
        for host, path, method, status, protocol, tail in zip(
            choices(self.hosts, cum_weights=self.host_weights, k=n),
            choices(self.paths, cum_weights=self.path_weights, k=n),
            choices(self.methods[0], cum_weights=self.methods[1], k=n),
            choices(self.statuses[0], cum_weights=self.statuses[1], k=n),
            choices(self.protocols[0], cum_weights=self.protocols[1], k=n),
            choices(self.tails, k=n),
            strict=True,
        ):
            if method == "HEAD" or status in (204, 304):
                size = 0
            else:
                size = int(lognormal(self.path_mu[path], 1.0))
            size_text = "-" if size == 0 and fmt == "clf" else str(size)
            user = self.host_users[host] if uniform() < 0.95 else "-"
            parts = (host, user, stamp, method, path, protocol, status, size_text, tail)
            if bad_fraction and uniform() < bad_fraction:
                lines.append((_bad_line(rng, fmt, parts) + "\n", False))
            else:
                lines.append((_good_line(fmt, parts) + "\n", True))
        return lines


def generate_access(
    out: str,
    *,
    fmt: str,
    seconds: int,
    rate: float,
    start: int = DEFAULT_START,
    bursts: Sequence[tuple[int, int, float]] = (),
    disorder: float = 0.0,
    bad_fraction: float = 0.0,
    seed: int = 0,
    utc_offset: str = "+0000",
) -> dict:
    """Writes the file; returns ``{"lines", "good", "bad", "first", "last"}``.

    ``lines`` counts data lines (the CSV header is not one); ``first`` and ``last`` are the
    smallest and largest epoch seconds of the good lines (``None`` when there are none). Lines
    have event times in ``[start, start + seconds)``. ``disorder`` > 0 delays each line by a
    random ``[0, disorder)`` s before sorting, so a line is never more than ``disorder`` s older
    than the newest line before it. ``utc_offset`` is the zone CLF times are written in.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, not {fmt!r}")
    if seconds < 0 or rate < 0 or disorder < 0 or not 0.0 <= bad_fraction <= 1.0:
        raise ValueError("seconds, rate and disorder must be >= 0 and bad_fraction in 0..1")
    rng = random.Random(seed)
    traffic = _Traffic(rng, fmt, bad_fraction, utc_offset)
    good = bad = 0
    first = last = None
    pending: list[tuple[float, int, str]] = []  # (sort key, sequence, line) when disordered
    sequence = itertools.count()
    chunk: list[str] = [CSV_HEADER] if fmt == "csv" else []
    directory = os.path.dirname(out)
    if directory:
        os.makedirs(directory, exist_ok=True)
    with open(out, "wb") as handle:
        for timestamp in range(start, start + seconds):
            while pending and pending[0][0] < timestamp:
                chunk.append(heapq.heappop(pending)[2])
            lines = traffic.second(
                timestamp, poisson(rng, rate_at(timestamp - start, rate, bursts))
            )
            in_second = sum(ok for _, ok in lines)
            good += in_second
            bad += len(lines) - in_second
            if in_second:
                first = timestamp if first is None else first
                last = timestamp
            if disorder:
                for line, _ in lines:
                    key = timestamp + rng.random() * disorder
                    heapq.heappush(pending, (key, next(sequence), line))
            else:
                chunk.extend(line for line, _ in lines)
            if len(chunk) >= _FLUSH_LINES:
                handle.write("".join(chunk).encode("utf-8", "surrogateescape"))
                chunk.clear()
        chunk.extend(heapq.heappop(pending)[2] for _ in range(len(pending)))
        handle.write("".join(chunk).encode("utf-8", "surrogateescape"))
    return {"lines": good + bad, "good": good, "bad": bad, "first": first, "last": last}


def _burst(text: str) -> tuple[int, int, float]:
    try:
        start, duration, burst_rate = text.split(":")
        burst = (int(start), int(duration), float(burst_rate))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not START:DURATION:RATE (seconds, seconds, lines per second)"
        ) from None
    if burst[0] < 0 or burst[1] < 0 or not burst[2] >= 0 or math.isinf(burst[2]):
        raise argparse.ArgumentTypeError(f"{text!r}: START, DURATION and RATE must be >= 0")
    return burst


def _access_parser() -> argparse.ArgumentParser:
    parser = UsageParser(prog="beam-tally generate access", allow_abbrev=False, add_help=False)
    parser.add_argument("--out", required=True, metavar="FILE", help="the file to write")
    parser.add_argument(
        "--format",
        required=True,
        choices=FORMATS,
        dest="fmt",
        help="csv (the exercise's, with a header) or clf (Common Log Format)",
    )
    parser.add_argument("--seconds", type=int, required=True, help="seconds of event time")
    parser.add_argument("--rate", type=float, required=True, help="mean lines per second")
    parser.add_argument(
        "--burst",
        type=_burst,
        action="append",
        default=[],
        metavar="START:DURATION:RATE",
        help="from START s after --start, for DURATION s, RATE lines per second (repeatable)",
    )
    parser.add_argument(
        "--disorder",
        type=float,
        default=0.0,
        help="at most this many seconds a line is out of time order",
    )
    parser.add_argument(
        "--bad_fraction", type=float, default=0.0, help="fraction of bad lines (0..1)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, metavar="S", help="random seed: same seed, same bytes"
    )
    parser.add_argument(
        "--start",
        type=int,
        default=DEFAULT_START,
        metavar="EPOCH_S",
        help="epoch second of the first line",
    )
    parser.add_argument("--utc_offset", default="+0000", help="time zone of clf times (+hhmm)")
    return parser


def _iso_or_dash(timestamp: int | None) -> str:
    return "-" if timestamp is None else iso_utc(timestamp)


def run(argv: list[str]) -> int:
    """``beam-tally generate access ...``; ``argv`` may start with ``access`` or not."""
    if argv[:1] == ["access"]:
        argv = argv[1:]
    if any(arg in ("-h", "--help") for arg in argv):
        raise HelpRequested(
            "usage: beam-tally generate access --out FILE --format csv|clf --seconds N --rate R "
            "[options]\n\nWrites one HTTP access log for 'beam-tally monitor'.\n\n"
            + flags_help(_access_parser())
        )
    args = _access_parser().parse_args(argv)
    if not 0.0 <= args.bad_fraction <= 1.0:
        raise UsageError("--bad_fraction must be between 0 and 1")
    if args.seconds < 0:
        raise UsageError("--seconds must be 0 or more")
    if not 0.0 <= args.rate < math.inf:
        raise UsageError("--rate must be 0 or more")
    if not 0.0 <= args.disorder < math.inf:
        raise UsageError("--disorder must be 0 or more")
    if not 0 <= args.start <= 253402300799 - args.seconds:
        raise UsageError("--start must be an epoch second between 1970 and 9999")
    if _OFFSET_RE.fullmatch(args.utc_offset) is None:
        raise UsageError("--utc_offset must be +hhmm or -hhmm, e.g. +0200")
    if os.path.isdir(args.out):
        raise UsageError(f"--out {args.out!r} is a directory; give a file name")
    counts = generate_access(
        args.out,
        fmt=args.fmt,
        seconds=args.seconds,
        rate=args.rate,
        start=args.start,
        bursts=args.burst,
        disorder=args.disorder,
        bad_fraction=args.bad_fraction,
        seed=args.seed,
        utc_offset=args.utc_offset,
    )
    print(
        f"wrote {counts['lines']:,} {args.fmt} lines to {escape_control(args.out)}: "
        f"{counts['good']:,} good, "
        f"{counts['bad']:,} bad, event time {_iso_or_dash(counts['first'])} .. "
        f"{_iso_or_dash(counts['last'])}"
    )
    return 0
