"""The HTML page around the charts: escaping, the inlined plotly.js, and the page's script.

Everything a log wrote (paths, users, hosts, emails, file names, raw lines) reaches the page in
one of three ways, each escaped for where it lands:

- HTML text and attributes (tables, headings): ``text`` (``html.escape``).
- The charts' data, one JSON block in ``<script type="application/json">``: ``script_json``
  escapes ``<``, ``>``, ``&`` and U+2028/U+2029, so no string can close the block or open a tag.
- Labels drawn by plotly.js, which reads a few HTML-like tags (``<b>``, ``<a href>``, ``<br>``)
  and entities in text it draws: ``chart_text`` escapes ``&``, ``<`` and ``>`` as entities,
  which plotly.js draws back as those characters, in a text node.

The page also carries a Content-Security-Policy that allows only its own two scripts (by their
SHA-256) and no network at all: a second line of defence, and a check that nothing is fetched.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import html
import importlib.util
import os
import re
from dataclasses import dataclass

import orjson

PLOTLY_HINT = "pip install 'beam-tally[report]'"

DATA_BLOCK = re.compile(r'<script id="report-data" type="application/json">(.*?)</script>', re.S)
"""The page's data block (``script_json`` leaves no ``<`` in it, so the first ``</script>``
ends it)."""
_SCRIPT_ESCAPES = (
    ("<", "\\u003c"),
    (">", "\\u003e"),
    ("&", "\\u0026"),
    ("\u2028", "\\u2028"),
    ("\u2029", "\\u2029"),
)
_CHART_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})


def text(value: object) -> str:
    """``value`` as HTML text or attribute content."""
    return html.escape(str(value), quote=True)


def chart_text(value: str) -> str:
    """A log's string as plotly.js label text: drawn as written, never read as a tag."""
    return value.translate(_CHART_ESCAPES)


def script_json(value: object) -> str:
    """``value`` as JSON that is safe inside a ``<script>`` element (and valid JSON)."""
    encoded = orjson.dumps(value).decode()
    for char, escape in _SCRIPT_ESCAPES:  # five scans in C: faster than a translate table
        encoded = encoded.replace(char, escape)
    return encoded


class PlotlyMissing(Exception):
    """The ``plotly`` package (which ships plotly.js) is not installed."""


@dataclass(frozen=True)
class ChartLibrary:
    source: str  # plotly.min.js
    version: str


@functools.cache
def plotly_js() -> ChartLibrary:
    """plotly.js as the installed ``plotly`` Python package ships it (read, not imported: the
    Python package's own import is not needed to inline its bundle)."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise PlotlyMissing(f"the report needs the plotly package: {PLOTLY_HINT}")
    path = os.path.join(spec.submodule_search_locations[0], "package_data", "plotly.min.js")
    # Text mode reads CR LF and CR as LF, as the HTML parser does: the CSP hash is of that.
    with open(path, encoding="utf-8") as handle:
        source = handle.read()
    # An inline script ends at the first "</script"; "<script" after "<!--" would keep it open.
    if re.search(r"</?script", source, re.IGNORECASE):
        raise PlotlyMissing(f"{path} cannot be inlined in a <script> element")
    version = re.search(r"plotly\.js v([\w.\-]+)", source[:500])
    return ChartLibrary(source, version[1] if version else "?")


@functools.lru_cache(maxsize=4)
def _sha256(script: str) -> str:
    digest = hashlib.sha256(script.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode() + "'"


# The page's own script: draws every figure, keeps the time charts' zoom in step, keeps the
# view across a live page's reloads, and says when it starts and when it is drawn
# (window.__reportStarted, __reportReady: milliseconds since navigation, for the browser
# tests and the benchmark).
PAGE_SCRIPT = """
(function () {
  "use strict";
  window.__reportStarted = window.performance.now();
  var spec = JSON.parse(document.getElementById("report-data").textContent);
  var key = "beam-tally-report-view";
  var saved = {};
  try { saved = JSON.parse(window.sessionStorage.getItem(key) || "{}"); } catch (e) { saved = {}; }
  var timeCharts = [];
  var syncing = false;
  function remember(id, range) {
    saved[id] = range;
    try { window.sessionStorage.setItem(key, JSON.stringify(saved)); } catch (e) { /* none */ }
  }
  function follow(source, range) {
    if (syncing) { return; }
    syncing = true;
    var updates = timeCharts.filter(function (gd) { return gd !== source; }).map(function (gd) {
      remember(gd.id, range);
      return window.Plotly.relayout(gd, range ? {"xaxis.range": range}
                                              : {"xaxis.autorange": true});
    });
    Promise.all(updates).then(function () { syncing = false; }, function () { syncing = false; });
  }
  var drawn = spec.figures.map(function (figure) {
    var gd = document.getElementById(figure.id);
    if (figure.time && saved[figure.id]) {
      figure.layout.xaxis.range = saved[figure.id];
      figure.layout.xaxis.autorange = false;
    }
    return window.Plotly.newPlot(gd, figure.data, figure.layout, spec.config).then(function () {
      if (!figure.time) { return; }
      timeCharts.push(gd);
      gd.on("plotly_relayout", function (event) {
        var range = null;
        if (event["xaxis.range[0]"] !== undefined) {
          range = [event["xaxis.range[0]"], event["xaxis.range[1]"]];
        } else if (event["xaxis.range"]) {
          range = event["xaxis.range"];
        } else if (!event["xaxis.autorange"]) {
          return;
        }
        remember(gd.id, range);
        follow(gd, range);
      });
    });
  });
  Promise.all(drawn).then(function () {
    window.__reportReady = window.performance.now();
    document.body.setAttribute("data-ready", "1");
  });
  if (spec.refresh) {
    window.setTimeout(function () { window.location.reload(); }, spec.refresh * 1000);
  }
})();
"""

STYLE = """
:root { color-scheme: light; --ink: #1f2933; --muted: #61707f; --line: #d9e0e7; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
       color: var(--ink); background: #f5f7fa; }
header { padding: 18px 28px 10px; background: #fff; border-bottom: 1px solid var(--line); }
h1 { margin: 0 0 4px; font-size: 22px; }
h2 { margin: 0 0 8px; font-size: 16px; }
.meta { color: var(--muted); margin: 0; overflow-wrap: anywhere; }
.live { display: inline-block; margin-top: 6px; padding: 2px 8px; border-radius: 10px;
        background: #fff3cd; color: #7a5b00; font-size: 12px; }
main { padding: 16px 28px 28px; display: grid; gap: 16px;
       grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); }
section { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 14px 16px; }
section.wide { grid-column: 1 / -1; }
.note { color: var(--muted); font-size: 12px; margin: 4px 0 0; }
.chart { width: 100%; height: 340px; }
.chart.tall { height: 420px; }
.totals { display: flex; flex-wrap: wrap; gap: 10px; }
.total { flex: 1 1 110px; padding: 8px 12px; border: 1px solid var(--line); border-radius: 6px; }
.total b { display: block; font-size: 20px; }
.total span { color: var(--muted); font-size: 12px; }
table { border-collapse: collapse; width: 100%; font-size: 12px; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line);
         vertical-align: top; overflow-wrap: anywhere; }
th { color: var(--muted); font-weight: 600; white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
code { font-size: 11px; white-space: pre-wrap; }
.scroll { max-height: 420px; overflow: auto; }
footer { padding: 0 28px 24px; color: var(--muted); font-size: 12px; }
"""


@dataclass
class Section:
    """A box of the page: a heading, HTML (already escaped), and the charts' divs in it."""

    title: str
    body: str
    wide: bool = False


def chart_div(figure_id: str, tall: bool = False) -> str:
    return f'<div id="{text(figure_id)}" class="chart{" tall" if tall else ""}"></div>'


def render_page(
    *,
    title: str,
    subtitle: str,
    sections: list[Section],
    figures: list[dict],
    library: ChartLibrary,
    refresh: float | None = None,
    params: dict | None = None,
    footer: str = "",
) -> str:
    """The whole page. ``figures`` are ``{"id", "data", "layout", "time"}`` dicts (plotly's
    figure JSON; ``time`` for the charts whose x axis is event time, zoomed together);
    ``refresh`` reloads the page every that many seconds (a live run's); ``params`` (the job's
    parameters) are kept in the data block, for a rebuild."""
    spec = {
        "figures": figures,
        "refresh": refresh,
        "params": params or {},
        "config": {"responsive": True, "displaylogo": False, "scrollZoom": False},
    }
    data = script_json(spec)
    policy = (
        "default-src 'none'; "
        f"script-src {_sha256(library.source)} {_sha256(PAGE_SCRIPT)}; "
        "style-src 'unsafe-inline'; img-src data: blob:; base-uri 'none'; form-action 'none'"
    )
    live = (
        f'<div class="live">live: this page reloads every {refresh:g} s while the run goes</div>'
        if refresh
        else ""
    )
    boxes = "\n".join(
        f"<section{' class=wide' if s.wide else ''}><h2>{text(s.title)}</h2>{s.body}</section>"
        for s in sections
    )
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{text(policy)}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{text(title)}</title>
<style>{STYLE}</style>
</head>
<body>
<header><h1>{text(title)}</h1><p class="meta">{subtitle}</p>{live}</header>
<main>
{boxes}
</main>
<footer>{footer}Charts drawn by plotly.js {text(library.version)}, inlined: this file needs no
network. Drag on a chart to zoom, double-click to zoom out.</footer>
<script id="report-data" type="application/json">{data}</script>
<script>{library.source}</script>
<script>{PAGE_SCRIPT}</script>
</body>
</html>
"""
