"""Reading Beam metrics back from a finished ``PipelineResult`` for the closing summary."""

from __future__ import annotations

from apache_beam.metrics.metric import MetricsFilter

from transforms.tally import DEAD_LETTER_NAMESPACE

__all__ = ["DEAD_LETTER_NAMESPACE", "counters", "gauge"]


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
