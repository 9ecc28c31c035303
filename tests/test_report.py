"""report.html without a browser: what each chart holds, against plain-Python computations
from the input files; the escaping; ``beam-tally report DIR``; the live rewrite.

The browser tests (``test_report_browser``) check that Chromium draws these pages."""

from __future__ import annotations

import html
import json
import os
import threading
import time
from collections import Counter

import pytest

from beam_tally.generate.access import generate_access
from beam_tally.report import REPORT, write_report
from beam_tally.report.charts import traffic_figure
from beam_tally.report.data import DeadLetters, MonitorData
from beam_tally.report.page import chart_text, script_json
from tests.access_oracle import read_requests, window_stats
from tests.conftest import independent_tally
from tests.report_oracle import (
    PAYLOADS,
    cli,
    dead_letter_reasons,
    expected_averages,
    expected_periods,
    expected_top,
    figure,
    page_spec,
    run_hostile,
    run_monitor,
    run_tally,
)


@pytest.fixture(scope="module")
def monitor_run(tmp_path_factory):
    return run_monitor(tmp_path_factory.mktemp("report_monitor"))


def test_a_batch_monitor_run_says_where_its_report_is(monitor_run):
    _, out, result = monitor_run
    assert result.stdout.splitlines()[-1] == f"report: {os.path.join(out, REPORT)}"
    assert page_spec(os.path.join(out, REPORT))["refresh"] is None  # a finished run's page


def test_the_traffic_chart_has_a_bar_per_stats_window_and_the_alert_periods(monitor_run):
    path, out, _ = monitor_run
    good, _ = read_requests(path)
    windows = window_stats(good)
    traffic = figure(page_spec(os.path.join(out, REPORT)), "chart-traffic")
    bars, average, threshold = traffic["data"]
    assert bars["x"] == [start * 1000 for start in windows]
    assert bars["y"] == [row["hits"] for row in windows.values()]
    averages = expected_averages(good, 120)
    assert average["x"] == [end * 1000 for end in averages]
    assert average["customdata"] == pytest.approx(list(averages.values()), abs=1e-3)
    assert threshold["y"] == [90, 90]  # 9 req/s over 10 s windows
    periods = expected_periods(good, 9.0, 120)
    assert len(periods) == 2  # the data has two bursts, each raising an alert that recovers
    shapes = traffic["layout"]["shapes"]
    assert [(s["x0"], s["x1"]) for s in shapes] == [(a * 1000, b * 1000) for a, b in periods]


def test_status_classes_and_top_lists_equal_independent_counts(monitor_run):
    path, out, _ = monitor_run
    good, _ = read_requests(path)
    windows = window_stats(good)
    spec = page_spec(os.path.join(out, REPORT))
    status = {t["name"]: t["y"] for t in figure(spec, "chart-status")["data"]}
    classes = sorted({c for row in windows.values() for c in row["status_classes"]})
    assert sorted(status) == classes
    starts = range(min(windows), max(windows) + 10, 10)  # every window, empty ones too
    for name in classes:
        counts = [windows[t]["status_classes"].get(name, 0) if t in windows else 0 for t in starts]
        assert status[name] == [*counts, counts[-1]]  # a step line: the last one to its end
    for figure_id, key in [
        ("chart-sections", "sections"),
        ("chart-hosts-hits", "hosts_by_hits"),
        ("chart-hosts-bytes", "hosts_by_bytes"),
        ("chart-users", "users"),
    ]:
        (bars,) = figure(spec, figure_id)["data"]
        expected = expected_top(good, key, 5)
        assert list(zip(bars["y"], bars["x"], strict=True)) == [
            (chart_text(name), value) for name, value in expected
        ], key


def test_a_day_of_windows_is_one_step_line_over_every_window():
    """8,640 windows, with an hour missing: drawn as a step line (not 8,640 bars) whose points
    are every window's start, the hour's as 0, and the last window's end."""
    start, size = 1549573860 - 1549573860 % 10, 10
    gap = range(start + 3600, start + 7200)
    rows = [
        {"start": t, "end": t + size, "hits": 1 + (t // size) % 7, "status_classes": {"2xx": 1}}
        for t in range(start, start + 86_400, size)
        if t not in gap
    ]
    data = MonitorData(rows, [], DeadLetters(), size)
    hits = traffic_figure(data, 10.0, 120)["data"][0]
    assert hits["type"] == "scatter" and hits["line"]["shape"] == "hv"
    assert hits["x"] == [t * 1000 for t in range(start, start + 86_400 + size, size)]
    by_start = {row["start"]: row["hits"] for row in rows}
    expected = [by_start.get(t, 0) for t in range(start, start + 86_400, size)]
    assert hits["y"] == [*expected, expected[-1]]


def test_an_alert_still_active_at_the_end_is_shaded_to_the_last_window():
    rows = [
        {"start": t, "end": t + 10, "hits": 5, "status_classes": {"2xx": 5}}
        for t in range(1000, 1100, 10)
    ]
    alerts = [
        {"kind": "alert", "at": 1015, "hits": 9, "average": 1.5},
        {"kind": "recover", "at": 1031, "hits": 1, "average": 0.5},
        {"kind": "alert", "at": 1072, "hits": 9, "average": 1.5},
    ]
    traffic = traffic_figure(MonitorData(rows, alerts, DeadLetters(), 10), 1.0, 6)
    bands = [(s["x0"], s["x1"]) for s in traffic["layout"]["shapes"]]
    assert bands == [(1_015_000, 1_031_000), (1_072_000, 1_100_000)]  # to the last window's end
    labels = [a["text"] for a in traffic["layout"]["annotations"]]
    assert labels[1].endswith("still active")


def test_dead_letters_by_reason_count_every_bad_line(monitor_run):
    path, out, _ = monitor_run
    _, bad = read_requests(path)
    (bars,) = figure(page_spec(os.path.join(out, REPORT)), "chart-dead-reasons")["data"]
    assert dict(zip(bars["x"], bars["y"], strict=True)) == dead_letter_reasons(out)
    assert sum(bars["y"]) == bad > 0


@pytest.fixture(scope="module")
def tally_run(tmp_path_factory):
    return run_tally(tmp_path_factory.mktemp("report_tally"))


def test_the_tally_report_shows_emails_files_growth_and_dead_letters(tally_run):
    pattern, out, result = tally_run
    assert result.stdout.splitlines()[-1] == f"report: {os.path.join(out, REPORT)}"
    per_file, bad = independent_tally(pattern)
    spec = page_spec(os.path.join(out, REPORT))
    overall: Counter = Counter()
    for counts in per_file.values():
        overall.update(counts)
    (emails,) = figure(spec, "chart-emails")["data"]
    top = sorted(overall.items(), key=lambda item: (-item[1], item[0]))[:15]
    assert list(zip(emails["y"], emails["x"], strict=True)) == top
    (files,) = figure(spec, "chart-files")["data"]
    assert files["x"] == [os.path.basename(p) for p in sorted(per_file)]
    assert files["y"] == [sum(per_file[p].values()) for p in sorted(per_file)]
    logs, distinct = figure(spec, "chart-growth")["data"]
    assert logs["x"] == list(range(1, len(per_file) + 1))  # one point per file applied
    assert logs["y"][-1] == sum(overall.values())
    assert distinct["y"][-1] == len(overall)
    assert all(a <= b for a, b in zip(logs["y"], logs["y"][1:], strict=False))
    (reasons,) = figure(spec, "chart-dead-reasons")["data"]
    assert dict(zip(reasons["x"], reasons["y"], strict=True)) == dead_letter_reasons(out)
    assert sum(reasons["y"]) == bad > 0
    (by_file,) = figure(spec, "chart-dead-files")["data"]
    assert sum(by_file["y"]) == bad


def test_report_rebuilds_a_finished_runs_page(monitor_run, tally_run):
    for out in (monitor_run[1], tally_run[1]):
        path = os.path.join(out, REPORT)
        before = page_spec(path)
        result = cli("report", out)  # the run's parameters are read from its page
        assert result.stdout.strip() == f"report: {path}"
        assert page_spec(path)["figures"] == before["figures"]
        os.remove(path)  # from the output files alone, given the run's threshold
        cli("report", out, "--threshold", "9")
        assert page_spec(path)["figures"] == before["figures"]
    monitor_out = monitor_run[1]
    cli("report", monitor_out, "--threshold", "20")
    threshold = figure(page_spec(os.path.join(monitor_out, REPORT)), "chart-traffic")["data"][2]
    assert threshold["y"] == [200, 200]
    cli("report", monitor_out, "--threshold", "9")  # as the run wrote it, for the other tests


def test_report_of_a_directory_without_outputs_is_one_line_and_exit_2(tmp_path):
    for target in (tmp_path, tmp_path / "missing"):
        result = cli("report", str(target), check=False)
        assert result.returncode == 2
        assert len(result.stderr.strip().splitlines()) == 1
        assert "Traceback" not in result.stderr


def test_script_json_leaves_no_markup_and_reads_back():
    corpus = [*PAYLOADS, "\u2028\u2029", "a&b<c>d", '"quoted"', "\\", "zoë \U0001f600"]
    encoded = script_json({"strings": corpus, corpus[0]: corpus})
    for char in "<>&\u2028\u2029":
        assert char not in encoded
    assert json.loads(encoded) == {"strings": corpus, corpus[0]: corpus}


def test_chart_text_is_drawn_back_as_written():
    for payload in PAYLOADS:
        escaped = chart_text(payload)
        assert "<" not in escaped and ">" not in escaped
        assert html.unescape(escaped) == payload


@pytest.fixture(scope="module")
def hostile_runs(tmp_path_factory):
    return run_hostile(tmp_path_factory.mktemp("report_hostile"))


def test_no_payload_reaches_the_page_as_markup(hostile_runs):
    for out in hostile_runs:
        with open(os.path.join(out, REPORT), encoding="utf-8") as handle:
            page = handle.read()
        for payload in PAYLOADS:
            assert payload not in page
    monitor_spec = page_spec(os.path.join(hostile_runs[0], REPORT))
    (users,) = figure(monitor_spec, "chart-users")["data"]
    assert sorted(html.unescape(u) for u in users["y"]) == sorted(PAYLOADS)


def test_the_report_is_replaced_whole_never_seen_half_written(monitor_run, tmp_path):
    _, out, _ = monitor_run
    params = {"threshold": 9.0, "alert_window": 120}
    stop = threading.Event()

    def rewrite():
        while not stop.is_set():
            write_report(out, "monitor", params, live=True)

    writer = threading.Thread(target=rewrite, daemon=True)
    writer.start()
    reads = 0
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and reads < 200:
            with open(os.path.join(out, REPORT), encoding="utf-8") as handle:
                page = handle.read()
            assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
            reads += 1
    finally:
        stop.set()
        writer.join(timeout=30)
        cli("report", out)  # the finished run's page again, for the other tests
    assert reads > 10
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]


def test_a_live_run_rewrites_its_report_as_it_goes(tmp_path):
    """A live monitor over a replay at 60x: its page is rewritten while the run goes (a page
    that reloads itself), and the run ends with the finished page of every window."""
    from tests.test_streaming_cli import live, read_outputs

    logs = tmp_path / "logs"
    logs.mkdir()
    generate_access(str(logs / "a.csv"), fmt="csv", seconds=600, rate=3, bursts=[(100, 60, 15)])
    out = tmp_path / "live"
    page = out / REPORT
    live_windows = set()  # how many windows each live page drew
    producer_args = ("access", "--input", str(logs / "a.csv"), "--speedup", "60")
    with live(producer_args, "monitor", out) as (_, consumer):
        deadline = time.monotonic() + 120
        while consumer.popen.poll() is None and time.monotonic() < deadline:
            spec = page_spec(str(page)) if page.exists() else {"refresh": None}
            if spec["refresh"]:
                live_windows.add(len(figure(spec, "chart-traffic")["data"][0]["x"]))
            time.sleep(0.3)
        assert consumer.wait(timeout=60) == 0, consumer.errors[-10:]
    assert len(live_windows) >= 2  # rewritten as windows closed, each time with more of them
    final = page_spec(str(page))
    assert final["refresh"] is None
    stats = read_outputs(str(out), "stats")
    good, _ = read_requests(str(logs / "a.csv"))
    assert len(stats) == len(window_stats(good))
    bars = figure(final, "chart-traffic")["data"][0]
    assert bars["x"] == sorted(s["start"] * 1000 for s in stats)
    assert consumer.lines[-1][1] == f"report: {page}"


def _slow_report_child(monkeypatch) -> None:
    """``report.report_line`` made to hang (60 s) in a forked child, as it is in this process."""
    from beam_tally import report

    parent = os.getpid()
    real = report.report_line

    def slow_in_the_child(*args):
        if os.getpid() != parent:
            time.sleep(60)
        return real(*args)

    monkeypatch.setattr(report, "report_line", slow_in_the_child)


def test_a_report_written_later_falls_back_to_this_process(monitor_run, monkeypatch):
    """``report_line_later`` in the command's own process: the forked child's report, or, when
    the fork fails or the child does not finish in time (it is killed), this process's."""
    import beam_tally
    from beam_tally import report

    out = monitor_run[1]
    path = os.path.join(out, REPORT)
    params = page_spec(path)["params"]
    expected = page_spec(path)["figures"]
    monkeypatch.setitem(beam_tally.COMMAND_PROCESS, "own", True)

    assert report.report_line_later(out, "monitor", params)() == f"report: {path}"  # forked
    assert page_spec(path)["figures"] == expected

    def no_fork():
        raise OSError("no fork here")

    with monkeypatch.context() as patched:
        patched.setattr(os, "fork", no_fork)
        assert report.report_line_later(out, "monitor", params)() == f"report: {path}"

    _slow_report_child(monkeypatch)
    monkeypatch.setattr(report, "REPORT_TIMEOUT", 0.5)
    started = time.monotonic()
    assert report.report_line_later(out, "monitor", params)() == f"report: {path}"
    assert time.monotonic() - started < 30 and page_spec(path)["figures"] == expected


def test_a_report_written_later_is_stopped_when_the_command_fails(monitor_run, monkeypatch):
    import beam_tally
    from beam_tally import report

    out = monitor_run[1]
    params = page_spec(os.path.join(out, REPORT))["params"]
    monkeypatch.setitem(beam_tally.COMMAND_PROCESS, "own", True)
    _slow_report_child(monkeypatch)
    started = time.monotonic()
    assert report.report_line_later(out, "monitor", params)(cancel=True) == ""
    assert time.monotonic() - started < 10  # killed and reaped, not waited 60 s for
