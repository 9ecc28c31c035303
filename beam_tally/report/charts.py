"""The two reports' contents: plotly figure JSON and HTML boxes, from ``data``'s records.

Times are epoch milliseconds on a date axis (plotly.js draws them in UTC: the page never reads
the browser's time zone). Every string from the logs goes through ``chart_text`` (labels) or
``text`` (HTML); numbers and our own words are written as they are.
"""

from __future__ import annotations

import os
from collections import Counter

from beam_tally.console import human_bytes
from beam_tally.report.data import (
    MonitorData,
    TallyData,
    alert_periods,
    every_window,
    ranked_totals,
    rolling_average,
    status_totals,
)
from beam_tally.report.page import Section, chart_div, chart_text, text
from transforms.timefmt import utc_text

TOP = 15  # entries of each whole-run top list
DEAD_LETTER_ROWS = 100  # dead letters listed in full (all are counted)
LABEL_CHARS = 48  # axis labels are cut here; hover shows the whole string
MAX_BAND_LABELS = 40  # alert periods labelled on the chart (all are shaded and in the table)
MAX_BARS = 2000  # more stats windows than this (5.5 h of 10 s ones) are drawn as a step line:
# one SVG path, not one per bar, so that a day of them (8,640) opens and zooms at once
STATUS_COLORS = {"1xx": "#8e9aaf", "2xx": "#2e9e5b", "3xx": "#3a7bd5", "4xx": "#f0a202"}
STATUS_COLORS["5xx"] = "#d1495b"
HITS_COLOR, AVERAGE_COLOR, THRESHOLD_COLOR, ALERT_COLOR = "#3a7bd5", "#7b2cbf", "#d1495b", "#d1495b"


def _cut(value: str) -> str:
    return value if len(value) <= LABEL_CHARS else value[: LABEL_CHARS - 1] + "\u2026"


def _ms(seconds: int) -> int:
    return seconds * 1000


def _margin(**extra) -> dict:
    return {"l": 60, "r": 20, "t": 30, "b": 50, **extra}


def _base_layout(**extra) -> dict:
    return {
        "margin": _margin(),
        "font": {"family": "system-ui, sans-serif", "size": 12},
        "paper_bgcolor": "#fff",
        "plot_bgcolor": "#fff",
        "hovermode": "closest",
        "legend": {"orientation": "h", "y": -0.18},
        **extra,
    }


def _time_axis() -> dict:
    return {
        "type": "date",
        "title": {"text": "event time (UTC)"},
        "rangeselector": {
            "buttons": [
                {"count": 10, "label": "10 min", "step": "minute", "stepmode": "backward"},
                {"count": 1, "label": "1 h", "step": "hour", "stepmode": "backward"},
                {"count": 6, "label": "6 h", "step": "hour", "stepmode": "backward"},
                {"step": "all", "label": "all"},
            ],
            "x": 0,
            "y": 1.02,
            "yanchor": "bottom",
        },
    }


def ranked_bars(
    figure_id: str, entries: list[tuple[str, int]], value_label: str, color: str, *, fmt=",.0f"
) -> dict:
    """Horizontal bars of ``(name, value)``, the first on top; names are log strings."""
    names = [chart_text(name) for name, _ in entries]
    return {
        "id": figure_id,
        "data": [
            {
                "type": "bar",
                "orientation": "h",
                "y": names,
                "x": [value for _, value in entries],
                "marker": {"color": color},
                "hovertemplate": f"%{{y}}<br>%{{x:{fmt}}} {value_label}<extra></extra>",
                "name": value_label,
            }
        ],
        "layout": _base_layout(
            margin=_margin(l=12, t=10),
            showlegend=False,
            xaxis={"title": {"text": value_label}, "rangemode": "tozero"},
            yaxis={
                "type": "category",
                "autorange": "reversed",
                "automargin": True,
                "tickvals": names,
                "ticktext": [chart_text(_cut(name)) for name, _ in entries],
            },
        ),
    }


def _category_bars(
    figure_id: str, counts: dict[str, int], axis: str, color: str, files: bool = False
) -> dict:
    """Vertical bars per category (a log string; with ``files``, a path shown by its base
    name when that is enough), largest first; hover shows the whole string."""
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    shown = _file_names([name for name, _ in ranked]) if files else [n for n, _ in ranked]
    names = [chart_text(name) for name, _ in ranked]
    return {
        "id": figure_id,
        "data": [
            {
                "type": "bar",
                "x": names,
                "y": [count for _, count in ranked],
                "marker": {"color": color},
                "hovertemplate": "%{x}<br>%{y:,} dead letters<extra></extra>",
            }
        ],
        "layout": _base_layout(
            showlegend=False,
            xaxis={
                "type": "category",
                "title": {"text": axis},
                "automargin": True,
                "tickvals": names,
                "ticktext": [chart_text(_cut(name)) for name in shown],
            },
            yaxis={"title": {"text": "dead letters"}, "rangemode": "tozero"},
        ),
    }


def _totals(items: list[tuple[str, str]]) -> str:
    cards = "".join(
        f"<div class=total><b>{text(v)}</b><span>{text(k)}</span></div>" for k, v in items
    )
    return f"<div class=totals>{cards}</div>"


def _table(headers: list[str], rows: list[list[str]], numeric: set[int] = frozenset()) -> str:
    """A table of already-escaped cells."""

    def cls(i: int) -> str:
        return " class=num" if i in numeric else ""

    head = "".join(f"<th{cls(i)}>{text(h)}</th>" for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(f"<td{cls(i)}>{cell}</td>" for i, cell in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _dead_letter_rows(dead) -> str:
    if not dead.total:
        return "<p class=note>No dead letters: every line was used.</p>"
    rows = [
        [
            text(letter["source"]),
            text("" if letter["where"] is None else letter["where"]),
            text(letter["reason"]),
            f"<code>{text(letter['raw'])}</code>",
        ]
        for letter in dead.first
    ]
    shown = f"The first {len(dead.first):,} of {dead.total:,}, in file order."
    table = _table(["source", "where", "reason", "raw"], rows, {1})
    return f"<p class=note>{shown}</p><div class=scroll>{table}</div>"


# The monitor ---------------------------------------------------------------------------------


def traffic_figure(data: MonitorData, threshold: float, alert_window: int) -> dict:
    """Hits per stats window (bars over each window's span), the alert threshold and the
    alert rule's moving average both as hits per stats window, and each alert period shaded."""
    windows, size = data.windows, data.stats_window
    averages = rolling_average(windows, alert_window)
    first = windows[0]["start"] if windows else 0
    last = windows[-1]["end"] if windows else 0
    periods = alert_periods(data.alerts)
    shapes, labels = [], []
    for n, period in enumerate(periods):
        end = period.end if period.end is not None else max(last, period.start + 1)
        shapes.append(
            {
                "type": "rect",
                "xref": "x",
                "yref": "paper",
                "x0": _ms(period.start),
                "x1": _ms(end),
                "y0": 0,
                "y1": 1,
                "fillcolor": ALERT_COLOR,
                "opacity": 0.14,
                "line": {"width": 0},
                "layer": "below",
            }
        )
        until = "still active" if period.end is None else utc_text(period.end, with_date=False)
        if n < MAX_BAND_LABELS:
            labels.append(
                {
                    "x": _ms(period.start),
                    "xref": "x",
                    "y": 1,
                    "yref": "paper",
                    "yanchor": "top",
                    "xanchor": "left",
                    "showarrow": False,
                    "font": {"size": 10, "color": ALERT_COLOR},
                    "text": f"alert {utc_text(period.start, with_date=False)}\u2013{until}",
                    "hovertext": (
                        f"alert from {utc_text(period.start)} to "
                        f"{'the end of the input' if period.end is None else utc_text(period.end)}"
                        f" UTC; {period.average:.2f} req/s when raised"
                    ),
                }
            )
    per_window = threshold * size
    if len(windows) <= MAX_BARS:
        hits = {
            "type": "bar",
            "x": [_ms(row["start"]) for row in windows],
            "y": [row["hits"] for row in windows],
            "width": _ms(size),
            "offset": 0,
            "marker": {"color": HITS_COLOR, "line": {"width": 0}},
        }
    else:
        x, y = _steps(every_window(windows, size), lambda row: row["hits"])
        hits = {
            "type": "scatter",
            "mode": "lines",
            "x": x,
            "y": y,
            "fill": "tozeroy",
            "line": {"color": HITS_COLOR, "width": 1, "shape": "hv"},
        }
    hits["name"] = f"hits per {size} s window"
    hits["hovertemplate"] = "%{x|%H:%M:%S}: %{y:,} hits<extra></extra>"
    return {
        "id": "chart-traffic",
        "time": True,
        "data": [
            hits,
            {
                "type": "scatter",
                "mode": "lines",
                "name": f"{alert_window} s average (as hits per {size} s)",
                "x": [_ms(row["end"]) for row in windows],
                "y": [round(average * size, 3) for average in averages],
                "customdata": [round(average, 3) for average in averages],
                "line": {"color": AVERAGE_COLOR, "width": 1.5},
                "hovertemplate": "%{x|%H:%M:%S}: %{customdata:.2f} req/s average<extra></extra>",
            },
            {
                "type": "scatter",
                "mode": "lines",
                "name": f"threshold {threshold:g} req/s ({per_window:g} per {size} s)",
                "x": [_ms(first), _ms(last)],
                "y": [per_window, per_window],
                "line": {"color": THRESHOLD_COLOR, "dash": "dash", "width": 1.5},
                "hoverinfo": "skip",
            },
        ],
        "layout": _base_layout(
            margin=_margin(t=40),
            bargap=0,
            shapes=shapes,
            annotations=labels,
            xaxis=_time_axis(),
            yaxis={"title": {"text": f"hits per {size} s"}, "rangemode": "tozero"},
        ),
    }


def _steps(rows: list[dict], value) -> tuple[list[int], list[int]]:
    """A step line's points (plotly's ``hv`` shape): ``value(row)`` of each window from its
    start, and again at the last window's end, so that every window spans its width."""
    if not rows:
        return [], []
    x = [_ms(row["start"]) for row in rows]
    y = [value(row) for row in rows]
    return [*x, _ms(rows[-1]["end"])], [*y, y[-1]]


def status_figure(data: MonitorData) -> dict:
    """Responses per status class in each stats window (empty windows as 0), stacked."""
    classes = sorted(status_totals(data.windows))
    rows = every_window(data.windows, data.stats_window)
    x = _steps(rows, lambda row: 0)[0]
    return {
        "id": "chart-status",
        "time": True,
        "data": [
            {
                "type": "scatter",
                "mode": "lines",
                "stackgroup": "status",
                "line": {"shape": "hv", "width": 0.5, "color": STATUS_COLORS.get(name)},
                "name": chart_text(name),
                "x": x,
                "y": _steps(rows, lambda row, name=name: row["status_classes"].get(name, 0))[1],
                "hovertemplate": f"%{{x|%H:%M:%S}}: %{{y:,}} {chart_text(name)}<extra></extra>",
            }
            for name in classes
        ],
        "layout": _base_layout(
            xaxis={"type": "date", "title": {"text": "event time (UTC)"}},
            yaxis={"title": {"text": "responses per window"}, "rangemode": "tozero"},
        ),
    }


def _alert_table(data: MonitorData) -> str:
    periods = alert_periods(data.alerts)
    if not periods:
        return "<p class=note>No alert: the average stayed at or under the threshold.</p>"
    rows = []
    for period in periods:
        end = "still active at the end" if period.end is None else utc_text(period.end)
        span = "" if period.end is None else f"{period.end - period.start:,} s"
        rows.append([text(utc_text(period.start)), text(end), text(span), f"{period.average:.2f}"])
    return _table(
        ["alert from (UTC)", "recovered at (UTC)", "lasted", "req/s when raised"], rows, {2, 3}
    )


def monitor_report(data: MonitorData, params: dict) -> tuple[str, list, list[dict]]:
    """``(subtitle HTML, sections, figures)`` of the monitor's report."""
    threshold = float(params.get("threshold", 10.0))
    alert_window = int(params.get("alert_window", 120))
    windows, whole = data.windows, data.totals  # whole: totals.jsonl's row, when written
    hits = whole["hits"] if whole else sum(row["hits"] for row in windows)
    sent = whole["bytes"] if whole else sum(row["bytes"] for row in windows)
    statuses = Counter(whole["status_classes"]) if whole else status_totals(windows)
    errors = statuses.get("4xx", 0) + statuses.get("5xx", 0)
    periods = alert_periods(data.alerts)
    busiest = max(windows, key=lambda row: (row["hits"], -row["start"]), default=None)
    span = (
        f"{utc_text(windows[0]['start'])} \u2013 {utc_text(windows[-1]['end'])} UTC"
        if windows
        else "no traffic"
    )
    totals = _totals(
        [
            ("requests", f"{hits:,}"),
            ("bytes sent", human_bytes(sent)),
            *(
                (key.replace("_", " "), f"{whole[key]:,}")
                for key in ("distinct_hosts", "distinct_users")
                if whole
            ),
            (f"{data.stats_window} s windows with traffic", f"{len(windows):,}"),
            ("busiest window", f"{busiest['hits']:,} hits" if busiest else "-"),
            ("errors (4xx and 5xx)", f"{errors / hits:.1%}" if hits else "-"),
            ("alerts", f"{len(periods):,}"),
            ("dead letters", f"{data.dead.total:,}"),
        ]
    )
    status_line = ", ".join(f"{k} {v:,}" for k, v in sorted(statuses.items())) or "none"
    n = TOP
    tops = [
        ("Top sections", "chart-sections", "sections", "section", "hits", "#3a7bd5", ",.0f"),
        (
            "Top hosts by hits",
            "chart-hosts-hits",
            "hosts_by_hits",
            "host",
            "hits",
            "#2e9e5b",
            ",.0f",
        ),
        (
            "Top hosts by bytes",
            "chart-hosts-bytes",
            "hosts_by_bytes",
            "host",
            "bytes",
            "#f0a202",
            ".3s",
        ),
        ("Top users", "chart-users", "users", "user", "hits", "#7b2cbf", ",.0f"),
    ]
    figures = [traffic_figure(data, threshold, alert_window), status_figure(data)]
    sections = [
        Section(
            "The whole run",
            totals + f"<p class=note>Status classes: {text(status_line)}. {text(span)}.</p>",
            wide=True,
        ),
        Section(
            "Traffic per stats window",
            chart_div("chart-traffic", tall=True)
            + "<p class=note>"
            + (
                f"Each bar is one {data.stats_window} s window with traffic. "
                if len(windows) <= MAX_BARS
                else f"Hits are a step line over every {data.stats_window} s window, empty ones "
                f"as 0 (more than {MAX_BARS:,} windows: bars would be too slow to draw; zoom in "
                "with the buttons or by dragging). "
            )
            + f"The purple line is the alert rule's {alert_window} s average at each window's "
            "end, scaled to "
            f"hits per window like the dashed threshold ({threshold:g} req/s); shaded spans are "
            "alert periods. The two time charts zoom together.</p>",
            wide=True,
        ),
        Section("Alert periods", _alert_table(data), wide=True),
        Section("Status classes over time", chart_div("chart-status"), wide=True),
    ]
    for title, figure_id, key, name, value, color, fmt in tops:
        if whole:  # exact, the run's --top entries
            entries = [(entry[name], entry[value]) for entry in whole[key]]
            note = "The whole run's (totals.jsonl), exact."
        else:  # a run before totals.jsonl: what the windows tell
            entries = ranked_totals(windows, key, name, value, n)
            note = "Summed over each window's top list: a lower bound of the whole run's count."
        figures.append(ranked_bars(figure_id, entries, value, color, fmt=fmt))
        sections.append(Section(title, chart_div(figure_id) + f"<p class=note>{note}</p>"))
    figures.append(
        _category_bars("chart-dead-reasons", dict(data.dead.by_reason), "reason", "#d1495b")
    )
    sections += [
        Section("Dead letters by reason", chart_div("chart-dead-reasons")),
        Section("Dead letters", _dead_letter_rows(data.dead), wide=True),
    ]
    subtitle = (
        f"threshold {threshold:g} req/s over {alert_window} s, stats every "
        f"{data.stats_window} s; {text(span)}"
    )
    return subtitle, sections, figures


# The tally -----------------------------------------------------------------------------------


def _file_names(paths: list[str]) -> list[str]:
    """Base names when they tell the files apart, else the whole paths."""
    names = [os.path.basename(path) or path for path in paths]
    return names if len(set(names)) == len(names) else paths


def logs_per_file_figure(data: TallyData) -> dict:
    paths = [source for source, _, _ in data.files]
    names = [chart_text(name) for name in _file_names(paths)]
    return {
        "id": "chart-files",
        "data": [
            {
                "type": "bar",
                "x": names,
                "y": [logs for _, logs, _ in data.files],
                "customdata": [
                    [chart_text(p), emails]
                    for p, (_, _, emails) in zip(paths, data.files, strict=True)
                ],
                "marker": {"color": "#3a7bd5"},
                "hovertemplate": "%{customdata[0]}<br>%{y:,} logs, %{customdata[1]:,} emails"
                "<extra></extra>",
            }
        ],
        "layout": _base_layout(
            showlegend=False,
            xaxis={
                "type": "category",
                "title": {"text": "file"},
                "automargin": True,
                "tickvals": names,
                "ticktext": [chart_text(_cut(name)) for name in _file_names(paths)],
            },
            yaxis={"title": {"text": "valid logs"}, "rangemode": "tozero"},
        ),
    }


def growth_figure(data: TallyData) -> dict:
    """The global tally after each update: its logs and its distinct emails."""
    files = [k for k, _, _, _ in data.growth]
    after = [chart_text(path) for _, path, _, _ in data.growth]
    return {
        "id": "chart-growth",
        "data": [
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": "logs in the global tally",
                "x": files,
                "y": [logs for _, _, logs, _ in data.growth],
                "text": after,
                "marker": {"size": 5, "color": "#3a7bd5"},
                "line": {"color": "#3a7bd5"},
                "hovertemplate": "after %{x} files (%{text}): %{y:,} logs<extra></extra>",
            },
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": "distinct emails",
                "x": files,
                "y": [emails for _, _, _, emails in data.growth],
                "text": after,
                "yaxis": "y2",
                "marker": {"size": 5, "color": "#f0a202"},
                "line": {"color": "#f0a202", "dash": "dot"},
                "hovertemplate": "after %{x} files (%{text}): %{y:,} emails<extra></extra>",
            },
        ],
        "layout": _base_layout(
            margin=_margin(r=60),
            xaxis={"title": {"text": "files applied"}, "rangemode": "tozero"},
            yaxis={"title": {"text": "logs"}, "rangemode": "tozero"},
            yaxis2={
                "title": {"text": "distinct emails"},
                "overlaying": "y",
                "side": "right",
                "rangemode": "tozero",
                "showgrid": False,
                "tickmode": "auto",
                "tickformat": ",d",
            },
        ),
    }


def tally_report(data: TallyData, params: dict) -> tuple[str, list, list[dict]]:
    """``(subtitle HTML, sections, figures)`` of the tally's report."""
    logs = sum(total for _, total in data.final)
    files_with_dead = len(data.dead.by_source)
    totals = _totals(
        [
            ("files read", f"{len(data.files):,}"),
            ("logs tallied", f"{logs:,}"),
            ("distinct emails", f"{len(data.final):,}"),
            ("global updates", f"{len(data.growth):,}"),
            ("dead letters", f"{data.dead.total:,}"),
            ("files with dead letters", f"{files_with_dead:,}"),
        ]
    )
    figures = [
        ranked_bars("chart-emails", data.final[:TOP], "logs", "#3a7bd5"),
        logs_per_file_figure(data),
        growth_figure(data),
        _category_bars("chart-dead-reasons", dict(data.dead.by_reason), "reason", "#d1495b"),
        _category_bars("chart-dead-files", dict(data.dead.by_source), "file", "#f0a202", True),
    ]
    sections = [
        Section("The whole run", totals, wide=True),
        Section(f"Top {TOP} emails", chart_div("chart-emails", tall=True)),
        Section("Logs per file", chart_div("chart-files", tall=True)),
        Section(
            "How the global tally grew",
            chart_div("chart-growth")
            + "<p class=note>The global tally after each file's tally message was applied.</p>",
            wide=True,
        ),
        Section("Dead letters by reason", chart_div("chart-dead-reasons")),
        Section("Dead letters by file", chart_div("chart-dead-files")),
        Section("Dead letters", _dead_letter_rows(data.dead), wide=True),
    ]
    subtitle = f"{len(data.files):,} files, {logs:,} logs"
    return subtitle, sections, figures
