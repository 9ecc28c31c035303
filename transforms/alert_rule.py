"""The high-traffic alert rule as a pure, incremental evaluator (no Beam).

At every whole second ``t`` from the first to the last event second, ``hits(t)`` is the number of
requests with timestamp in ``[t - window + 1, t]`` (seconds without traffic count as zero) and the
average is ``hits(t) / window``. Above ``threshold`` (strictly) raises an alert; at or below it,
an active alert recovers. ``TrafficAlertRule`` keeps per-second counts only for the seconds still
inside the window or not yet evaluated, and a running sum, so each second costs O(1).
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field

import numpy as np

from transforms.records import Alert

ALERT = "alert"
RECOVER = "recover"


@dataclass
class TrafficAlertRule:
    threshold: float
    window: int
    counts: dict[int, int] = field(default_factory=dict)
    cursor: int | None = None  # the next second to evaluate
    last_second: int | None = None  # the newest event second seen
    running: int = 0  # hits(cursor - 1)
    active: bool = False

    def is_late(self, second: int) -> bool:
        """True when ``second`` was already evaluated: its requests can no longer count."""
        return self.cursor is not None and second < self.cursor

    def add(self, second: int, count: int = 1) -> None:
        if self.is_late(second):
            raise ValueError(f"second {second} is already evaluated")
        self.counts[second] = self.counts.get(second, 0) + count
        if self.last_second is None or second > self.last_second:
            self.last_second = second

    def evaluate_until(self, until: int) -> list[Alert]:
        """Evaluates every second up to ``min(until, last event second)``; returns the changes."""
        if self.last_second is None:
            return []
        if self.cursor is None:
            self.cursor = min(self.counts)
        end = min(until, self.last_second)
        changes: list[Alert] = []
        counts, window, limit = self.counts, self.window, self.threshold
        t = self.cursor
        sorted_pending = None  # the seconds with traffic, sorted once, when a gap first needs it
        while t <= end:
            if self.running == 0 and not self.active and t not in counts:
                # Silence with nothing in the window: no change is possible before the next
                # second with traffic, so jump to it (a gap costs O(log n), not a step per
                # second: a lone far-future line, or sparse traffic, stays cheap).
                if sorted_pending is None:
                    sorted_pending = sorted(s for s in counts if s > t)
                index = bisect_right(sorted_pending, t)
                t = sorted_pending[index] if index < len(sorted_pending) else end + 1
                if t > end:
                    break
            self.running += counts.get(t, 0) - counts.pop(t - window, 0)
            average = self.running / window
            if not self.active and average > limit:
                self.active = True
                changes.append(Alert(ALERT, t, self.running, average))
            elif self.active and average <= limit:
                self.active = False
                changes.append(Alert(RECOVER, t, self.running, average))
            t += 1
        if end >= self.cursor:
            self.cursor = end + 1
        return changes


def changes_of_counts(seconds, counts, threshold: float, window: int) -> list[Alert]:
    """Every change ``TrafficAlertRule`` gives for ``counts[i]`` requests at each second
    ``seconds[i]`` (NumPy int64 arrays, seconds sorted and distinct), evaluated to the last of
    them, computed at once: what a batch run evaluates after all its input.

    ``hits(t)`` only changes at a second with traffic (its count comes in) and ``window``
    seconds after it (the count goes out); between two such seconds it, the average and so
    the state stay put. So only those seconds are evaluated, with a cumulative sum of the
    counts in and out: the memory is two arrays of the seconds with traffic, where the rule
    keeps a dict entry per pending second (in batch, every second of the input) and steps a
    second at a time. The state after each second is whether its average is above the
    threshold, so a change is a second where that differs from the one before."""
    seconds = np.asarray(seconds, np.int64)
    counts = np.asarray(counts, np.int64)
    if not len(seconds):
        return []
    last = seconds[-1]
    leaving = seconds + window
    kept = leaving <= last  # evaluation ends at the last second with traffic
    points, deltas = sum_by_key(
        np.concatenate((seconds, leaving[kept])), np.concatenate((counts, -counts[kept]))
    )
    hits = np.cumsum(deltas)
    high = hits / window > threshold  # float64 division, as Python's int / int below 2**53
    changed = np.flatnonzero(high != np.concatenate(([False], high[:-1])))
    return [
        Alert(ALERT if above else RECOVER, at, running, running / window)
        for at, running, above in zip(
            points[changed].tolist(), hits[changed].tolist(), high[changed].tolist(), strict=True
        )
    ]


def sum_by_key(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``keys`` sorted and made distinct, each with the sum of its ``values`` (NumPy arrays of
    one length)."""
    if not len(keys):
        return keys, values
    order = np.argsort(keys, kind="stable")
    keys, values = keys[order], values[order]
    starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
    return keys[starts], np.add.reduceat(values, starts)
