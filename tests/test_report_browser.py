"""Both reports in a real browser: Debian's headless Chromium, driven by Playwright.

Each page loads without a console error or a request, draws every chart with as many points
as the data has (counted in the DOM Chromium drew, against plain-Python counts from the
inputs), and its screenshot is not blank. Script injections in every log field stay text. A
live page reloads itself and keeps its zoom. Skipped only where there is no Chromium and CI is
unset; under CI a missing Chromium fails."""

from __future__ import annotations

import os

import pytest

from beam_tally.report import REPORT, write_report
from beam_tally.report.browser import chromium, chromium_path, drawn_fraction, open_report
from beam_tally.report.charts import LABEL_CHARS
from tests.access_oracle import read_requests, window_stats
from tests.conftest import independent_tally
from tests.report_oracle import (
    PAYLOADS,
    expected_periods,
    run_hostile,
    run_monitor,
    run_tally,
)

pytestmark = pytest.mark.skipif(
    chromium_path() is None and not os.environ.get("CI"),
    reason="no Chromium at /usr/bin/chromium (apt-get install chromium); CI runs these",
)

COUNT = "(selector) => document.querySelectorAll(selector).length"


@pytest.fixture(scope="module")
def browser():
    with chromium() as context:
        yield context


@pytest.fixture(scope="module")
def monitor_run(tmp_path_factory):
    return run_monitor(tmp_path_factory.mktemp("browser_monitor"))


@pytest.fixture(scope="module")
def tally_run(tmp_path_factory):
    return run_tally(tmp_path_factory.mktemp("browser_tally"))


def assert_clean(opened) -> None:
    assert opened.errors == []
    assert opened.dialogs == []
    assert opened.requests == []  # offline: nothing but the file itself


def assert_not_blank(page) -> None:
    drawn, colours = drawn_fraction(page.screenshot(full_page=True))
    assert drawn > 0.05 and colours > 50, (drawn, colours)


def count(page, selector: str) -> int:
    return page.evaluate(COUNT, selector)


def test_the_monitor_report_draws_every_window_and_alert(browser, monitor_run):
    path, out, _ = monitor_run
    good, _ = read_requests(path)
    windows = window_stats(good)
    opened = open_report(browser, os.path.join(out, REPORT))
    try:
        assert_clean(opened)
        page = opened.page
        # One bar per stats window, one shaded band per alert period, as Chromium drew them.
        assert count(page, "#chart-traffic .barlayer .trace .point") == len(windows)
        assert count(page, "#chart-traffic .shapelayer path") == len(
            expected_periods(good, 9.0, 120)
        )
        lengths = page.evaluate(
            "Array.from(document.getElementById('chart-traffic').data, t => t.x.length)"
        )
        assert lengths == [len(windows), len(windows), 2]
        classes = {c for row in windows.values() for c in row["status_classes"]}
        assert count(page, "#chart-status .scatterlayer .trace") == len(classes)
        for chart in ("chart-sections", "chart-hosts-hits", "chart-hosts-bytes", "chart-users"):
            assert count(page, f"#{chart} .barlayer .point") > 0, chart
        assert count(page, "#chart-dead-reasons .barlayer .point") > 0
        assert_not_blank(page)
    finally:
        opened.page.close()


def test_the_tally_report_draws_every_file_and_update(browser, tally_run):
    pattern, out, _ = tally_run
    per_file, _ = independent_tally(pattern)
    emails = {email for counts in per_file.values() for email in counts}
    opened = open_report(browser, os.path.join(out, REPORT))
    try:
        assert_clean(opened)
        page = opened.page
        assert count(page, "#chart-emails .barlayer .point") == min(15, len(emails))
        assert count(page, "#chart-files .barlayer .point") == len(per_file)
        # Two traces (logs, distinct emails), a marker per file applied on each.
        assert count(page, "#chart-growth .scatterlayer .point") == 2 * len(per_file)
        assert count(page, "#chart-dead-reasons .barlayer .point") > 0
        assert count(page, "#chart-dead-files .barlayer .point") > 0
        assert_not_blank(page)
    finally:
        opened.page.close()


def test_script_injections_in_every_field_stay_text(browser, tmp_path_factory):
    for out in run_hostile(tmp_path_factory.mktemp("browser_hostile")):
        opened = open_report(browser, os.path.join(out, REPORT))
        try:
            assert_clean(opened)  # a script that ran, or CSP refusing one, would show here
            page = opened.page
            assert page.evaluate("window.__pwned") is None
            assert count(page, "[data-pwned]") == 0
            assert count(page, "svg a, main a, iframe, img") == 0
            shown = page.evaluate(
                "document.body.innerText + Array.from(document.querySelectorAll('svg text'),"
                " t => t.textContent).join('\\n')"
            )
            shown = shown.replace("\u2028", "").replace("\u2029", "")
            for payload in PAYLOADS:  # as written (axis labels cut long ones)
                visible = payload.replace("\u2028", "").replace("\u2029", "")
                assert visible[: LABEL_CHARS - 1] in shown, payload
        finally:
            opened.page.close()


def test_a_live_page_reloads_itself_and_keeps_its_zoom(browser, monitor_run):
    _, out, _ = monitor_run
    live = os.path.join(out, "live")
    os.makedirs(live, exist_ok=True)
    for name in os.listdir(out):
        if name.endswith(".jsonl"):
            os.link(os.path.join(out, name), os.path.join(live, name))
    write_report(live, "monitor", {"threshold": 9.0}, live=True)
    opened = open_report(browser, os.path.join(live, REPORT))
    try:
        assert_clean(opened)
        page = opened.page
        zoom = page.evaluate(
            "() => { const gd = document.getElementById('chart-traffic');"
            " const r = [gd.data[0].x[5], gd.data[0].x[20]];"
            " return window.Plotly.relayout(gd, {'xaxis.range': r}).then(() => r); }"
        )
        page.wait_for_event("load", timeout=20_000)  # the page's own timer reloads it
        page.wait_for_function("window.__reportReady !== undefined")
        ranges = page.evaluate(
            "['chart-traffic', 'chart-status'].map(id => document.getElementById(id)"
            ".layout.xaxis.range.map(v => typeof v === 'number' ? v"
            " : new Date(v.replace(' ', 'T') + 'Z').getTime()))"
        )
        assert ranges == [zoom, zoom]  # kept across the reload, and followed by the other
        assert_clean(opened)  # the reloaded page too
    finally:
        opened.page.close()
