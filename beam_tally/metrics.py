"""The closing summary's figures: Beam metrics of a finished ``PipelineResult`` (batch), or the
outputs a live run wrote."""

from __future__ import annotations

import glob

import orjson
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter

from transforms.parse_logs import reason_code
from transforms.tally import DEAD_LETTER_NAMESPACE

__all__ = [
    "DEAD_LETTER_NAMESPACE",
    "counters",
    "gauge",
    "live_monitor_counters",
    "live_tally_counters",
    "monitor_outputs",
    "read_output",
]


def _query(result, namespace: str):
    return result.metrics().query(MetricsFilter().with_namespace(namespace))


def _value(metric_result):
    committed = metric_result.committed
    return metric_result.attempted if committed is None else committed


def counters(result, namespace: str) -> dict[str, int]:
    """Counter totals in ``namespace``, summed over steps."""
    totals: dict[str, int] = {}
    for metric in _query(result, namespace)["counters"]:
        name = metric.key.metric.name
        totals[name] = totals.get(name, 0) + (_value(metric) or 0)
    return totals


def gauge(result, namespace: str, name: str) -> int:
    values = [
        _value(metric)
        for metric in _query(result, namespace)["gauges"]
        if metric.key.metric.name == name
    ]
    return max((v.value for v in values if v is not None), default=0)


def read_output(output: str, name: str):
    """The JSON lines of every ``NAME*.jsonl`` file under ``output``, parsed (a batch run's
    one file, or a live run's rolled files)."""
    pattern = FileSystems.join(glob.escape(output), f"{name}*.jsonl")  # '[' in it is literal
    for match in FileSystems.match([pattern])[0].metadata_list:
        with FileSystems.open(match.path) as handle:
            for line in handle.read().splitlines():
                if line.strip():
                    yield orjson.loads(line)


def _dead_letter_counts(output: str, totals: dict[str, int]) -> dict[str, int]:
    reasons: dict[str, int] = {}
    for dead in read_output(output, "dead_letters"):
        code = reason_code(dead["reason"])
        reasons[code] = reasons.get(code, 0) + 1
    totals["dead_letters"] = sum(reasons.values())
    return reasons


def monitor_outputs(output: str) -> tuple[list[dict], dict | None]:
    """Every alert and recovery a monitor run wrote, in event-time order, and its latest
    totals (a live run writes them after each update: the one with the most hits is the
    latest; None when there was no request)."""
    alerts = sorted(read_output(output, "alerts"), key=lambda a: (a["at"], a["kind"]))
    totals = max(read_output(output, "totals"), key=lambda t: t["hits"], default=None)
    return alerts, totals


def live_monitor_counters(
    output: str, lines_read: int | None = None
) -> tuple[dict[str, int], dict[str, int]]:
    """The monitor's summary counters read back from what a live run wrote.

    The DirectRunner's streaming mode keeps only each step's first bundle of Beam metrics (its
    state sampler caches the first bundle's metrics container), so a live run's summary counts
    its own outputs instead: every window, alert and dead letter it reported. Lines read are
    the producer's count, sent with the stream's end (header and blank lines included, as in
    batch); a run stopped before the end counts the lines it reported (requests and dead
    letters) instead."""
    totals = {"stats_windows": 0, "records": 0, "alerts": 0, "recoveries": 0}
    for stats in read_output(output, "stats"):
        totals["stats_windows"] += 1
        totals["records"] += stats["hits"]
    for alert in read_output(output, "alerts"):
        totals["alerts" if alert["kind"] == "alert" else "recoveries"] += 1
    reasons = _dead_letter_counts(output, totals)
    reported = totals["records"] + totals["dead_letters"]
    totals["lines"] = reported if lines_read is None else lines_read
    return totals, reasons


def live_tally_counters(output: str) -> tuple[dict[str, int], dict[str, int], int]:
    """The tally's summary counters (and distinct emails) read back from a live run's outputs;
    see ``live_monitor_counters`` for why."""
    totals = {"tally_messages": 0, "logs": 0}
    for tally in read_output(output, "tallies"):
        totals["tally_messages"] += 1
        totals["logs"] += sum(entry["total"] for entry in tally["tally"])
    latest = max(read_output(output, "global_tally"), key=lambda g: g["files"], default=None)
    reasons = _dead_letter_counts(output, totals)
    return totals, reasons, len(latest["global_tally"]) if latest else 0
